// The test switches of aten/switches.h and their private ops. Registered as
// CompositeExplicitAutograd kernels: with no tensor arguments the dispatcher
// has no device to choose, and these serve every call.
#include "aten/switches.h"

#include <torch/library.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "common/limits.h"

namespace convspectra {
namespace {

bool force_fallback_from_env() {
  const char* v = std::getenv("CONVSPECTRA_FORCE_FALLBACK");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

std::atomic<bool> g_force_fallback{force_fallback_from_env()};
std::atomic<int64_t> g_scratch_budget{kScratchBudgetBytes};

bool set_force_fallback(bool enabled) { return g_force_fallback.exchange(enabled); }

int64_t set_scratch_budget(int64_t bytes) {
  TORCH_CHECK(bytes >= 0, "convspectra::_set_scratch_budget: bytes must be >= 0, got ", bytes);
  return g_scratch_budget.exchange(bytes == 0 ? kScratchBudgetBytes : bytes);
}

}  // namespace

bool force_fallback() { return g_force_fallback.load(std::memory_order_relaxed); }

int64_t scratch_budget() { return g_scratch_budget.load(std::memory_order_relaxed); }

TORCH_LIBRARY_IMPL(convspectra, CompositeExplicitAutograd, m) {
  m.impl("_set_force_fallback", &set_force_fallback);
  m.impl("_set_scratch_budget", &set_scratch_budget);
}

}  // namespace convspectra
