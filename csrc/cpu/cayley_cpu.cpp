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

#include "aten/checks.h"
#include "aten/matrix_batch.h"
#include "aten/cayley_batched.h"
#include "common/cayley.h"

namespace convspectra {
namespace {

std::tuple<at::Tensor, at::Tensor> cayley_cpu(const at::Tensor& W_in) {
  check_matrices(W_in, "convspectra::cayley", "W");
  const auto st = W_in.scalar_type();
  const int64_t m = W_in.size(-2), n = W_in.size(-1);
  if (m < n) {  // orthonormal rows: the tall case of W^H
    auto [Q, M] = cayley_cpu(conj_transpose(W_in));
    return {conj_transpose(Q), M};
  }
  TORCH_CHECK(m * n <= INT32_MAX, "convspectra::cayley: matrices too large (m * n must fit in 32 bits)");
  const auto m_shape = cayley_inverse_shape(W_in);
  if (W_in.numel() == 0) return {at::empty_like(W_in, at::MemoryFormat::Contiguous), at::empty(m_shape, W_in.options())};
  const at::Tensor W = W_in.reshape({-1, m, n}).resolve_conj().contiguous();
  at::Tensor Q = at::empty_like(W);
  at::Tensor M = at::empty({W.size(0), n, n}, W.options());
  AT_DISPATCH_FLOATING_AND_COMPLEX_TYPES(st, "convspectra_cayley_cpu", [&] {
    using E = typename ElementOf<scalar_t>::type;
    const E* w = reinterpret_cast<const E*>(W.const_data_ptr<scalar_t>());
    E* q = reinterpret_cast<E*>(Q.mutable_data_ptr<scalar_t>());
    E* mm = reinterpret_cast<E*>(M.mutable_data_ptr<scalar_t>());
    at::parallel_for(0, W.size(0), std::max<int64_t>(1, 1024 / (m * n + 1)), [&](int64_t b0, int64_t b1) {
      std::vector<E> column(n);
      std::vector<int> perm(n);
      for (int64_t b = b0; b < b1; ++b) {
        E* Mb = mm + b * n * n;
        cayley_system(w + b * m * n, int(m), int(n), Mb);
        invert_with_pivoting(Mb, int(n), column.data(), perm.data());
        cayley_output(w + b * m * n, Mb, int(m), int(n), q + b * m * n);
      }
    });
  });
  return {Q.view(W_in.sizes()), M.view(m_shape)};
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CPU, m) { m.impl("cayley", &cayley_cpu); }

}  // namespace convspectra
