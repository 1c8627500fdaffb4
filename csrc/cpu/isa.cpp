// cpu_isa() (cpu/isa.h) and the private ops that read and override it.
#include "cpu/isa.h"

#include <ATen/Version.h>
#include <torch/library.h>

#include <atomic>
#include <string>

namespace convspectra {
namespace {

const char* const kNames[] = {"default", "avx2", "avx512"};

// The best ISA of both the CPU and ATen's choice (at::get_cpu_capability
// honours ATEN_CPU_CAPABILITY).
CpuIsa best_supported() {
#ifdef CONVSPECTRA_CPU_VARIANTS
  const std::string aten = at::get_cpu_capability();
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
  if (aten == "AVX512" && avx512) return CpuIsa::kAvx512;
  if ((aten == "AVX512" || aten == "AVX2") && avx2) return CpuIsa::kAvx2;
#endif
  return CpuIsa::kDefault;
}

// The automatic choice stops at AVX2: the AVX-512 copies measured no faster
// (Jacobi SVD, Gram, Bjorck up to 10 % slower on a Xeon, single thread; see
// bench/NOTES.md), so they are only used when asked for.
const CpuIsa g_supported = best_supported();
const CpuIsa g_auto = g_supported == CpuIsa::kAvx512 ? CpuIsa::kAvx2 : g_supported;
std::atomic<int> g_isa{int(g_auto)};

std::string cpu_capability() { return cpu_isa_name(cpu_isa()); }

// name "" restores the automatic choice; returns the previous ISA's name.
std::string set_cpu_capability(const std::string& name) {
  CpuIsa wanted = g_auto;
  if (!name.empty()) {
    int found = -1;
    for (int i = 0; i < 3; ++i) {
      if (name == kNames[i]) found = i;
    }
    TORCH_CHECK(found >= 0, "convspectra::_set_cpu_capability: name must be '', 'default', 'avx2' or 'avx512', got '",
                name, "'");
    TORCH_CHECK(found <= int(g_supported), "convspectra::_set_cpu_capability: this CPU (or ATEN_CPU_CAPABILITY) "
                "allows at most '", kNames[int(g_supported)], "', got '", name, "'");
    wanted = CpuIsa(found);
  }
  return kNames[g_isa.exchange(int(wanted))];
}

}  // namespace

CpuIsa cpu_isa() { return CpuIsa(g_isa.load(std::memory_order_relaxed)); }

const char* cpu_isa_name(CpuIsa isa) { return kNames[int(isa)]; }

TORCH_LIBRARY_IMPL(convspectra, CompositeExplicitAutograd, m) {
  m.impl("_cpu_capability", &cpu_capability);
  m.impl("_set_cpu_capability", &set_cpu_capability);
}

}  // namespace convspectra
