// The Cayley map with batched ATen products: the path for matrices too large
// for the per-matrix kernels, and the backward, shared by every device.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <tuple>

#include "aten/matrix_batch.h"

namespace convspectra {

// W: (batch, m, n) with m >= n. Returns Q (batch, m, n) and M = (I + A)^{-1}.
inline std::tuple<at::Tensor, at::Tensor> cayley_batched(const at::Tensor& W) {
  at::NoGradGuard no_grad;  // a kernel: autograd is registered on the op
  at::NoTF32Guard no_tf32;  // float32 products in float32, whatever the global TF32 switch says
  const int64_t n = W.size(-1);
  const at::Tensor U = W.narrow(-2, 0, n), V = W.narrow(-2, n, W.size(-2) - n);
  const at::Tensor eye = at::eye(n, W.options());
  // .contiguous(): LAPACK returns the inverse column-major
  const at::Tensor M = at::linalg_inv(eye + U - conj_transpose(U) + at::matmul(conj_transpose(V), V)).contiguous();
  return {at::cat({2 * M - eye, -2 * at::matmul(V, M)}, -2), M};
}

}  // namespace convspectra
