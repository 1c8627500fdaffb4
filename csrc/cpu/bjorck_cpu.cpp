// CPU kernels of convspectra::bjorck and convspectra::bjorck_backward.
//
// Small problems run all iterations of common/bjorck.h per matrix with it in
// cache, at::parallel_for over the batch; the rest use batched ATen products
// (MKL). Measured on a 2-core EPYC, 20 steps: 8x8 x5 0.05 vs 0.24 ms, 16x16 x5
// 0.12 vs 0.28 ms, but 16x16 x64 2.0 vs 0.7 ms and 32x32 x5 1.1 vs 0.6 ms:
// the per-matrix loops win only while the ~40 ATen calls' overhead dominates.
// Wide matrices are the tall case of their conjugate transpose.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "aten/bjorck_batched.h"
#include "aten/matrix_batch.h"
#include "aten/switches.h"
#include "common/bjorck.h"
#include "cpu/isa.h"

namespace convspectra {
namespace {

bool use_serial_kernel(int64_t batch, int64_t m, int64_t n) {
  return !force_fallback() && m <= 16 && batch * m * n * n <= 65536;
}

// `iters` steps on matrices [b0, b1), compiled per ISA (cpu/isa.h).
struct BjorckRange {
  template <typename E>
  static void run(const E* x, int m, int n, int64_t iters, int64_t b0, int64_t b1, E* y, E* s, E* tmp) {
    const int64_t mn = int64_t(m) * n;
    for (int64_t b = b0; b < b1; ++b) {
      E* cur = y + b * mn;
      std::copy(x + b * mn, x + (b + 1) * mn, cur);
      for (int64_t t = 0; t < iters; ++t) {
        bjorck_step(cur, m, n, s, tmp);
        std::copy(tmp, tmp + mn, cur);
      }
    }
  }
};

at::Tensor bjorck_kernel(const MatrixBatch& X, int64_t iters) {
  const int64_t m = X.m, n = X.n;
  if (!use_serial_kernel(X.batch, m, n)) return bjorck_batched(X.flat, iters);
  at::Tensor Y = at::empty_like(X.flat);
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(X.flat.scalar_type(), "convspectra_bjorck_cpu", [&] {
    using E = typename ElementOf<scalar_t>::type;
    const E* x = elements<scalar_t>(X.flat);
    E* y = mutable_elements<scalar_t>(Y);
    at::parallel_for(0, X.batch, std::max<int64_t>(1, 64 / (m * n + 1)), [&](int64_t b0, int64_t b1) {
      std::vector<E> s(n * n), tmp(m * n);
      run_for_cpu_isa<BjorckRange>(x, int(m), int(n), iters, b0, b1, y, s.data(), tmp.data());
    });
  });
  return Y;
}

// The backward schedule's operations (common/bjorck.h) on one matrix at a
// time, in buffers that one thread reuses across its matrices.
template <typename E>
struct SerialBackward {
  int m, n;
  const E* x0 = nullptr;  // the current matrix's input and gradient
  E* g = nullptr;
  std::vector<E> x, next, checkpoints, iterates, s, t, p;

  SerialBackward(int m_, int n_, BjorckSegments seg)
      : m(m_), n(n_), x(size_t(m_) * n_), next(x.size()), checkpoints((seg.count - 1) * x.size()),
        iterates(seg.length * x.size()), s(size_t(n_) * n_), t(s.size()), p(x.size()) {}

  E* slot(std::vector<E>& v, int j) { return v.data() + size_t(j) * x.size(); }
  void load_input() { std::copy(x0, x0 + x.size(), x.begin()); }
  void load_checkpoint(int j) { std::copy_n(slot(checkpoints, j), x.size(), x.begin()); }
  void save_checkpoint(int j) { std::copy(x.begin(), x.end(), slot(checkpoints, j)); }
  void save_iterate(int k) { std::copy(x.begin(), x.end(), slot(iterates, k)); }
  void step() {
    bjorck_step(x.data(), m, n, s.data(), next.data());
    x.swap(next);
  }
  void vjp(int k) { bjorck_step_vjp(slot(iterates, k), m, n, g, s.data(), t.data(), p.data()); }
};

// The backward of matrices [b0, b1), compiled per ISA (cpu/isa.h).
struct BjorckBackwardRange {
  template <typename E>
  static void run(const E* x, E* g, int64_t mn, int iters, BjorckSegments seg, int64_t b0, int64_t b1,
                  SerialBackward<E>& ops) {
    for (int64_t b = b0; b < b1; ++b) {
      ops.x0 = x + b * mn;
      ops.g = g + b * mn;
      bjorck_backward_schedule(iters, seg, ops);
    }
  }
};

at::Tensor bjorck_backward_kernel(const MatrixBatch& grad, const MatrixBatch& X, int64_t iters) {
  const int64_t m = X.m, n = X.n;
  if (!use_serial_kernel(X.batch, m, n)) return bjorck_backward_batched(grad.flat, X.flat, iters, scratch_budget());
  at::Tensor G = grad.flat.clone();  // updated in place
  // each thread keeps one matrix's iterates: all of them, or checkpoints if
  // the threads' together would pass the budget
  const int64_t store_all_bytes = int64_t(at::get_num_threads()) * iters * m * n * int64_t(X.flat.element_size());
  const BjorckSegments seg = bjorck_segments(int(iters), store_all_bytes <= scratch_budget());
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(X.flat.scalar_type(), "convspectra_bjorck_backward_cpu", [&] {
    using E = typename ElementOf<scalar_t>::type;
    const E* x = elements<scalar_t>(X.flat);
    E* g = mutable_elements<scalar_t>(G);
    const int64_t mn = m * n;
    at::parallel_for(0, X.batch, std::max<int64_t>(1, 64 / (mn + 1)), [&](int64_t b0, int64_t b1) {
      SerialBackward<E> ops(int(m), int(n), seg);
      run_for_cpu_isa<BjorckBackwardRange>(x, g, mn, int(iters), seg, b0, b1, ops);
    });
  });
  return G;
}

at::Tensor bjorck_cpu(const at::Tensor& X, int64_t iters) {
  return bjorck_op(X, iters, [&](const MatrixBatch& x) { return bjorck_kernel(x, iters); });
}

at::Tensor bjorck_backward_cpu(const at::Tensor& grad, const at::Tensor& X, int64_t iters) {
  return bjorck_backward_op(grad, X, iters, [&](const MatrixBatch& g, const MatrixBatch& x) {
    return bjorck_backward_kernel(g, x, iters);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CPU, m) {
  m.impl("bjorck", &bjorck_cpu);
  m.impl("bjorck_backward", &bjorck_backward_cpu);
}

}  // namespace convspectra
