// Caps on the kernels' loops, in one place. Torch-free (CPU, CUDA and the
// CMake build read them: CMakeLists.txt copies the three caps into the
// generated _build_info.py). Each cap exists so that no argument and no
// input, however pathological, can make a kernel loop without bound.
#pragma once

#include <cstdint>

namespace convspectra {

// Gram iteration squarings: 2^60 is beyond any use. steps must be in [0, 60].
constexpr int kMaxGramSteps = 60;

// Bjorck iterations: iters must be in [0, 1000].
constexpr int kMaxBjorckIters = 1000;

// One-sided Jacobi sweeps: Jacobi converges quadratically (typically 5-12
// sweeps); the cap only guarantees that no input loops forever.
constexpr int kMaxJacobiSweeps = 64;

}  // namespace convspectra
