// The kernel gradient of a 3x3, stride-1, "same" convolution in float32, channels last, as one TensorFlow CPU op of
// vseg's own, for the training step on a CPU (built with gru_tails.cc and batch_norm_relu.cc into one library;
// vseg_keras/models/kernels/tensorflow.py dispatches to it where it fits and pays):
//   VsegConv3x3KernelGrad(x [N, H, W, C_in], d_y [N, H, W, C_out]) -> d_kernel [3, 3, C_in, C_out]
//     d_kernel[kh, kw, i, o] = sum over n, h, w of x[n, h + kh - 1, w + kw - 1, i] * d_y[n, h, w, o]
//     (x read as zero outside the image: TensorFlow's "SAME" padding), C_in a multiple of 8, C_out of 16.
// oneDNN's kernel gradients run at 0.6-0.9x its forward rate on a small model's 16-64 channels, at 16 channels
// about half (docs/BENCHMARKS.md, "Kernel gradients of vseg's own"). Here, for each image row, kernel row and block
// of 8 input by 16 output channels, one pass along the row keeps 24 vectors of 16 sums (three kernel columns by
// eight input channels) and adds one product per input value and kernel column. The vectors are GCC's generic
// ones: AVX-512 registers where the CPU has them (where the op runs in training), narrower ones elsewhere (where it
// is only tested). The rows are split into a fixed number of blocks on the intra-op threads, each with its own
// partial sums, added in block order: the same result on any thread count.

#include <cstdint>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "common.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;

using namespace vseg_cpu;  // NOLINT: the shared helpers of common.h

constexpr int64_t kRowBlocks = 8;    // blocks of image rows, each with its own partial sums
constexpr int64_t kInBlock = 8;      // input channels per pass along a row
constexpr int64_t kOutBlock = 16;    // output channels per pass: one vector

typedef float Vector __attribute__((vector_size(kOutBlock * sizeof(float))));
typedef Vector Sums[3][kInBlock];    // [kernel column][input channel of the block]

inline Vector load_vector(const float* p) {
  Vector v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

// sums[kw][i] += x[w + kw - 1, ci0 + i] * d_y[w, co0 : co0 + 16] over the columns w in [w0, w1) of one row;
// kEdges: leave out the columns outside the image.
template <bool kEdges>
inline void row_pass(const float* x_row, const float* d_y_row, int64_t width, int64_t c_in, int64_t c_out,
                     int64_t ci0, int64_t co0, int64_t w0, int64_t w1, Sums& sums) {
  for (int64_t w = w0; w < w1; ++w) {
    const Vector d = load_vector(d_y_row + w * c_out + co0);
#pragma GCC unroll 3
    for (int kw = 0; kw < 3; ++kw) {
      const int64_t column = w + kw - 1;
      if (kEdges && (column < 0 || column >= width)) continue;
      const float* xp = x_row + column * c_in + ci0;
#pragma GCC unroll 8
      for (int i = 0; i < kInBlock; ++i) sums[kw][i] += xp[i] * d;
    }
  }
}

// Adds one image row's products with one row of x (kernel row kh) to the partial sums `partial` [3, 3, C_in, C_out].
void add_row(const float* x_row, const float* d_y_row, int64_t width, int64_t c_in, int64_t c_out, int kh,
             float* partial) {
  for (int64_t co0 = 0; co0 < c_out; co0 += kOutBlock) {
    for (int64_t ci0 = 0; ci0 < c_in; ci0 += kInBlock) {
      Sums sums = {};
      row_pass<true>(x_row, d_y_row, width, c_in, c_out, ci0, co0, 0, std::min<int64_t>(width, 1), sums);
      if (width > 1) {
        row_pass<false>(x_row, d_y_row, width, c_in, c_out, ci0, co0, 1, width - 1, sums);
        row_pass<true>(x_row, d_y_row, width, c_in, c_out, ci0, co0, width - 1, width, sums);
      }
      for (int kw = 0; kw < 3; ++kw) {
        for (int i = 0; i < kInBlock; ++i) {
          float* p = partial + ((kh * 3 + kw) * c_in + ci0 + i) * c_out + co0;
          const Vector total = load_vector(p) + sums[kw][i];
          std::memcpy(p, &total, sizeof(total));
        }
      }
    }
  }
}

class Conv3x3KernelGrad : public OpKernel {
 public:
  explicit Conv3x3KernelGrad(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor &x_t = context->input(0), &d_y_t = context->input(1);
    const bool fits = x_t.dims() == 4 && d_y_t.dims() == 4 && x_t.dim_size(0) == d_y_t.dim_size(0) &&
                      x_t.dim_size(1) == d_y_t.dim_size(1) && x_t.dim_size(2) == d_y_t.dim_size(2) &&
                      x_t.dim_size(3) % kInBlock == 0 && d_y_t.dim_size(3) % kOutBlock == 0;
    OP_REQUIRES(context, fits, absl::InvalidArgumentError(
        "vseg's 3x3 kernel gradient op: x [N, H, W, C_in] and d_y [N, H, W, C_out] with C_in a multiple of 8 and "
        "C_out of 16 expected, got x " + x_t.shape().DebugString() + " and d_y " + d_y_t.shape().DebugString()));
    const int64_t height = x_t.dim_size(1), width = x_t.dim_size(2), c_in = x_t.dim_size(3);
    const int64_t c_out = d_y_t.dim_size(3), rows = x_t.dim_size(0) * height, size = 9 * c_in * c_out;
    float* d_kernel = output<float>(context, 0, TensorShape({3, 3, c_in, c_out}));
    if (!d_kernel) return;
    const float *x = in<float>(x_t), *d_y = in<float>(d_y_t);
    std::vector<float> partial(kRowBlocks * size, 0.0f);
    const int64_t per_block = (rows + kRowBlocks - 1) / kRowBlocks;
    auto* pool = context->device()->tensorflow_cpu_worker_threads()->workers;
    pool->ParallelFor(kRowBlocks, per_block * width * size, [&](int64_t first, int64_t last) {
      for (int64_t block = first; block < last; ++block) {
        for (int64_t r = block * per_block; r < std::min(rows, (block + 1) * per_block); ++r) {
          const int64_t h = r % height;  // row r is image r / height's row h
          for (int kh = 0; kh < 3; ++kh) {
            const int64_t source = h + kh - 1;
            if (source < 0 || source >= height) continue;
            add_row(x + (r + kh - 1) * width * c_in, d_y + r * width * c_out, width, c_in, c_out, kh,
                    partial.data() + block * size);
          }
        }
      }
    });
    for (int64_t k = 0; k < size; ++k) {
      float total = 0.0f;
      for (int64_t block = 0; block < kRowBlocks; ++block) total += partial[block * size + k];
      d_kernel[k] = total;
    }
  }
};

}  // namespace

REGISTER_OP("VsegConv3x3KernelGrad")
    .Input("x: float")
    .Input("d_y: float")
    .Output("d_kernel: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->MakeShape({3, 3, c->Dim(c->input(0), 3), c->Dim(c->input(1), 3)}));
      return absl::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("VsegConv3x3KernelGrad").Device(tensorflow::DEVICE_CPU), Conv3x3KernelGrad);
