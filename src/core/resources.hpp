#pragma once
// What a Context shares with its copies and with the arrays it allocated.
#include <mutex>

#include "dynascope/context.hpp"

namespace dynascope::detail {

struct Resources {
  Backend backend = Backend::host;
  int device = 0;
  int threads = 0;
  void* stream = nullptr;
  bool owns_stream = false;
  std::size_t workspace_budget = std::size_t{1} << 30;
  Allocator allocator;  // empty: the backend's default
  LogSink log;
  ProgressSink progress;
  CancelCheck cancel;

  std::mutex handle_mutex;
  void* cublas = nullptr;
  void* cusolver = nullptr;

  Resources() = default;
  Resources(const Resources&) = delete;
  Resources& operator=(const Resources&) = delete;
  ~Resources();
};

}  // namespace dynascope::detail
