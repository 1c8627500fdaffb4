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

// A: (batch, m, n) contiguous; returns (batch,) upper bounds of ||A_b||_2.
inline at::Tensor gram_bound_batched(const at::Tensor& A, int64_t steps) {
  at::NoGradGuard no_grad;  // a kernel: the op's autograd is registered separately
  at::NoTF32Guard no_tf32;  // float32 products in float32, whatever the global TF32 switch says
  const at::Tensor X = A.size(1) < A.size(2) ? conj_transpose(A) : A;  // square the smaller Gram matrix
  const double tiny = c10::toRealValueType(A.scalar_type()) == at::kFloat ? double(std::numeric_limits<float>::min())
                                                                          : std::numeric_limits<double>::min();
  const at::Tensor amax = X.abs().amax({-2, -1}).clamp_min(tiny);
  at::Tensor G = X / amax.unsqueeze(-1).unsqueeze(-1);
  at::Tensor log_scale = at::zeros({A.size(0)}, A.options().dtype(at::kDouble));
  for (int64_t t = 0; t < steps; ++t) {
    const at::Tensor f = at::linalg_matrix_norm(G, "fro").clamp_min(tiny);
    G = G / f.unsqueeze(-1).unsqueeze(-1);
    log_scale = 2 * (log_scale + f.log().to(at::kDouble));
    G = at::matmul(conj_transpose(G), G);
  }
  const at::Tensor log_bound =
      (log_scale + at::linalg_matrix_norm(G, "fro").log().to(at::kDouble)) / std::ldexp(1.0, int(steps));
  return log_bound.exp().to(amax.scalar_type()) * amax;
}

}  // namespace convspectra
