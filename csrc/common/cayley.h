// Cayley map building blocks (docs/math.md §5.1): the CPU kernel's serial loops; the
// CUDA kernel splits the same loops over a block's threads.
// For W = [U; V] (m x n, m >= n, U the top n x n block):
//   A = U - U^H + V^H V,  M = (I + A)^{-1},  Q = [2 M - I; -2 V M].
// The Hermitian part of I + A is I + V^H V, positive definite, so I + A is
// invertible for every W.
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

// 1 / z without forming |z|^2 (which overflows for |z| above about 1e19 in
// float32): conj(z) / |z| / |z|.
template <typename E>
CS_HD E reciprocal(E z) {
  using R = real_t<E>;
  const R a = cabs(z);
  return divide(divide(conj(z), a), a);
}

// The row r >= p of the largest |B[r][p]| (by |re| + |im|, LAPACK's choice).
template <typename E>
CS_HD int pivot_row(const E* B, int n, int p) {
  using R = real_t<E>;
  int r = p;
  R best = abs1(B[p * n + p]);
  for (int i = p + 1; i < n; ++i) {
    const R v = abs1(B[i * n + p]);
    if (v > best) {
      best = v;
      r = i;
    }
  }
  return r;
}

// In-place inverse of the n x n row-major B by Gauss-Jordan with partial
// (row) pivoting; column (n) and perm (n) are scratch. Why pivoting although
// the Hermitian part of B is positive definite (every pivot is nonzero): with a
// large skew part the unpivoted elimination grows like ||A||^2 and loses every
// digit (NaN in float32 for entries of order 1e4); partial pivoting keeps it
// as accurate as LAPACK's LU-based inverse. Eliminating the row-permuted P B
// gives (P B)^{-1} = B^{-1} P^T, so the recorded swaps are undone on the
// columns at the end, last one first.
template <typename E>
CS_HD void invert_with_pivoting(E* B, int n, E* column, int* perm) {
  using R = real_t<E>;
  for (int p = 0; p < n; ++p) {
    const int r = pivot_row(B, n, p);
    perm[p] = r;
    if (r != p) {
      for (int j = 0; j < n; ++j) {
        const E t = B[p * n + j];
        B[p * n + j] = B[r * n + j];
        B[r * n + j] = t;
      }
    }
    for (int i = 0; i < n; ++i) column[i] = B[i * n + p];
    const E inv = reciprocal(column[p]);
    for (int i = 0; i < n; ++i) B[i * n + p] = make_real<E>(i == p ? R(1) : R(0));
    for (int j = 0; j < n; ++j) B[p * n + j] = mul(B[p * n + j], inv);
    for (int i = 0; i < n; ++i) {
      if (i == p) continue;
      const E f = column[i];
      for (int j = 0; j < n; ++j) B[i * n + j] = sub(B[i * n + j], mul(f, B[p * n + j]));
    }
  }
  for (int p = n - 1; p >= 0; --p) {
    const int r = perm[p];
    if (r == p) continue;
    for (int i = 0; i < n; ++i) {
      const E t = B[i * n + p];
      B[i * n + p] = B[i * n + r];
      B[i * n + r] = t;
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
