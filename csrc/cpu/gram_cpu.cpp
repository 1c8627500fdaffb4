// CPU kernel of convspectra::gram_bound: Gram iteration per matrix.
//
// Small matrices (min(m, n) <= kGramSerialMaxCpu) run the serial loop of
// common/gram.h with the matrix in cache, at::parallel_for over the batch;
// larger ones use batched ATen products (MKL), which win there.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "aten/gram_batched.h"
#include "aten/matrix_batch.h"
#include "aten/switches.h"
#include "common/gram.h"
#include "cpu/isa.h"

namespace convspectra {
namespace {

constexpr int64_t kGramSerialMaxCpu = 32;

// Upper bound of ||A||_2 for one row-major m x n matrix.
template <typename E>
real_t<E> gram_bound_one(const E* A, int m, int n, int steps, std::vector<E>& buf_g, std::vector<E>& buf_c) {
  using R = real_t<E>;
  const bool tall = m >= n;
  const int rows = tall ? m : n, k = tall ? n : m;
  R amax = R(0);
  for (int i = 0; i < m * n; ++i) {
    if (!is_finite(A[i])) return std::numeric_limits<R>::quiet_NaN();
    amax = std::max(amax, cabs(A[i]));
  }
  if (amax == R(0)) return R(0);
  buf_g.resize(size_t(rows) * k);
  buf_c.resize(size_t(k) * k);
  E* G = buf_g.data();
  E* C = buf_c.data();
  // X = A (tall) or A^H (wide), row-major rows x k, divided by amax
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < k; ++c) G[r * k + c] = divide(tall ? A[r * n + c] : conj(A[c * n + r]), amax);
  double log_scale = 0.0;
  int cur_rows = rows;
  for (int t = 0; t < steps; ++t) {
    R f2 = R(0);
    for (int i = 0; i < cur_rows * k; ++i) f2 += abs2(G[i]);
    if (!(f2 > R(0))) return R(0);
    log_scale = 2.0 * (log_scale + 0.5 * std::log(double(f2)));
    gram_square(G, cur_rows, k, R(1) / f2, C);
    std::swap(G, C);
    cur_rows = k;
  }
  R f2 = R(0);
  for (int i = 0; i < cur_rows * k; ++i) f2 += abs2(G[i]);
  if (!(f2 > R(0))) return R(0);
  return R(std::exp(gram_log_bound(log_scale, 0.5 * std::log(double(f2)), steps))) * amax;
}

// Bounds of matrices [b0, b1), compiled per ISA (cpu/isa.h).
struct GramBoundRange {
  template <typename E>
  static void run(const E* a, int m, int n, int steps, int64_t b0, int64_t b1, real_t<E>* o, std::vector<E>& g,
                  std::vector<E>& c) {
    for (int64_t b = b0; b < b1; ++b) o[b] = gram_bound_one(a + b * m * n, m, n, steps, g, c);
  }
};

at::Tensor gram_bound_kernel(const MatrixBatch& A, int64_t steps) {
  const int64_t m = A.m, n = A.n;
  // the serial kernel indexes one matrix with int
  if (force_fallback() || std::min(m, n) > kGramSerialMaxCpu || m * n > INT32_MAX)
    return gram_bound_batched(A.flat, steps);
  const auto st = A.flat.scalar_type();
  at::Tensor out = at::empty({A.batch}, A.flat.options().dtype(c10::toRealValueType(st)));
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(st, "convspectra_gram_bound_cpu", [&] {
    using E = typename ElementOf<scalar_t>::type;
    using R = real_t<E>;
    const E* a = elements<scalar_t>(A.flat);
    R* o = out.mutable_data_ptr<R>();
    at::parallel_for(0, A.batch, std::max<int64_t>(1, 1024 / (m * n + 1)), [&](int64_t b0, int64_t b1) {
      std::vector<E> g, c;
      run_for_cpu_isa<GramBoundRange>(a, int(m), int(n), int(steps), b0, b1, o, g, c);
    });
  });
  return out;
}

at::Tensor gram_bound_cpu(const at::Tensor& A, int64_t steps) {
  return gram_bound_op(A, steps, [&](const MatrixBatch& a) { return gram_bound_kernel(a, steps); });
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CPU, m) { m.impl("gram_bound", &gram_bound_cpu); }

}  // namespace convspectra
