// Launchers of the fused Bjorck CUDA kernels. Plain C++ with raw pointers:
// bjorck_cuda.cu is compiled by nvcc without torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "common/bjorck.h"
#include "cuda/scalar_kind.h"

namespace convspectra {
namespace cuda {

// Whether one tall m x n matrix (m >= n) stays in a block's shared memory for
// all iterations of the forward (backward) kernel.
Status bjorck_fits_shared(ScalarKind kind, int m, int n, bool backward, bool& fits);

// Y = `iters` Bjorck steps of each of `batch` contiguous row-major tall m x n
// matrices X.
Status bjorck(ScalarKind kind, const void* X, int64_t batch, int m, int n, int iters, void* Y, cudaStream_t stream);

// How bjorck_backward runs: `grid` blocks, each recomputing its matrices'
// iterates as `segments` says into its own slice of a workspace of
// workspace_elems elements, grid * segments.slots() matrices in all, within
// budget_bytes unless even one block's slice is larger.
struct BjorckBackwardPlan {
  int grid = 1;
  BjorckSegments segments{1, 1};
  size_t workspace_elems = 0;
};
Status bjorck_backward_plan(ScalarKind kind, int64_t batch, int m, int n, int iters, int64_t budget_bytes,
                            BjorckBackwardPlan& plan);

// grad_X of the steps above given grad_Y (both batch x m x n).
Status bjorck_backward(ScalarKind kind, const BjorckBackwardPlan& plan, const void* grad_Y, const void* X,
                       int64_t batch, int m, int n, int iters, void* workspace, void* grad_X, cudaStream_t stream);

}  // namespace cuda
}  // namespace convspectra
