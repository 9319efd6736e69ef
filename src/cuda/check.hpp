#pragma once
// Checks for CUDA runtime, cuBLAS and cuSOLVER calls (CUDA builds only). A failure throws
// DeviceError naming the call, the status and where it was made. The runtime check
// (DYNASCOPE_CUDA_CHECK, throw_cuda) lives with the kernel launchers in kernels/cuda_check.cuh,
// which sit below src/; this header adds the library checks.
#include "dynascope/error.hpp"
#include "kernels/cuda_check.cuh"

namespace dynascope::cuda_detail {

[[noreturn]] DYNASCOPE_API void throw_cublas(int status, const char* call, const char* file, int line);
[[noreturn]] DYNASCOPE_API void throw_cusolver(int status, const char* call, const char* file, int line);

}  // namespace dynascope::cuda_detail

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
