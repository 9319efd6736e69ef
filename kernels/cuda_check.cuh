#pragma once
// Checks for CUDA runtime calls made by kernel launchers (CUDA builds only). A failure throws
// DeviceError (OutOfMemory for cudaErrorMemoryAllocation) naming the call, the status and where it
// was made. The library's own runtime, cuBLAS and cuSOLVER checks build on this (cuda/check.hpp).
#include <cuda_runtime.h>

#include "dynascope/export.h"

namespace dynascope::cuda_detail {

[[noreturn]] DYNASCOPE_API void throw_cuda(cudaError_t status, const char* call, const char* file, int line);

}  // namespace dynascope::cuda_detail

#define DYNASCOPE_CUDA_CHECK(call)                                                  \
  do {                                                                              \
    const cudaError_t ds_status_ = (call);                                          \
    if (ds_status_ != cudaSuccess)                                                  \
      ::dynascope::cuda_detail::throw_cuda(ds_status_, #call, __FILE__, __LINE__);  \
  } while (0)

namespace dynascope::kern {

// Makes `device` current for a scope and restores the caller's device afterwards, so that a launch
// goes to the context's device and the calling thread's CUDA state is left as it was. Costs two
// cudaGetDevice calls (no driver round trip) when the device is already current.
class CudaDeviceScope {
 public:
  explicit CudaDeviceScope(int device) {
    DYNASCOPE_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) DYNASCOPE_CUDA_CHECK(cudaSetDevice(device));
  }
  ~CudaDeviceScope() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_ && cudaSetDevice(previous_) != cudaSuccess)
      (void)cudaGetLastError();  // not reported by the next launch check as its own
  }
  CudaDeviceScope(const CudaDeviceScope&) = delete;
  CudaDeviceScope& operator=(const CudaDeviceScope&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace dynascope::kern
