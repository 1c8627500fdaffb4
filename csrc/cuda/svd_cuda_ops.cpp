// CUDA registrations of the batched SVD family: the launch on the current
// stream. The kernels themselves are in svd_cuda.cu, which is compiled without
// torch headers.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "aten/matrix_batch.h"
#include "aten/switches.h"
#include "cuda/svd_cuda.h"
#include "cuda/torch_glue.h"

namespace convspectra {
namespace {

auto svd_kernel(const char* op) {
  return [op](const MatrixBatch& a, const at::Tensor& S, const at::Tensor& U, const at::Tensor& Vh) {
    const auto kind = cuda::scalar_kind(a.flat.scalar_type(), op, "A");
    TORCH_CHECK(a.m <= INT32_MAX && a.n <= INT32_MAX, op, ": A's matrix dimensions are too large");
    c10::cuda::CUDAGuard guard(a.flat.device());
    const bool want_uv = U.defined();
    cuda::JacobiSvdPlan plan;
    cuda::check(cuda::jacobi_svd_plan(kind, a.batch, int(a.m), int(a.n), want_uv, force_fallback(),
                                      scratch_budget(), plan),
                op);
    const at::Tensor ws = plan.workspace_bytes
                              ? at::empty({int64_t(plan.workspace_bytes)}, a.flat.options().dtype(at::kByte))
                              : at::Tensor();
    cuda::check(cuda::jacobi_svd(kind, plan, a.flat.const_data_ptr(), a.batch, int(a.m), int(a.n),
                                 S.mutable_data_ptr(), want_uv ? U.mutable_data_ptr() : nullptr,
                                 want_uv ? Vh.mutable_data_ptr() : nullptr,
                                 ws.defined() ? ws.mutable_data_ptr() : nullptr, cuda::current_stream()),
                op);
  };
}

at::Tensor svdvals_cuda(const at::Tensor& A) {
  const char* op = "convspectra::svdvals";
  return std::get<1>(svd_op(A, /*want_uv=*/false, op, svd_kernel(op)));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_cuda(const at::Tensor& A) {
  const char* op = "convspectra::svd";
  return svd_op(A, /*want_uv=*/true, op, svd_kernel(op));
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CUDA, m) {
  m.impl("svdvals", &svdvals_cuda);
  m.impl("svd", &svd_cuda);
}

}  // namespace convspectra
