// Cayley map building blocks (MATH.md 5): the CPU kernel's serial loops; the
// CUDA kernel splits the same loops over a block's threads.
// For W = [U; V] (m x n, m >= n, U the top n x n block):
//   A = U - U^H + V^H V,  M = (I + A)^{-1},  Q = [2 M - I; -2 V M].
// The Hermitian part of I + A is I + V^H V, positive definite, so Gauss-Jordan
// elimination needs no pivoting: every pivot has real part >= 1.
#pragma once

#include "common/complex_math.h"

namespace convspectra {

// B = I + U - U^H + V^H V for one row-major m x n matrix W (n x n, row-major).
template <typename E>
CS_HD void cayley_system(const E* W, int m, int n, E* B) {
  using R = real_t<E>;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      E acc = sub(W[i * n + j], conj(W[j * n + i]));
      if (i == j) acc = add(acc, make_real<E>(R(1)));
      for (int r = n; r < m; ++r) acc = add(acc, conj_mul(W[r * n + i], W[r * n + j]));
      B[i * n + j] = acc;
    }
  }
}

// In-place inverse of the n x n row-major B by Gauss-Jordan without pivoting.
template <typename E>
CS_HD void invert_without_pivoting(E* B, int n, E* column) {
  using R = real_t<E>;
  for (int p = 0; p < n; ++p) {
    for (int i = 0; i < n; ++i) column[i] = B[i * n + p];
    const E piv = column[p];
    const R d = abs2(piv);
    const E inv = scale(conj(piv), R(1) / d);  // 1 / piv
    for (int i = 0; i < n; ++i) B[i * n + p] = make_real<E>(i == p ? R(1) : R(0));
    for (int j = 0; j < n; ++j) B[p * n + j] = mul(B[p * n + j], inv);
    for (int i = 0; i < n; ++i) {
      if (i == p) continue;
      const E f = column[i];
      for (int j = 0; j < n; ++j) B[i * n + j] = sub(B[i * n + j], mul(f, B[p * n + j]));
    }
  }
}

// Q = [2 M - I; -2 V M] (m x n) from M (n x n) and the rows n.. of W.
template <typename E>
CS_HD void cayley_output(const E* W, const E* M, int m, int n, E* Q) {
  using R = real_t<E>;
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) Q[i * n + j] = sub(scale(M[i * n + j], R(2)), make_real<E>(i == j ? R(1) : R(0)));
  for (int r = n; r < m; ++r) {
    for (int j = 0; j < n; ++j) {
      E acc = make_real<E>(R(0));
      for (int l = 0; l < n; ++l) acc = add(acc, mul(W[r * n + l], M[l * n + j]));
      Q[r * n + j] = scale(acc, R(-2));
    }
  }
}

}  // namespace convspectra
