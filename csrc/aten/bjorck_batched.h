// Bjorck orthogonalisation with batched ATen products: the path for matrices
// too large for the per-matrix kernels, shared by the CPU and CUDA
// registrations (on the GPU the products go to cuBLAS). Same algorithm as
// common/bjorck.h, on tall (batch, m, n) contiguous tensors, m >= n.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <algorithm>
#include <vector>

#include "aten/matrix_batch.h"
#include "common/bjorck.h"

namespace convspectra {

// X (1.5 I - 0.5 X^H X).
inline at::Tensor bjorck_step_batched(const at::Tensor& X) {
  return at::baddbmm(X, X, at::bmm(conj_transpose(X), X), 1.5, -0.5);
}

// X <- X (1.5 I - 0.5 X^H X), `iters` times.
inline at::Tensor bjorck_batched(const at::Tensor& X0, int64_t iters) {
  at::NoGradGuard no_grad;  // a kernel: the op's autograd is registered separately
  at::NoTF32Guard no_tf32;  // float32 products in float32, whatever the global TF32 switch says
  if (iters == 0) return X0.clone();  // a fresh tensor: an op's output must not alias its input
  at::Tensor X = X0;
  for (int64_t t = 0; t < iters; ++t) X = bjorck_step_batched(X);
  return X.contiguous();
}

// The backward schedule's operations (common/bjorck.h) on batched tensors:
// the slots hold tensors, each step makes a new one.
struct BjorckBackwardBatched {
  at::Tensor X0, X, G;
  std::vector<at::Tensor> checkpoints, iterates;

  void load_input() { X = X0; }
  void load_checkpoint(int j) { X = checkpoints[j]; }
  void save_checkpoint(int j) { checkpoints[j] = X; }
  void save_iterate(int t) { iterates[t] = X; }
  void step() { X = bjorck_step_batched(X); }
  // G <- G (1.5 I - 0.5 X^H X) - 0.5 X (X^H G + G^H X), X the input of step t
  void vjp(int t) {
    const at::Tensor Xt = std::move(iterates[t]);  // not needed again: its memory goes
    const at::Tensor Xh = conj_transpose(Xt);
    const at::Tensor T = at::bmm(Xh, G);
    const at::Tensor sym = T + conj_transpose(T);
    G = at::baddbmm(at::baddbmm(G, G, at::bmm(Xh, Xt), 1.5, -0.5), Xt, sym, 1.0, -0.5);
  }
};

// Gradient with respect to X0 of bjorck_batched(X0, iters) given that of its
// output. The iterates are recomputed, in waves of as many matrices as keep
// their iterates within `budget_bytes`; when not even one matrix's fit, every
// matrix is checkpointed (common/bjorck.h) and the waves are as large as the
// checkpointed iterates allow (at least one matrix).
inline at::Tensor bjorck_backward_batched(const at::Tensor& grad, const at::Tensor& X0, int64_t iters,
                                          int64_t budget_bytes) {
  at::NoGradGuard no_grad;
  at::NoTF32Guard no_tf32;
  if (iters == 0) return grad.clone();
  const int64_t batch = X0.size(0);
  const int64_t matrix_bytes = std::max<int64_t>(1, X0.size(1) * X0.size(2) * int64_t(X0.element_size()));
  const int64_t per_wave = budget_bytes / (iters * matrix_bytes);
  const BjorckSegments seg = bjorck_segments(int(iters), /*store_all=*/per_wave >= 1);
  const int64_t wave = std::clamp<int64_t>(budget_bytes / (seg.slots() * matrix_bytes), 1, std::max<int64_t>(batch, 1));
  auto run = [&](const at::Tensor& g, const at::Tensor& x) {
    BjorckBackwardBatched ops{x, x, g, std::vector<at::Tensor>(seg.count - 1), std::vector<at::Tensor>(seg.length)};
    bjorck_backward_schedule(int(iters), seg, ops);
    return ops.G.contiguous();
  };
  if (wave >= batch) return run(grad, X0);
  at::Tensor out = at::empty_like(X0);
  for (int64_t b = 0; b < batch; b += wave) {
    const int64_t len = std::min(wave, batch - b);
    out.narrow(0, b, len).copy_(run(grad.narrow(0, b, len), X0.narrow(0, b, len)));
  }
  return out;
}

}  // namespace convspectra
