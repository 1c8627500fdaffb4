// One-sided (Hestenes) Jacobi SVD building blocks, shared by the CPU and CUDA
// kernels. Why Jacobi: it is simple to batch (one small matrix per thread or
// block), it computes small singular values to high relative accuracy, and the
// same rotation also yields the singular vectors when they are wanted.
//
// Convention: X is a rows x cols matrix (rows >= cols) stored column-major, so
// each column is contiguous. Rotating pairs of columns until all are mutually
// orthogonal gives X V = U diag(sigma), with sigma_j = ||column j||.
#pragma once

#include "common/complex_math.h"
#include "common/limits.h"  // kMaxJacobiSweeps

namespace convspectra {

template <typename R> CS_HD R machine_epsilon();
template <> CS_HD float machine_epsilon<float>() { return 1.1920929e-07f; }
template <> CS_HD double machine_epsilon<double>() { return 2.220446049250313e-16; }
// The smallest normal number (std::numeric_limits<R>::min(), spelt out for device code).
template <typename R> CS_HD R smallest_normal();
template <> CS_HD float smallest_normal<float>() { return 1.17549435e-38f; }
template <> CS_HD double smallest_normal<double>() { return 2.2250738585072014e-308; }

// The exact power of two 2^-e, e the exponent of max |a_ij| (frexp), as two
// factors: scaling by both is lossless and puts the largest entry in [1/2, 1).
// One factor alone overflows when max |a_ij| is subnormal (2^-e above the
// largest float), which turned such matrices into NaN.
template <typename R>
struct PowerOfTwoScale {
  R lo, hi;
  template <typename E>
  CS_HD E apply(E x) const { return scale(scale(x, lo), hi); }
  CS_HD R undo(R x) const { return x / hi / lo; }
};

template <typename R>
CS_HD PowerOfTwoScale<R> power_of_two_scale(R amax) {
  if (!(amax > R(0))) return {R(1), R(1)};
  int e = 0;
  std::frexp(amax, &e);
  const int half = -e / 2;
  return {std::ldexp(R(1), half), std::ldexp(R(1), -e - half)};
}

// Columns whose squared norm falls below this floor are never rotated and, when
// vectors are wanted, get a completed left vector: they count as zero columns.
// The kernels scale the matrix so that its largest entry lies in [1/2, 1), so
// the floor is absolute there: tiny / eps^2 (about 1e-24 in float32, 1e-276 in
// float64) keeps every product of a rotation, and the phase gamma / |gamma|, in
// the normal range (|gamma| > tol * floor), and what it leaves unrotated is far
// below eps * ||A||. Without it, exactly rank-deficient inputs (identical rows,
// constant kernels) leave columns of rounding noise that shrink into the
// subnormals, where sin / |gamma| overflows and the rotation writes Inf and NaN.
template <typename R>
CS_HD R jacobi_floor() {
  return smallest_normal<R>() / (machine_epsilon<R>() * machine_epsilon<R>());
}

// Two columns count as orthogonal once |x^H y| <= tol * ||x|| ||y||. The
// singular values then carry an error of order tol^2 relative to ||X||, so
// sqrt(rows) * eps is ample and still converges in floating point.
template <typename R>
CS_HD R jacobi_tolerance(int rows) {
  return std::sqrt(R(rows)) * machine_epsilon<R>();
}

// Whether columns with squared norms alpha, beta and inner product of modulus
// gabs need a rotation: both above the floor and not yet orthogonal. Negated
// comparison, so that a NaN never rotates.
template <typename R>
CS_HD bool jacobi_should_rotate(R alpha, R beta, R gabs, R tol) {
  const R floor = jacobi_floor<R>();
  return alpha >= floor && beta >= floor && gabs > tol * std::sqrt(alpha) * std::sqrt(beta);
}

// The plane rotation that makes columns x and y orthogonal, given
// alpha = ||x||^2, beta = ||y||^2, gamma = x^H y and gabs = |gamma| > 0
// (jacobi_should_rotate true):
//     x' = c x - conj(s) y,     y' = s x + c y,      s = sin * gamma / |gamma|.
// Returns the tangent t, so that ||x'||^2 = alpha - t gabs, ||y'||^2 = beta + t gabs.
template <typename E>
CS_HD real_t<E> jacobi_rotation(real_t<E> alpha, real_t<E> beta, E gamma, real_t<E> gabs,
                                real_t<E>& c, E& s) {
  using R = real_t<E>;
  const R zeta = (beta - alpha) / (R(2) * gabs);
  const R az = std::fabs(zeta);
  // The smaller root of t^2 + 2 zeta t - 1 = 0; for huge |zeta| use 1/(2|zeta|)
  // so zeta^2 cannot overflow.
  R t = az > R(1) / machine_epsilon<R>() ? R(0.5) / az : R(1) / (az + std::sqrt(R(1) + az * az));
  t = zeta < R(0) ? -t : t;
  c = R(1) / std::sqrt(R(1) + t * t);
  // the unit phase first: c t / gabs alone can overflow when gabs is small
  s = scale(divide(gamma, gabs), c * t);
  return t;
}

// Columns up to this length are summed in their own precision (an error of at
// most len * eps, as small as LAPACK's), longer ones in double (wide_t): summing
// short ones in double too cost 15 % on 8 x 8 float32 matrices. (The CUDA kernel
// sums every column in double: each lane adds only rows / 32 terms anyway.)
constexpr int kShortColumn = 32;

// ||x||^2 of a contiguous column.
template <typename E>
CS_HD real_t<E> column_norm2(const E* x, int len) {
  using R = real_t<E>;
  if (len <= kShortColumn) {
    R acc = R(0);
    for (int i = 0; i < len; ++i) acc += abs2(x[i]);
    return acc;
  }
  double acc = 0.0;
  for (int i = 0; i < len; ++i) acc += abs2(widen(x[i]));
  return static_cast<R>(acc);
}

// ||x|| of a contiguous column without underflow: sqrt(||x||^2) above the
// floor; below it, max |x_i| times the norm of x / max |x_i| (the squares of
// float64 entries below 1e-154 are zero).
template <typename E>
CS_HD real_t<E> column_length(const E* x, int len) {
  using R = real_t<E>;
  const R norm2 = column_norm2(x, len);
  if (norm2 >= jacobi_floor<R>()) return std::sqrt(norm2);
  R amax = R(0);
  for (int i = 0; i < len; ++i) amax = std::fmax(amax, cabs(x[i]));
  if (!(amax > R(0))) return amax;
  double acc = 0.0;
  for (int i = 0; i < len; ++i) acc += abs2(widen(divide(x[i], amax)));
  return amax * static_cast<R>(std::sqrt(acc));
}

// x^H y of two contiguous columns.
template <typename E>
CS_HD E column_dot(const E* x, const E* y, int len) {
  if (len <= kShortColumn) {
    E acc = make_real<E>(real_t<E>(0));
    for (int i = 0; i < len; ++i) acc = add(acc, conj_mul(x[i], y[i]));
    return acc;
  }
  wide_t<E> acc = make_real<wide_t<E>>(0.0);
  for (int i = 0; i < len; ++i) acc = add(acc, conj_mul(widen(x[i]), widen(y[i])));
  return narrow<E>(acc);
}

// Applies the rotation above to two contiguous vectors of length len.
template <typename E>
CS_HD void apply_jacobi_rotation(E* __restrict__ x, E* __restrict__ y, int len, real_t<E> c, E s) {
  const E sc = conj(s);
  for (int i = 0; i < len; ++i) {
    const E xi = x[i];
    const E yi = y[i];
    x[i] = sub(scale(xi, c), mul(sc, yi));
    y[i] = add(mul(s, xi), scale(yi, c));
  }
}

// Serial cyclic one-sided Jacobi on a column-major rows x cols matrix X. If V
// is not null it must hold the cols x cols identity (column-major) and receives
// the accumulated rotations. norm2 is scratch of length cols. Returns the
// number of sweeps performed (<= max_sweeps).
template <typename E>
CS_HD int one_sided_jacobi(E* X, int rows, int cols, E* V, real_t<E>* norm2, int max_sweeps) {
  using R = real_t<E>;
  const R tol = jacobi_tolerance<R>(rows);
  int sweep = 0;
  while (sweep < max_sweeps) {
    ++sweep;
    // Recompute the norms every sweep so the cheap in-sweep updates cannot drift.
    for (int j = 0; j < cols; ++j) norm2[j] = column_norm2(X + static_cast<long>(j) * rows, rows);
    bool rotated = false;
    for (int p = 0; p + 1 < cols; ++p) {
      E* xp = X + static_cast<long>(p) * rows;
      for (int q = p + 1; q < cols; ++q) {
        const R alpha = norm2[p];
        const R beta = norm2[q];
        if (alpha < jacobi_floor<R>() || beta < jacobi_floor<R>()) continue;
        E* xq = X + static_cast<long>(q) * rows;
        const E gamma = column_dot(xp, xq, rows);
        if (!jacobi_should_rotate(alpha, beta, cabs(gamma), tol)) continue;
        const R gabs = cabs(gamma);
        R c;
        E s;
        const R t = jacobi_rotation(alpha, beta, gamma, gabs, c, s);
        apply_jacobi_rotation(xp, xq, rows, c, s);
        if (V != nullptr) {
          apply_jacobi_rotation(V + static_cast<long>(p) * cols, V + static_cast<long>(q) * cols, cols, c, s);
        }
        const R a_new = alpha - t * gabs;
        norm2[p] = a_new > R(0) ? a_new : R(0);
        norm2[q] = beta + t * gabs;
        rotated = true;
      }
    }
    if (!rotated) break;
  }
  return sweep;
}

// Whether a converged column of length sigma lies below the floor: it was not
// rotated against the others, so its normalised self is not a left singular
// vector and a completed one takes its place. Its length is still reported (a
// tiny exact value such as diag(1, 1e-30)'s stays exact).
template <typename R>
CS_HD bool jacobi_below_floor(R sigma) {
  return !(sigma * sigma >= jacobi_floor<R>());
}

// Makes column `target` of the column-major X a unit vector orthogonal to the
// orthonormal columns prev[0..nprev): used for the left vector of a zero
// singular value. Starts from the unit vector e_i least covered by them (the
// smallest sum_o |x_o[i]|^2): its residual has squared norm at least
// (rows - nprev) / rows >= 1 / rows, so two passes of Gram-Schmidt (twice is
// enough, Kahan) leave a vector that normalises safely.
template <typename E>
CS_HD void complete_orthonormal_column(E* X, int rows, const int* prev, int nprev, int target) {
  using R = real_t<E>;
  E* x = X + static_cast<long>(target) * rows;
  int best = 0;
  R best_cover = R(2);
  for (int i = 0; i < rows; ++i) {
    R cover = R(0);
    for (int o = 0; o < nprev; ++o) cover += abs2(X[static_cast<long>(prev[o]) * rows + i]);
    if (cover < best_cover) {
      best_cover = cover;
      best = i;
    }
  }
  for (int i = 0; i < rows; ++i) x[i] = make_real<E>(i == best ? R(1) : R(0));
  for (int pass = 0; pass < 2; ++pass) {
    for (int o = 0; o < nprev; ++o) {
      const E* xo = X + static_cast<long>(prev[o]) * rows;
      E d = make_real<E>(R(0));
      for (int i = 0; i < rows; ++i) d = add(d, conj_mul(xo[i], x[i]));
      for (int i = 0; i < rows; ++i) x[i] = sub(x[i], mul(d, xo[i]));
    }
  }
  R nrm = R(0);
  for (int i = 0; i < rows; ++i) nrm += abs2(x[i]);
  nrm = std::sqrt(nrm);
  for (int i = 0; i < rows; ++i) x[i] = divide(x[i], nrm);
}

}  // namespace convspectra
