// CUDA registration of convspectra::cayley: the fused kernel when the n x n
// system fits in shared memory, batched cuSOLVER / cuBLAS otherwise.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "aten/cayley_batched.h"
#include "aten/matrix_batch.h"
#include "aten/switches.h"
#include "cuda/cayley_cuda.h"
#include "cuda/torch_glue.h"

namespace convspectra {
namespace {

std::tuple<at::Tensor, at::Tensor> cayley_kernel(const MatrixBatch& W) {
  const char* op = "convspectra::cayley";
  const cuda::ScalarKind kind = cuda::scalar_kind(W.flat.scalar_type(), op, "W");
  c10::cuda::CUDAGuard guard(W.flat.device());
  bool fits = false;
  if (!force_fallback()) cuda::check(cuda::cayley_fits_shared(kind, int(W.n), fits), op);
  if (!fits) return cayley_batched(W.flat);
  at::Tensor Q = at::empty_like(W.flat);
  at::Tensor M = at::empty({W.batch, W.n, W.n}, W.flat.options());
  cuda::check(cuda::cayley(kind, W.flat.const_data_ptr(), W.batch, int(W.m), int(W.n), Q.mutable_data_ptr(),
                           M.mutable_data_ptr(), cuda::current_stream()),
              op);
  return {Q, M};
}

std::tuple<at::Tensor, at::Tensor> cayley_cuda(const at::Tensor& W) { return cayley_op(W, cayley_kernel); }

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CUDA, m) { m.impl("cayley", &cayley_cuda); }

}  // namespace convspectra
