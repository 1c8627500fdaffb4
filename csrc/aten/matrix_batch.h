// The front half that every op's kernel shares, on every device: argument
// checks, the wide case as the tall one of the conjugate transpose (Cayley,
// Bjorck), empty inputs, output shapes, and the (..., m, n) input seen as
// `batch` contiguous row-major m x n matrices with conjugation resolved (the
// kernels read raw memory). Each device passes what differs as `kernel`.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <tuple>
#include <vector>

#include "aten/checks.h"
#include "common/complex_math.h"

namespace convspectra {

// The C++ element type of the kernels that matches a torch dtype's memory layout.
template <typename scalar_t> struct ElementOf { using type = scalar_t; };
template <typename T> struct ElementOf<c10::complex<T>> { using type = Complex<T>; };
static_assert(sizeof(Complex<float>) == sizeof(c10::complex<float>) &&
              alignof(Complex<float>) == alignof(c10::complex<float>));
static_assert(sizeof(Complex<double>) == sizeof(c10::complex<double>) &&
              alignof(Complex<double>) == alignof(c10::complex<double>));

// A contiguous tensor of dtype scalar_t as the kernels' elements.
template <typename scalar_t>
const typename ElementOf<scalar_t>::type* elements(const at::Tensor& t) {
  return reinterpret_cast<const typename ElementOf<scalar_t>::type*>(t.const_data_ptr<scalar_t>());
}
template <typename scalar_t>
typename ElementOf<scalar_t>::type* mutable_elements(const at::Tensor& t) {
  return reinterpret_cast<typename ElementOf<scalar_t>::type*>(t.mutable_data_ptr<scalar_t>());
}

// t with the given shape, as an op's own output: a view would alias the
// kernel's flat result, which forward-mode AD (and torch.library's rules for
// custom ops) reject; _unsafe_view shares the memory without being a view.
inline at::Tensor as_output(const at::Tensor& t, at::IntArrayRef shape) { return at::_unsafe_view(t, shape); }

// The conjugate transpose of the last two dims as a materialised contiguous
// tensor. Kernels never pass lazy conj views around: raw-pointer code would read
// the unconjugated memory, and traced (torch.compile) graphs have mishandled them.
inline at::Tensor conj_transpose(const at::Tensor& x) {
  return x.transpose(-2, -1).conj_physical().contiguous();
}

// A (..., m, n) tensor as `batch` contiguous row-major m x n matrices.
struct MatrixBatch {
  std::vector<int64_t> batch_shape;  // the leading dims
  int64_t batch = 0, m = 0, n = 0;   // batch: the product of batch_shape
  at::Tensor flat;                   // (batch, m, n), contiguous, conjugation resolved

  bool empty() const { return batch == 0 || m == 0 || n == 0; }
  // batch_shape followed by `tail`
  std::vector<int64_t> shape(std::initializer_list<int64_t> tail) const {
    std::vector<int64_t> s = batch_shape;
    s.insert(s.end(), tail);
    return s;
  }
};

inline MatrixBatch matrix_batch(const at::Tensor& A) {
  MatrixBatch b;
  b.batch_shape = A.sizes().slice(0, A.dim() - 2).vec();
  b.batch = c10::multiply_integers(b.batch_shape);
  b.m = A.size(-2);
  b.n = A.size(-1);
  b.flat = A.reshape({b.batch, b.m, b.n}).resolve_conj().contiguous();
  return b;
}

// The op bodies. The kernels run under NoGradGuard: an op's autograd is
// registered on the op, and its kernel records no history.

// svdvals / svd: kernel(a, S, U, Vh) fills S (batch, k) and, with vectors,
// U (batch, m, k) and Vh (batch, k, n) (undefined without); k = min(m, n).
template <typename Kernel>
std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_op(const at::Tensor& A, bool want_uv, const char* op,
                                                      Kernel&& kernel) {
  check_matrices(A, op, "A");
  at::NoGradGuard no_grad;
  const MatrixBatch a = matrix_batch(A);
  const int64_t k = std::min(a.m, a.n);
  const at::Tensor S = at::empty({a.batch, k}, A.options().dtype(c10::toRealValueType(A.scalar_type())));
  const at::Tensor U = want_uv ? at::empty({a.batch, a.m, k}, A.options()) : at::Tensor();
  const at::Tensor Vh = want_uv ? at::empty({a.batch, k, a.n}, A.options()) : at::Tensor();
  if (!a.empty()) kernel(a, S, U, Vh);
  if (!want_uv) return {U, as_output(S, a.shape({k})), Vh};
  return {as_output(U, a.shape({a.m, k})), as_output(S, a.shape({k})), as_output(Vh, a.shape({k, a.n}))};
}

// gram_bound: kernel(a) returns the (batch,) bounds of a non-empty batch.
template <typename Kernel>
at::Tensor gram_bound_op(const at::Tensor& A, int64_t steps, Kernel&& kernel) {
  check_gram_args(A, steps);
  at::NoGradGuard no_grad;
  const MatrixBatch a = matrix_batch(A);
  if (a.empty()) return at::zeros(a.batch_shape, A.options().dtype(c10::toRealValueType(A.scalar_type())));
  return as_output(kernel(a), a.batch_shape);
}

// cayley: kernel(w) returns Q (batch, m, n) and M (batch, n, n) of tall
// matrices (m >= n); wide W is the tall case of W^H.
template <typename Kernel>
std::tuple<at::Tensor, at::Tensor> cayley_op(const at::Tensor& W, Kernel&& kernel) {
  const char* op = "convspectra::cayley";
  check_matrices(W, op, "W");
  if (W.size(-2) < W.size(-1)) {  // orthonormal rows
    auto [Q, M] = cayley_op(conj_transpose(W), kernel);
    return {conj_transpose(Q), M};
  }
  at::NoGradGuard no_grad;
  const MatrixBatch w = matrix_batch(W);
  // the per-matrix kernels index one matrix with int
  TORCH_CHECK(w.m * w.n <= INT32_MAX, op, ": W's matrices are too large (m * n must fit in 32 bits)");
  const auto m_shape = w.shape({w.n, w.n});
  if (w.empty()) return {at::empty(W.sizes(), W.options()), at::empty(m_shape, W.options())};
  auto [Q, M] = kernel(w);
  return {as_output(Q, W.sizes()), as_output(M, m_shape)};
}

// bjorck: kernel(x) returns the (batch, m, n) result of tall matrices; wide X
// is the tall case of X^H.
template <typename Kernel>
at::Tensor bjorck_op(const at::Tensor& X, int64_t iters, Kernel&& kernel) {
  check_bjorck_args(X, iters, "convspectra::bjorck");
  if (X.size(-2) < X.size(-1)) return conj_transpose(bjorck_op(conj_transpose(X), iters, kernel));
  at::NoGradGuard no_grad;
  const MatrixBatch x = matrix_batch(X);
  if (x.empty()) return at::empty(X.sizes(), X.options());
  return as_output(kernel(x), X.sizes());
}

// bjorck_backward: kernel(grad, x) as bjorck's.
template <typename Kernel>
at::Tensor bjorck_backward_op(const at::Tensor& grad, const at::Tensor& X, int64_t iters, Kernel&& kernel) {
  check_bjorck_backward_args(grad, X, iters);
  if (X.size(-2) < X.size(-1))
    return conj_transpose(bjorck_backward_op(conj_transpose(grad), conj_transpose(X), iters, kernel));
  at::NoGradGuard no_grad;
  const MatrixBatch x = matrix_batch(X);
  if (x.empty()) return at::empty(X.sizes(), X.options());
  return as_output(kernel(matrix_batch(grad), x), X.sizes());
}

}  // namespace convspectra
