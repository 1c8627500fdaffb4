// Argument checks of every op, in one place. Each message names the op and
// the argument.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>

#include "common/limits.h"

namespace convspectra {

// Every matrix op takes (..., m, n) float32/float64/complex64/complex128.
inline void check_matrices(const at::Tensor& A, const char* op, const char* arg) {
  TORCH_CHECK(A.dim() >= 2, op, ": ", arg, " must have at least 2 dimensions (..., m, n), got ", A.dim());
  const auto st = A.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kComplexFloat || st == at::kComplexDouble, op,
              ": ", arg, " must be float32/float64/complex64/complex128, got ", st);
}

// `other` (named `arg`) must match `ref` (named `ref_arg`) in shape, dtype and device.
inline void check_same(const at::Tensor& other, const at::Tensor& ref, const char* op, const char* arg,
                       const char* ref_arg) {
  TORCH_CHECK(other.sizes() == ref.sizes(), op, ": ", arg, " and ", ref_arg, " shapes differ: ", other.sizes(), " vs ",
              ref.sizes());
  TORCH_CHECK(other.scalar_type() == ref.scalar_type(), op, ": ", arg, " and ", ref_arg, " dtypes differ");
  TORCH_CHECK(other.device() == ref.device(), op, ": ", arg, " and ", ref_arg, " are on different devices");
}

inline void check_gram_args(const at::Tensor& A, int64_t steps) {
  const char* op = "convspectra::gram_bound";
  check_matrices(A, op, "A");
  TORCH_CHECK(steps >= 0 && steps <= kMaxGramSteps, op, ": steps must be in [0, ", kMaxGramSteps, "], got ", steps);
}

inline void check_bjorck_args(const at::Tensor& X, int64_t iters, const char* op) {
  check_matrices(X, op, "X");
  TORCH_CHECK(iters >= 0 && iters <= kMaxBjorckIters, op, ": iters must be in [0, ", kMaxBjorckIters, "], got ",
              iters);
}

inline void check_bjorck_backward_args(const at::Tensor& grad, const at::Tensor& X, int64_t iters) {
  const char* op = "convspectra::bjorck_backward";
  check_bjorck_args(X, iters, op);
  check_same(grad, X, op, "grad", "X");
}

inline void check_cayley_backward_args(const at::Tensor& grad_Q, const at::Tensor& W, const at::Tensor& M) {
  const char* op = "convspectra::cayley_backward";
  check_matrices(W, op, "W");
  check_same(grad_Q, W, op, "grad_Q", "W");
  auto m_shape = W.sizes().vec();  // the batch dims, then min(m, n) x min(m, n)
  const int64_t k = std::min(W.size(-2), W.size(-1));
  m_shape[m_shape.size() - 2] = m_shape[m_shape.size() - 1] = k;
  TORCH_CHECK(M.sizes() == at::IntArrayRef(m_shape), op, ": M must have shape ", at::IntArrayRef(m_shape), ", got ",
              M.sizes());
  TORCH_CHECK(M.scalar_type() == W.scalar_type() && M.device() == W.device(), op,
              ": M must have the dtype and device of W");
}

}  // namespace convspectra
