// Fused CUDA kernels of convspectra::bjorck and its backward: one block per
// matrix keeps it in shared memory for every iteration (one launch instead of
// 3 x iters), for tall m x n matrices with m <= 16 * max_tile (128; 64 for
// complex128). The backward recomputes the iterates into global scratch under
// the scratch budget, checkpointed when needed (common/bjorck.h).
//
// Products run on a 16 x 16 thread grid; each thread owns a TM x TM register
// tile of the output (rows ty + 16 a, columns tx + 16 b), so every operand
// read from shared memory feeds TM multiply-adds.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <type_traits>

#include "common/bjorck.h"
#include "common/complex_math.h"
#include "cuda/bjorck_cuda.h"
#include "cuda/launch.cuh"

namespace convspectra {
namespace cuda {
namespace {

constexpr int kSide = 16;
constexpr int kThreads = kSide * kSide;
constexpr int kMaxTile = 8;
constexpr int64_t kMaxBlocks = 4096;

// The largest register tile for an element type: a 16-byte element's 8 x 8
// tile alone would exceed a thread's share of the register file (spills).
template <typename E>
constexpr int max_tile() {
  return sizeof(E) == 16 ? 4 : kMaxTile;
}

// acc[a][b] = sum_r lhs(i_a, r) R[r, j_b] over r < inner, for rows i_a < rows
// and columns j_b < cols; lhs(i, r) = conj(L[r, i]) when ConjTransposeLhs,
// L[i, r] otherwise. L has leading dimension ldl, R has ldr.
template <bool ConjTransposeLhs, int TM, typename E>
__device__ void tile_product(E (&acc)[TM][TM], const E* L, int ldl, const E* R, int ldr, int rows, int cols,
                             int inner) {
  using Re = real_t<E>;
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
#pragma unroll
  for (int a = 0; a < TM; ++a)
#pragma unroll
    for (int b = 0; b < TM; ++b) acc[a][b] = make_real<E>(Re(0));
  for (int r = 0; r < inner; ++r) {
    E lv[TM], rv[TM];
#pragma unroll
    for (int a = 0; a < TM; ++a) {
      const int i = ty + kSide * a;
      lv[a] = i < rows ? (ConjTransposeLhs ? conj(L[r * ldl + i]) : L[i * ldl + r]) : make_real<E>(Re(0));
    }
#pragma unroll
    for (int b = 0; b < TM; ++b) {
      const int j = tx + kSide * b;
      rv[b] = j < cols ? R[r * ldr + j] : make_real<E>(Re(0));
    }
#pragma unroll
    for (int a = 0; a < TM; ++a)
#pragma unroll
      for (int b = 0; b < TM; ++b) acc[a][b] = add(acc[a][b], mul(lv[a], rv[b]));
  }
}

// Calls f(i, j, acc[a][b]) for every output entry this thread owns.
template <int TM, typename E, typename F>
__device__ void for_each_owned(const E (&acc)[TM][TM], int rows, int cols, F&& f) {
  const int ty = threadIdx.x / kSide, tx = threadIdx.x % kSide;
#pragma unroll
  for (int a = 0; a < TM; ++a)
#pragma unroll
    for (int b = 0; b < TM; ++b) {
      const int i = ty + kSide * a, j = tx + kSide * b;
      if (i < rows && j < cols) f(i, j, acc[a][b]);
    }
}

// S = 1.5 I - 0.5 X^H X into shared S (n x n).
template <int TM, typename E>
__device__ void step_matrix(E (&acc)[TM][TM], const E* X, int m, int n, E* S) {
  using R = real_t<E>;
  tile_product<true>(acc, X, n, X, n, n, n, m);
  for_each_owned(acc, n, n, [&](int i, int j, E v) {
    v = scale(v, R(-0.5));
    S[i * n + j] = i == j ? add(v, make_real<E>(R(1.5))) : v;
  });
}

// X <- X (1.5 I - 0.5 X^H X) in shared memory; S: n x n shared scratch.
template <int TM, typename E>
__device__ void step(E (&acc)[TM][TM], E* X, int m, int n, E* S) {
  step_matrix(acc, X, m, n, S);
  __syncthreads();
  tile_product<false>(acc, X, n, S, n, m, n, n);
  __syncthreads();  // every read of X is done before it is overwritten
  for_each_owned(acc, m, n, [&](int i, int j, E v) { X[i * n + j] = v; });
  __syncthreads();
}

template <typename E>
size_t shared_bytes(int m, int n, bool backward) {
  return sizeof(E) * (size_t(backward ? 2 : 1) * m * n + size_t(n) * n);
}

template <int TM, typename E>
__global__ void __launch_bounds__(kThreads)
    bjorck_kernel(const E* __restrict__ X, int64_t batch, int m, int n, int iters, E* __restrict__ Y) {
  extern __shared__ __align__(16) unsigned char smem[];
  E* Xs = reinterpret_cast<E*>(smem);
  E* S = Xs + m * n;
  E acc[TM][TM];
  const int64_t mn = int64_t(m) * n;  // 64-bit offsets: batch * m * n can pass 2^31
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    for (int idx = threadIdx.x; idx < m * n; idx += blockDim.x) Xs[idx] = X[b * mn + idx];
    __syncthreads();
    for (int t = 0; t < iters; ++t) step(acc, Xs, m, n, S);
    for (int idx = threadIdx.x; idx < m * n; idx += blockDim.x) Y[b * mn + idx] = Xs[idx];
    __syncthreads();  // Xs is reused by the next matrix
  }
}

// The backward schedule's operations (common/bjorck.h) for one matrix on one
// block: X and G in shared memory, the checkpoints and iterates in this
// block's slice of the global workspace. Every operation is block-wide; each
// thread copies the same indices in and out, and the shared arrays are
// synchronised before anyone reads what another thread wrote.
template <int TM, typename E>
struct BlockBackward {
  E* Xs;
  E* Gs;
  E* S;
  const E* x0;       // this matrix's input
  E* checkpoints;    // (count - 1) m x n slots
  E* iterates;       // length m x n slots
  int m, n;

  __device__ int64_t mn() const { return int64_t(m) * n; }
  __device__ void load(const E* src) {
    for (int64_t idx = threadIdx.x; idx < mn(); idx += blockDim.x) Xs[idx] = src[idx];
    __syncthreads();
  }
  __device__ void store(E* dst) const {
    for (int64_t idx = threadIdx.x; idx < mn(); idx += blockDim.x) dst[idx] = Xs[idx];
  }
  __device__ void load_input() { load(x0); }
  __device__ void load_checkpoint(int j) { load(checkpoints + j * mn()); }
  __device__ void save_checkpoint(int j) { store(checkpoints + j * mn()); }
  __device__ void save_iterate(int t) { store(iterates + t * mn()); }
  __device__ void step() {
    E acc[TM][TM];  // each product's register tile (every product starts from zero)
    cuda::step(acc, Xs, m, n, S);
  }
  // G <- G (1.5 I - 0.5 X^H X) - 0.5 X (X^H G + G^H X), X the input of step t;
  // its slot holds X (X^H G + G^H X) once X is loaded.
  __device__ void vjp(int t) {
    using R = real_t<E>;
    E acc[TM][TM];
    E* slot = iterates + t * mn();
    load(slot);
    // S = X^H G + G^H X: the product, then each off-diagonal pair by one thread
    tile_product<true>(acc, Xs, n, Gs, n, n, n, m);
    for_each_owned(acc, n, n, [&](int i, int j, E v) { S[i * n + j] = v; });
    __syncthreads();
    for (int idx = threadIdx.x; idx < n * n; idx += blockDim.x) {
      const int i = idx / n, j = idx % n;
      if (i < j) {
        const E v = add(S[i * n + j], conj(S[j * n + i]));
        S[i * n + j] = v;
        S[j * n + i] = conj(v);
      } else if (i == j) {
        S[idx] = make_real<E>(R(2) * real_part(S[idx]));
      }
    }
    __syncthreads();
    // slot = X S (each thread later reads back only the entries it wrote)
    tile_product<false>(acc, Xs, n, S, n, m, n, n);
    for_each_owned(acc, m, n, [&](int i, int j, E v) { slot[i * n + j] = v; });
    __syncthreads();
    step_matrix(acc, Xs, m, n, S);
    __syncthreads();
    tile_product<false>(acc, Gs, n, S, n, m, n, n);
    __syncthreads();  // every read of G is done before it is overwritten
    for_each_owned(acc, m, n, [&](int i, int j, E v) { Gs[i * n + j] = sub(v, scale(slot[i * n + j], R(0.5))); });
    __syncthreads();
  }
};

// grad_X of `iters` steps: per matrix, the backward schedule with `seg`
// (every iterate stored, or checkpoints) in this block's workspace slice of
// seg.slots() matrices.
template <int TM, typename E>
__global__ void __launch_bounds__(kThreads)
    bjorck_backward_kernel(const E* __restrict__ grad_Y, const E* __restrict__ X, int64_t batch, int m, int n,
                           int iters, BjorckSegments seg, E* __restrict__ workspace, E* __restrict__ grad_X) {
  extern __shared__ __align__(16) unsigned char smem[];
  E* Xs = reinterpret_cast<E*>(smem);
  E* Gs = Xs + m * n;
  E* S = Gs + m * n;
  const int64_t mn = int64_t(m) * n;
  E* work = workspace + int64_t(blockIdx.x) * seg.slots() * mn;
  BlockBackward<TM, E> ops{Xs, Gs, S, nullptr, work, work + int64_t(seg.count - 1) * mn, m, n};
  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    for (int64_t idx = threadIdx.x; idx < mn; idx += blockDim.x) Gs[idx] = grad_Y[b * mn + idx];
    ops.x0 = X + b * mn;
    __syncthreads();
    bjorck_backward_schedule(iters, seg, ops);
    for (int64_t idx = threadIdx.x; idx < mn; idx += blockDim.x) grad_X[b * mn + idx] = Gs[idx];
    __syncthreads();
  }
}

// Calls fn(std::integral_constant<int, TM>) with the smallest register tile
// covering m rows (only the tiles element type E may use are instantiated).
template <typename E, typename Fn>
Status dispatch_tile(int m, Fn&& fn) {
  if (m <= kSide) return fn(std::integral_constant<int, 1>{});
  if (m <= 2 * kSide) return fn(std::integral_constant<int, 2>{});
  if (m <= 4 * kSide) return fn(std::integral_constant<int, 4>{});
  if constexpr (max_tile<E>() > 4) {
    if (m <= max_tile<E>() * kSide) return fn(std::integral_constant<int, max_tile<E>()>{});
  }
  return {cudaErrorInvalidValue, "bjorck: no register tile for this row count"};
}

int grid_for(int64_t batch) { return int(std::min<int64_t>(batch, kMaxBlocks)); }

}  // namespace

Status bjorck_fits_shared(ScalarKind kind, int m, int n, bool backward, bool& fits) {
  fits = false;
  if (n > m) return {};
  return dispatch_scalar_kind(kind, [&](auto e) {
    using E = decltype(e);
    if (m > max_tile<E>() * kSide) return Status{};
    return fits_shared(shared_bytes<E>(m, n, backward), fits);
  });
}

Status bjorck_backward_plan(ScalarKind kind, int64_t batch, int m, int n, int iters, int64_t budget_bytes,
                            BjorckBackwardPlan& plan) {
  return dispatch_scalar_kind(kind, [&](auto e) {
    using E = decltype(e);
    return dispatch_tile<E>(m, [&](auto tile) {
      constexpr int TM = decltype(tile)::value;
      const size_t bytes = shared_bytes<E>(m, n, true);
      int per_sm = 0;
      CS_RETURN_IF_FAILED(opt_in_shared(bjorck_backward_kernel<TM, E>, bytes));
      CS_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, bjorck_backward_kernel<TM, E>, kThreads,
                                                                bytes));
      DeviceLimits limits;
      CS_RETURN_IF_FAILED(device_limits(limits));
      // As many blocks as can be resident at once (more would only cost
      // scratch), each with its matrix's iterates in global memory: all of
      // them if the grid's fit the budget, else checkpoints (about
      // 2 sqrt(iters) matrices), with the grid cut to what the budget holds.
      const int64_t resident =
          std::max<int64_t>(1, std::min<int64_t>(batch, int64_t(limits.sms) * std::max(per_sm, 1)));
      const int64_t matrix_bytes = int64_t(sizeof(E)) * m * n;
      plan.segments = bjorck_segments(iters, resident * iters * matrix_bytes <= budget_bytes);
      plan.grid = int(std::clamp<int64_t>(budget_bytes / (plan.segments.slots() * matrix_bytes), 1, resident));
      plan.workspace_elems = size_t(plan.grid) * plan.segments.slots() * m * n;
      return Status{};
    });
  });
}

Status bjorck(ScalarKind kind, const void* X, int64_t batch, int m, int n, int iters, void* Y, cudaStream_t stream) {
  if (batch == 0 || n == 0) return {};
  return dispatch_scalar_kind(kind, [&](auto e) {
    using E = decltype(e);
    return dispatch_tile<E>(m, [&](auto tile) {
      constexpr int TM = decltype(tile)::value;
      return launch_with_shared(bjorck_kernel<TM, E>, grid_for(batch), kThreads, shared_bytes<E>(m, n, false), stream,
                                static_cast<const E*>(X), batch, m, n, iters, static_cast<E*>(Y));
    });
  });
}

Status bjorck_backward(ScalarKind kind, const BjorckBackwardPlan& plan, const void* grad_Y, const void* X,
                       int64_t batch, int m, int n, int iters, void* workspace, void* grad_X, cudaStream_t stream) {
  if (batch == 0 || n == 0) return {};
  return dispatch_scalar_kind(kind, [&](auto e) {
    using E = decltype(e);
    return dispatch_tile<E>(m, [&](auto tile) {
      constexpr int TM = decltype(tile)::value;
      return launch_with_shared(bjorck_backward_kernel<TM, E>, plan.grid, kThreads, shared_bytes<E>(m, n, true),
                                stream, static_cast<const E*>(grad_Y), static_cast<const E*>(X), batch, m, n, iters,
                                plan.segments, static_cast<E*>(workspace), static_cast<E*>(grad_X));
    });
  });
}

}  // namespace cuda
}  // namespace convspectra
