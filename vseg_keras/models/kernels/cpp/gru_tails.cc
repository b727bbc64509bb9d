// A cGRU's element-wise work as TensorFlow CPU ops of vseg's own, bfloat16 or float32 in and out (type attribute
// T), float32 inside, for the training step on a CPU (vseg_keras/models/kernels/tensorflow_ops.py builds it on
// first use, with batch_norm_relu.cc into one library, with the installed TensorFlow's flags and loads it;
// ConvGRUCell dispatches to it in training):
//   g++ -O3 -march=native -mno-avx512fp16 -ffast-math -fopenmp-simd -shared -fPIC gru_tails.cc \
//       batch_norm_relu.cc -o cpu_ops.so <tf compile/link flags>
// (-mno-avx512fp16: TensorFlow's Eigen headers do not compile with it under g++ 12; the loops are vectorised
// with glibc's vector expf / tanhf, hence -ffast-math and the simd pragmas; the sigmoid's input is clamped to
// +-80, where it is 0 or 1 in float32 already, so that exp never overflows.)
//
// Tensors are seen as [P, C] (P = B * H * W pixels, channels last), the gates as [P, 2C] (reset, then update):
//   VsegGruGates(pre_gates, bias, previous) -> (reset_previous, update)
//     r, z = sigmoid(pre_gates + bias) split in two; reset_previous = r * previous
//   VsegGruGatesGrad(d_reset_previous, d_update, pre_gates, bias, previous) -> (d_pre_gates, d_bias, d_previous)
//   VsegGruState(pre_candidate, bias, update, previous) -> state
//     n = tanh(pre_candidate + bias); state = (1 - z) * n + z * previous
//   VsegGruStateGrad(d_state, pre_candidate, bias, update, previous) -> (d_pre_candidate, d_bias, d_update,
//                                                                       d_previous)
// and for a first step, from a zero state (r . h_0 = 0 and z . h_0 = 0, so the reset gate is not needed):
//   VsegGruUpdateGate(pre_gates, bias) -> update                    z = sigmoid(pre_gates[..., C:] + bias[C:])
//   VsegGruUpdateGateGrad(d_update, pre_gates, bias) -> (d_pre_gates, d_bias)   (zero for the reset half)
//   VsegGruFirstState(pre_candidate, bias, update) -> state        state = (1 - z) * tanh(pre_candidate + bias)
//   VsegGruFirstStateGrad(d_state, pre_candidate, bias, update) -> (d_pre_candidate, d_bias, d_update)
// Each is one pass over its tensors, split over the intra-op threads in a fixed number of pixel blocks; the
// bias gradients are summed per block in float32 and the blocks in order (the same sums on any thread count).
// NaN payloads are not preserved by the bfloat16 rounding (round to nearest even on the bits).
// Tensors are T = uint16_t (bfloat16's bits) or float in the kernels; common.h's load/store convert.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "common.h"

namespace {

using tensorflow::OpKernel;

using namespace vseg_cpu;  // NOLINT: the shared helpers of common.h

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-std::min(80.0f, std::max(-80.0f, x)))); }

// The cell width C of `previous` [..., C] after checking the other inputs against it: each of `same` of its
// shape, `gates` (unless null) [..., 2C], `bias` [bias_factor * C]. Sets an InvalidArgument error on `context`
// and returns -1 if they do not fit (the ops index the tensors by these sizes).
int64_t checked_width(OpKernelContext* context, const Tensor& previous, std::initializer_list<const Tensor*> same,
                      const Tensor* gates, const Tensor& bias, int64_t bias_factor) {
  bool fits = previous.dims() > 0;
  const int64_t c = fits ? previous.dim_size(previous.dims() - 1) : 0;
  for (const Tensor* tensor : same) fits = fits && tensor->shape() == previous.shape();
  if (fits && gates != nullptr) {
    TensorShape expected = previous.shape();
    expected.set_dim(expected.dims() - 1, 2 * c);
    fits = gates->shape() == expected;
  }
  fits = fits && bias.dims() == 1 && bias.dim_size(0) == bias_factor * c;
  if (!fits) {
    context->CtxFailure(absl::InvalidArgumentError(
        "vseg's cGRU op: the state, the gates [..., 2C], the other tensors [..., C] and the bias do not fit: state " +
        previous.shape().DebugString() + ", bias " + bias.shape().DebugString()));
    return -1;
  }
  return c;
}

// The shape of the gates' convolution [..., 2C] with C channels: the state's.
TensorShape half_shape(const Tensor& gates) {
  TensorShape shape = gates.shape();
  if (shape.dims() > 0) shape.set_dim(shape.dims() - 1, shape.dim_size(shape.dims() - 1) / 2);
  return shape;
}

// The cell width C of the gates' convolution `gates` [..., 2C] after checking `bias` [2C] and each of `same`
// against [..., C]; an InvalidArgument error on `context` and -1 if they do not fit.
int64_t checked_gates_width(OpKernelContext* context, const Tensor& gates, std::initializer_list<const Tensor*> same,
                            const Tensor& bias) {
  bool fits = gates.dims() > 0 && gates.dim_size(gates.dims() - 1) % 2 == 0;
  const int64_t c = fits ? gates.dim_size(gates.dims() - 1) / 2 : 0;
  for (const Tensor* tensor : same) fits = fits && tensor->shape() == half_shape(gates);
  fits = fits && bias.dims() == 1 && bias.dim_size(0) == 2 * c;
  if (!fits) {
    context->CtxFailure(absl::InvalidArgumentError(
        "vseg's cGRU op: the gates [..., 2C], the other tensors [..., C] and the bias [2C] do not fit: gates " +
        gates.shape().DebugString() + ", bias " + bias.shape().DebugString()));
    return -1;
  }
  return c;
}

// The bias gradient: the blocks' float32 sums [kBlocks, n], added in block order, stored as T.
template <typename T>
void sum_blocks(const std::vector<float>& sums, int64_t n, T* target) {
  for (int64_t c = 0; c < n; ++c) target[c] = store<T>(block_total(sums, n, c));
}

template <typename T>
class GruGates : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor &pre_gates = context->input(0), &bias = context->input(1), &previous = context->input(2);
    const int64_t c = checked_width(context, previous, {}, &pre_gates, bias, 2);
    if (c < 0) return;
    const int64_t pixels = pixels_of(previous, c);
    T *rh = output<T>(context, 0, previous.shape()), *z = output<T>(context, 1, previous.shape());
    if (!rh || !z) return;
    const T *g = in<T>(pre_gates), *b = in<T>(bias), *h = in<T>(previous);
    for_blocks(context, pixels, 20 * c, [&](int64_t first, int64_t end, int64_t) {
      for (int64_t p = first; p < end; ++p) {
        const T* row = g + p * 2 * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          rh[p * c + k] = store<T>(sigmoid(load(row[k]) + load(b[k])) * load(h[p * c + k]));
          z[p * c + k] = store<T>(sigmoid(load(row[c + k]) + load(b[c + k])));
        }
      }
    });
  }
};

template <typename T>
class GruGatesGrad : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor &d_rh_t = context->input(0), &d_z_t = context->input(1), &pre_gates = context->input(2),
                 &bias = context->input(3), &previous = context->input(4);
    const int64_t c = checked_width(context, previous, {&d_rh_t, &d_z_t}, &pre_gates, bias, 2);
    if (c < 0) return;
    const int64_t pixels = pixels_of(previous, c);
    T *d_g = output<T>(context, 0, pre_gates.shape()), *d_b = output<T>(context, 1, bias.shape()),
       *d_h = output<T>(context, 2, previous.shape());
    if (!d_g || !d_b || !d_h) return;
    const T *d_rh = in<T>(d_rh_t), *d_z = in<T>(d_z_t), *g = in<T>(pre_gates), *b = in<T>(bias), *h = in<T>(previous);
    std::vector<float> sums(kBlocks * 2 * c, 0.0f);
    for_blocks(context, pixels, 30 * c, [&](int64_t first, int64_t end, int64_t block) {
      float* sum = sums.data() + block * 2 * c;
      for (int64_t p = first; p < end; ++p) {
        const T* row = g + p * 2 * c;
        T* d_row = d_g + p * 2 * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const float r = sigmoid(load(row[k]) + load(b[k]));
          const float z = sigmoid(load(row[c + k]) + load(b[c + k]));
          const float upstream = load(d_rh[p * c + k]), state = load(h[p * c + k]);
          const float d_reset = upstream * state * r * (1.0f - r);
          const float d_update = load(d_z[p * c + k]) * z * (1.0f - z);
          d_row[k] = store<T>(d_reset);
          d_row[c + k] = store<T>(d_update);
          d_h[p * c + k] = store<T>(upstream * r);
          sum[k] += d_reset;
          sum[c + k] += d_update;
        }
      }
    });
    sum_blocks(sums, 2 * c, d_b);
  }
};

template <typename T>
class GruState : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor &pre_candidate = context->input(0), &bias = context->input(1), &update = context->input(2),
                 &previous = context->input(3);
    const int64_t c = checked_width(context, previous, {&pre_candidate, &update}, nullptr, bias, 1);
    if (c < 0) return;
    const int64_t pixels = pixels_of(previous, c);
    T* s = output<T>(context, 0, previous.shape());
    if (!s) return;
    const T *a = in<T>(pre_candidate), *b = in<T>(bias), *z = in<T>(update), *h = in<T>(previous);
    for_blocks(context, pixels, 20 * c, [&](int64_t first, int64_t end, int64_t) {
      for (int64_t p = first; p < end; ++p) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const int64_t i = p * c + k;
          const float n = std::tanh(load(a[i]) + load(b[k])), gate = load(z[i]);
          s[i] = store<T>((1.0f - gate) * n + gate * load(h[i]));
        }
      }
    });
  }
};

template <typename T>
class GruStateGrad : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor &d_state = context->input(0), &pre_candidate = context->input(1), &bias = context->input(2),
                 &update = context->input(3), &previous = context->input(4);
    const int64_t c = checked_width(context, previous, {&d_state, &pre_candidate, &update}, nullptr, bias, 1);
    if (c < 0) return;
    const int64_t pixels = pixels_of(previous, c);
    T *d_a = output<T>(context, 0, previous.shape()), *d_b = output<T>(context, 1, bias.shape()),
       *d_z = output<T>(context, 2, previous.shape()), *d_h = output<T>(context, 3, previous.shape());
    if (!d_a || !d_b || !d_z || !d_h) return;
    const T *d_s = in<T>(d_state), *a = in<T>(pre_candidate), *b = in<T>(bias), *z = in<T>(update),
            *h = in<T>(previous);
    std::vector<float> sums(kBlocks * c, 0.0f);
    for_blocks(context, pixels, 30 * c, [&](int64_t first, int64_t end, int64_t block) {
      float* sum = sums.data() + block * c;
      for (int64_t p = first; p < end; ++p) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const int64_t i = p * c + k;
          const float n = std::tanh(load(a[i]) + load(b[k])), gate = load(z[i]);
          const float upstream = load(d_s[i]);
          const float d_candidate = upstream * (1.0f - gate) * (1.0f - n * n);
          d_a[i] = store<T>(d_candidate);
          d_z[i] = store<T>(upstream * (load(h[i]) - n));
          d_h[i] = store<T>(upstream * gate);
          sum[k] += d_candidate;
        }
      }
    });
    sum_blocks(sums, c, d_b);
  }
};

// The first step's gates: the update gate only, [..., C] from [..., 2C].
template <typename T>
class GruUpdateGate : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor &pre_gates = context->input(0), &bias = context->input(1);
    const int64_t c = checked_gates_width(context, pre_gates, {}, bias);
    if (c < 0) return;
    const int64_t pixels = pixels_of(pre_gates, 2 * c);
    T* z = output<T>(context, 0, half_shape(pre_gates));
    if (!z) return;
    const T *g = in<T>(pre_gates), *b = in<T>(bias);
    for_blocks(context, pixels, 10 * c, [&](int64_t first, int64_t end, int64_t) {
      for (int64_t p = first; p < end; ++p) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) z[p * c + k] = store<T>(sigmoid(load(g[p * 2 * c + c + k]) + load(b[c + k])));
      }
    });
  }
};

template <typename T>
class GruUpdateGateGrad : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor &d_update = context->input(0), &pre_gates = context->input(1), &bias = context->input(2);
    const int64_t c = checked_gates_width(context, pre_gates, {&d_update}, bias);
    if (c < 0) return;
    const int64_t pixels = pixels_of(pre_gates, 2 * c);
    T *d_g = output<T>(context, 0, pre_gates.shape()), *d_b = output<T>(context, 1, bias.shape());
    if (!d_g || !d_b) return;
    const T *d_z = in<T>(d_update), *g = in<T>(pre_gates), *b = in<T>(bias);
    std::vector<float> sums(kBlocks * 2 * c, 0.0f);
    for_blocks(context, pixels, 15 * c, [&](int64_t first, int64_t end, int64_t block) {
      float* sum = sums.data() + block * 2 * c;
      for (int64_t p = first; p < end; ++p) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const float z = sigmoid(load(g[p * 2 * c + c + k]) + load(b[c + k]));
          const float d_gate = load(d_z[p * c + k]) * z * (1.0f - z);
          d_g[p * 2 * c + k] = 0;
          d_g[p * 2 * c + c + k] = store<T>(d_gate);
          sum[c + k] += d_gate;
        }
      }
    });
    sum_blocks(sums, 2 * c, d_b);
  }
};

// The first step's new state, from a zero state.
template <typename T>
class GruFirstState : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor &pre_candidate = context->input(0), &bias = context->input(1), &update = context->input(2);
    const int64_t c = checked_width(context, update, {&pre_candidate}, nullptr, bias, 1);
    if (c < 0) return;
    const int64_t pixels = pixels_of(update, c);
    T* s = output<T>(context, 0, update.shape());
    if (!s) return;
    const T *a = in<T>(pre_candidate), *b = in<T>(bias), *z = in<T>(update);
    for_blocks(context, pixels, 15 * c, [&](int64_t first, int64_t end, int64_t) {
      for (int64_t p = first; p < end; ++p) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const int64_t i = p * c + k;
          s[i] = store<T>((1.0f - load(z[i])) * std::tanh(load(a[i]) + load(b[k])));
        }
      }
    });
  }
};

template <typename T>
class GruFirstStateGrad : public OpKernel {
 public:
  using OpKernel::OpKernel;
  void Compute(OpKernelContext* context) override {
    const Tensor &d_state = context->input(0), &pre_candidate = context->input(1), &bias = context->input(2),
                 &update = context->input(3);
    const int64_t c = checked_width(context, update, {&d_state, &pre_candidate}, nullptr, bias, 1);
    if (c < 0) return;
    const int64_t pixels = pixels_of(update, c);
    T *d_a = output<T>(context, 0, update.shape()), *d_b = output<T>(context, 1, bias.shape()),
       *d_z = output<T>(context, 2, update.shape());
    if (!d_a || !d_b || !d_z) return;
    const T *d_s = in<T>(d_state), *a = in<T>(pre_candidate), *b = in<T>(bias), *z = in<T>(update);
    std::vector<float> sums(kBlocks * c, 0.0f);
    for_blocks(context, pixels, 25 * c, [&](int64_t first, int64_t end, int64_t block) {
      float* sum = sums.data() + block * c;
      for (int64_t p = first; p < end; ++p) {
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const int64_t i = p * c + k;
          const float n = std::tanh(load(a[i]) + load(b[k])), upstream = load(d_s[i]);
          const float d_candidate = upstream * (1.0f - load(z[i])) * (1.0f - n * n);
          d_a[i] = store<T>(d_candidate);
          d_z[i] = store<T>(-upstream * n);
          sum[k] += d_candidate;
        }
      }
    });
    sum_blocks(sums, c, d_b);
  }
};

}  // namespace

REGISTER_OP("VsegGruGates")
    .Attr("T: {bfloat16, float}")
    .Input("pre_gates: T").Input("bias: T").Input("previous: T")
    .Output("reset_previous: T").Output("update: T")
    .SetShapeFn(outputs_shaped_like({2, 2}));
REGISTER_OP("VsegGruGatesGrad")
    .Attr("T: {bfloat16, float}")
    .Input("d_reset_previous: T").Input("d_update: T").Input("pre_gates: T")
    .Input("bias: T").Input("previous: T")
    .Output("d_pre_gates: T").Output("d_bias: T").Output("d_previous: T")
    .SetShapeFn(outputs_shaped_like({2, 3, 4}));
REGISTER_OP("VsegGruState")
    .Attr("T: {bfloat16, float}")
    .Input("pre_candidate: T").Input("bias: T").Input("update: T").Input("previous: T")
    .Output("state: T")
    .SetShapeFn(outputs_shaped_like({3}));
REGISTER_OP("VsegGruStateGrad")
    .Attr("T: {bfloat16, float}")
    .Input("d_state: T").Input("pre_candidate: T").Input("bias: T")
    .Input("update: T").Input("previous: T")
    .Output("d_pre_candidate: T").Output("d_bias: T").Output("d_update: T")
    .Output("d_previous: T")
    .SetShapeFn(outputs_shaped_like({4, 2, 4, 4}));

REGISTER_OP("VsegGruUpdateGate")
    .Attr("T: {bfloat16, float}")
    .Input("pre_gates: T").Input("bias: T").Output("update: T")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      tensorflow::shape_inference::ShapeHandle gates = c->input(0), half;
      tensorflow::shape_inference::DimensionHandle channels;
      TF_RETURN_IF_ERROR(c->WithRankAtLeast(gates, 1, &gates));
      TF_RETURN_IF_ERROR(c->Divide(c->Dim(gates, -1), 2, /*evenly_divisible=*/true, &channels));
      TF_RETURN_IF_ERROR(c->ReplaceDim(gates, -1, channels, &half));
      c->set_output(0, half);
      return absl::OkStatus();
    });
REGISTER_OP("VsegGruUpdateGateGrad")
    .Attr("T: {bfloat16, float}")
    .Input("d_update: T").Input("pre_gates: T").Input("bias: T")
    .Output("d_pre_gates: T").Output("d_bias: T")
    .SetShapeFn(outputs_shaped_like({1, 2}));
REGISTER_OP("VsegGruFirstState")
    .Attr("T: {bfloat16, float}")
    .Input("pre_candidate: T").Input("bias: T").Input("update: T").Output("state: T")
    .SetShapeFn(outputs_shaped_like({2}));
REGISTER_OP("VsegGruFirstStateGrad")
    .Attr("T: {bfloat16, float}")
    .Input("d_state: T").Input("pre_candidate: T").Input("bias: T").Input("update: T")
    .Output("d_pre_candidate: T").Output("d_bias: T").Output("d_update: T")
    .SetShapeFn(outputs_shaped_like({3, 2, 3}));

VSEG_REGISTER_CPU_KERNELS("VsegGruGates", GruGates);
VSEG_REGISTER_CPU_KERNELS("VsegGruGatesGrad", GruGatesGrad);
VSEG_REGISTER_CPU_KERNELS("VsegGruState", GruState);
VSEG_REGISTER_CPU_KERNELS("VsegGruStateGrad", GruStateGrad);
VSEG_REGISTER_CPU_KERNELS("VsegGruUpdateGate", GruUpdateGate);
VSEG_REGISTER_CPU_KERNELS("VsegGruUpdateGateGrad", GruUpdateGateGrad);
VSEG_REGISTER_CPU_KERNELS("VsegGruFirstState", GruFirstState);
VSEG_REGISTER_CPU_KERNELS("VsegGruFirstStateGrad", GruFirstStateGrad);
