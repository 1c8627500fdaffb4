// CUDA registrations of the batched SVD family: argument checks, output
// allocation and the launch on the current stream. The kernels themselves are
// in svd_cuda.cu, which is compiled without torch headers.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "aten/checks.h"
#include "aten/matrix_batch.h"
#include "cuda/scalar_kind.h"

namespace convspectra {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_cuda_impl(const at::Tensor& A_in, bool want_uv, const char* op) {
  check_matrices(A_in, op, "A");
  TORCH_CHECK(A_in.is_cuda(), op, ": expected a CUDA tensor");
  const auto kind = cuda::scalar_kind(A_in.scalar_type(), op, "A");
  const int64_t m = A_in.size(-2), n = A_in.size(-1), k = std::min(m, n);
  TORCH_CHECK(m <= INT32_MAX && n <= INT32_MAX, op, ": matrix dimensions too large");
  c10::cuda::CUDAGuard guard(A_in.device());
  auto batch_shape = A_in.sizes().slice(0, A_in.dim() - 2).vec();
  auto shape_with = [&](int64_t a, int64_t b) {
    auto s = batch_shape;
    s.push_back(a);
    if (b >= 0) s.push_back(b);
    return s;
  };
  const auto real_dtype = c10::toRealValueType(A_in.scalar_type());
  at::Tensor S = at::empty(shape_with(k, -1), A_in.options().dtype(real_dtype));
  at::Tensor U = want_uv ? at::empty(shape_with(m, k), A_in.options()) : at::Tensor();
  at::Tensor Vh = want_uv ? at::empty(shape_with(k, n), A_in.options()) : at::Tensor();
  if (A_in.numel() == 0 || k == 0) return {U, S, Vh};

  const at::Tensor A = A_in.resolve_conj().contiguous();  // raw memory below
  const int64_t batch = A.numel() / (m * n);
  const size_t ws_bytes = cuda::jacobi_svd_workspace_bytes(kind, batch, int(m), int(n), want_uv);
  at::Tensor ws = ws_bytes ? at::empty({int64_t(ws_bytes)}, A.options().dtype(at::kByte)) : at::Tensor();
  const cudaError_t err = cuda::jacobi_svd(kind, A.const_data_ptr(), batch, int(m), int(n), S.mutable_data_ptr(),
                                           want_uv ? U.mutable_data_ptr() : nullptr,
                                           want_uv ? Vh.mutable_data_ptr() : nullptr,
                                           ws_bytes ? ws.mutable_data_ptr() : nullptr, ws_bytes,
                                           c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
  return {U, S, Vh};
}

at::Tensor svdvals_cuda(const at::Tensor& A) {
  return std::get<1>(svd_cuda_impl(A, /*want_uv=*/false, "convspectra::svdvals"));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_cuda(const at::Tensor& A) {
  return svd_cuda_impl(A, /*want_uv=*/true, "convspectra::svd");
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CUDA, m) {
  m.impl("svdvals", &svdvals_cuda);
  m.impl("svd", &svd_cuda);
}

}  // namespace convspectra
