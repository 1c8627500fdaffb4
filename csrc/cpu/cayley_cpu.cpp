// CPU kernel of convspectra::cayley: per matrix, Gauss-Jordan inversion of
// I + A with partial pivoting and the output blocks (common/cayley.h), with
// at::parallel_for over the batch, for every size. (Not LAPACK: after an
// explicit torch.set_num_threads, MKL's batched complex64 LU in torch 2.13's
// CPU build returned wrong inverses here -- "CLASWP parameter 6" errors.)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "aten/cayley_batched.h"
#include "aten/matrix_batch.h"
#include "aten/switches.h"
#include "common/cayley.h"
#include "cpu/isa.h"

namespace convspectra {
namespace {

// Cayley maps of matrices [b0, b1), compiled per ISA (cpu/isa.h).
struct CayleyRange {
  template <typename E>
  static void run(const E* w, int m, int n, int64_t b0, int64_t b1, E* q, E* mm, E* column, int* perm) {
    for (int64_t b = b0; b < b1; ++b) {
      E* Mb = mm + b * n * n;
      cayley_system(w + b * m * n, m, n, Mb);
      invert_with_pivoting(Mb, n, column, perm);
      cayley_output(w + b * m * n, Mb, m, n, q + b * m * n);
    }
  }
};

std::tuple<at::Tensor, at::Tensor> cayley_kernel(const MatrixBatch& W) {
  if (force_fallback()) return cayley_batched(W.flat);  // the CUDA fallback, tested here too
  const int64_t m = W.m, n = W.n;
  at::Tensor Q = at::empty_like(W.flat);
  at::Tensor M = at::empty({W.batch, n, n}, W.flat.options());
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(W.flat.scalar_type(), "convspectra_cayley_cpu", [&] {
    using E = typename ElementOf<scalar_t>::type;
    const E* w = elements<scalar_t>(W.flat);
    E* q = mutable_elements<scalar_t>(Q);
    E* mm = mutable_elements<scalar_t>(M);
    at::parallel_for(0, W.batch, std::max<int64_t>(1, 1024 / (m * n + 1)), [&](int64_t b0, int64_t b1) {
      std::vector<E> column(n);
      std::vector<int> perm(n);
      run_for_cpu_isa<CayleyRange>(w, int(m), int(n), b0, b1, q, mm, column.data(), perm.data());
    });
  });
  return {Q, M};
}

std::tuple<at::Tensor, at::Tensor> cayley_cpu(const at::Tensor& W) { return cayley_op(W, cayley_kernel); }

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CPU, m) { m.impl("cayley", &cayley_cpu); }

}  // namespace convspectra
