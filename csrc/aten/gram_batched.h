// Gram iteration with batched ATen products: the path for matrices too large
// to keep on chip, shared by the CPU and CUDA registrations (on the GPU the
// products go to cuBLAS). Same algorithm as common/gram.h.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <cmath>
#include <limits>

#include "aten/matrix_batch.h"

namespace convspectra {

// Frobenius norms of a batch (batch, r, c); complex ones over their real view,
// several times faster than linalg_matrix_norm on complex tensors.
inline at::Tensor frobenius_norms(const at::Tensor& G) {
  if (!G.is_complex()) return at::linalg_vector_norm(G, 2, at::IntArrayRef{-2, -1});
  return at::linalg_vector_norm(at::view_as_real(G.is_conj() ? G.conj() : G), 2, at::IntArrayRef{-3, -2, -1});
}

// G[b] *= s[b] in place, s real (batch,): one real pass, no complex promotion of s.
inline void scale_each(at::Tensor& G, const at::Tensor& s) {
  if (G.is_complex())
    at::view_as_real(G).mul_(s.view({-1, 1, 1, 1}));
  else
    G.mul_(s.view({-1, 1, 1}));
}

// A: (batch, m, n) contiguous; returns (batch,) upper bounds of ||A_b||_2.
inline at::Tensor gram_bound_batched(const at::Tensor& A, int64_t steps) {
  at::NoGradGuard no_grad;  // a kernel: the op's autograd is registered separately
  at::NoTF32Guard no_tf32;  // float32 products in float32, whatever the global TF32 switch says
  const at::Tensor X = A.size(1) < A.size(2) ? conj_transpose(A) : A;  // square the smaller Gram matrix
  const double tiny = c10::toRealValueType(A.scalar_type()) == at::kFloat ? double(std::numeric_limits<float>::min())
                                                                          : std::numeric_limits<double>::min();
  const double huge = c10::toRealValueType(A.scalar_type()) == at::kFloat ? double(std::numeric_limits<float>::max())
                                                                          : std::numeric_limits<double>::max();
  const at::Tensor amax = X.abs().amax({-2, -1}).clamp_min(tiny);
  at::Tensor G = X / amax.unsqueeze(-1).unsqueeze(-1);
  at::Tensor log_scale = at::zeros({A.size(0)}, A.options().dtype(at::kDouble));
  for (int64_t t = 0; t < steps; ++t) {
    const at::Tensor f = frobenius_norms(G).clamp_min(tiny);
    log_scale = 2 * (log_scale + f.log().to(at::kDouble));
    if (t == 0) {  // scaled before the product, so that small entries do not underflow
      G = G / f.unsqueeze(-1).unsqueeze(-1);
      G = at::matmul(conj_transpose(G), G);
    } else {  // G is Hermitian from the first product on: G G (no conjugated operand), scaled after
      G = at::matmul(G, G);
      scale_each(G, f.reciprocal().square().clamp_max(huge));  // a zero matrix stays zero, not 0 * inf
    }
  }
  const at::Tensor log_bound = (log_scale + frobenius_norms(G).log().to(at::kDouble)) / std::ldexp(1.0, int(steps));
  return log_bound.exp().to(amax.scalar_type()) * amax;
}

}  // namespace convspectra
