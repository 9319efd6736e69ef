#pragma once
// The thin layer between the backend-neutral core and the CUDA runtime. Implemented by
// cuda/runtime.cpp in CUDA builds and by cuda/stubs.cpp (every call throws NotBuiltWithCuda,
// status() says "built without CUDA") in host-only builds. No CUDA types cross this header.
#include <cstddef>

#include "dynascope/context.hpp"

namespace dynascope::cuda_api {

CudaStatus status();
void set_device(int device);
int current_device();

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
void* create_cublas(void* stream);
void destroy_cublas(void* handle) noexcept;
void* create_cusolver(void* stream);
void destroy_cusolver(void* handle) noexcept;

}  // namespace dynascope::cuda_api
