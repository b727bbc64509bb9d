// The gradient of a training-mode BatchNorm followed by a ReLU, y = relu(gamma * (x - mean) / sqrt(var + eps) +
// beta) over the channels of [P, C] (P = B * H * W pixels, channels last), as one TensorFlow CPU op of vseg's
// own: bfloat16 or float32 tensors (type attribute T), float32 per-channel values and arithmetic, for the
// training step on a CPU (built with gru_tails.cc into one library; FusedBatchNormalization with activation
// "relu" dispatches to it through vseg_keras/models/kernels/tensorflow.py):
//   VsegBatchNormReluGrad(d_y, y, x, gamma, mean, variance; epsilon) -> (d_x, d_gamma, d_beta)
//     g = d_y where y > 0, else 0 (ReLU's gradient; y is the ReLU's output), x_hat = (x - mean) / sqrt(var + eps)
//     d_beta = sum_P g, d_gamma = sum_P g * x_hat
//     d_x = gamma / sqrt(var + eps) * (g - d_beta / P - x_hat * d_gamma / P)
// `mean` and `variance` are the batch's (the biased variance: the one the forward pass normalised with).
// TensorFlow runs this as two ops, ReluGrad then FusedBatchNormGradV3 (g written and read back between them);
// here two passes over d_y, y and x: the per-channel sums (per pixel block in float32, the blocks in order: the
// same on any thread count), then d_x, an affine function of g and x per channel.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "common.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;

using namespace vseg_cpu;  // NOLINT: the shared helpers of common.h

// The channels C of `x` [..., C] after checking that `d_y` and `y` have its shape and `gamma`, `mean`, `variance`
// are [C]; an InvalidArgument error on `context` and -1 if they do not fit.
int64_t checked_channels(OpKernelContext* context) {
  const Tensor &d_y = context->input(0), &y = context->input(1), &x = context->input(2);
  bool fits = x.dims() > 0 && d_y.shape() == x.shape() && y.shape() == x.shape();
  const int64_t c = x.dims() > 0 ? x.dim_size(x.dims() - 1) : 0;
  for (int i = 3; i < 6; ++i) fits = fits && context->input(i).dims() == 1 && context->input(i).dim_size(0) == c;
  if (!fits) {
    context->CtxFailure(absl::InvalidArgumentError(
        "vseg's BatchNorm + ReLU gradient op: d_y, y and x [..., C] and gamma, mean, variance [C] do not fit: x " +
        x.shape().DebugString() + ", d_y " + d_y.shape().DebugString() + ", y " + y.shape().DebugString() +
        ", gamma " + context->input(3).shape().DebugString()));
    return -1;
  }
  return c;
}

template <typename T>
class BatchNormReluGrad : public OpKernel {
 public:
  explicit BatchNormReluGrad(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* context) override {
    const int64_t c = checked_channels(context);
    if (c < 0) return;
    const Tensor& x_t = context->input(2);
    const int64_t pixels = pixels_of(x_t, c);
    T* d_x = output<T>(context, 0, x_t.shape());
    float *d_gamma = output<float>(context, 1, context->input(3).shape()),
          *d_beta = output<float>(context, 2, context->input(3).shape());
    if (!d_x || !d_gamma || !d_beta) return;
    const T *d_y = in<T>(context->input(0)), *y = in<T>(context->input(1)), *x = in<T>(x_t);
    const float *gamma = in<float>(context->input(3)), *mean = in<float>(context->input(4)),
                *variance = in<float>(context->input(5));
    std::vector<float> sums(kBlocks * 2 * c, 0.0f);  // per block: sum g [C], then sum g * (x - mean) [C]
    for_blocks(context, pixels, 8 * c, [&](int64_t first, int64_t end, int64_t block) {
      float *sum_g = sums.data() + block * 2 * c, *sum_gx = sum_g + c;
      for (int64_t p = first; p < end; ++p) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const float upstream = load(d_y[p * c + k]), activation = load(y[p * c + k]);
          const float g = activation > 0.0f ? upstream : 0.0f;  // both loaded first: a branch-free, vectorised loop
          sum_g[k] += g;
          sum_gx[k] += g * (load(x[p * c + k]) - mean[k]);
        }
      }
    });
    // d_x = scale_g * g + scale_x * x + shift per channel.
    std::vector<float> scale_g(c), scale_x(c), shift(c);
    const float count = static_cast<float>(std::max<int64_t>(pixels, 1));
    for (int64_t k = 0; k < c; ++k) {
      const float inverse_std = 1.0f / std::sqrt(variance[k] + epsilon_);
      d_beta[k] = block_total(sums, 2 * c, k);
      const float sum_gx = block_total(sums, 2 * c, c + k);
      d_gamma[k] = sum_gx * inverse_std;
      scale_g[k] = gamma[k] * inverse_std;
      scale_x[k] = -scale_g[k] * inverse_std * inverse_std * sum_gx / count;
      shift[k] = -scale_g[k] * d_beta[k] / count - scale_x[k] * mean[k];
    }
    for_blocks(context, pixels, 8 * c, [&](int64_t first, int64_t end, int64_t) {
      for (int64_t p = first; p < end; ++p) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const float upstream = load(d_y[p * c + k]), activation = load(y[p * c + k]);
          const float g = activation > 0.0f ? upstream : 0.0f;
          d_x[p * c + k] = store<T>(scale_g[k] * g + scale_x[k] * load(x[p * c + k]) + shift[k]);
        }
      }
    });
  }

 private:
  float epsilon_;
};

}  // namespace

REGISTER_OP("VsegBatchNormReluGrad")
    .Input("d_y: T").Input("y: T").Input("x: T")
    .Input("gamma: float").Input("mean: float").Input("variance: float")
    .Attr("epsilon: float").Attr("T: {bfloat16, float}")
    .Output("d_x: T").Output("d_gamma: float").Output("d_beta: float")
    .SetShapeFn(outputs_shaped_like({2, 3, 3}));

VSEG_REGISTER_CPU_KERNELS("VsegBatchNormReluGrad", BatchNormReluGrad);
