// Small torch-side helpers shared by the kernels' registrations.
#pragma once

#include <ATen/ATen.h>

#include "common/complex_math.h"

namespace convspectra {

// The C++ element type of the kernels that matches a torch dtype's memory layout.
template <typename scalar_t> struct ElementOf { using type = scalar_t; };
template <typename T> struct ElementOf<c10::complex<T>> { using type = Complex<T>; };

// Every matrix op takes (..., m, n) float32/float64/complex64/complex128.
inline void check_matrices(const at::Tensor& A, const char* op, const char* arg) {
  TORCH_CHECK(A.dim() >= 2, op, ": ", arg, " must have at least 2 dimensions (..., m, n), got ", A.dim());
  const auto st = A.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kComplexFloat || st == at::kComplexDouble, op,
              ": ", arg, " must be float32/float64/complex64/complex128, got ", st);
}

// The conjugate transpose of the last two dims as a materialised contiguous
// tensor. Kernels never pass lazy conj views around: raw-pointer code would read
// the unconjugated memory, and traced (torch.compile) graphs have mishandled them.
inline at::Tensor conj_transpose(const at::Tensor& x) {
  return x.transpose(-2, -1).conj_physical().contiguous();
}

}  // namespace convspectra
