// The op catalogue: every convspectra op schema, in one place. Kernels are
// registered per device in cpu/ and cuda/; autograd and shape (fake) functions
// are registered from Python (python/convspectra/_ops.py).
#include <torch/library.h>

// Every schema is tagged pt2_compliant: the fakes, autograd and vmap rules of
// python/convspectra/_ops.py make each op safe to trace with torch.compile.
TORCH_LIBRARY(convspectra, m) {
  // Singular values of a batch of (..., m, n) real or complex matrices,
  // descending, shape (..., min(m, n)), real dtype.
  m.def("svdvals(Tensor A) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Reduced SVD A = U diag(S) Vh: U (..., m, k), S (..., k), Vh (..., k, n).
  m.def("svd(Tensor A) -> (Tensor U, Tensor S, Tensor Vh)", {at::Tag::pt2_compliant_tag});
  // Upper bound of the spectral norm of each (..., m, n) matrix after `steps`
  // Gram iteration squarings (Delattre et al. 2023), shape (...), real dtype.
  m.def("gram_bound(Tensor A, int steps) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Batched Cayley map (docs/math.md §5.1) of (..., m, n) matrices: Q (..., m, n) with
  // orthonormal columns (m >= n) or rows (m < n), and M = (I + A)^{-1}
  // (..., min, min) that the backward reuses.
  m.def("cayley(Tensor W) -> (Tensor Q, Tensor M)", {at::Tag::pt2_compliant_tag});
  m.def("cayley_backward(Tensor grad_Q, Tensor W, Tensor M) -> Tensor", {at::Tag::pt2_compliant_tag});
  // `iters` Bjorck steps X <- X (1.5 I - 0.5 X^H X) on (..., m, n) matrices
  // (docs/math.md §6.1; wide ones as X <- (1.5 I - 0.5 X X^H) X). The caller prescales
  // X so that ||X||_2 <= 1; the result tends to the orthogonal polar factor.
  m.def("bjorck(Tensor X, int iters) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Its vector-Jacobian product, unrolled through the same steps.
  m.def("bjorck_backward(Tensor grad, Tensor X, int iters) -> Tensor", {at::Tag::pt2_compliant_tag});
}
