// The result of the CUDA runtime calls a launcher makes: the first error and
// the call that returned it, so that the op's message names the call that
// failed instead of a later launch. Torch-free (the .cu files use it).
#pragma once

#include <cuda_runtime_api.h>

namespace convspectra {
namespace cuda {

struct Status {
  cudaError_t err = cudaSuccess;
  const char* call = "";
  bool ok() const { return err == cudaSuccess; }
};

}  // namespace cuda
}  // namespace convspectra

// Returns from the enclosing function with a failed Status if the CUDA runtime
// call `expr` fails; the message names the call.
#define CS_CUDA_TRY(expr)                                                   \
  do {                                                                      \
    const cudaError_t cs_err_ = (expr);                                     \
    if (cs_err_ != cudaSuccess) return ::convspectra::cuda::Status{cs_err_, #expr}; \
  } while (0)

// Returns from the enclosing function if the Status `expr` failed.
#define CS_RETURN_IF_FAILED(expr)                           \
  do {                                                      \
    const ::convspectra::cuda::Status cs_status_ = (expr);  \
    if (!cs_status_.ok()) return cs_status_;                \
  } while (0)
