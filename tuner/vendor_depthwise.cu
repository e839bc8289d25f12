// Depthwise convolutions for tunefarm's CUDA libraries, with the ReLU6 of MobileNet's blocks
// fused on both sides (issue 17).
//
// cuDNN runs depthwise NHWC convolutions on its legacy conv2d_grouped_direct_kernel: 196 us per
// MobileNetV2 call on the H100, where torch's kernels take 49 us
// (bench/results/vendor_profile-h100-20261206T093526Z.json), and its fused call takes ReLU but
// not ReLU6, so each ReLU6 was one more kernel. A depthwise convolution reads each input once
// and does 9 multiply-adds per element: it is bound by memory, or, on MobileNet's small layers,
// by how many loads are in flight. One thread computes one output pixel's 16, 8 or 4 bytes of
// channels with vector loads; the shim times the widths and keeps the fastest per layer. On the
// H100 that made MobileNetV2's 17 layers 76 us a call (torch: 49 us), each layer about 4 us in a
// CUDA graph whatever the width: launch and latency now bound them, not memory
// (bench/results/vendor_depthwise_widths-h100-20261206T125220Z.txt).
//
// The activation of the input (the ReLU6 of the 1x1 expansion before it) is applied as each
// value is loaded, and the bias and the output activation before each value is stored: one
// kernel where there were three.
//
// Compiled by nvcc beside vendor_shim.cc, which calls tunefarm_depthwise_launch.

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace {

struct Dims {
  int n, h, w, c;        // input, NHWC
  int oh, ow;            // output height and width (its channels are c)
  int kh, kw;            // kernel
  int sh, sw, ph, pw;    // stride, padding (symmetric)
  int dh, dw;            // dilation
};

// 0: none, 1: ReLU, 2: ReLU6. Both are 0 at 0, so padding read as 0 needs no activation.
__device__ __forceinline__ float Activate(float v, int act) {
  if (act == 1) return fmaxf(v, 0.0f);
  if (act == 2) return fminf(fmaxf(v, 0.0f), 6.0f);
  return v;
}

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}

// The register type that holds `bytes` bytes as one load or store.
template <int bytes>
struct Raw;
template <>
struct Raw<16> {
  using type = uint4;
};
template <>
struct Raw<8> {
  using type = uint2;
};
template <>
struct Raw<4> {
  using type = unsigned int;
};

// V consecutive elements, as one load where V elements are 4, 8 or 16 bytes.
template <typename T, int V>
__device__ __forceinline__ void Load(const T* __restrict__ p, float (&out)[V]) {
  constexpr int bytes = V * int(sizeof(T));
  if constexpr (bytes == 4 || bytes == 8 || bytes == 16) {
    using R = typename Raw<bytes>::type;
    const R raw = __ldg(reinterpret_cast<const R*>(p));
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = ToFloat(e[v]);
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) out[v] = ToFloat(p[v]);
  }
}

template <typename T, int V>
__device__ __forceinline__ void Store(T* __restrict__ p, const float (&in)[V]) {
  constexpr int bytes = V * int(sizeof(T));
  if constexpr (bytes == 4 || bytes == 8 || bytes == 16) {
    using R = typename Raw<bytes>::type;
    R raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int v = 0; v < V; ++v) e[v] = FromFloat<T>(in[v]);
    *reinterpret_cast<R*>(p) = raw;
  } else {
#pragma unroll
    for (int v = 0; v < V; ++v) p[v] = FromFloat<T>(in[v]);
  }
}

// y[n, oy, ox, c] = act_out(bias[c] + sum_{r,s} act_in(x[n, iy, ix, c]) * w[r, s, c]), with the
// weight laid out [kh, kw, C] so that V channels of one tap are one load. One thread computes V
// channels of one output pixel; consecutive threads take consecutive channels, then pixels, so
// a warp reads contiguous memory. K > 0 is a K x K kernel known when compiled (3 x 3, nearly
// every depthwise layer there is): its taps unroll, and all their loads are in flight at once.
template <typename T, int V, int K>
__global__ void __launch_bounds__(128)
    DepthwiseKernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ bias,
                    T* __restrict__ y, Dims d, int act_in, int act_out) {
  // 32-bit index arithmetic (the launcher checks that it fits): 64-bit division costs more than
  // the loads of a small layer.
  const unsigned groups = unsigned(d.c / V);
  const unsigned total = unsigned(d.n) * d.oh * d.ow * groups;
  const unsigned step = gridDim.x * blockDim.x;
  for (unsigned i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    const int c0 = int(i % groups) * V;
    unsigned rest = i / groups;
    const int ox = int(rest % unsigned(d.ow));
    rest /= unsigned(d.ow);
    const int oy = int(rest % unsigned(d.oh));
    const int n = int(rest / unsigned(d.oh));
    float acc[V];
    Load<T, V>(bias + c0, acc);
    const int y0 = oy * d.sh - d.ph, x0 = ox * d.sw - d.pw;
    const int kh = K > 0 ? K : d.kh, kw = K > 0 ? K : d.kw;
#pragma unroll
    for (int r = 0; r < kh; ++r) {
      const int iy = y0 + r * d.dh;
      if (iy < 0 || iy >= d.h) continue;
      const T* row = x + (int64_t(n) * d.h + iy) * d.w * d.c;
#pragma unroll
      for (int s = 0; s < kw; ++s) {
        const int ix = x0 + s * d.dw;
        if (ix < 0 || ix >= d.w) continue;
        float xv[V], wv[V];
        Load<T, V>(row + int64_t(ix) * d.c + c0, xv);
        Load<T, V>(w + (r * kw + s) * d.c + c0, wv);
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v] = fmaf(Activate(xv[v], act_in), wv[v], acc[v]);
      }
    }
#pragma unroll
    for (int v = 0; v < V; ++v) acc[v] = Activate(acc[v], act_out);
    Store<T, V>(y + ((int64_t(n) * d.oh + oy) * d.ow + ox) * d.c + c0, acc);
  }
}

template <typename T, int V>
cudaError_t Launch(const void* x, const void* w, const void* bias, void* y, const Dims& d,
                   int act_in, int act_out, cudaStream_t stream) {
  // 128 threads a block: the smallest layers (7 x 7 x 960) still spread over the SMs.
  constexpr int kThreads = 128;
  const int64_t total = int64_t(d.n) * d.oh * d.ow * (d.c / V);
  if (total >= (int64_t(1) << 31)) return cudaErrorInvalidValue;  // the kernel's 32-bit indices
  // The grid-stride loop takes what a grid this size does not; 65535 blocks are plenty.
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  const unsigned grid = unsigned(blocks < 65535 ? blocks : 65535);
  const auto* xt = static_cast<const T*>(x);
  const auto* wt = static_cast<const T*>(w);
  const auto* bt = static_cast<const T*>(bias);
  auto* yt = static_cast<T*>(y);
  if (d.kh == 3 && d.kw == 3) {
    DepthwiseKernel<T, V, 3><<<grid, kThreads, 0, stream>>>(xt, wt, bt, yt, d, act_in, act_out);
  } else {
    DepthwiseKernel<T, V, 0><<<grid, kThreads, 0, stream>>>(xt, wt, bt, yt, d, act_in, act_out);
  }
  return cudaGetLastError();
}

bool Aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

// dims: n, h, w, c, oh, ow, kh, kw, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w.
// vector_bytes: how many bytes of channels one thread takes, 16, 8, 4 or 0 (one element). The
// shim times those that apply and keeps the fastest: wide vectors make few threads, which
// leaves the small layers' loads few in flight. Returns a cudaError_t; cudaErrorInvalidValue
// where the width does not apply (channels or alignment).
extern "C" int tunefarm_depthwise_launch(const void* x, const void* w, const void* bias, void* y,
                                         int is_half, const int* dims, int act_in, int act_out,
                                         int vector_bytes, void* stream) {
  const Dims d{dims[0], dims[1], dims[2],  dims[3],  dims[4],  dims[5],  dims[6],
               dims[7], dims[8], dims[9], dims[10], dims[11], dims[12], dims[13]};
  if (int64_t(d.n) * d.oh * d.ow * d.c == 0) return cudaSuccess;
  auto on = static_cast<cudaStream_t>(stream);
  const int size = is_half ? 2 : 4;
  const int v = vector_bytes / size;
  if (vector_bytes != 0) {
    const bool aligned = Aligned(x, vector_bytes) && Aligned(w, vector_bytes) &&
                         Aligned(bias, vector_bytes) && Aligned(y, vector_bytes);
    if (vector_bytes % size != 0 || v < 1 || d.c % v != 0 || !aligned) {
      return cudaErrorInvalidValue;
    }
  }
  if (is_half) {
    switch (vector_bytes) {
      case 16: return Launch<__half, 8>(x, w, bias, y, d, act_in, act_out, on);
      case 8: return Launch<__half, 4>(x, w, bias, y, d, act_in, act_out, on);
      case 4: return Launch<__half, 2>(x, w, bias, y, d, act_in, act_out, on);
      case 0: return Launch<__half, 1>(x, w, bias, y, d, act_in, act_out, on);
    }
    return cudaErrorInvalidValue;
  }
  switch (vector_bytes) {
    case 16: return Launch<float, 4>(x, w, bias, y, d, act_in, act_out, on);
    case 8: return Launch<float, 2>(x, w, bias, y, d, act_in, act_out, on);
    case 0: return Launch<float, 1>(x, w, bias, y, d, act_in, act_out, on);
  }
  return cudaErrorInvalidValue;
}
