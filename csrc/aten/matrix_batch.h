// Torch-side helpers shared by the kernels' registrations.
#pragma once

#include <ATen/ATen.h>

#include "common/complex_math.h"

namespace convspectra {

// The C++ element type of the kernels that matches a torch dtype's memory layout.
template <typename scalar_t> struct ElementOf { using type = scalar_t; };
template <typename T> struct ElementOf<c10::complex<T>> { using type = Complex<T>; };

// The conjugate transpose of the last two dims as a materialised contiguous
// tensor. Kernels never pass lazy conj views around: raw-pointer code would read
// the unconjugated memory, and traced (torch.compile) graphs have mishandled them.
inline at::Tensor conj_transpose(const at::Tensor& x) {
  return x.transpose(-2, -1).conj_physical().contiguous();
}

}  // namespace convspectra
