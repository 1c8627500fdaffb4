// CUDA registration of convspectra::bjorck and bjorck_backward: the fused
// kernels when a matrix fits in shared memory, batched cuBLAS products
// otherwise.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "aten/bjorck_batched.h"
#include "aten/matrix_batch.h"
#include "aten/switches.h"
#include "cuda/bjorck_cuda.h"
#include "cuda/scalar_kind.h"

namespace convspectra {
namespace {

at::Tensor bjorck_kernel(const MatrixBatch& X, int64_t iters) {
  const char* op = "convspectra::bjorck";
  const cuda::ScalarKind kind = cuda::scalar_kind(X.flat.scalar_type(), op, "X");
  c10::cuda::CUDAGuard guard(X.flat.device());
  if (iters == 0 || force_fallback() || X.m > INT32_MAX || !cuda::bjorck_fits_shared(kind, int(X.m), int(X.n), false))
    return bjorck_batched(X.flat, iters);
  at::Tensor Y = at::empty_like(X.flat);
  const cudaError_t err = cuda::bjorck(kind, X.flat.const_data_ptr(), X.batch, int(X.m), int(X.n), int(iters),
                                       Y.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
  return Y;
}

at::Tensor bjorck_backward_kernel(const MatrixBatch& grad, const MatrixBatch& X, int64_t iters) {
  const char* op = "convspectra::bjorck_backward";
  const cuda::ScalarKind kind = cuda::scalar_kind(X.flat.scalar_type(), op, "X");
  c10::cuda::CUDAGuard guard(X.flat.device());
  const int64_t m = X.m, n = X.n;
  if (iters == 0 || force_fallback() || m > INT32_MAX || !cuda::bjorck_fits_shared(kind, int(m), int(n), true))
    return bjorck_backward_batched(grad.flat, X.flat, iters, scratch_budget());
  at::Tensor out = at::empty_like(X.flat);
  const int grid = cuda::bjorck_backward_grid(kind, X.batch, int(m), int(n));
  at::Tensor work = at::empty({int64_t(grid) * iters * m * n}, X.flat.options());  // the recomputed iterates
  const cudaError_t err =
      cuda::bjorck_backward(kind, grad.flat.const_data_ptr(), X.flat.const_data_ptr(), X.batch, int(m), int(n),
                            int(iters), grid, work.mutable_data_ptr(), out.mutable_data_ptr(),
                            c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

at::Tensor bjorck_cuda(const at::Tensor& X, int64_t iters) {
  return bjorck_op(X, iters, [&](const MatrixBatch& x) { return bjorck_kernel(x, iters); });
}

at::Tensor bjorck_backward_cuda(const at::Tensor& grad, const at::Tensor& X, int64_t iters) {
  return bjorck_backward_op(grad, X, iters,
                            [&](const MatrixBatch& g, const MatrixBatch& x) { return bjorck_backward_kernel(g, x, iters); });
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CUDA, m) {
  m.impl("bjorck", &bjorck_cuda);
  m.impl("bjorck_backward", &bjorck_backward_cuda);
}

}  // namespace convspectra
