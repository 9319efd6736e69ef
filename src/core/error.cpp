#include "dynascope/error.hpp"

#include <string>

#include "dynascope/types.hpp"

namespace dynascope {

const char* to_string(ErrorCategory category) noexcept {
  switch (category) {
    case ErrorCategory::invalid_argument: return "invalid argument";
    case ErrorCategory::shape_mismatch: return "shape mismatch";
    case ErrorCategory::out_of_memory: return "out of memory";
    case ErrorCategory::not_built_with_cuda: return "not built with CUDA";
    case ErrorCategory::no_device: return "no device";
    case ErrorCategory::cuda: return "CUDA error";
    case ErrorCategory::cublas: return "cuBLAS error";
    case ErrorCategory::cusolver: return "cuSOLVER error";
    case ErrorCategory::lapack: return "LAPACK error";
    case ErrorCategory::file_format: return "file format";
    case ErrorCategory::io: return "I/O error";
    case ErrorCategory::cancelled: return "cancelled";
  }
  return "error";
}

Error::Error(ErrorCategory category, const std::string& message)
    : std::runtime_error(message), category_(category) {}

DeviceError::DeviceError(ErrorCategory category, const std::string& call, int code,
                         const std::string& detail, const char* file, int line)
    : Error(category, std::string(to_string(category)) + " " + std::to_string(code) + " (" +
                          detail + ") in " + call + " at " + file + ":" + std::to_string(line)),
      code_(code) {}

FileFormatError::FileFormatError(const std::string& path, const std::string& problem)
    : Error(ErrorCategory::file_format, path + ": " + problem), path_(path) {}

const char* to_string(Backend backend) noexcept {
  return backend == Backend::cuda ? "cuda" : "host";
}

const char* to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
    case DType::i64: return "int64";
    case DType::u8: return "uint8";
  }
  return "unknown";
}

}  // namespace dynascope
