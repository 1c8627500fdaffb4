// Bjorck orthogonalisation building blocks (docs/math.md §6.1) for one tall row-major
// m x n matrix (m >= n; wide matrices are handled as their conjugate
// transpose). One step is  X <- X S,  S = 1.5 I - 0.5 X^H X;  it maps each
// singular value s to 1.5 s - 0.5 s^3, so from 0 < s <= 1 all of them go to 1
// and X to its orthogonal polar factor. Serial loops: the CPU kernel runs
// them per matrix; the CUDA kernel splits the same products over a block.
#pragma once

#include "common/complex_math.h"

namespace convspectra {

// C = A^H B for row-major A, B (m x n): C is n x n. Row by row (contiguous
// inner loop, which the compiler vectorises).
template <typename E>
CS_HD void multiply_conj_transpose_left(const E* A, const E* B, int m, int n, E* C) {
  using R = real_t<E>;
  for (int i = 0; i < n * n; ++i) C[i] = make_real<E>(R(0));
  for (int r = 0; r < m; ++r) {
    const E* b = B + r * n;
    for (int i = 0; i < n; ++i) {
      const E a = conj(A[r * n + i]);
      E* c = C + i * n;
      for (int j = 0; j < n; ++j) c[j] = add(c[j], mul(a, b[j]));
    }
  }
}

// S = 1.5 I - 0.5 X^H X (n x n).
template <typename E>
CS_HD void bjorck_step_matrix(const E* X, int m, int n, E* S) {
  using R = real_t<E>;
  multiply_conj_transpose_left(X, X, m, n, S);
  for (int i = 0; i < n * n; ++i) S[i] = scale(S[i], R(-0.5));
  for (int i = 0; i < n; ++i) S[i * n + i] = add(S[i * n + i], make_real<E>(R(1.5)));
}

// Y = A S for row-major A (m x n), S (n x n).
template <typename E>
CS_HD void multiply_right(const E* A, const E* S, int m, int n, E* Y) {
  using R = real_t<E>;
  for (int r = 0; r < m; ++r) {
    E* y = Y + r * n;
    for (int j = 0; j < n; ++j) y[j] = make_real<E>(R(0));
    for (int l = 0; l < n; ++l) {
      const E a = A[r * n + l];
      const E* s = S + l * n;
      for (int j = 0; j < n; ++j) y[j] = add(y[j], mul(a, s[j]));
    }
  }
}

// One forward step: Y = X (1.5 I - 0.5 X^H X). S: n x n scratch.
template <typename E>
CS_HD void bjorck_step(const E* X, int m, int n, E* S, E* Y) {
  bjorck_step_matrix(X, m, n, S);
  multiply_right(X, S, m, n, Y);
}

// The vector-Jacobian product of one step, in place on G (m x n): from the
// gradient of Y = 1.5 X - 0.5 X X^H X to that of X,
//   G <- G (1.5 I - 0.5 X^H X) - 0.5 X (X^H G + G^H X).
// S, T: n x n scratch; P: m x n scratch.
template <typename E>
CS_HD void bjorck_step_vjp(const E* X, int m, int n, E* G, E* S, E* T, E* P) {
  using R = real_t<E>;
  multiply_conj_transpose_left(X, G, m, n, T);  // X^H G, then T + T^H in place
  for (int i = 0; i < n; ++i) {
    T[i * n + i] = make_real<E>(R(2) * real_part(T[i * n + i]));
    for (int j = i + 1; j < n; ++j) {
      const E t = add(T[i * n + j], conj(T[j * n + i]));
      T[i * n + j] = t;
      T[j * n + i] = conj(t);
    }
  }
  bjorck_step_matrix(X, m, n, S);
  multiply_right(X, T, m, n, P);
  for (int r = 0; r < m; ++r) {  // row r of G S - 0.5 P, built in P's row, then copied
    E* p = P + r * n;
    for (int j = 0; j < n; ++j) p[j] = scale(p[j], R(-0.5));
    for (int l = 0; l < n; ++l) {
      const E g = G[r * n + l];
      const E* s = S + l * n;
      for (int j = 0; j < n; ++j) p[j] = add(p[j], mul(g, s[j]));
    }
    for (int j = 0; j < n; ++j) G[r * n + j] = p[j];
  }
}

// The backward of `iters` steps needs the input X_t of every step, last one
// first. Storing them all takes `iters` matrices of scratch; where that is
// over the budget they are recomputed in segments instead: a first forward
// pass keeps every `length`-th iterate as a checkpoint, then each segment is
// recomputed from its checkpoint, the last segment first. That stores
// count - 1 checkpoints and one segment, about 2 sqrt(iters) matrices (63 for
// 1000 steps) instead of iters, for one more forward pass.
struct BjorckSegments {
  int length;  // steps per segment (the last one may be shorter)
  int count;   // segments, ceil(iters / length)
  CS_HD int slots() const { return count - 1 + length; }  // matrices of scratch
};

CS_HD BjorckSegments bjorck_segments(int iters, bool store_all) {
  const int steps = iters > 1 ? iters : 1;
  int length = steps;
  if (!store_all) {
    length = 1;
    while (length * length < steps) ++length;
  }
  return {length, (steps + length - 1) / length};
}

// The backward's schedule on `ops`, which holds the current iterate X, the
// gradient G, `seg.count - 1` checkpoint slots and `seg.length` iterate slots:
//   ops.load_input()        X = X_0
//   ops.load_checkpoint(j)  X = checkpoint j      ops.save_checkpoint(j)  checkpoint j = X
//   ops.save_iterate(t)     iterate t = X         ops.step()              X = one step of X
//   ops.vjp(t)              G = the vector-Jacobian product of the step from iterate t, applied to G
// (the CPU loops, the ATen products and the CUDA kernel each implement it).
template <typename Ops>
CS_HD void bjorck_backward_schedule(int iters, BjorckSegments seg, Ops& ops) {
  if (seg.count > 1) {  // checkpoint j holds X_{(j + 1) length}
    ops.load_input();
    for (int t = 1; t <= (seg.count - 1) * seg.length; ++t) {
      ops.step();
      if (t % seg.length == 0) ops.save_checkpoint(t / seg.length - 1);
    }
  }
  for (int j = seg.count - 1; j >= 0; --j) {
    const int start = j * seg.length;
    const int len = iters - start < seg.length ? iters - start : seg.length;
    if (j == 0) {
      ops.load_input();
    } else {
      ops.load_checkpoint(j - 1);
    }
    for (int t = 0; t < len; ++t) {
      ops.save_iterate(t);
      if (t + 1 < len) ops.step();
    }
    for (int t = len - 1; t >= 0; --t) ops.vjp(t);
  }
}

}  // namespace convspectra
