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

// Scratch memory: what an op allocates beyond its inputs, its outputs and a
// few temporaries of their size -- the CUDA SVD's global workspace, the
// iterates that the backward of Bjorck recomputes -- stays within this budget
// (256 MiB). Such buffers are processed in waves of as many matrices as fit
// (at least one), and the Bjorck backward checkpoints its iterates when even
// one matrix's would not fit (common/bjorck.h).
constexpr int64_t kScratchBudgetBytes = int64_t(256) << 20;

}  // namespace convspectra
