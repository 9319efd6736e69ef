// CUDA runtime plumbing and the cuBLAS / cuSOLVER handles (CUDA builds only). cudart is linked
// statically; cuBLAS and cuSOLVER are loaded on first use (cuda/libraries.hpp).
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <string>

#include "cuda/check.hpp"
#include "cuda/cuda_api.hpp"
#include "cuda/libraries.hpp"

namespace dynascope::cuda_detail {

void throw_cuda(cudaError_t status, const char* call, const char* file, int line) {
  const std::string detail = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
  if (status == cudaErrorMemoryAllocation)
    throw OutOfMemory("CUDA out of memory in " + std::string(call) + " at " + file + ":" + std::to_string(line));
  throw DeviceError(ErrorCategory::cuda, call, static_cast<int>(status), detail, file, line);
}

void throw_cublas(int status, const char* call, const char* file, int line) {
  const auto s = static_cast<cublasStatus_t>(status);
  // A status comes from a call through the loaded table, so the names are there to ask.
  const cuda_lib::Cublas* api = cuda_lib::cublas_if_loaded();
  throw DeviceError(ErrorCategory::cublas, call, status,
                    api ? std::string(api->cublasGetStatusName(s)) + ": " + api->cublasGetStatusString(s)
                        : "cublasStatus_t " + std::to_string(status),
                    file, line);
}

void throw_cusolver(int status, const char* call, const char* file, int line) {
  throw DeviceError(ErrorCategory::cusolver, call, status, "cusolverStatus_t " + std::to_string(status),
                    file, line);
}

}  // namespace dynascope::cuda_detail

namespace dynascope::cuda_api {

namespace {
// Whether the driver library can be loaded at all (it is what a machine without NVIDIA's driver
// lacks); checked only to word the reason, never kept open.
bool driver_library_present() {
  void* h = ::dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
  if (h == nullptr) h = ::dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (h == nullptr) return false;
  ::dlclose(h);
  return true;
}
}  // namespace

Status status() {
  Status st;
  st.built = true;
  int n = 0;
  // No other CUDA call may come first: without a driver everything else fails too.
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (e == cudaErrorInsufficientDriver && !driver_library_present())
      st.reason = "no NVIDIA driver is installed on this machine (libcuda.so.1 not found), so no GPU can be used; "
                  "use --backend host";
    else if (e == cudaErrorInsufficientDriver)
      st.reason = "the NVIDIA driver is older than this build's CUDA runtime needs (CUDA " +
                  std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10) +
                  "); update the driver or use --backend host";
    else if (e == cudaErrorNoDevice)
      st.reason = "the NVIDIA driver sees no GPU on this machine";
    else
      st.reason = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    cudaGetLastError();  // clear the sticky-free error state
    return st;
  }
  if (n <= 0) {
    st.reason = "the driver reports no CUDA devices";
    return st;
  }
  st.device_count = n;
  return st;
}

void set_device(int device) { DYNASCOPE_CUDA_CHECK(cudaSetDevice(device)); }

int current_device() {
  int d = 0;
  DYNASCOPE_CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void* create_stream(int device) {
  // The stream belongs to the device current at its creation; the caller's device comes back.
  DeviceScope on_device(device);
  cudaStream_t s = nullptr;
  DYNASCOPE_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

// Failures of these noexcept calls are cleared from the thread's last-error state, so that the
// next launch check does not report them as its own.
void destroy_stream(void* stream) noexcept {
  if (cudaStreamDestroy(static_cast<cudaStream_t>(stream)) != cudaSuccess) (void)cudaGetLastError();
}

void* malloc_async(std::size_t bytes, void* stream) {
  void* p = nullptr;
  const cudaError_t e = cudaMallocAsync(&p, bytes, static_cast<cudaStream_t>(stream));
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return nullptr;
  }
  DYNASCOPE_CUDA_CHECK(e);
  return p;
}

void free_async(void* ptr, void* stream) noexcept {
  if (cudaFreeAsync(ptr, static_cast<cudaStream_t>(stream)) != cudaSuccess) (void)cudaGetLastError();
}

void copy_2d_async(void* dst, std::size_t dst_pitch, const void* src, std::size_t src_pitch,
                   std::size_t width_bytes, std::size_t rows, void* stream) {
  const auto st = static_cast<cudaStream_t>(stream);
  // One linear copy when the rows are packed (cudaMemcpy2D rejects pitches above memPitch, ~2 GiB).
  if (rows == 1 || (dst_pitch == width_bytes && src_pitch == width_bytes)) {
    DYNASCOPE_CUDA_CHECK(cudaMemcpyAsync(dst, src, width_bytes * rows, cudaMemcpyDefault, st));
    return;
  }
  int device = 0, max_pitch = 0;
  DYNASCOPE_CUDA_CHECK(cudaGetDevice(&device));
  DYNASCOPE_CUDA_CHECK(cudaDeviceGetAttribute(&max_pitch, cudaDevAttrMaxPitch, device));
  if (dst_pitch <= std::size_t(max_pitch) && src_pitch <= std::size_t(max_pitch)) {
    DYNASCOPE_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width_bytes, rows, cudaMemcpyDefault, st));
    return;
  }
  for (std::size_t r = 0; r < rows; ++r)
    DYNASCOPE_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + r * dst_pitch, static_cast<const char*>(src) + r * src_pitch,
                                         width_bytes, cudaMemcpyDefault, st));
}

void memset_async(void* dst, int value, std::size_t bytes, void* stream) {
  DYNASCOPE_CUDA_CHECK(cudaMemsetAsync(dst, value, bytes, static_cast<cudaStream_t>(stream)));
}

void synchronize(void* stream) {
  DYNASCOPE_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}

void* create_cublas(void* stream) {
  const cuda_lib::Cublas& api = cuda_lib::cublas();
  cublasHandle_t h = nullptr;
  DYNASCOPE_CUBLAS_CHECK(api.cublasCreate(&h));
  try {
    DYNASCOPE_CUBLAS_CHECK(api.cublasSetStream(h, static_cast<cudaStream_t>(stream)));
    // Scalars (alpha, beta, dot and nrm2 results) are host values throughout dynascope.
    DYNASCOPE_CUBLAS_CHECK(api.cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST));
  } catch (...) {
    api.cublasDestroy(h);
    throw;
  }
  return h;
}

void destroy_cublas(void* handle) noexcept {
  // A handle exists only if the library was loaded to create it.
  if (const cuda_lib::Cublas* api = cuda_lib::cublas_if_loaded()) api->cublasDestroy(static_cast<cublasHandle_t>(handle));
}

void* create_cusolver(void* stream) {
  const cuda_lib::Cusolver& api = cuda_lib::cusolver();
  cusolverDnHandle_t h = nullptr;
  DYNASCOPE_CUSOLVER_CHECK(api.cusolverDnCreate(&h));
  try {
    DYNASCOPE_CUSOLVER_CHECK(api.cusolverDnSetStream(h, static_cast<cudaStream_t>(stream)));
  } catch (...) {
    api.cusolverDnDestroy(h);
    throw;
  }
  return h;
}

void destroy_cusolver(void* handle) noexcept {
  if (const cuda_lib::Cusolver* api = cuda_lib::cusolver_if_loaded())
    api->cusolverDnDestroy(static_cast<cusolverDnHandle_t>(handle));
}

}  // namespace dynascope::cuda_api
