// Bjorck orthogonalisation with batched ATen products: the path for matrices
// too large for the per-matrix kernels, shared by the CPU and CUDA
// registrations (on the GPU the products go to cuBLAS). Same algorithm as
// common/bjorck.h, on tall (batch, m, n) contiguous tensors, m >= n.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "aten/matrix_batch.h"

namespace convspectra {

// X <- X (1.5 I - 0.5 X^H X), `iters` times.
inline at::Tensor bjorck_batched(const at::Tensor& X0, int64_t iters) {
  at::NoGradGuard no_grad;  // a kernel: the op's autograd is registered separately
  if (iters == 0) return X0.clone();  // a fresh tensor: an op's output must not alias its input
  at::Tensor X = X0;
  for (int64_t t = 0; t < iters; ++t) X = at::baddbmm(X, X, at::bmm(conj_transpose(X), X), 1.5, -0.5);
  return X.contiguous();
}

// Gradient with respect to X0 of bjorck_batched(X0, iters) given that of its
// output: the iterates are recomputed, then each step's vector-Jacobian
// product G <- G (1.5 I - 0.5 X^H X) - 0.5 X (X^H G + G^H X) is applied in reverse.
inline at::Tensor bjorck_backward_batched(const at::Tensor& grad, const at::Tensor& X0, int64_t iters) {
  at::NoGradGuard no_grad;
  if (iters == 0) return grad.clone();
  std::vector<at::Tensor> iterates{X0};
  for (int64_t t = 0; t + 1 < iters; ++t) {
    const at::Tensor& X = iterates.back();
    iterates.push_back(at::baddbmm(X, X, at::bmm(conj_transpose(X), X), 1.5, -0.5));
  }
  at::Tensor G = grad;
  for (int64_t t = iters - 1; t >= 0; --t) {
    const at::Tensor& X = iterates[t];
    const at::Tensor Xh = conj_transpose(X);
    const at::Tensor T = at::bmm(Xh, G);
    const at::Tensor sym = T + conj_transpose(T);
    G = at::baddbmm(at::baddbmm(G, G, at::bmm(Xh, X), 1.5, -0.5), X, sym, 1.0, -0.5);
  }
  return G.contiguous();
}

}  // namespace convspectra
