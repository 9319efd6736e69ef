// Host-only build: the cuda entry points exist and throw NotBuiltWithCuda.
#include "cuda/cuda_api.hpp"
#include "dynascope/error.hpp"

namespace dynascope::cuda_api {

namespace {
[[noreturn]] void not_built(const char* what) {
  throw NotBuiltWithCuda(std::string(what) + ": dynascope was built without the CUDA backend "
                         "(configure with -DDYNASCOPE_CUDA=ON)");
}
}  // namespace

Status status() {
  Status st;
  st.reason = "built without CUDA";
  return st;
}
void set_device(int) { not_built("set_device"); }
int current_device() { not_built("current_device"); }
void* create_stream(int) { not_built("create_stream"); }
void destroy_stream(void*) noexcept {}
void* malloc_async(std::size_t, void*) { not_built("device allocation"); }
void free_async(void*, void*) noexcept {}
void copy_2d_async(void*, std::size_t, const void*, std::size_t, std::size_t, std::size_t, void*) {
  not_built("device copy");
}
void memset_async(void*, int, std::size_t, void*) { not_built("device memset"); }
void synchronize(void*) { not_built("stream synchronize"); }
void* create_cublas(void*) { not_built("cuBLAS"); }
void destroy_cublas(void*) noexcept {}
void* create_cusolver(void*) { not_built("cuSOLVER"); }
void destroy_cusolver(void*) noexcept {}

}  // namespace dynascope::cuda_api
