// Launchers of the batched Jacobi SVD CUDA kernels. Plain C++ with raw
// pointers: svd_cuda.cu is compiled by nvcc without torch headers.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "common/complex_math.h"

namespace convspectra {
namespace cuda {

enum class ScalarKind { kFloat, kDouble, kComplexFloat, kComplexDouble };

// Calls fn(E{}) with E the element type of `kind` (float, double, Complex<...>).
template <typename Fn>
cudaError_t dispatch_scalar_kind(ScalarKind kind, Fn&& fn);

// Bytes of global scratch the launch below needs (0 when every matrix fits in
// shared memory and force_global is false). Queries the current device.
size_t jacobi_svd_workspace_bytes(ScalarKind kind, int64_t batch, int m, int n, bool want_uv, bool force_global);

// Singular values (and, if U and Vh are not null, the reduced SVD factors) of
// `batch` contiguous row-major m x n matrices A. S: batch x min(m, n) real,
// descending. U: batch x m x k, Vh: batch x k x n. Matrices containing NaN or
// Inf produce NaN. Runs on `stream`; returns the launch error, if any.
cudaError_t jacobi_svd(ScalarKind kind, const void* A, int64_t batch, int m, int n, void* S, void* U, void* Vh,
                       void* workspace, size_t workspace_bytes, bool force_global, cudaStream_t stream);

template <typename Fn>
cudaError_t dispatch_scalar_kind(ScalarKind kind, Fn&& fn) {
  switch (kind) {
    case ScalarKind::kFloat: return fn(float{});
    case ScalarKind::kDouble: return fn(double{});
    case ScalarKind::kComplexFloat: return fn(Complex<float>{});
    case ScalarKind::kComplexDouble: return fn(Complex<double>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace convspectra
