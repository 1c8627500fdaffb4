// CUDA registration of convspectra::gram_bound: the fused kernel when a matrix
// and its Gram matrix fit in shared memory, batched cuBLAS products otherwise.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "aten/checks.h"
#include "aten/matrix_batch.h"
#include "cuda/gram_cuda.h"
#include "cuda/scalar_kind.h"
#include "aten/gram_batched.h"

namespace convspectra {
namespace {

at::Tensor gram_bound_cuda(const at::Tensor& A_in, int64_t steps) {
  check_gram_args(A_in, steps);
  TORCH_CHECK(A_in.is_cuda(), "convspectra::gram_bound: expected a CUDA tensor");
  const auto st = A_in.scalar_type();
  const cuda::ScalarKind kind = cuda::scalar_kind(st, "convspectra::gram_bound", "A");
  c10::cuda::CUDAGuard guard(A_in.device());
  const int64_t m = A_in.size(-2), n = A_in.size(-1);
  TORCH_CHECK(m <= INT32_MAX && n <= INT32_MAX, "convspectra::gram_bound: matrix dimensions too large");
  auto batch_shape = A_in.sizes().slice(0, A_in.dim() - 2).vec();
  at::Tensor out = at::empty(batch_shape, A_in.options().dtype(c10::toRealValueType(st)));
  if (out.numel() == 0) return out;
  if (m == 0 || n == 0) return out.zero_();
  const at::Tensor A = A_in.reshape({-1, m, n}).resolve_conj().contiguous();  // raw memory below
  if (!cuda::gram_bound_fits_shared(kind, int(m), int(n))) return gram_bound_batched(A, steps).view(batch_shape);
  const cudaError_t err = cuda::gram_bound(kind, A.const_data_ptr(), A.size(0), int(m), int(n), int(steps),
                                           out.mutable_data_ptr(), c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "convspectra::gram_bound: CUDA launch failed: ", cudaGetErrorString(err));
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CUDA, m) { m.impl("gram_bound", &gram_bound_cuda); }

}  // namespace convspectra
