// convspectra::cayley_backward for every device, in batched ATen products.
//
// For m >= n, Q = [2 M - I; -2 V M], M = (I + A)^{-1}, A = U - U^H + V^H V:
//   gA = -2 M^H (G_top - V^H G_bot) M^H
//   gU = gA - gA^H,   gV = -2 G_bot M^H + V (gA + gA^H).
// Wide W (m < n) is the tall case of W^H, transposed back.
#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/library.h>

#include "aten/checks.h"
#include "aten/matrix_batch.h"

namespace convspectra {
namespace {

at::Tensor cayley_backward(const at::Tensor& grad_Q, const at::Tensor& W, const at::Tensor& M) {
  check_cayley_backward_args(grad_Q, W, M);
  at::NoTF32Guard no_tf32;  // float32 products in float32, as torch's own linalg backward computes them
  const int64_t m = W.size(-2), n = W.size(-1);
  if (m < n) return conj_transpose(cayley_backward(conj_transpose(grad_Q), conj_transpose(W), M));
  const at::Tensor V = W.narrow(-2, n, m - n);
  const at::Tensor G_top = grad_Q.narrow(-2, 0, n), G_bot = grad_Q.narrow(-2, n, m - n);
  const at::Tensor Mh = conj_transpose(M);
  const at::Tensor gA = -2 * at::matmul(at::matmul(Mh, G_top - at::matmul(conj_transpose(V), G_bot)), Mh);
  const at::Tensor gAh = conj_transpose(gA);
  const at::Tensor gU = gA - gAh;
  const at::Tensor gV = -2 * at::matmul(G_bot, Mh) + at::matmul(V, gA + gAh);
  return at::cat({gU, gV}, -2);
}

}  // namespace

TORCH_LIBRARY_IMPL(convspectra, CompositeExplicitAutograd, m) { m.impl("cayley_backward", &cayley_backward); }

}  // namespace convspectra
