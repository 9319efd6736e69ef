#pragma once
// Context: where and how dynascope computes. It names the backend (host or cuda), the device and
// stream, owns the cuBLAS/cuSOLVER handles, and carries the allocator hook, the workspace budget
// and the log/progress sinks. A Context is a cheap, copyable handle to shared resources; arrays
// allocated through it keep those resources alive. Use one per thread or stream.
//
// The library never prints: messages go to the log sink, progress to the progress sink, and both
// default to doing nothing.
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "dynascope/export.h"
#include "dynascope/types.hpp"

namespace dynascope {

// Memory hook. `stream` is the context's cudaStream_t (nullptr on host). Both functions must be
// set together; allocate returns nullptr (or throws) on failure. On cuda both run with the
// context's device current, and deallocate must be stream-ordered (as cudaFreeAsync(ptr, stream)
// is): work already queued on `stream` may still read the block when deallocate is called.
struct Allocator {
  std::function<void*(std::size_t bytes, void* stream)> allocate;
  std::function<void(void* ptr, std::size_t bytes, void* stream)> deallocate;
};

enum class LogLevel { debug, info, warning };
using LogSink = std::function<void(LogLevel level, std::string_view message)>;
// `done` out of `total` units of `task`; called from the calling thread only. A sink may throw
// (dynascope::Cancelled, say) to stop the computation: the library unwinds cleanly.
using ProgressSink = std::function<void(std::string_view task, index_t done, index_t total)>;
// Asked between small units of work (every operator application of an eigensolver, every SGLD
// step), far more often than progress is reported, from the calling thread only: returning true
// stops the computation with dynascope::Cancelled (the hook may also throw an exception itself).
// It must be cheap; a caller that polls something slow throttles it by time itself.
using CancelCheck = std::function<bool()>;

// What the CUDA runtime says about devices, without ever touching a device when none is usable.
struct CudaStatus {
  bool built = false;        // the library was built with the CUDA backend
  int device_count = 0;      // usable devices (0 when none or no driver)
  std::string reason;        // why none is usable, when device_count == 0
};
DYNASCOPE_API CudaStatus cuda_status();
// True when the cuda backend is built and at least one device is usable. "No driver"
// (cudaErrorInsufficientDriver) and "no device" both count as not available.
DYNASCOPE_API bool cuda_available();

namespace detail { struct Resources; }

class DYNASCOPE_API Context {
 public:
  // Host backend. threads = 0: OpenMP's default (all cores unless OMP_NUM_THREADS says otherwise).
  static Context host(int threads = 0);
  // CUDA backend on `device`. stream = nullptr: the context creates and owns a non-blocking
  // stream; otherwise it uses the caller's cudaStream_t and never destroys it.
  // Throws NotBuiltWithCuda in a host-only build and NoDevice when no device is usable.
  static Context cuda(int device = 0, void* stream = nullptr);
  // cuda when available, host otherwise.
  static Context automatic(int threads = 0);

  Backend backend() const noexcept;
  bool is_host() const noexcept { return backend() == Backend::host; }
  bool is_cuda() const noexcept { return backend() == Backend::cuda; }
  int device() const noexcept;
  int threads() const noexcept;     // host threads for dynascope's own loops (0 = default)
  void* stream() const noexcept;    // cudaStream_t, nullptr on host
  // cublasHandle_t / cusolverDnHandle_t, created on first use on device(), bound to stream().
  // cuBLAS and cuSOLVER are loaded then, not at start-up: when one cannot be loaded these throw
  // Error (category cublas / cusolver) naming the library and the dynamic loader's reason.
  void* cublas() const;
  void* cusolver() const;

  // Bytes of scratch memory an algorithm may use for tiles beyond its inputs and outputs.
  std::size_t workspace_budget() const noexcept;
  void set_workspace_budget(std::size_t bytes);

  // Applies to allocations made from now on: blocks allocated before keep the deallocator of
  // the hook that allocated them (see allocate_owned).
  void set_allocator(Allocator allocator);
  void* allocate(std::size_t bytes) const;                  // throws OutOfMemory
  void deallocate(void* ptr, std::size_t bytes) const noexcept;
  // A block freed by the deallocator in force when it was allocated, whatever set_allocator does
  // later (Array storage is allocated this way). Throws OutOfMemory.
  std::shared_ptr<void> allocate_owned(std::size_t bytes) const;

  void set_log_sink(LogSink sink);
  void set_progress_sink(ProgressSink sink);
  void set_cancel_check(CancelCheck check);
  void log(LogLevel level, std::string_view message) const;
  void progress(std::string_view task, index_t done, index_t total) const;
  // Throws Cancelled when the cancel check says so (no-op without one).
  void check_cancelled() const;

  // Waits for all work queued on the stream (no-op on host).
  void synchronize() const;

  const std::shared_ptr<detail::Resources>& resources() const noexcept { return res_; }

 private:
  explicit Context(std::shared_ptr<detail::Resources> res) : res_(std::move(res)) {}
  std::shared_ptr<detail::Resources> res_;
};

}  // namespace dynascope
