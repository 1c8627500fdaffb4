// The op catalogue: every convspectra op schema, in one place. Kernels are
// registered per device in cpu/ and cuda/ (and for every device in aten/);
// autograd and shape (fake) functions are registered from Python
// (python/convspectra/_ops.py). The tensor ops are tagged pt2 compliant:
// torch.compile traces them with the fake functions.
#include <torch/library.h>

TORCH_LIBRARY(convspectra, m) {
  const std::vector<at::Tag> pt2 = {at::Tag::pt2_compliant_tag};
  // Singular values of a batch of (..., m, n) real or complex matrices,
  // descending, shape (..., min(m, n)), real dtype.
  m.def("svdvals(Tensor A) -> Tensor", pt2);
  // Reduced SVD A = U diag(S) Vh: U (..., m, k), S (..., k), Vh (..., k, n).
  m.def("svd(Tensor A) -> (Tensor U, Tensor S, Tensor Vh)", pt2);
  // Upper bound of the spectral norm of each (..., m, n) matrix after `steps`
  // Gram iteration squarings (Delattre et al. 2023), shape (...), real dtype.
  m.def("gram_bound(Tensor A, int steps) -> Tensor", pt2);
  // Batched Cayley map (docs/math.md §5.1) of (..., m, n) matrices: Q (..., m, n) with
  // orthonormal columns (m >= n) or rows (m < n), and M = (I + A)^{-1}
  // (..., min, min) that the backward reuses.
  m.def("cayley(Tensor W) -> (Tensor Q, Tensor M)", pt2);
  m.def("cayley_backward(Tensor grad_Q, Tensor W, Tensor M) -> Tensor", pt2);
  // `iters` Bjorck steps X <- X (1.5 I - 0.5 X^H X) on (..., m, n) matrices
  // (docs/math.md §6.1; wide ones as X <- (1.5 I - 0.5 X X^H) X). The caller prescales
  // X so that ||X||_2 <= 1; the result tends to the orthogonal polar factor.
  m.def("bjorck(Tensor X, int iters) -> Tensor", pt2);
  // Its vector-Jacobian product, unrolled through the same steps.
  m.def("bjorck_backward(Tensor grad, Tensor X, int iters) -> Tensor", pt2);

  // Test switches (aten/switches.cpp), no tensors, each returns its previous
  // value. Not pt2 compliant: they set process-wide state and are called
  // eagerly, never inside a compiled region. Forcing the fallbacks makes every op take the branch it otherwise
  // keeps for large matrices (batched ATen products; the SVD's global
  // scratch on CUDA), so that tests reach every branch on small inputs; the
  // initial value is CONVSPECTRA_FORCE_FALLBACK=1 in the environment.
  m.def("_set_force_fallback(bool enabled) -> bool");
  // The scratch budget in bytes (common/limits.h: kScratchBudgetBytes); a
  // tiny one makes the backward of Bjorck checkpoint and every bounded
  // buffer work in waves of one. 0 restores the default.
  m.def("_set_scratch_budget(int bytes) -> int");
  // The instruction set of the CPU kernels' serial loops (cpu/isa.h):
  // 'default', 'avx2' or 'avx512'. Setting one the CPU lacks is an error; ''
  // restores the automatic choice.
  m.def("_cpu_capability() -> str");
  m.def("_set_cpu_capability(str name) -> str");
}
