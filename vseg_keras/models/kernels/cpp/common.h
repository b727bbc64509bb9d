// What vseg's TensorFlow CPU ops share (gru_tails.cc, batch_norm_relu.cc; built into one library by
// vseg_keras/models/kernels/tensorflow_ops.py): bfloat16 <-> float32, tensor data, outputs, and the fixed split
// of a [P, C] tensor's P pixels into blocks on the intra-op threads.

#ifndef VSEG_KERNELS_CPP_COMMON_H_
#define VSEG_KERNELS_CPP_COMMON_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/threadpool.h"

namespace vseg_cpu {

using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;

constexpr int64_t kBlocks = 64;  // pixel blocks per op: a fixed split, so per-channel sums do not depend on threads

inline float to_float(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof(value));
  return value;
}

inline uint16_t to_bfloat16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// A stored value as float32, and float32 stored as T: the ops' tensors are bfloat16 (kept as their bits,
// uint16_t) or float32 (float), their arithmetic float32.
inline float load(uint16_t bits) { return to_float(bits); }
inline float load(float value) { return value; }
template <typename T>
T store(float value);
template <>
inline uint16_t store<uint16_t>(float value) { return to_bfloat16(value); }
template <>
inline float store<float>(float value) { return value; }

// The data of a bfloat16 tensor (as bits), or of a float32 one with T = float.
template <typename T = uint16_t>
const T* in(const Tensor& t) { return reinterpret_cast<const T*>(t.tensor_data().data()); }

// Allocates output `index` of `shape` and returns its data, or null with the error set on `context`.
template <typename T = uint16_t>
T* output(OpKernelContext* context, int index, const TensorShape& shape) {
  Tensor* tensor = nullptr;
  const absl::Status status = context->allocate_output(index, shape, &tensor);
  if (!status.ok()) {
    context->SetStatus(status);
    return nullptr;
  }
  return reinterpret_cast<T*>(const_cast<char*>(tensor->tensor_data().data()));
}

// Runs body(first_pixel, end_pixel, block) over kBlocks blocks of the P pixels on the intra-op threads.
template <typename Body>
void for_blocks(OpKernelContext* context, int64_t pixels, int64_t cost_per_pixel, Body body) {
  const int64_t size = (pixels + kBlocks - 1) / kBlocks;
  auto* pool = context->device()->tensorflow_cpu_worker_threads()->workers;
  pool->ParallelFor(kBlocks, size * cost_per_pixel, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      body(std::min(pixels, block * size), std::min(pixels, (block + 1) * size), block);
    }
  });
}

// Pixels of a [..., C] tensor (0 when C is 0).
inline int64_t pixels_of(const Tensor& tensor, int64_t c) { return c > 0 ? tensor.NumElements() / c : 0; }

// Channel `c` of the blocks' float32 sums [kBlocks, n], added in block order (the same on any thread count).
inline float block_total(const std::vector<float>& sums, int64_t n, int64_t c) {
  float total = 0.0f;
  for (int64_t block = 0; block < kBlocks; ++block) total += sums[block * n + c];
  return total;
}

}  // namespace vseg_cpu

// A shape function giving output i the shape of input `inputs[i]` (an op's outputs shaped like some of its inputs).
inline auto outputs_shaped_like(std::initializer_list<int> inputs) {
  const std::vector<int> sources(inputs);
  return [sources](tensorflow::shape_inference::InferenceContext* c) {
    for (size_t i = 0; i < sources.size(); ++i) c->set_output(static_cast<int>(i), c->input(sources[i]));
    return absl::OkStatus();
  };
}

// Registers the CPU kernels of op `name` (type attribute T): class template `kernel` with bfloat16 stored as its
// bits (uint16_t) and with float32.
#define VSEG_REGISTER_CPU_KERNELS(name, kernel)                                                                 \
  REGISTER_KERNEL_BUILDER(Name(name).Device(tensorflow::DEVICE_CPU).TypeConstraint<tensorflow::bfloat16>("T"), \
                          kernel<uint16_t>);                                                                    \
  REGISTER_KERNEL_BUILDER(Name(name).Device(tensorflow::DEVICE_CPU).TypeConstraint<float>("T"), kernel<float>)

#endif  // VSEG_KERNELS_CPP_COMMON_H_
