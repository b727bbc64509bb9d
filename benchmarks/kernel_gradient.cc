// A prototype for benchmarks/kernel_gradient.py (not part of the library): the kernel gradient of a 3x3, stride-1,
// "same" convolution in float32, channels last, C_in a multiple of 8 and C_out of 16, as one TensorFlow CPU op:
//   VsegBenchKernelGradient(x [N, H, W, C_in], d_y [N, H, W, C_out]) -> d_kernel [3, 3, C_in, C_out]
// For each kernel row and each block of 8 input by 16 output channels, one pass along an image row: 24 AVX-512
// accumulators (three kernel columns by eight input channels), one FMA per input value broadcast. The rows are
// split into a fixed number of blocks on the intra-op threads, each with its own partial sums, added in block
// order (the same on any thread count).
#include <immintrin.h>
#include <vector>
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "../vseg_keras/models/kernels/cpp/common.h"

using namespace tensorflow;
using namespace vseg_cpu;

REGISTER_OP("VsegBenchKernelGradient").Input("x: float").Input("d_y: float").Output("d_kernel: float")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->MakeShape({3, 3, c->Dim(c->input(0), 3), c->Dim(c->input(1), 3)}));
      return absl::OkStatus();
    });

namespace {
constexpr int kRowBlocks = 8;

// acc[kw][i] += x[w + kw - 1, ci0 + i] * d_y[w, co0:co0+16] over w in [w0, w1); kEdges: skip columns outside.
template <bool kEdges>
inline void row_span(const float* xr, const float* dyr, int64_t W, int64_t ci, int64_t co, int64_t ci0, int64_t co0,
                     int64_t w0, int64_t w1, __m512 (&acc)[3][8]) {
  for (int64_t w = w0; w < w1; ++w) {
    const __m512 d = _mm512_loadu_ps(dyr + w * co + co0);
#pragma GCC unroll 3
    for (int kw = 0; kw < 3; ++kw) {
      const int64_t col = w + kw - 1;
      if (kEdges && (col < 0 || col >= W)) continue;
      const float* xp = xr + col * ci + ci0;
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[kw][i] = _mm512_fmadd_ps(_mm512_set1_ps(xp[i]), d, acc[kw][i]);
    }
  }
}

class KernelGradient : public OpKernel {
 public:
  explicit KernelGradient(OpKernelConstruction* c) : OpKernel(c) {}
  void Compute(OpKernelContext* context) override {
    const Tensor &xt = context->input(0), &dyt = context->input(1);
    const bool fits = xt.dims() == 4 && dyt.dims() == 4 && xt.dim_size(0) == dyt.dim_size(0) &&
                      xt.dim_size(1) == dyt.dim_size(1) && xt.dim_size(2) == dyt.dim_size(2) &&
                      xt.dim_size(3) % 8 == 0 && dyt.dim_size(3) % 16 == 0;
    OP_REQUIRES(context, fits, absl::InvalidArgumentError(
        "VsegBenchKernelGradient: x [N, H, W, 8k] and d_y [N, H, W, 16k] expected, got " + xt.shape().DebugString() +
        " and " + dyt.shape().DebugString()));
    const int64_t N = xt.dim_size(0), H = xt.dim_size(1), W = xt.dim_size(2), ci = xt.dim_size(3), co = dyt.dim_size(3);
    float* dw = output<float>(context, 0, TensorShape({3, 3, ci, co}));
    if (!dw) return;
    const float *x = in<float>(xt), *dy = in<float>(dyt);
    const int64_t rows = N * H, wsize = 9 * ci * co;
    std::vector<float> partial(kRowBlocks * wsize, 0.0f);
    auto* pool = context->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t per = (rows + kRowBlocks - 1) / kRowBlocks;
    pool->ParallelFor(kRowBlocks, per * W * ci * co * 9, [&](int64_t first, int64_t last) {
      for (int64_t block = first; block < last; ++block) {
        float* pw = partial.data() + block * wsize;
        for (int64_t r = block * per; r < std::min(rows, (block + 1) * per); ++r) {
          const int64_t n = r / H, h = r % H;
          const float* dyr = dy + (n * H + h) * W * co;
          for (int kh = 0; kh < 3; ++kh) {
            const int64_t hin = h + kh - 1;
            if (hin < 0 || hin >= H) continue;
            const float* xr = x + (n * H + hin) * W * ci;
            for (int64_t co0 = 0; co0 < co; co0 += 16) {
              for (int64_t ci0 = 0; ci0 < ci; ci0 += 8) {
                __m512 acc[3][8];
                for (int kw = 0; kw < 3; ++kw)
                  for (int i = 0; i < 8; ++i) acc[kw][i] = _mm512_setzero_ps();
                row_span<true>(xr, dyr, W, ci, co, ci0, co0, 0, std::min<int64_t>(W, 1), acc);  // the edges
                if (W > 1) {
                  row_span<false>(xr, dyr, W, ci, co, ci0, co0, 1, W - 1, acc);
                  row_span<true>(xr, dyr, W, ci, co, ci0, co0, W - 1, W, acc);
                }
                for (int kw = 0; kw < 3; ++kw)
                  for (int i = 0; i < 8; ++i) {
                    float* p = pw + ((kh * 3 + kw) * ci + ci0 + i) * co + co0;
                    _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), acc[kw][i]));
                  }
              }
            }
          }
        }
      }
    });
    for (int64_t k = 0; k < wsize; ++k) {
      float total = 0.0f;
      for (int b = 0; b < kRowBlocks; ++b) total += partial[b * wsize + k];
      dw[k] = total;
    }
  }
};
}  // namespace
REGISTER_KERNEL_BUILDER(Name("VsegBenchKernelGradient").Device(DEVICE_CPU), KernelGradient);
