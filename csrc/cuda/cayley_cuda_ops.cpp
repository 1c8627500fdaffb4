// CUDA registration of convspectra::cayley: the fused kernel when the n x n
// system fits in shared memory, batched cuSOLVER / cuBLAS otherwise.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "aten/checks.h"
#include "aten/matrix_batch.h"
#include "aten/cayley_batched.h"
#include "cuda/cayley_cuda.h"
#include "cuda/scalar_kind.h"

namespace convspectra {
namespace {

std::tuple<at::Tensor, at::Tensor> cayley_cuda(const at::Tensor& W_in) {
  check_matrices(W_in, "convspectra::cayley", "W");
  TORCH_CHECK(W_in.is_cuda(), "convspectra::cayley: expected a CUDA tensor");
  const auto st = W_in.scalar_type();
  const cuda::ScalarKind kind = cuda::scalar_kind(st, "convspectra::cayley", "W");
  const int64_t m = W_in.size(-2), n = W_in.size(-1);
  if (m < n) {  // orthonormal rows: the tall case of W^H
    auto [Q, M] = cayley_cuda(conj_transpose(W_in));
    return {conj_transpose(Q), M};
  }
  TORCH_CHECK(m * n <= INT32_MAX, "convspectra::cayley: matrices too large (m * n must fit in 32 bits)");
  c10::cuda::CUDAGuard guard(W_in.device());
  const auto m_shape = cayley_inverse_shape(W_in);
  if (W_in.numel() == 0) return {at::empty_like(W_in, at::MemoryFormat::Contiguous), at::empty(m_shape, W_in.options())};
  const at::Tensor W = W_in.reshape({-1, m, n}).resolve_conj().contiguous();
  if (!cuda::cayley_fits_shared(kind, int(n))) {
    auto [Q, M] = cayley_batched(W);
    return {Q.view(W_in.sizes()), M.view(m_shape)};
  }
  at::Tensor Q = at::empty_like(W);
  at::Tensor M = at::empty({W.size(0), n, n}, W.options());
  const cudaError_t err = cuda::cayley(kind, W.const_data_ptr(), W.size(0), int(m), int(n), Q.mutable_data_ptr(),
                                       M.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "convspectra::cayley: CUDA launch failed: ", cudaGetErrorString(err));
  return {Q.view(W_in.sizes()), M.view(m_shape)};
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CUDA, m) { m.impl("cayley", &cayley_cuda); }

}  // namespace convspectra
