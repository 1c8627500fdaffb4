// Launch helpers shared by the CUDA kernels (included from .cu files only).
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace convspectra {
namespace cuda {

struct DeviceLimits {
  size_t shared_optin = 0;  // dynamic shared memory one block may opt into
  int sms = 1;              // streaming multiprocessors
};

// The current device's limits; on failure the defaults (nothing fits in
// shared memory, one SM) stay and the error is returned.
inline cudaError_t device_limits(DeviceLimits& limits) {
  int dev = 0, optin = 0, sms = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err != cudaSuccess) return err;
  limits.shared_optin = size_t(optin);
  limits.sms = sms > 0 ? sms : 1;
  return cudaSuccess;
}

// Launches kernel with `bytes` of dynamic shared memory; beyond the default
// 48 KiB a kernel must opt in first.
template <typename... Params, typename... Args>
cudaError_t launch_with_shared(void (*kernel)(Params...), dim3 grid, dim3 block, size_t bytes, cudaStream_t stream,
                               Args&&... args) {
  if (bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    if (err != cudaSuccess) return err;
  }
  kernel<<<grid, block, bytes, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace convspectra
