// Launch helpers shared by the CUDA kernels (included from .cu files only).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "cuda/status.h"

namespace convspectra {
namespace cuda {

struct DeviceLimits {
  size_t shared_optin = 0;  // dynamic shared memory one block may opt into
  int sms = 1;              // streaming multiprocessors
};

// The current device's limits.
inline Status device_limits(DeviceLimits& limits) {
  int dev = 0, optin = 0, sms = 0;
  CS_CUDA_TRY(cudaGetDevice(&dev));
  CS_CUDA_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  CS_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  limits.shared_optin = size_t(optin);
  limits.sms = sms > 0 ? sms : 1;
  return {};
}

// Whether `bytes` of dynamic shared memory fit one block of the current device.
inline Status fits_shared(size_t bytes, bool& fits) {
  DeviceLimits limits;
  CS_RETURN_IF_FAILED(device_limits(limits));
  fits = bytes <= limits.shared_optin;
  return {};
}

// Beyond the default 48 KiB of dynamic shared memory a kernel must opt in
// (before its launch, and before an occupancy query counts it).
template <typename... Params>
Status opt_in_shared(void (*kernel)(Params...), size_t bytes) {
  if (bytes > 48 * 1024)
    CS_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  return {};
}

// Launches kernel with `bytes` of dynamic shared memory.
template <typename... Params, typename... Args>
Status launch_with_shared(void (*kernel)(Params...), dim3 grid, dim3 block, size_t bytes, cudaStream_t stream,
                          Args&&... args) {
  CS_RETURN_IF_FAILED(opt_in_shared(kernel, bytes));
  kernel<<<grid, block, bytes, stream>>>(std::forward<Args>(args)...);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return {err, "kernel launch"};
  return {};
}

}  // namespace cuda
}  // namespace convspectra
