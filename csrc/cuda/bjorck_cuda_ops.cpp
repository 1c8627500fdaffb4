// CUDA registration of convspectra::bjorck and bjorck_backward: the fused
// kernels when a matrix fits in shared memory, batched cuBLAS products
// otherwise.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "aten/bjorck_batched.h"
#include "aten/matrix_batch.h"
#include "aten/switches.h"
#include "cuda/bjorck_cuda.h"
#include "cuda/torch_glue.h"

namespace convspectra {
namespace {

// Whether the fused kernel takes these matrices (else the batched products).
bool use_fused(cuda::ScalarKind kind, const MatrixBatch& X, int64_t iters, bool backward, const char* op) {
  if (iters == 0 || force_fallback() || X.m > INT32_MAX) return false;
  bool fits = false;
  cuda::check(cuda::bjorck_fits_shared(kind, int(X.m), int(X.n), backward, fits), op);
  return fits;
}

at::Tensor bjorck_kernel(const MatrixBatch& X, int64_t iters) {
  const char* op = "convspectra::bjorck";
  const cuda::ScalarKind kind = cuda::scalar_kind(X.flat.scalar_type(), op, "X");
  c10::cuda::CUDAGuard guard(X.flat.device());
  if (!use_fused(kind, X, iters, false, op)) return bjorck_batched(X.flat, iters);
  at::Tensor Y = at::empty_like(X.flat);
  cuda::check(cuda::bjorck(kind, X.flat.const_data_ptr(), X.batch, int(X.m), int(X.n), int(iters),
                           Y.mutable_data_ptr(), cuda::current_stream()),
              op);
  return Y;
}

at::Tensor bjorck_backward_kernel(const MatrixBatch& grad, const MatrixBatch& X, int64_t iters) {
  const char* op = "convspectra::bjorck_backward";
  const cuda::ScalarKind kind = cuda::scalar_kind(X.flat.scalar_type(), op, "X");
  c10::cuda::CUDAGuard guard(X.flat.device());
  if (!use_fused(kind, X, iters, true, op)) return bjorck_backward_batched(grad.flat, X.flat, iters, scratch_budget());
  cuda::BjorckBackwardPlan plan;
  cuda::check(cuda::bjorck_backward_plan(kind, X.batch, int(X.m), int(X.n), int(iters), scratch_budget(), plan), op);
  at::Tensor out = at::empty_like(X.flat);
  at::Tensor work = at::empty({int64_t(plan.workspace_elems)}, X.flat.options());  // the recomputed iterates
  cuda::check(cuda::bjorck_backward(kind, plan, grad.flat.const_data_ptr(), X.flat.const_data_ptr(), X.batch,
                                    int(X.m), int(X.n), int(iters), work.mutable_data_ptr(), out.mutable_data_ptr(),
                                    cuda::current_stream()),
              op);
  return out;
}

at::Tensor bjorck_cuda(const at::Tensor& X, int64_t iters) {
  return bjorck_op(X, iters, [&](const MatrixBatch& x) { return bjorck_kernel(x, iters); });
}

at::Tensor bjorck_backward_cuda(const at::Tensor& grad, const at::Tensor& X, int64_t iters) {
  return bjorck_backward_op(grad, X, iters, [&](const MatrixBatch& g, const MatrixBatch& x) {
    return bjorck_backward_kernel(g, x, iters);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CUDA, m) {
  m.impl("bjorck", &bjorck_cuda);
  m.impl("bjorck_backward", &bjorck_backward_cuda);
}

}  // namespace convspectra
