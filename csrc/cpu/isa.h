// The instruction sets the CPU kernels' serial loops are compiled for, and the
// one chosen at run time.
//
// A wheel runs on CPUs it was not built on, so the library is compiled for
// baseline x86-64 (never -march=native) and each hot loop gets extra copies
// compiled for AVX2+FMA and AVX-512. run_for_cpu_isa picks one per call:
// AVX2 where the CPU has it, capped by ATen's own choice (so
// ATEN_CPU_CAPABILITY=default turns it off); the switch
// convspectra::_set_cpu_capability selects any copy the CPU supports (tests,
// the bench).
//
// Each copy is a forwarding function with a target attribute and `flatten`:
// everything it calls is inlined into it and compiled for its ISA, while
// whatever cannot be inlined stays an ordinary baseline function. (Compiling
// whole files with -mavx2 instead would emit AVX2 copies of shared inline and
// template functions, e.g. std::vector's, which the linker may pick for the
// baseline code too.)
#pragma once

#include <utility>

namespace convspectra {

enum class CpuIsa { kDefault = 0, kAvx2 = 1, kAvx512 = 2 };

// The ISA the kernels use now.
CpuIsa cpu_isa();
const char* cpu_isa_name(CpuIsa isa);

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define CONVSPECTRA_CPU_VARIANTS 1
#define CONVSPECTRA_TARGET_AVX2 __attribute__((target("avx2,fma"), flatten))
#define CONVSPECTRA_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma"), flatten))

namespace isa_detail {
template <typename Loop, typename... Args>
CONVSPECTRA_TARGET_AVX2 void run_avx2(Args&&... args) {
  Loop::run(std::forward<Args>(args)...);
}
template <typename Loop, typename... Args>
CONVSPECTRA_TARGET_AVX512 void run_avx512(Args&&... args) {
  Loop::run(std::forward<Args>(args)...);
}
}  // namespace isa_detail
#endif

// Calls Loop::run(args...) in the copy compiled for cpu_isa(). Loop is a
// struct with a static (template) member function run.
template <typename Loop, typename... Args>
void run_for_cpu_isa(Args&&... args) {
#ifdef CONVSPECTRA_CPU_VARIANTS
  switch (cpu_isa()) {
    case CpuIsa::kAvx512:
      return isa_detail::run_avx512<Loop>(std::forward<Args>(args)...);
    case CpuIsa::kAvx2:
      return isa_detail::run_avx2<Loop>(std::forward<Args>(args)...);
    case CpuIsa::kDefault:
      break;
  }
#endif
  Loop::run(std::forward<Args>(args)...);
}

}  // namespace convspectra
