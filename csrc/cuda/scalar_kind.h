// The torch dtype -> ScalarKind mapping of the CUDA registrations (torch side).
#pragma once

#include <ATen/ATen.h>

#include "cuda/svd_cuda.h"

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

}  // namespace cuda
}  // namespace convspectra
