// Residual add and layer norm in one kernel, with the fp16 copy the next matmul reads (issue 17).
//
// With --fp16, ToMixedPrecision keeps BERT's residual stream and layer norms in fp32, so every
// sublayer ends in three TVM kernels: cast the projection's fp16 output and add the residual,
// the layer norm, and its cast back to fp16 for the next projection (six a layer, each a few
// microseconds on 128 x 768 values). Here one block (variant 0) or one warp (variant 1, four rows
// a block, no block barriers) normalizes one row: it adds the two inputs, keeps the row in
// registers for the mean and variance (reductions in fp32), and writes the fp32 result (the
// residual stream) and, where asked, its fp16 copy. The shim times both per shape.
//
// Compiled by nvcc beside vendor_shim.cc, which calls tunefarm_add_layer_norm_launch.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace {

constexpr int kThreads = 256;
constexpr int kMaxPerThread = 8;  // rows up to 2048 values

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// The sum over the block; every thread gets it. `scratch` holds one value per warp.
__device__ float BlockSum(float v, float* scratch) {
  v = WarpSum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by the previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];
  return total;
}

template <typename X>
__global__ void __launch_bounds__(kThreads)
    AddLayerNormKernel(const X* __restrict__ x, const float* __restrict__ residual,
                       const float* __restrict__ gamma, const float* __restrict__ beta,
                       float* __restrict__ y, __half* __restrict__ y_half, int cols,
                       float epsilon) {
  __shared__ float scratch[kThreads / 32];
  const int64_t base = int64_t(blockIdx.x) * cols;
  float values[kMaxPerThread];
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kMaxPerThread; ++i) {
    const int c = threadIdx.x + i * kThreads;
    values[i] = 0.0f;
    if (c < cols) {
      values[i] = ToFloat(x[base + c]);
      if (residual != nullptr) values[i] += residual[base + c];
      sum += values[i];
    }
  }
  const float mean = BlockSum(sum, scratch) / cols;
  float squares = 0.0f;
#pragma unroll
  for (int i = 0; i < kMaxPerThread; ++i) {
    const int c = threadIdx.x + i * kThreads;
    if (c < cols) {
      const float centered = values[i] - mean;
      squares += centered * centered;
    }
  }
  const float scale = rsqrtf(BlockSum(squares, scratch) / cols + epsilon);
#pragma unroll
  for (int i = 0; i < kMaxPerThread; ++i) {
    const int c = threadIdx.x + i * kThreads;
    if (c < cols) {
      const float out = (values[i] - mean) * scale * gamma[c] + beta[c];
      y[base + c] = out;
      if (y_half != nullptr) y_half[base + c] = __float2half_rn(out);
    }
  }
}


constexpr int kRowsPerWarpBlock = 4;

// Variant 1: one warp a row, rows of up to 32 * kPerLane values.
template <typename X, int kPerLane>
__global__ void __launch_bounds__(kRowsPerWarpBlock * 32)
    AddLayerNormWarpKernel(const X* __restrict__ x, const float* __restrict__ residual,
                           const float* __restrict__ gamma, const float* __restrict__ beta,
                           float* __restrict__ y, __half* __restrict__ y_half, int64_t rows,
                           int cols, float epsilon) {
  const int lane = threadIdx.x % 32;
  const int64_t row = int64_t(blockIdx.x) * kRowsPerWarpBlock + threadIdx.x / 32;
  if (row >= rows) return;
  const int64_t base = row * cols;
  float values[kPerLane];
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int c = lane + i * 32;
    values[i] = 0.0f;
    if (c < cols) {
      values[i] = ToFloat(x[base + c]);
      if (residual != nullptr) values[i] += residual[base + c];
      sum += values[i];
    }
  }
  const float mean = WarpSum(sum) / cols;
  float squares = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int c = lane + i * 32;
    if (c < cols) {
      const float centered = values[i] - mean;
      squares += centered * centered;
    }
  }
  const float scale = rsqrtf(WarpSum(squares) / cols + epsilon);
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int c = lane + i * 32;
    if (c < cols) {
      const float out = (values[i] - mean) * scale * gamma[c] + beta[c];
      y[base + c] = out;
      if (y_half != nullptr) y_half[base + c] = __float2half_rn(out);
    }
  }
}

template <typename X>
cudaError_t Launch(int variant, const X* x, const float* residual, const float* gamma,
                   const float* beta, float* y, __half* y_half, int64_t rows, int cols,
                   float epsilon, cudaStream_t on) {
  if (variant == 0) {
    AddLayerNormKernel<X><<<unsigned(rows), kThreads, 0, on>>>(x, residual, gamma, beta, y,
                                                                y_half, cols, epsilon);
    return cudaGetLastError();
  }
  if (variant != 1) return cudaErrorInvalidValue;
  const unsigned blocks = unsigned((rows + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock);
  const int threads = kRowsPerWarpBlock * 32;
  if (cols <= 8 * 32) {
    AddLayerNormWarpKernel<X, 8><<<blocks, threads, 0, on>>>(x, residual, gamma, beta, y, y_half,
                                                             rows, cols, epsilon);
  } else if (cols <= 16 * 32) {
    AddLayerNormWarpKernel<X, 16><<<blocks, threads, 0, on>>>(x, residual, gamma, beta, y,
                                                              y_half, rows, cols, epsilon);
  } else if (cols <= 32 * 32) {
    AddLayerNormWarpKernel<X, 32><<<blocks, threads, 0, on>>>(x, residual, gamma, beta, y,
                                                              y_half, rows, cols, epsilon);
  } else {
    AddLayerNormWarpKernel<X, 64><<<blocks, threads, 0, on>>>(x, residual, gamma, beta, y,
                                                              y_half, rows, cols, epsilon);
  }
  return cudaGetLastError();
}

}  // namespace

extern "C" int tunefarm_add_layer_norm_max_cols() { return kThreads * kMaxPerThread; }

// y = layer_norm(x + residual) over rows of `cols` values, gamma and beta fp32; x fp16
// (x_half) or fp32; residual (or null) and y fp32; y_half (or null) the fp16 copy of y.
// variant: 0 (a block a row) or 1 (a warp a row). Returns a cudaError_t.
extern "C" int tunefarm_add_layer_norm_launch(const void* x, int x_half, const void* residual,
                                              const void* gamma, const void* beta, void* y,
                                              void* y_half, int64_t rows, int cols,
                                              float epsilon, int variant, void* stream) {
  static_assert(kThreads * kMaxPerThread == 64 * 32, "both variants take rows of 2048 values");
  if (rows <= 0 || cols <= 0 || cols > kThreads * kMaxPerThread || rows > INT32_MAX) {
    return cudaErrorInvalidValue;
  }
  auto on = static_cast<cudaStream_t>(stream);
  const auto* r = static_cast<const float*>(residual);
  const auto* g = static_cast<const float*>(gamma);
  const auto* b = static_cast<const float*>(beta);
  auto* out = static_cast<float*>(y);
  auto* out_half = static_cast<__half*>(y_half);
  if (x_half) {
    return Launch(variant, static_cast<const __half*>(x), r, g, b, out, out_half, rows, cols,
                  epsilon, on);
  }
  return Launch(variant, static_cast<const float*>(x), r, g, b, out, out_half, rows, cols,
                epsilon, on);
}
