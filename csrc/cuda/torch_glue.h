// Torch-side helpers of the CUDA registrations (cuda/*_ops.cpp).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/scalar_kind.h"
#include "cuda/status.h"

namespace convspectra {
namespace cuda {

inline ScalarKind scalar_kind(at::ScalarType t, const char* op, const char* arg) {
  switch (t) {
    case at::kFloat: return ScalarKind::kFloat;
    case at::kDouble: return ScalarKind::kDouble;
    case at::kComplexFloat: return ScalarKind::kComplexFloat;
    case at::kComplexDouble: return ScalarKind::kComplexDouble;
    default: TORCH_CHECK(false, op, ": ", arg, " must be float32/float64/complex64/complex128, got ", t);
  }
}

// Raises the op's error for a failed launcher Status, naming the CUDA call.
inline void check(const Status& s, const char* op) {
  TORCH_CHECK(s.ok(), op, ": ", s.call, " failed: ", cudaGetErrorString(s.err));
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace cuda
}  // namespace convspectra
