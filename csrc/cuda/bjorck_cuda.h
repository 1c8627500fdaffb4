// Launchers of the fused Bjorck CUDA kernels. Plain C++ with raw pointers:
// bjorck_cuda.cu is compiled by nvcc without torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/svd_cuda.h"  // ScalarKind

namespace convspectra {
namespace cuda {

// Whether one tall m x n matrix (m >= n) stays in a block's shared memory for
// all iterations of the forward (backward) kernel.
bool bjorck_fits_shared(ScalarKind kind, int m, int n, bool backward);

// Y = `iters` Bjorck steps of each of `batch` contiguous row-major tall m x n
// matrices X.
cudaError_t bjorck(ScalarKind kind, const void* X, int64_t batch, int m, int n, int iters, void* Y,
                   cudaStream_t stream);

// Elements of global scratch bjorck_backward needs (the recomputed iterates).
size_t bjorck_backward_workspace_elements(int64_t batch, int m, int n, int iters);

// grad_X of the steps above given grad_Y (both batch x m x n).
cudaError_t bjorck_backward(ScalarKind kind, const void* grad_Y, const void* X, int64_t batch, int m, int n,
                            int iters, void* workspace, void* grad_X, cudaStream_t stream);

}  // namespace cuda
}  // namespace convspectra
