// CUDA registration of convspectra::bjorck and bjorck_backward: the fused
// kernels when a matrix fits in shared memory, batched cuBLAS products
// otherwise. Wide matrices are the tall case of their conjugate transpose.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "aten/checks.h"
#include "aten/matrix_batch.h"
#include "aten/bjorck_batched.h"
#include "cuda/bjorck_cuda.h"
#include "cuda/scalar_kind.h"

namespace convspectra {
namespace {

at::Tensor bjorck_cuda(const at::Tensor& X_in, int64_t iters) {
  check_bjorck_args(X_in, iters, "convspectra::bjorck");
  TORCH_CHECK(X_in.is_cuda(), "convspectra::bjorck: expected a CUDA tensor");
  const cuda::ScalarKind kind = cuda::scalar_kind(X_in.scalar_type(), "convspectra::bjorck", "X");
  const int64_t m = X_in.size(-2), n = X_in.size(-1);
  if (m < n) return conj_transpose(bjorck_cuda(conj_transpose(X_in), iters));
  if (X_in.numel() == 0) return at::empty_like(X_in, at::MemoryFormat::Contiguous);
  c10::cuda::CUDAGuard guard(X_in.device());
  const at::Tensor X = X_in.reshape({-1, m, n}).resolve_conj().contiguous();
  if (iters == 0 || m > INT32_MAX || !cuda::bjorck_fits_shared(kind, int(m), int(n), false))
    return bjorck_batched(X, iters).view(X_in.sizes());
  at::Tensor Y = at::empty_like(X);
  const cudaError_t err = cuda::bjorck(kind, X.const_data_ptr(), X.size(0), int(m), int(n), int(iters),
                                       Y.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "convspectra::bjorck: CUDA launch failed: ", cudaGetErrorString(err));
  return Y.view(X_in.sizes());
}

at::Tensor bjorck_backward_cuda(const at::Tensor& grad_in, const at::Tensor& X_in, int64_t iters) {
  check_bjorck_backward_args(grad_in, X_in, iters);
  TORCH_CHECK(X_in.is_cuda(), "convspectra::bjorck_backward: expected CUDA tensors");
  const cuda::ScalarKind kind = cuda::scalar_kind(X_in.scalar_type(), "convspectra::bjorck_backward", "X");
  const int64_t m = X_in.size(-2), n = X_in.size(-1);
  if (m < n) return conj_transpose(bjorck_backward_cuda(conj_transpose(grad_in), conj_transpose(X_in), iters));
  if (X_in.numel() == 0) return at::empty_like(X_in, at::MemoryFormat::Contiguous);
  c10::cuda::CUDAGuard guard(X_in.device());
  const at::Tensor X = X_in.reshape({-1, m, n}).resolve_conj().contiguous();
  const at::Tensor grad = grad_in.reshape({-1, m, n}).resolve_conj().contiguous();
  if (iters == 0 || m > INT32_MAX || !cuda::bjorck_fits_shared(kind, int(m), int(n), true))
    return bjorck_backward_batched(grad, X, iters).view(X_in.sizes());
  at::Tensor out = at::empty_like(X);
  const int grid = cuda::bjorck_backward_grid(kind, X.size(0), int(m), int(n));
  at::Tensor work = at::empty({int64_t(grid) * iters * m * n}, X.options());  // the recomputed iterates
  const cudaError_t err =
      cuda::bjorck_backward(kind, grad.const_data_ptr(), X.const_data_ptr(), X.size(0), int(m), int(n), int(iters),
                            grid, work.mutable_data_ptr(), out.mutable_data_ptr(),
                            c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "convspectra::bjorck_backward: CUDA launch failed: ", cudaGetErrorString(err));
  return out.view(X_in.sizes());
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CUDA, m) {
  m.impl("bjorck", &bjorck_cuda);
  m.impl("bjorck_backward", &bjorck_backward_cuda);
}

}  // namespace convspectra
