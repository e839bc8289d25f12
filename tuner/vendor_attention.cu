// Scaled dot-product attention for tunefarm's CUDA libraries: softmax(Q K^T * scale + mask) V
// in one kernel (issue 17).
//
// Imported BERT spells each layer's attention as ~9 TVM kernels: three head transposes, two
// batched matmuls, the scale, cast and mask add, the softmax, its cast back to fp16 and the
// transpose back (bench/README.md, "BERT's attention and layer norms"). Every one is a launch
// of a few microseconds on tensors that fit in one SM's shared memory. Here one block takes 16
// query rows of one head: it loads the head's K and V into shared memory, each warp computes one
// or two rows' scores (keys spread over the lanes), their softmax with warp reductions, and the
// weighted sum of V (output dimensions spread over the lanes). Q, K and V are read where the
// projections wrote them and the output written where the next projection reads it: the head
// split and merge are strides.
//
// Accumulation, the scale, the mask and the softmax are fp32; Q, K, V and the output fp16. On
// the H100 the first version (8 warps of 2 rows, the mask read after the scores) took 8.5 us a
// BERT-base layer, where torch's softmax, batched matmuls and transposes take ~9 us together
// (bench/results/torch_path-h100-20261206T151554Z.json).
// Compiled by nvcc beside vendor_shim.cc, which calls tunefarm_attention_launch.

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>

namespace {

// Every variant takes 16 query rows a block. The scalar ones: 8 warps of 2 rows (K's
// shared-memory reads serve both rows) or 16 warps of 1 (twice the warps to hide latency); the
// tensor-core ones further down. The shim times them per shape.
constexpr int kRowsPerBlock = 16;
constexpr int kMaxKeysPerLane = 8;  // keys up to 256

// Strides in elements; the head dimension's stride is 1.
struct Layout {
  int64_t batch, head, row;
};

struct Params {
  int b, h, s, sk, d;
  Layout q, k, v, o;
  int64_t mask_batch, mask_head, mask_row, mask_key;  // 0 along broadcast axes
  float scale;
};

// Shared memory: Q rows (a float2 per pair), P rows, V, and K padded by one word a row (a warp
// reading one pair of 32 keys then hits 32 banks).
__host__ __device__ inline size_t SharedBytes(int sk, int d) {
  const int pairs = d / 2;
  return sizeof(float) * (size_t(kRowsPerBlock) * pairs * 2 + size_t(kRowsPerBlock) * sk +
                          size_t(sk) * (pairs + 1) + size_t(sk) * pairs);
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset /= 2) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float Load(const float* p) { return *p; }
__device__ __forceinline__ float Load(const __half* p) { return __half2float(*p); }

// This warp's rows' mask values, rows first_row... (clamped to the last row), lane l taking keys
// l, l + 32, ...; 0 where there is no mask.
template <int kRows, int KEYS, typename Mask>
__device__ __forceinline__ void LoadMask(float (&bias)[kRows][KEYS], const Mask* mask,
                                         const Params& p, int bi, int hi, int first_row,
                                         int lane) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int row = min(first_row + r, p.s - 1);
#pragma unroll
    for (int t = 0; t < KEYS; ++t) {
      const int j = min(lane + 32 * t, p.sk - 1);
      bias[r][t] = mask == nullptr ? 0.0f
                                   : Load(mask + bi * p.mask_batch + hi * p.mask_head +
                                          row * p.mask_row + j * p.mask_key);
    }
  }
}

// Softmax of one row whose keys are spread over the warp (lane l: keys l, l + 32, ...). `x`
// holds the scaled, masked scores of the keys below sk; on return, their weights, and 0 past
// sk. Every key masked with -inf: weights 0, as scaled_dot_product_attention's decomposition
// gives (a bare softmax would give NaN).
template <int KEYS>
__device__ __forceinline__ void WarpSoftmax(float (&x)[KEYS], int lane, int sk) {
  float best = -INFINITY;
#pragma unroll
  for (int t = 0; t < KEYS; ++t) {
    if (lane + 32 * t < sk) best = fmaxf(best, x[t]);
  }
  best = WarpMax(best);
  const bool empty = best == -INFINITY;
  float total = 0.0f;
#pragma unroll
  for (int t = 0; t < KEYS; ++t) {
    x[t] = (empty || lane + 32 * t >= sk) ? 0.0f : __expf(x[t] - best);
    total += x[t];
  }
  total = WarpSum(total);  // every lane, masked row or not: the shuffle needs the whole warp
  const float inverse = empty ? 0.0f : 1.0f / total;
#pragma unroll
  for (int t = 0; t < KEYS; ++t) x[t] *= inverse;
}

template <int kWarps, int KEYS, typename Mask>
__global__ void __launch_bounds__(kWarps * 32)
    AttentionKernel(const __half* __restrict__ q, const __half* __restrict__ k,
                    const __half* __restrict__ v, const Mask* __restrict__ mask,
                    __half* __restrict__ out, Params p) {
  constexpr int kRowsPerWarp = kRowsPerBlock / kWarps;
  extern __shared__ float2 shared[];
  const int pairs = p.d / 2;
  const int k_words = pairs + 1;
  // V before K: V's rows take 16-byte stores, K's padded ones 4-byte stores.
  float2* qs = shared;                                                  // kRowsPerBlock x pairs
  float* ps = reinterpret_cast<float*>(qs + kRowsPerBlock * pairs);     // kRowsPerBlock x sk
  __half2* vs = reinterpret_cast<__half2*>(ps + kRowsPerBlock * p.sk);  // sk x pairs
  __half2* ks = vs + p.sk * pairs;                                      // sk x (pairs + 1)

  const int bi = blockIdx.z, hi = blockIdx.y, row0 = blockIdx.x * kRowsPerBlock;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const __half* kh = k + bi * p.k.batch + hi * p.k.head;
  const __half* vh = v + bi * p.v.batch + hi * p.v.head;

  // This warp's mask values, loaded first: their latency hides behind the K and V loads.
  float bias[kRowsPerWarp][KEYS];
  LoadMask(bias, mask, p, bi, hi, row0 + warp * kRowsPerWarp, lane);

  // K and V of this head, 16 bytes a load (the rewrite asks d and the strides for multiples of 8).
  const int chunks = p.d / 8;
  for (int i = threadIdx.x; i < p.sk * chunks; i += blockDim.x) {
    const int j = i / chunks, c = i - j * chunks;
    const uint4 kc = *reinterpret_cast<const uint4*>(kh + j * p.k.row + c * 8);
    const uint4 vc = *reinterpret_cast<const uint4*>(vh + j * p.v.row + c * 8);
    __half2* kd = ks + j * k_words + c * 4;  // padded rows: not 16-byte aligned
    kd[0] = *reinterpret_cast<const __half2*>(&kc.x);
    kd[1] = *reinterpret_cast<const __half2*>(&kc.y);
    kd[2] = *reinterpret_cast<const __half2*>(&kc.z);
    kd[3] = *reinterpret_cast<const __half2*>(&kc.w);
    *reinterpret_cast<uint4*>(vs + j * pairs + c * 4) = vc;
  }
  for (int i = threadIdx.x; i < kRowsPerBlock * pairs; i += blockDim.x) {
    const int r = i / pairs, c = i - r * pairs;
    const int row = min(row0 + r, p.s - 1);  // rows past the end compute row s-1 and store nothing
    const __half2 qv =
        reinterpret_cast<const __half2*>(q + bi * p.q.batch + hi * p.q.head + row * p.q.row)[c];
    qs[i] = __half22float2(qv);
  }
  __syncthreads();

  // Scores of this warp's rows: lane l takes keys l, l + 32, ...
  float s[kRowsPerWarp][KEYS];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int t = 0; t < KEYS; ++t) s[r][t] = 0.0f;
  const float2* qw = qs + warp * kRowsPerWarp * pairs;
  for (int c = 0; c < pairs; ++c) {
    float2 qr[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) qr[r] = qw[r * pairs + c];
#pragma unroll
    for (int t = 0; t < KEYS; ++t) {
      const int j = min(lane + 32 * t, p.sk - 1);  // keys past the end are dropped below
      const float2 kv = __half22float2(ks[j * k_words + c]);
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) s[r][t] += qr[r].x * kv.x + qr[r].y * kv.y;
    }
  }

  // Softmax of each row over its keys, into shared memory for the weighted sum.
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
#pragma unroll
    for (int t = 0; t < KEYS; ++t) s[r][t] = s[r][t] * p.scale + bias[r][t];
    WarpSoftmax(s[r], lane, p.sk);
    float* prow = ps + (warp * kRowsPerWarp + r) * p.sk;
#pragma unroll
    for (int t = 0; t < KEYS; ++t) {
      if (lane + 32 * t < p.sk) prow[lane + 32 * t] = s[r][t];
    }
  }
  __syncwarp();

  // out = P V: lane l takes output pairs l, l + 32, ...
  const float* pw = ps + warp * kRowsPerWarp * p.sk;
  for (int c = lane; c < pairs; c += 32) {
    float2 acc[kRowsPerWarp];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) acc[r] = make_float2(0.0f, 0.0f);
#pragma unroll 4
    for (int j = 0; j < p.sk; ++j) {
      const float2 vv = __half22float2(vs[j * pairs + c]);
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float w = pw[r * p.sk + j];
        acc[r].x += w * vv.x;
        acc[r].y += w * vv.y;
      }
    }
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = row0 + warp * kRowsPerWarp + r;
      if (row < p.s) {
        __half2* o = reinterpret_cast<__half2*>(out + bi * p.o.batch + hi * p.o.head +
                                                row * p.o.row);
        o[c] = __floats2half2_rn(acc[r].x, acc[r].y);
      }
    }
  }
}

// One launch of `kernel` (a block of `threads` per 16 query rows of a head) with `bytes` of
// shared memory.
template <typename Mask>
cudaError_t LaunchKernel(void (*kernel)(const __half*, const __half*, const __half*, const Mask*,
                                        __half*, Params),
                         int threads, size_t bytes, const Params& p, const void* q, const void* k,
                         const void* v, const void* mask, void* out, cudaStream_t stream) {
  if (bytes > 48 * 1024) {
    // Above 48 KB a kernel must ask; a graph capture does not record this call, so it is made
    // on every launch (it is a host-side attribute, no work on the stream).
    const cudaError_t status =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    if (status != cudaSuccess) {
      cudaGetLastError();  // more than this GPU has: this variant's failure, not the next call's
      return status;
    }
  }
  const dim3 grid((p.s + kRowsPerBlock - 1) / kRowsPerBlock, p.h, p.b);
  kernel<<<grid, threads, bytes, stream>>>(
      static_cast<const __half*>(q), static_cast<const __half*>(k),
      static_cast<const __half*>(v), static_cast<const Mask*>(mask), static_cast<__half*>(out),
      p);
  return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------
// Tensor-core variants (2: 4 warps, 3: 8 warps): the same 16 query rows a block, with Q K^T and
// P V as 16x16x16 wmma products (fp16 in, fp32 accumulate). The scores go through shared memory
// for the softmax, and P is rounded to fp16 for the second product, as torch's fp16 attention
// rounds its softmax. Head sizes that are multiples of 16 only; keys are padded to 16 with
// zeros.

// Offsets in bytes of each shared-memory region, each 128-byte aligned (wmma wants 32); leading
// dimensions in elements, padded so that consecutive rows start 4 banks apart.
struct TensorCoreLayout {
  int keys_padded, q_ld, kv_ld, s_ld, o_ld, p_ld;
  size_t q_at, k_at, v_at, s_at, p_at, bytes;
};

__host__ __device__ inline size_t Aligned128(size_t bytes) { return (bytes + 127) / 128 * 128; }

__host__ __device__ inline TensorCoreLayout TensorCoreShared(int sk, int d) {
  TensorCoreLayout l{};
  l.keys_padded = (sk + 15) / 16 * 16;
  l.q_ld = l.kv_ld = d + 8;         // halves
  l.s_ld = l.keys_padded + 4;       // floats: the scores
  l.o_ld = d + 4;                   // floats: the output, in the scores' place
  l.p_ld = l.keys_padded + 8;       // halves
  l.q_at = 0;
  l.k_at = l.q_at + Aligned128(sizeof(__half) * kRowsPerBlock * l.q_ld);
  l.v_at = l.k_at + Aligned128(sizeof(__half) * l.keys_padded * l.kv_ld);
  l.s_at = l.v_at + Aligned128(sizeof(__half) * l.keys_padded * l.kv_ld);
  const int floats = l.s_ld > l.o_ld ? l.s_ld : l.o_ld;
  l.p_at = l.s_at + Aligned128(sizeof(float) * kRowsPerBlock * floats);
  l.bytes = l.p_at + Aligned128(sizeof(__half) * kRowsPerBlock * l.p_ld);
  return l;
}

template <int kWarps, int KEYS, typename Mask>
__global__ void __launch_bounds__(kWarps * 32)
    TensorCoreAttentionKernel(const __half* __restrict__ q, const __half* __restrict__ k,
                              const __half* __restrict__ v, const Mask* __restrict__ mask,
                              __half* __restrict__ out, Params p) {
  namespace wmma = nvcuda::wmma;
  constexpr int kRowsPerWarp = kRowsPerBlock / kWarps;
  extern __shared__ __align__(128) unsigned char tc_shared[];
  const TensorCoreLayout l = TensorCoreShared(p.sk, p.d);
  __half* qs = reinterpret_cast<__half*>(tc_shared + l.q_at);
  __half* ks = reinterpret_cast<__half*>(tc_shared + l.k_at);
  __half* vs = reinterpret_cast<__half*>(tc_shared + l.v_at);
  float* ss = reinterpret_cast<float*>(tc_shared + l.s_at);
  __half* ps = reinterpret_cast<__half*>(tc_shared + l.p_at);

  const int bi = blockIdx.z, hi = blockIdx.y, row0 = blockIdx.x * kRowsPerBlock;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const __half* kh = k + bi * p.k.batch + hi * p.k.head;
  const __half* vh = v + bi * p.v.batch + hi * p.v.head;

  float bias[kRowsPerWarp][KEYS];
  LoadMask(bias, mask, p, bi, hi, row0 + warp * kRowsPerWarp, lane);

  // K and V, 16 bytes a load; the padding keys are zeros, so their products are zeros.
  const int chunks = p.d / 8;
  for (int i = threadIdx.x; i < l.keys_padded * chunks; i += blockDim.x) {
    const int j = i / chunks, c = i - j * chunks;
    uint4 kc = make_uint4(0, 0, 0, 0), vc = make_uint4(0, 0, 0, 0);
    if (j < p.sk) {
      kc = *reinterpret_cast<const uint4*>(kh + j * p.k.row + c * 8);
      vc = *reinterpret_cast<const uint4*>(vh + j * p.v.row + c * 8);
    }
    *reinterpret_cast<uint4*>(ks + j * l.kv_ld + c * 8) = kc;
    *reinterpret_cast<uint4*>(vs + j * l.kv_ld + c * 8) = vc;
  }
  // Q, 4 bytes a load (its strides are only asked to be even).
  const int pairs = p.d / 2;
  for (int i = threadIdx.x; i < kRowsPerBlock * pairs; i += blockDim.x) {
    const int r = i / pairs, c = i - r * pairs;
    const int row = min(row0 + r, p.s - 1);  // rows past the end compute row s-1, store nothing
    reinterpret_cast<__half2*>(qs + r * l.q_ld)[c] =
        reinterpret_cast<const __half2*>(q + bi * p.q.batch + hi * p.q.head + row * p.q.row)[c];
  }
  __syncthreads();

  // Scores: warp w takes key tiles w, w + kWarps, ...
  const int key_tiles = l.keys_padded / 16, d_tiles = p.d / 16;
  for (int n = warp; n < key_tiles; n += kWarps) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int c = 0; c < d_tiles; ++c) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
      wmma::load_matrix_sync(a, qs + c * 16, l.q_ld);
      wmma::load_matrix_sync(b, ks + n * 16 * l.kv_ld + c * 16, l.kv_ld);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(ss + n * 16, acc, l.s_ld, wmma::mem_row_major);
  }
  __syncthreads();

  // Softmax of each of this warp's rows, keys over the lanes; P in fp16, zeros past sk.
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int local = warp * kRowsPerWarp + r;
    float x[KEYS];
#pragma unroll
    for (int t = 0; t < KEYS; ++t) {
      const int j = lane + 32 * t;
      x[t] = j < p.sk ? ss[local * l.s_ld + j] * p.scale + bias[r][t] : 0.0f;
    }
    WarpSoftmax(x, lane, p.sk);
#pragma unroll
    for (int t = 0; t < KEYS; ++t) {
      const int j = lane + 32 * t;
      if (j < l.keys_padded) ps[local * l.p_ld + j] = __float2half_rn(x[t]);
    }
  }
  __syncthreads();

  // out = P V: warp w takes output column tiles w, w + kWarps, ...; fp32 into the scores' place.
  float* os = ss;
  for (int t = warp; t < d_tiles; t += kWarps) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int n = 0; n < key_tiles; ++n) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
      wmma::load_matrix_sync(a, ps + n * 16, l.p_ld);
      wmma::load_matrix_sync(b, vs + n * 16 * l.kv_ld + t * 16, l.kv_ld);
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(os + t * 16, acc, l.o_ld, wmma::mem_row_major);
  }
  __syncthreads();

  for (int i = threadIdx.x; i < kRowsPerBlock * pairs; i += blockDim.x) {
    const int r = i / pairs, c = i - r * pairs;
    const int row = row0 + r;
    if (row < p.s) {
      __half2* o =
          reinterpret_cast<__half2*>(out + bi * p.o.batch + hi * p.o.head + row * p.o.row);
      o[c] = __floats2half2_rn(os[r * l.o_ld + 2 * c], os[r * l.o_ld + 2 * c + 1]);
    }
  }
}

// Launches Kernel<kWarps, KEYS, Mask> (Scalar or TensorCore) with the fewest keys a lane
// that covers sk.
template <template <int, int, typename> class Kernel, int kWarps, typename Mask>
cudaError_t LaunchForKeys(const Params& p, const void* q, const void* k, const void* v,
                          const void* mask, void* out, cudaStream_t stream) {
  const int per_lane = (p.sk + 31) / 32;
  if (per_lane <= 1) return Kernel<kWarps, 1, Mask>::Run(p, q, k, v, mask, out, stream);
  if (per_lane <= 2) return Kernel<kWarps, 2, Mask>::Run(p, q, k, v, mask, out, stream);
  if (per_lane <= 4) return Kernel<kWarps, 4, Mask>::Run(p, q, k, v, mask, out, stream);
  return Kernel<kWarps, kMaxKeysPerLane, Mask>::Run(p, q, k, v, mask, out, stream);
}

template <int kWarps, int KEYS, typename Mask>
struct Scalar {
  static cudaError_t Run(const Params& p, const void* q, const void* k, const void* v,
                         const void* mask, void* out, cudaStream_t stream) {
    return LaunchKernel<Mask>(AttentionKernel<kWarps, KEYS, Mask>, kWarps * 32,
                              SharedBytes(p.sk, p.d), p, q, k, v, mask, out, stream);
  }
};

// The tensor-core variants take head sizes made of whole 16-wide wmma tiles.
inline bool TensorCoreTakes(int d) { return d % 16 == 0; }

template <int kWarps, int KEYS, typename Mask>
struct TensorCore {
  static cudaError_t Run(const Params& p, const void* q, const void* k, const void* v,
                         const void* mask, void* out, cudaStream_t stream) {
    if (!TensorCoreTakes(p.d)) return cudaErrorInvalidValue;
    return LaunchKernel<Mask>(TensorCoreAttentionKernel<kWarps, KEYS, Mask>, kWarps * 32,
                              TensorCoreShared(p.sk, p.d).bytes, p, q, k, v, mask, out, stream);
  }
};

template <typename Mask>
cudaError_t LaunchVariant(int variant, const Params& p, const void* q, const void* k,
                          const void* v, const void* mask, void* out, cudaStream_t stream) {
  if (variant == 0) return LaunchForKeys<Scalar, 8, Mask>(p, q, k, v, mask, out, stream);
  if (variant == 1) return LaunchForKeys<Scalar, 16, Mask>(p, q, k, v, mask, out, stream);
  if (variant == 2) return LaunchForKeys<TensorCore, 4, Mask>(p, q, k, v, mask, out, stream);
  if (variant == 3) return LaunchForKeys<TensorCore, 8, Mask>(p, q, k, v, mask, out, stream);
  return cudaErrorInvalidValue;
}

}  // namespace

// The shared memory a launch of (keys, head size) takes with `variant`, or 0 where the variant
// does not take that shape: the tensor-core ones (2, 3) pad their rows and keep the scores
// apart, so they take more. The shim refuses a variant that needs more than the device allows.
extern "C" size_t tunefarm_attention_shared_bytes(int sk, int d, int variant) {
  if (variant == 0 || variant == 1) return SharedBytes(sk, d);
  if (variant == 2 || variant == 3) return TensorCoreTakes(d) ? TensorCoreShared(sk, d).bytes : 0;
  return 0;
}

// shape: b, h, s, sk, d. strides: q, k, v, out (batch, head, row each), then the mask's (batch,
// head, row, key). mask_bits: 0 (no mask), 16 or 32. variant: 0 (8 warps of 2 rows), 1 (16
// warps of 1 row), 2 or 3 (tensor cores, 4 or 8 warps; head sizes that are multiples of 16, and
// cudaErrorInvalidValue otherwise). Returns a cudaError_t; cudaErrorInvalidValue for what the
// kernel does not take (the rewrite does not offer it such shapes).
extern "C" int tunefarm_attention_launch(const void* q, const void* k, const void* v,
                                         const void* mask, void* out, const int* shape,
                                         const int64_t* strides, int mask_bits, float scale,
                                         int variant, void* stream) {
  Params p{};
  p.b = shape[0];
  p.h = shape[1];
  p.s = shape[2];
  p.sk = shape[3];
  p.d = shape[4];
  p.q = {strides[0], strides[1], strides[2]};
  p.k = {strides[3], strides[4], strides[5]};
  p.v = {strides[6], strides[7], strides[8]};
  p.o = {strides[9], strides[10], strides[11]};
  p.mask_batch = strides[12];
  p.mask_head = strides[13];
  p.mask_row = strides[14];
  p.mask_key = strides[15];
  p.scale = scale;
  if (p.b <= 0 || p.h <= 0 || p.s <= 0 || p.sk <= 0 || p.sk > 32 * kMaxKeysPerLane ||
      p.d <= 0 || p.d % 8 != 0) {
    return cudaErrorInvalidValue;
  }
  auto on = static_cast<cudaStream_t>(stream);
  if (mask_bits == 32) return LaunchVariant<float>(variant, p, q, k, v, mask, out, on);
  if (mask_bits == 16) return LaunchVariant<__half>(variant, p, q, k, v, mask, out, on);
  if (mask_bits == 0) return LaunchVariant<float>(variant, p, q, k, v, nullptr, out, on);
  return cudaErrorInvalidValue;
}
