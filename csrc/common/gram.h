// Gram iteration (Delattre et al. 2023) building blocks, shared by the CPU and
// CUDA kernels. For a matrix A, ||A||_2^(2^t) <= ||G_t||_F with G_0 = A and
// G_{t+1} = G_t^H G_t: an upper bound of the spectral norm after every step,
// converging to it. Each G is divided by its Frobenius norm before squaring and
// the scale is carried in log space, so nothing overflows.
#pragma once

#include "common/complex_math.h"

namespace convspectra {

// C = G^H G / f2 for a rows x k row-major G (C is k x k, Hermitian: the upper
// triangle is computed, the lower mirrored). Serial; the CUDA kernel has its
// own loops. Row i of C accumulates conj(G[r, i]) G[r, j:] over r, so the
// inner loop runs along contiguous j with one independent sum per entry: it
// vectorises without reassociation (each entry is still summed in order of r).
template <typename E>
CS_HD void gram_square(const E* G, int rows, int k, real_t<E> inv_f2, E* C) {
  for (int i = 0; i < k; ++i) {
    E* ci = C + i * k;
    for (int j = i; j < k; ++j) ci[j] = make_real<E>(real_t<E>(0));
    for (int r = 0; r < rows; ++r) {
      const E* gr = G + r * k;
      const E gri = gr[i];
      for (int j = i; j < k; ++j) ci[j] = add(ci[j], conj_mul(gri, gr[j]));
    }
    for (int j = i; j < k; ++j) {
      ci[j] = scale(ci[j], inv_f2);
      C[j * k + i] = conj(ci[j]);
    }
  }
}

// log ||A||_2 upper bound from the final state: log_scale + log ||G_T||_F,
// over 2^steps (the caller adds back log of the prescale).
CS_HD double gram_log_bound(double log_scale, double log_frob_final, int steps) {
  double denom = 1.0;
  for (int t = 0; t < steps; ++t) denom *= 2.0;
  return (log_scale + log_frob_final) / denom;
}

}  // namespace convspectra
