#pragma once
// Checks for CUDA runtime, cuBLAS and cuSOLVER calls (CUDA builds only). A failure throws
// DeviceError naming the call, the status and where it was made.
#include <cuda_runtime.h>

#include "dynascope/error.hpp"

namespace dynascope::cuda_detail {

[[noreturn]] DYNASCOPE_API void throw_cuda(cudaError_t status, const char* call, const char* file, int line);
[[noreturn]] DYNASCOPE_API void throw_cublas(int status, const char* call, const char* file, int line);
[[noreturn]] DYNASCOPE_API void throw_cusolver(int status, const char* call, const char* file, int line);

}  // namespace dynascope::cuda_detail

#define DYNASCOPE_CUDA_CHECK(call)                                                  \
  do {                                                                              \
    const cudaError_t ds_status_ = (call);                                          \
    if (ds_status_ != cudaSuccess)                                                  \
      ::dynascope::cuda_detail::throw_cuda(ds_status_, #call, __FILE__, __LINE__);  \
  } while (0)

#define DYNASCOPE_CUBLAS_CHECK(call)                                                          \
  do {                                                                                        \
    const int ds_status_ = static_cast<int>(call);                                            \
    if (ds_status_ != 0)                                                                      \
      ::dynascope::cuda_detail::throw_cublas(ds_status_, #call, __FILE__, __LINE__);          \
  } while (0)

#define DYNASCOPE_CUSOLVER_CHECK(call)                                                        \
  do {                                                                                        \
    const int ds_status_ = static_cast<int>(call);                                            \
    if (ds_status_ != 0)                                                                      \
      ::dynascope::cuda_detail::throw_cusolver(ds_status_, #call, __FILE__, __LINE__);        \
  } while (0)
