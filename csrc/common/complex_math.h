// Minimal complex arithmetic usable from host C++ and CUDA device code alike.
// Torch's c10::complex is not available to nvcc without torch headers, and the
// CUDA kernels are compiled without them, so both sides share this instead.
// Complex<T> has the memory layout and alignment of c10::complex<T> (re, im
// interleaved, aligned to 2 * sizeof(T); aten/matrix_batch.h asserts it), so
// torch complex buffers can be reinterpreted as it, and the GPU loads one
// element in a single 8- or 16-byte access.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define CS_HD __host__ __device__ __forceinline__
#else
#define CS_HD inline
#endif

namespace convspectra {

template <typename T>
struct alignas(2 * sizeof(T)) Complex {
  T re;
  T im;
};

// Scalar traits: the real type of an element and whether it is complex.
template <typename E>
struct ScalarTraits {
  using real = E;
  static constexpr bool is_complex = false;
};
template <typename T>
struct ScalarTraits<Complex<T>> {
  using real = T;
  static constexpr bool is_complex = true;
};
template <typename E>
using real_t = typename ScalarTraits<E>::real;

// --- real overloads (the complex ones below mirror them) -------------------
template <typename T> CS_HD T conj(T x) { return x; }
template <typename T> CS_HD T abs2(T x) { return x * x; }
template <typename T> CS_HD T cabs(T x) { return std::fabs(x); }
template <typename T> CS_HD T real_part(T x) { return x; }
// |re| + |im| (LAPACK's cabs1): a cheap magnitude for choosing pivots
template <typename T> CS_HD T abs1(T x) { return std::fabs(x); }
template <typename T> CS_HD T scale(T x, T s) { return x * s; }
// x / s for real s (not x * (1 / s): 1 / s overflows for subnormal s)
template <typename T> CS_HD T divide(T x, T s) { return x / s; }
template <typename T> CS_HD T from_real(T x, T* /*tag*/) { return x; }
// conj(a) * b, the building block of the Hermitian inner product.
template <typename T> CS_HD T conj_mul(T a, T b) { return a * b; }
template <typename T> CS_HD T mul(T a, T b) { return a * b; }
template <typename T> CS_HD T add(T a, T b) { return a + b; }
template <typename T> CS_HD T sub(T a, T b) { return a - b; }
template <typename T> CS_HD bool is_finite(T x) { return std::isfinite(x); }

// --- complex ----------------------------------------------------------------
template <typename T> CS_HD Complex<T> conj(Complex<T> x) { return {x.re, -x.im}; }
template <typename T> CS_HD T abs2(Complex<T> x) { return x.re * x.re + x.im * x.im; }
template <typename T> CS_HD T cabs(Complex<T> x) { return std::hypot(x.re, x.im); }
template <typename T> CS_HD T real_part(Complex<T> x) { return x.re; }
template <typename T> CS_HD T abs1(Complex<T> x) { return std::fabs(x.re) + std::fabs(x.im); }
template <typename T> CS_HD Complex<T> scale(Complex<T> x, T s) { return {x.re * s, x.im * s}; }
template <typename T> CS_HD Complex<T> divide(Complex<T> x, T s) { return {x.re / s, x.im / s}; }
template <typename T> CS_HD Complex<T> from_real(T x, Complex<T>* /*tag*/) { return {x, T(0)}; }
template <typename T> CS_HD Complex<T> conj_mul(Complex<T> a, Complex<T> b) {
  return {a.re * b.re + a.im * b.im, a.re * b.im - a.im * b.re};
}
template <typename T> CS_HD Complex<T> mul(Complex<T> a, Complex<T> b) {
  return {a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re};
}
template <typename T> CS_HD Complex<T> add(Complex<T> a, Complex<T> b) { return {a.re + b.re, a.im + b.im}; }
template <typename T> CS_HD Complex<T> sub(Complex<T> a, Complex<T> b) { return {a.re - b.re, a.im - b.im}; }
template <typename T> CS_HD bool is_finite(Complex<T> x) { return std::isfinite(x.re) && std::isfinite(x.im); }

// --- double-precision accumulation ----------------------------------------
// Sums of many float32 products (norms and inner products of tall columns)
// lose accuracy like rows * eps; summed in double they stay at eps.
template <typename E> struct WideTraits { using type = double; };
template <typename T> struct WideTraits<Complex<T>> { using type = Complex<double>; };
template <typename E>
using wide_t = typename WideTraits<E>::type;
CS_HD double widen(float x) { return x; }
CS_HD double widen(double x) { return x; }
template <typename T> CS_HD Complex<double> widen(Complex<T> x) { return {double(x.re), double(x.im)}; }
template <typename E> CS_HD E narrow(double x) { return E(x); }
template <typename E> CS_HD E narrow(Complex<double> x) {
  return {static_cast<real_t<E>>(x.re), static_cast<real_t<E>>(x.im)};
}

// zero / real-valued constants of element type E
template <typename E> CS_HD E make_real(real_t<E> x) { return from_real(x, static_cast<E*>(nullptr)); }

}  // namespace convspectra
