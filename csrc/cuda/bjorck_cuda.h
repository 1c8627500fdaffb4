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

// Blocks for bjorck_backward: as many as can be resident at once (each keeps
// its recomputed iterates in global scratch, so more would only cost memory).
int bjorck_backward_grid(ScalarKind kind, int64_t batch, int m, int n);

// grad_X of the steps above given grad_Y (both batch x m x n), on `grid`
// blocks with workspace of grid * iters * m * n elements.
cudaError_t bjorck_backward(ScalarKind kind, const void* grad_Y, const void* X, int64_t batch, int m, int n,
                            int iters, int grid, void* workspace, void* grad_X, cudaStream_t stream);

}  // namespace cuda
}  // namespace convspectra
