#pragma once
// Errors thrown by dynascope. Every error derives from dynascope::Error and carries a category,
// so a caller can branch on the category or catch a specific type. Messages name the argument,
// file or library call that failed and what was expected.
#include <stdexcept>
#include <string>

#include "dynascope/export.h"

namespace dynascope {

enum class ErrorCategory {
  invalid_argument,    // a value out of range or inconsistent options
  shape_mismatch,      // array shapes that do not fit together
  out_of_memory,       // allocation failed or the workspace budget is too small
  not_built_with_cuda, // a cuda entry point in a host-only build
  no_device,           // CUDA built, but no usable device
  cuda,                // a CUDA runtime call failed
  cublas,              // a cuBLAS call failed
  cusolver,            // a cuSOLVER call failed
  lapack,              // a host LAPACK call reported an error
  file_format,         // a file that cannot be read as what it claims to be
  io,                  // the operating system refused to open, read or write a file
  cancelled,           // the caller's progress callback asked to stop
};

DYNASCOPE_API const char* to_string(ErrorCategory category) noexcept;

class DYNASCOPE_API Error : public std::runtime_error {
 public:
  Error(ErrorCategory category, const std::string& message);
  ErrorCategory category() const noexcept { return category_; }

 private:
  ErrorCategory category_;
};

#define DYNASCOPE_DECLARE_ERROR(Name, category_value)                          \
  class DYNASCOPE_API Name : public Error {                                   \
   public:                                                                     \
    explicit Name(const std::string& message) : Error(category_value, message) {} \
  };

DYNASCOPE_DECLARE_ERROR(InvalidArgument, ErrorCategory::invalid_argument)
DYNASCOPE_DECLARE_ERROR(ShapeMismatch, ErrorCategory::shape_mismatch)
DYNASCOPE_DECLARE_ERROR(OutOfMemory, ErrorCategory::out_of_memory)
DYNASCOPE_DECLARE_ERROR(NotBuiltWithCuda, ErrorCategory::not_built_with_cuda)
DYNASCOPE_DECLARE_ERROR(NoDevice, ErrorCategory::no_device)
DYNASCOPE_DECLARE_ERROR(LapackError, ErrorCategory::lapack)
DYNASCOPE_DECLARE_ERROR(IoError, ErrorCategory::io)
DYNASCOPE_DECLARE_ERROR(Cancelled, ErrorCategory::cancelled)
#undef DYNASCOPE_DECLARE_ERROR

// A failed CUDA runtime, cuBLAS or cuSOLVER call, with the call text and where it was made.
class DYNASCOPE_API DeviceError : public Error {
 public:
  DeviceError(ErrorCategory category, const std::string& call, int code,
               const std::string& detail, const char* file, int line);
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// A file that is not what it claims to be; the message starts with the file name.
class DYNASCOPE_API FileFormatError : public Error {
 public:
  FileFormatError(const std::string& path, const std::string& problem);
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

}  // namespace dynascope
