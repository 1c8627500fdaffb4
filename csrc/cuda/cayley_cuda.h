// Launcher of the fused Cayley CUDA kernel. Plain C++ with raw pointers:
// cayley_cuda.cu is compiled by nvcc without torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/scalar_kind.h"

namespace convspectra {
namespace cuda {

// Whether the n x n system of one matrix fits in a block's shared memory.
Status cayley_fits_shared(ScalarKind kind, int n, bool& fits);

// Q (batch x m x n) and M = (I + A)^{-1} (batch x n x n) for `batch`
// contiguous row-major m x n matrices W, m >= n.
Status cayley(ScalarKind kind, const void* W, int64_t batch, int m, int n, void* Q, void* M, cudaStream_t stream);

}  // namespace cuda
}  // namespace convspectra
