// Launchers of the batched Jacobi SVD CUDA kernels. Plain C++ with raw
// pointers: svd_cuda.cu is compiled by nvcc without torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/scalar_kind.h"

namespace convspectra {
namespace cuda {

// How jacobi_svd runs on the current device: each matrix in shared memory,
// or (too large, or force_global) in a slice of a global workspace of
// workspace_bytes per resident block, within budget_bytes unless even one
// slice is larger.
struct JacobiSvdPlan {
  bool want_uv = false;
  bool in_shared = true;
  int threads = 0;
  int blocks = 0;
  size_t shared_bytes = 0;
  size_t workspace_bytes = 0;
};
Status jacobi_svd_plan(ScalarKind kind, int64_t batch, int m, int n, bool want_uv, bool force_global,
                       int64_t budget_bytes, JacobiSvdPlan& plan);

// Singular values (and, if U and Vh are not null, the reduced SVD factors) of
// `batch` contiguous row-major m x n matrices A. S: batch x min(m, n) real,
// descending. U: batch x m x k, Vh: batch x k x n. Matrices containing NaN or
// Inf produce NaN. Runs on `stream` with plan.workspace_bytes of workspace.
Status jacobi_svd(ScalarKind kind, const JacobiSvdPlan& plan, const void* A, int64_t batch, int m, int n, void* S,
                  void* U, void* Vh, void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace convspectra
