// CUDA kernels of the batched SVD family (convspectra::svdvals, convspectra::svd).
//
// One thread block per matrix (grid-stride over the batch). The working copy X
// (and V when vectors are wanted) lives in shared memory when it fits, else in
// a per-block slice of a global workspace. Each sweep of the one-sided Jacobi
// method is split into P - 1 rounds of P / 2 disjoint column pairs (the
// round-robin "circle" ordering, P = cols rounded up to even); each warp
// rotates one pair at a time, so a round needs one __syncthreads only.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>

#include "common/jacobi.h"
#include "cuda/launch.cuh"
#include "cuda/svd_cuda.h"

namespace convspectra {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxWarps = 16;

template <typename R>
__device__ __forceinline__ R warp_sum(R v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
template <typename R>
__device__ __forceinline__ R warp_max(R v) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off /= 2) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
template <typename T>
__device__ __forceinline__ T warp_sum(T v, T*) { return warp_sum(v); }
template <typename T>
__device__ __forceinline__ Complex<T> warp_sum(Complex<T> v, Complex<T>*) {
  return {warp_sum(v.re), warp_sum(v.im)};
}

// Where each array of one matrix lives, relative to its storage. X and V are
// in shared memory (after the small arrays) or in the global workspace.
struct Layout {
  size_t sigma, order, red, x, v, shared_bytes, global_elems;
};

template <typename E>
__host__ __device__ Layout make_layout(int rows, int cols, bool want_uv, bool in_shared) {
  using R = real_t<E>;
  Layout L{};
  auto align = [](size_t off, size_t a) { return (off + a - 1) / a * a; };
  size_t off = 0;
  L.sigma = off;  // R[cols]
  off = align(off + sizeof(R) * cols, 8);
  L.order = off;  // int[cols]
  off = align(off + sizeof(int) * cols, 8);
  L.red = off;  // R[kMaxWarps]: block reductions
  off = align(off + sizeof(R) * kMaxWarps, 16);
  const size_t xe = size_t(rows) * cols, ve = want_uv ? size_t(cols) * cols : 0;
  if (in_shared) {
    L.x = off;
    L.v = off + sizeof(E) * xe;
    off += sizeof(E) * (xe + ve);
    L.global_elems = 0;
  } else {
    L.x = 0;  // element offsets within the block's workspace slice
    L.v = xe;
    L.global_elems = xe + ve;
  }
  L.shared_bytes = off;
  return L;
}

// The launch bound: up to 512 threads (a warp per column pair, at most
// kMaxWarps) and one resident block per SM, which leaves ptxas 128 registers
// per thread. Every instantiation fits them without spills on sm_90 (complex128
// with vectors uses all 128); a bound of 512 alone (ptxas then aims at more
// resident blocks) made it spill. The launch never asks for more threads.
constexpr int kMaxThreads = kWarp * kMaxWarps;

template <typename E, bool kWantUV>
__global__ void __launch_bounds__(kMaxThreads, 1)
    jacobi_svd_kernel(const E* __restrict__ A, int64_t batch, int m, int n, real_t<E>* __restrict__ S,
                      E* __restrict__ U, E* __restrict__ Vh, E* __restrict__ gwork, bool in_shared) {
  using R = real_t<E>;
  extern __shared__ __align__(16) unsigned char smem[];
  const bool tall = m >= n;
  const int rows = tall ? m : n, cols = tall ? n : m, k = cols;
  const Layout L = make_layout<E>(rows, cols, kWantUV, in_shared);
  R* sigma = reinterpret_cast<R*>(smem + L.sigma);
  int* order = reinterpret_cast<int*>(smem + L.order);
  R* red = reinterpret_cast<R*>(smem + L.red);
  E* X = in_shared ? reinterpret_cast<E*>(smem + L.x) : gwork + size_t(blockIdx.x) * L.global_elems;
  E* V = in_shared ? reinterpret_cast<E*>(smem + L.v) : X + L.v;

  const int tid = threadIdx.x, lane = tid % kWarp, warp = tid / kWarp, nwarps = blockDim.x / kWarp;
  const int P = cols + (cols & 1);  // an odd count gets a dummy column, index cols
  const R tol = jacobi_tolerance<R>(rows);
  const int64_t mat = int64_t(m) * n;

  for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
    const E* a = A + b * mat;
    // 1. Finite check and max |a_ij| for a lossless power-of-two prescale.
    R amax = R(0);
    int bad = 0;
    for (int64_t i = tid; i < mat; i += blockDim.x) {
      const E x = a[i];
      bad |= !is_finite(x);
      amax = fmax(amax, cabs(x));
    }
    bad = __syncthreads_or(bad);
    amax = warp_max(amax);
    if (lane == 0) red[warp] = amax;
    __syncthreads();
    amax = R(0);
    for (int w = 0; w < nwarps; ++w) amax = fmax(amax, red[w]);
    __syncthreads();  // red is reused below
    if (bad) {
      const R nan = R(0) / R(0);
      for (int r = tid; r < k; r += blockDim.x) S[b * k + r] = nan;
      if (kWantUV) {
        for (int64_t i = tid; i < int64_t(m) * k; i += blockDim.x) U[b * m * k + i] = make_real<E>(nan);
        for (int64_t i = tid; i < int64_t(k) * n; i += blockDim.x) Vh[b * k * n + i] = make_real<E>(nan);
      }
      continue;
    }
    const PowerOfTwoScale<R> sc = power_of_two_scale(amax);

    // 2. X = A (tall) or A^H (wide), column-major and scaled; V = I.
    for (int64_t idx = tid; idx < mat; idx += blockDim.x) {
      if (tall) {
        const int i = int(idx / n), j = int(idx % n);
        X[size_t(j) * m + i] = sc.apply(a[idx]);
      } else {
        X[idx] = sc.apply(conj(a[idx]));
      }
    }
    if (kWantUV) {
      for (int64_t idx = tid; idx < int64_t(cols) * cols; idx += blockDim.x)
        V[idx] = make_real<E>(idx % cols == idx / cols ? R(1) : R(0));
    }
    __syncthreads();

    // 3. Sweeps of P - 1 rounds; stop when a whole sweep rotated nothing.
    for (int sweep = 0; sweep < kMaxJacobiSweeps; ++sweep) {
      int rotated = 0;
      for (int round = 0; round < P - 1; ++round) {
        for (int pair = warp; pair < P / 2; pair += nwarps) {
          int p, q;
          if (pair == 0) {
            p = P - 1;
            q = round;
          } else {
            p = (round + pair) % (P - 1);
            q = (round - pair + P - 1) % (P - 1);
          }
          if (p > q) {
            const int t = p;
            p = q;
            q = t;
          }
          if (q >= cols) continue;  // paired with the dummy column
          E* xp = X + size_t(p) * rows;
          E* xq = X + size_t(q) * rows;
          // sums in double (wide_t): float32 sums over tall columns lose accuracy like rows * eps
          double walpha = 0.0, wbeta = 0.0;
          wide_t<E> wgamma = make_real<wide_t<E>>(0.0);
          for (int i = lane; i < rows; i += kWarp) {
            const wide_t<E> xi = widen(xp[i]), yi = widen(xq[i]);
            walpha += abs2(xi);
            wbeta += abs2(yi);
            wgamma = add(wgamma, conj_mul(xi, yi));
          }
          const R alpha = R(warp_sum(walpha)), beta = R(warp_sum(wbeta));
          const E gamma = narrow<E>(warp_sum(wgamma, static_cast<wide_t<E>*>(nullptr)));
          const R gabs = cabs(gamma);
          if (!jacobi_should_rotate(alpha, beta, gabs, tol)) continue;
          R c;
          E s;
          jacobi_rotation(alpha, beta, gamma, gabs, c, s);
          const E sc_conj = conj(s);
          for (int i = lane; i < rows; i += kWarp) {
            const E xi = xp[i], yi = xq[i];
            xp[i] = sub(scale(xi, c), mul(sc_conj, yi));
            xq[i] = add(mul(s, xi), scale(yi, c));
          }
          if (kWantUV) {
            E* vp = V + size_t(p) * cols;
            E* vq = V + size_t(q) * cols;
            for (int i = lane; i < cols; i += kWarp) {
              const E xi = vp[i], yi = vq[i];
              vp[i] = sub(scale(xi, c), mul(sc_conj, yi));
              vq[i] = add(mul(s, xi), scale(yi, c));
            }
          }
          rotated = 1;
        }
        __syncthreads();
      }
      if (!__syncthreads_or(rotated)) break;
    }

    // 4. sigma_j = ||x_j||, then the descending order by ranking.
    for (int j = warp; j < cols; j += nwarps) {
      // ||x_j||; below the floor as max |x_ij| times the norm of x_j / max (no underflow of
      // the squares). acc is the same in every lane: the branch is warp-uniform.
      const E* xj = X + size_t(j) * rows;
      double acc = 0.0;
      for (int i = lane; i < rows; i += kWarp) acc += abs2(widen(xj[i]));
      acc = warp_sum(acc);
      R length = R(sqrt(acc));
      if (!(R(acc) >= jacobi_floor<R>())) {
        R amax = R(0);
        for (int i = lane; i < rows; i += kWarp) amax = fmax(amax, cabs(xj[i]));
        amax = warp_max(amax);
        double scaled = 0.0;
        if (amax > R(0)) {
          for (int i = lane; i < rows; i += kWarp) scaled += abs2(widen(divide(xj[i], amax)));
        }
        length = amax * R(sqrt(warp_sum(scaled)));
      }
      if (lane == 0) sigma[j] = length;
    }
    __syncthreads();
    for (int j = tid; j < cols; j += blockDim.x) {
      const R sj = sigma[j];
      int rank = 0;
      for (int i = 0; i < cols; ++i) rank += (sigma[i] > sj) || (sigma[i] == sj && i < j);
      order[rank] = j;
    }
    __syncthreads();
    for (int r = tid; r < k; r += blockDim.x) S[b * k + r] = sc.undo(sigma[order[r]]);

    if (kWantUV) {
      // 5. Normalise the columns of X; complete those below the floor (rare: thread 0).
      for (int64_t idx = tid; idx < int64_t(rows) * cols; idx += blockDim.x) {
        const R sj = sigma[idx / rows];
        if (!jacobi_below_floor(sj)) X[idx] = scale(X[idx], R(1) / sj);
      }
      __syncthreads();
      if (tid == 0) {
        for (int r = 0; r < cols; ++r)
          if (jacobi_below_floor(sigma[order[r]])) complete_orthonormal_column(X, rows, order, r, order[r]);
      }
      __syncthreads();
      // 6. X = Ux S Vx^H. Tall: U = Ux, Vh = Vx^H. Wide (X = A^H): U = Vx, Vh = Ux^H.
      for (int64_t idx = tid; idx < int64_t(m) * k; idx += blockDim.x) {
        const int i = int(idx / k), r = int(idx % k);
        U[b * m * k + idx] = tall ? X[size_t(order[r]) * rows + i] : V[size_t(order[r]) * cols + i];
      }
      for (int64_t idx = tid; idx < int64_t(k) * n; idx += blockDim.x) {
        const int r = int(idx / n), l = int(idx % n);
        Vh[b * k * n + idx] = conj(tall ? V[size_t(order[r]) * cols + l] : X[size_t(order[r]) * rows + l]);
      }
    }
    __syncthreads();  // shared arrays are reused by the next matrix
  }
}

}  // namespace

Status jacobi_svd_plan(ScalarKind kind, int64_t batch, int m, int n, bool want_uv, bool force_global,
                       int64_t budget_bytes, JacobiSvdPlan& plan) {
  return dispatch_scalar_kind(kind, [&](auto e) {
    using E = decltype(e);
    DeviceLimits limits;
    CS_RETURN_IF_FAILED(device_limits(limits));
    const int rows = std::max(m, n), cols = std::min(m, n);
    const Layout shared_layout = make_layout<E>(rows, cols, want_uv, true);
    plan.want_uv = want_uv;
    plan.in_shared = !force_global && shared_layout.shared_bytes <= limits.shared_optin;
    // a warp per column pair, at most the kernel's launch bound
    plan.threads = kWarp * std::max(1, std::min(kMaxWarps, (cols + 1) / 2));
    if (plan.in_shared) {
      plan.shared_bytes = shared_layout.shared_bytes;
      plan.blocks = int(std::min<int64_t>(batch, INT_MAX / 2));
      plan.workspace_bytes = 0;
    } else {
      // Large matrices: a few resident blocks per SM, each with its own slice
      // of global scratch, reused for the next matrix of the grid-stride loop:
      // the batch runs in waves of `blocks` matrices, as many as the budget
      // holds (at least one).
      const Layout g = make_layout<E>(rows, cols, want_uv, false);
      const int64_t slice_bytes = int64_t(g.global_elems * sizeof(E));
      plan.shared_bytes = g.shared_bytes;
      const int64_t resident = std::max<int64_t>(1, std::min<int64_t>(batch, int64_t(limits.sms) * 4));
      plan.blocks = int(std::clamp<int64_t>(budget_bytes / slice_bytes, 1, resident));
      plan.workspace_bytes = size_t(plan.blocks) * size_t(slice_bytes);
    }
    return Status{};
  });
}

Status jacobi_svd(ScalarKind kind, const JacobiSvdPlan& plan, const void* A, int64_t batch, int m, int n, void* S,
                  void* U, void* Vh, void* workspace, cudaStream_t stream) {
  if (batch == 0 || m == 0 || n == 0) return {};
  if (plan.want_uv != (U != nullptr) || (plan.workspace_bytes > 0 && workspace == nullptr))
    return {cudaErrorInvalidValue, "jacobi_svd: arguments do not match the plan"};
  return dispatch_scalar_kind(kind, [&](auto e) {
    using E = decltype(e);
    auto kernel = plan.want_uv ? jacobi_svd_kernel<E, true> : jacobi_svd_kernel<E, false>;
    return launch_with_shared(kernel, plan.blocks, plan.threads, plan.shared_bytes, stream, static_cast<const E*>(A),
                              batch, m, n, static_cast<real_t<E>*>(S), static_cast<E*>(U), static_cast<E*>(Vh),
                              static_cast<E*>(workspace), plan.in_shared);
  });
}

}  // namespace cuda
}  // namespace convspectra
