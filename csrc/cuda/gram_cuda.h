// Launcher of the fused Gram-iteration CUDA kernel. Plain C++ with raw
// pointers: gram_cuda.cu is compiled by nvcc without torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/scalar_kind.h"

namespace convspectra {
namespace cuda {

// Whether one m x n matrix and its Gram matrix fit in a block's shared memory
// on the current device (else the caller uses batched cuBLAS products).
Status gram_bound_fits_shared(ScalarKind kind, int m, int n, bool& fits);

// Upper bounds of ||A_b||_2 after `steps` Gram squarings for `batch` contiguous
// row-major m x n matrices; out: batch reals. NaN for non-finite matrices.
Status gram_bound(ScalarKind kind, const void* A, int64_t batch, int m, int n, int steps, void* out,
                  cudaStream_t stream);

}  // namespace cuda
}  // namespace convspectra
