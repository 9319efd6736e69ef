#include "dynascope/context.hpp"

#include <cstdlib>
#include <new>
#include <optional>
#include <string>
#include <utility>

#include "core/resources.hpp"
#include "cuda/cuda_api.hpp"
#include "dynascope/error.hpp"

namespace dynascope {

namespace detail {
Resources::~Resources() {
  if (backend != Backend::cuda) return;
  // Handles and streams belong to the context's device (cublasDestroy synchronizes the current
  // device): tear them down there. A destructor cannot report failure; it leaves things as they are.
  try {
    cuda_api::DeviceScope scope(device);
    if (cublas) cuda_api::destroy_cublas(cublas);
    if (cusolver) cuda_api::destroy_cusolver(cusolver);
    if (owns_stream && stream) cuda_api::destroy_stream(stream);
  } catch (...) {
  }
}
}  // namespace detail

CudaStatus cuda_status() {
  cuda_api::Status s = cuda_api::status();
  CudaStatus st;
  st.built = s.built;
  st.device_count = s.device_count;
  st.reason = std::move(s.reason);
  return st;
}

bool cuda_available() { return cuda_api::status().device_count > 0; }

Context Context::host(int threads) {
  if (threads < 0) throw InvalidArgument("Context::host: threads must be >= 0, got " + std::to_string(threads));
  auto res = std::make_shared<detail::Resources>();
  res->backend = Backend::host;
  res->threads = threads;
  return Context(std::move(res));
}

Context Context::cuda(int device, void* stream) {
  const cuda_api::Status st = cuda_api::status();
  if (!st.built) throw NotBuiltWithCuda("Context::cuda: dynascope was built without the CUDA backend");
  if (st.device_count == 0) throw NoDevice("Context::cuda: no usable CUDA device (" + st.reason + ")");
  if (device < 0 || device >= st.device_count)
    throw InvalidArgument("Context::cuda: device " + std::to_string(device) + " out of range (" +
                          std::to_string(st.device_count) + " devices)");
  auto res = std::make_shared<detail::Resources>();
  res->backend = Backend::cuda;
  res->device = device;
  if (stream) {
    res->stream = stream;
  } else {
    res->stream = cuda_api::create_stream(device);
    res->owns_stream = true;
  }
  return Context(std::move(res));
}

Context Context::automatic(int threads) {
  return cuda_available() ? Context::cuda(0) : Context::host(threads);
}

Backend Context::backend() const noexcept { return res_->backend; }
int Context::device() const noexcept { return res_->device; }
int Context::threads() const noexcept { return res_->threads; }
void* Context::stream() const noexcept { return res_->stream; }

void* Context::cublas() const {
  if (!is_cuda()) throw InvalidArgument("Context::cublas: not a cuda context");
  std::lock_guard lock(res_->handle_mutex);
  if (!res_->cublas) {
    cuda_api::DeviceScope scope(res_->device);
    res_->cublas = cuda_api::create_cublas(res_->stream);
  }
  return res_->cublas;
}

void* Context::cusolver() const {
  if (!is_cuda()) throw InvalidArgument("Context::cusolver: not a cuda context");
  std::lock_guard lock(res_->handle_mutex);
  if (!res_->cusolver) {
    cuda_api::DeviceScope scope(res_->device);
    res_->cusolver = cuda_api::create_cusolver(res_->stream);
  }
  return res_->cusolver;
}

std::size_t Context::workspace_budget() const noexcept { return res_->workspace_budget; }
void Context::set_workspace_budget(std::size_t bytes) { res_->workspace_budget = bytes; }

void Context::set_allocator(Allocator allocator) {
  if (static_cast<bool>(allocator.allocate) != static_cast<bool>(allocator.deallocate))
    throw InvalidArgument("Context::set_allocator: allocate and deallocate must be set together");
  res_->allocator = std::move(allocator);
}

namespace {
constexpr std::size_t kHostAlignment = 64;
}

namespace {
// Runs f with the context's device current on cuda (a hook's cudaMalloc, a free, a handle), for
// paths that must not throw: if the device cannot even be selected, nothing can be freed on it.
template <class F>
void on_device_noexcept(const detail::Resources& res, F&& f) noexcept {
  if (res.backend != Backend::cuda) {
    f();
    return;
  }
  try {
    cuda_api::DeviceScope scope(res.device);
    f();
  } catch (...) {
  }
}
}  // namespace

void* Context::allocate(std::size_t bytes) const {
  if (bytes == 0) bytes = 1;
  void* p = nullptr;
  std::optional<cuda_api::DeviceScope> scope;
  if (is_cuda()) scope.emplace(res_->device);
  if (res_->allocator.allocate) {
    p = res_->allocator.allocate(bytes, res_->stream);
  } else if (is_cuda()) {
    p = cuda_api::malloc_async(bytes, res_->stream);
  } else {
    const std::size_t rounded = (bytes + kHostAlignment - 1) / kHostAlignment * kHostAlignment;
    p = std::aligned_alloc(kHostAlignment, rounded);
  }
  if (!p)
    throw OutOfMemory(std::string("cannot allocate ") + std::to_string(bytes) + " bytes on " +
                      to_string(backend()));
  return p;
}

void Context::deallocate(void* ptr, std::size_t bytes) const noexcept {
  if (!ptr) return;
  on_device_noexcept(*res_, [&] {
    if (res_->allocator.deallocate) res_->allocator.deallocate(ptr, bytes, res_->stream);
    else if (is_cuda()) cuda_api::free_async(ptr, res_->stream);
    else std::free(ptr);
  });
}

std::shared_ptr<void> Context::allocate_owned(std::size_t bytes) const {
  void* p = allocate(bytes);
  if (res_->allocator.deallocate) {
    // The hook's deallocator as it is now, with the stream; the resources stay alive for it.
    return std::shared_ptr<void>(p, [dealloc = res_->allocator.deallocate, res = res_, bytes](void* q) {
      on_device_noexcept(*res, [&] { dealloc(q, bytes, res->stream); });
    });
  }
  // The backend's default: a context copy without the hook frees through it.
  return std::shared_ptr<void>(p, [res = res_, cuda = is_cuda()](void* q) {
    if (cuda) on_device_noexcept(*res, [&] { cuda_api::free_async(q, res->stream); });
    else std::free(q);
  });
}

void Context::set_log_sink(LogSink sink) { res_->log = std::move(sink); }
void Context::set_progress_sink(ProgressSink sink) { res_->progress = std::move(sink); }
void Context::set_cancel_check(CancelCheck check) { res_->cancel = std::move(check); }

void Context::log(LogLevel level, std::string_view message) const {
  if (res_->log) res_->log(level, message);
}

void Context::progress(std::string_view task, index_t done, index_t total) const {
  if (res_->progress) res_->progress(task, done, total);
}

void Context::check_cancelled() const {
  if (res_->cancel && res_->cancel()) throw Cancelled("cancelled by the caller");
}

void Context::synchronize() const {
  if (is_cuda()) cuda_api::synchronize(res_->stream);
}

}  // namespace dynascope
