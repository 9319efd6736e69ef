#pragma once
// The thin layer between the backend-neutral core and the CUDA runtime. Implemented by
// cuda/runtime.cpp in CUDA builds and by cuda/stubs.cpp (every call throws NotBuiltWithCuda,
// status() says "built without CUDA") in host-only builds. No CUDA types cross this header, and it
// sits below the public Context: core/context.cpp turns Status into the public CudaStatus.
#include <cstddef>
#include <string>

#include "dynascope/export.h"

namespace dynascope::cuda_api {

// What the CUDA runtime says about devices, without touching a device when none is usable.
struct Status {
  bool built = false;
  int device_count = 0;
  std::string reason;  // why none is usable, when device_count == 0
};
Status status();
// Exported so that tests can check that the library leaves the calling thread's device as it
// found it; not part of the public API.
DYNASCOPE_API void set_device(int device);
DYNASCOPE_API int current_device();

// Makes `device` current for a scope and restores the caller's device afterwards, so that the
// library never leaves the calling thread's CUDA state changed.
class DeviceScope {
 public:
  explicit DeviceScope(int device) : previous_(current_device()) {
    if (previous_ != device) set_device(device);
  }
  ~DeviceScope() {
    try {
      if (current_device() != previous_) set_device(previous_);
    } catch (...) {
    }
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_;
};
void* create_stream(int device);
void destroy_stream(void* stream) noexcept;
void* malloc_async(std::size_t bytes, void* stream);  // nullptr when out of memory
void free_async(void* ptr, void* stream) noexcept;
// kind is inferred from the pointers (unified addressing); packed rows go as one linear copy.
void copy_2d_async(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch,
                   std::size_t width_bytes, std::size_t rows, void* stream);
void memset_async(void* dst, int value, std::size_t bytes, void* stream);
void synchronize(void* stream);
// cuBLAS and cuSOLVER handles bound to `stream`. The libraries are loaded on first use
// (cuda/libraries.hpp); when one cannot be loaded these throw Error (category cublas / cusolver)
// naming it and the loader's reason.
void* create_cublas(void* stream);
void destroy_cublas(void* handle) noexcept;
void* create_cusolver(void* stream);
void destroy_cusolver(void* handle) noexcept;

}  // namespace dynascope::cuda_api
