// Fused CUDA kernel of convspectra::cayley (m >= n): one block per matrix
// forms I + A in shared memory, inverts it in place by Gauss-Jordan with
// partial pivoting (common/cayley.h says why) and writes Q = [2M - I; -2 V M]
// and M directly: one launch instead of a solver call and products.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>

#include "common/cayley.h"
#include "cuda/cayley_cuda.h"
#include "cuda/launch.cuh"

namespace convspectra {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename E>
size_t shared_bytes(int n) {
  return sizeof(E) * (size_t(n) * n + n) + sizeof(int) * (size_t(n) + 1);
}

template <typename E>
__global__ void __launch_bounds__(kThreads) cayley_kernel(const E* __restrict__ W, int64_t batch, int m, int n,
                                                          E* __restrict__ Q, E* __restrict__ Mout) {
  using R = real_t<E>;
  extern __shared__ __align__(16) unsigned char smem[];
  E* B = reinterpret_cast<E*>(smem);
  E* column = B + size_t(n) * n;
  int* perm = reinterpret_cast<int*>(column + n);
  const int tid = threadIdx.x;
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const E* w = W + b * int64_t(m) * n;
    // B = I + U - U^H + V^H V
    for (int idx = tid; idx < n * n; idx += blockDim.x) {
      const int i = idx / n, j = idx % n;
      E acc = sub(w[i * n + j], conj(w[j * n + i]));
      if (i == j) acc = add(acc, make_real<E>(R(1)));
      for (int r = n; r < m; ++r) acc = add(acc, conj_mul(w[r * n + i], w[r * n + j]));
      B[idx] = acc;
    }
    __syncthreads();
    for (int p = 0; p < n; ++p) {
      if (tid == 0) perm[p] = pivot_row(B, n, p);  // O(n) of the step's O(n^2) work
      __syncthreads();
      const int r = perm[p];
      if (r != p) {
        for (int j = tid; j < n; j += blockDim.x) {
          const E t = B[p * n + j];
          B[p * n + j] = B[r * n + j];
          B[r * n + j] = t;
        }
        __syncthreads();
      }
      for (int i = tid; i < n; i += blockDim.x) column[i] = B[i * n + p];
      __syncthreads();
      const E inv = reciprocal(column[p]);
      for (int i = tid; i < n; i += blockDim.x) B[i * n + p] = make_real<E>(i == p ? R(1) : R(0));
      __syncthreads();
      for (int j = tid; j < n; j += blockDim.x) B[p * n + j] = mul(B[p * n + j], inv);
      __syncthreads();
      for (int idx = tid; idx < n * n; idx += blockDim.x) {
        const int i = idx / n, j = idx % n;
        if (i != p) B[idx] = sub(B[idx], mul(column[i], B[p * n + j]));
      }
      __syncthreads();
    }
    // (P B)^{-1} = B^{-1} P^T: undo the swaps on the columns, last one first
    for (int p = n - 1; p >= 0; --p) {
      const int r = perm[p];
      if (r == p) continue;  // uniform across the block: perm is shared
      for (int i = tid; i < n; i += blockDim.x) {
        const E t = B[i * n + p];
        B[i * n + p] = B[i * n + r];
        B[i * n + r] = t;
      }
      __syncthreads();
    }
    E* q = Q + b * int64_t(m) * n;
    for (int idx = tid; idx < n * n; idx += blockDim.x) {
      const int i = idx / n, j = idx % n;
      Mout[b * int64_t(n) * n + idx] = B[idx];
      q[idx] = sub(scale(B[idx], R(2)), make_real<E>(i == j ? R(1) : R(0)));
    }
    for (int idx = tid; idx < (m - n) * n; idx += blockDim.x) {
      const int r = n + idx / n, j = idx % n;
      E acc = make_real<E>(R(0));
      for (int l = 0; l < n; ++l) acc = add(acc, mul(w[r * n + l], B[l * n + j]));
      q[r * n + j] = scale(acc, R(-2));
    }
    __syncthreads();  // B is reused by the next matrix
  }
}

template <typename E>
Status launch(const void* W, int64_t batch, int m, int n, void* Q, void* M, cudaStream_t stream) {
  if (batch == 0 || n == 0) return {};
  const int blocks = int(std::min<int64_t>(batch, INT_MAX / 2));
  return launch_with_shared(cayley_kernel<E>, blocks, kThreads, shared_bytes<E>(n), stream, static_cast<const E*>(W),
                            batch, m, n, static_cast<E*>(Q), static_cast<E*>(M));
}

}  // namespace

Status cayley_fits_shared(ScalarKind kind, int n, bool& fits) {
  return dispatch_scalar_kind(kind, [&](auto e) { return fits_shared(shared_bytes<decltype(e)>(n), fits); });
}

Status cayley(ScalarKind kind, const void* W, int64_t batch, int m, int n, void* Q, void* M, cudaStream_t stream) {
  return dispatch_scalar_kind(kind, [&](auto e) { return launch<decltype(e)>(W, batch, m, n, Q, M, stream); });
}

}  // namespace cuda
}  // namespace convspectra
