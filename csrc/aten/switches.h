// Process-wide switches that tests flip through the private ops
// convspectra::_set_force_fallback and convspectra::_set_scratch_budget
// (ops.cpp). The kernels read them once per call.
#pragma once

#include <cstdint>

namespace convspectra {

// Whether every op takes its fallback branch (the one otherwise kept for
// large matrices), whatever the size.
bool force_fallback();

// The bytes of scratch an op may allocate beyond its inputs, outputs and
// their same-size temporaries (default kScratchBudgetBytes).
int64_t scratch_budget();

}  // namespace convspectra
