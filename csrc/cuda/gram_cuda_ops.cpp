// CUDA registration of convspectra::gram_bound: the fused kernel when a matrix
// and its Gram matrix fit in shared memory, batched cuBLAS products otherwise.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "aten/gram_batched.h"
#include "aten/matrix_batch.h"
#include "aten/switches.h"
#include "cuda/gram_cuda.h"
#include "cuda/torch_glue.h"

namespace convspectra {
namespace {

at::Tensor gram_bound_kernel(const MatrixBatch& A, int64_t steps) {
  const char* op = "convspectra::gram_bound";
  const auto st = A.flat.scalar_type();
  const cuda::ScalarKind kind = cuda::scalar_kind(st, op, "A");
  TORCH_CHECK(A.m <= INT32_MAX && A.n <= INT32_MAX, op, ": A's matrix dimensions are too large");
  c10::cuda::CUDAGuard guard(A.flat.device());
  bool fits = false;
  if (!force_fallback()) cuda::check(cuda::gram_bound_fits_shared(kind, int(A.m), int(A.n), fits), op);
  if (!fits) return gram_bound_batched(A.flat, steps);
  at::Tensor out = at::empty({A.batch}, A.flat.options().dtype(c10::toRealValueType(st)));
  cuda::check(cuda::gram_bound(kind, A.flat.const_data_ptr(), A.batch, int(A.m), int(A.n), int(steps),
                               out.mutable_data_ptr(), cuda::current_stream()),
              op);
  return out;
}

at::Tensor gram_bound_cuda(const at::Tensor& A, int64_t steps) {
  return gram_bound_op(A, steps, [&](const MatrixBatch& a) { return gram_bound_kernel(a, steps); });
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CUDA, m) { m.impl("gram_bound", &gram_bound_cuda); }

}  // namespace convspectra
