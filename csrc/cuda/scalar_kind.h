// The element types of the CUDA kernels, torch-free so that the .cu files
// (compiled without torch headers) and the launcher headers share it. The
// torch dtype -> ScalarKind mapping is torch-side, in cuda/torch_glue.h.
#pragma once

#include "common/complex_math.h"
#include "cuda/status.h"

namespace convspectra {
namespace cuda {

enum class ScalarKind { kFloat, kDouble, kComplexFloat, kComplexDouble };

// Calls fn(E{}) with E the element type of `kind` (float, double, Complex<...>);
// fn returns a Status.
template <typename Fn>
Status dispatch_scalar_kind(ScalarKind kind, Fn&& fn) {
  switch (kind) {
    case ScalarKind::kFloat: return fn(float{});
    case ScalarKind::kDouble: return fn(double{});
    case ScalarKind::kComplexFloat: return fn(Complex<float>{});
    case ScalarKind::kComplexDouble: return fn(Complex<double>{});
  }
  return {cudaErrorInvalidValue, "dispatch_scalar_kind"};
}

}  // namespace cuda
}  // namespace convspectra
