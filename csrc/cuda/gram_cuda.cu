// Fused CUDA kernel of convspectra::gram_bound: one block per matrix keeps the
// matrix and its Gram matrix in shared memory for all squarings (instead of
// 3 launches and a round trip through global memory per step). The Frobenius
// normalisation is folded into each product; only the upper triangle of each
// (Hermitian) Gram matrix is computed; the scale is carried in log space in
// double precision.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>

#include "common/gram.h"
#include "cuda/gram_cuda.h"
#include "cuda/launch.cuh"

namespace convspectra {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename R>
__device__ R block_sum(R v, R* red) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int warp = threadIdx.x / 32;
  __syncthreads();  // red may still be read from the previous call
  if (threadIdx.x % 32 == 0) red[warp] = v;
  __syncthreads();
  R total = R(0);
  for (int w = 0; w < kWarps; ++w) total += red[w];
  return total;
}

template <typename R>
__device__ R block_max(R v, R* red) {
  for (int off = 16; off > 0; off /= 2) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int warp = threadIdx.x / 32;
  __syncthreads();
  if (threadIdx.x % 32 == 0) red[warp] = v;
  __syncthreads();
  R total = R(0);
  for (int w = 0; w < kWarps; ++w) total = fmax(total, red[w]);
  return total;
}

template <typename E>
size_t shared_bytes(int m, int n) {
  const int rows = std::max(m, n), k = std::min(m, n);
  return sizeof(E) * (size_t(rows) * k + size_t(k) * k) + sizeof(double) * kWarps;
}

template <typename E>
__global__ void __launch_bounds__(kThreads) gram_bound_kernel(const E* __restrict__ A, int64_t batch, int m, int n,
                                                              int steps, real_t<E>* __restrict__ out) {
  using R = real_t<E>;
  extern __shared__ __align__(16) unsigned char smem[];
  const bool tall = m >= n;
  const int rows = tall ? m : n, k = tall ? n : m;
  E* bufG = reinterpret_cast<E*>(smem);
  E* bufC = bufG + size_t(rows) * k;
  R* red = reinterpret_cast<R*>(bufC + size_t(k) * k);
  const int tid = threadIdx.x;
  const int64_t mat = int64_t(m) * n;

  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const E* a = A + b * mat;
    int bad = 0;
    R amax = R(0);
    for (int64_t i = tid; i < mat; i += blockDim.x) {
      bad |= !is_finite(a[i]);
      amax = fmax(amax, cabs(a[i]));
    }
    bad = __syncthreads_or(bad);
    amax = block_max(amax, red);
    if (bad || amax == R(0)) {
      if (tid == 0) out[b] = bad ? R(0) / R(0) : R(0);
      continue;
    }
    E* G = bufG;
    E* C = bufC;
    for (int64_t idx = tid; idx < int64_t(rows) * k; idx += blockDim.x) {
      const int r = int(idx / k), c = int(idx % k);
      G[idx] = divide(tall ? a[int64_t(r) * n + c] : conj(a[int64_t(c) * n + r]), amax);
    }
    __syncthreads();
    double log_scale = 0.0;
    int cur_rows = rows;
    bool zero = false;
    for (int t = 0; t < steps && !zero; ++t) {
      R f2 = R(0);
      for (int idx = tid; idx < cur_rows * k; idx += blockDim.x) f2 += abs2(G[idx]);
      f2 = block_sum(f2, red);
      if (!(f2 > R(0))) {
        zero = true;
        break;
      }
      log_scale = 2.0 * (log_scale + 0.5 * log(double(f2)));
      const R inv_f2 = R(1) / f2;
      // C = G^H G / f2, upper triangle, mirrored
      for (int idx = tid; idx < k * k; idx += blockDim.x) {
        const int i = idx / k, j = idx % k;
        if (j < i) continue;
        E acc = make_real<E>(R(0));
        for (int r = 0; r < cur_rows; ++r) acc = add(acc, conj_mul(G[r * k + i], G[r * k + j]));
        acc = scale(acc, inv_f2);
        C[i * k + j] = acc;
        C[j * k + i] = conj(acc);
      }
      __syncthreads();
      E* tmp = G;
      G = C;
      C = tmp;
      cur_rows = k;
    }
    R f2 = R(0);
    if (!zero) {
      for (int idx = tid; idx < cur_rows * k; idx += blockDim.x) f2 += abs2(G[idx]);
      f2 = block_sum(f2, red);
    }
    if (tid == 0) {
      out[b] = (zero || !(f2 > R(0))) ? R(0) : R(exp(gram_log_bound(log_scale, 0.5 * log(double(f2)), steps))) * amax;
    }
    __syncthreads();  // shared buffers are reused by the next matrix
  }
}

template <typename E>
Status launch(const void* A, int64_t batch, int m, int n, int steps, void* out, cudaStream_t stream) {
  if (batch == 0) return {};
  const int blocks = int(std::min<int64_t>(batch, INT_MAX / 2));
  return launch_with_shared(gram_bound_kernel<E>, blocks, kThreads, shared_bytes<E>(m, n), stream,
                            static_cast<const E*>(A), batch, m, n, steps, static_cast<real_t<E>*>(out));
}

}  // namespace

Status gram_bound_fits_shared(ScalarKind kind, int m, int n, bool& fits) {
  return dispatch_scalar_kind(kind, [&](auto e) { return fits_shared(shared_bytes<decltype(e)>(m, n), fits); });
}

Status gram_bound(ScalarKind kind, const void* A, int64_t batch, int m, int n, int steps, void* out,
                  cudaStream_t stream) {
  return dispatch_scalar_kind(kind, [&](auto e) { return launch<decltype(e)>(A, batch, m, n, steps, out, stream); });
}

}  // namespace cuda
}  // namespace convspectra
