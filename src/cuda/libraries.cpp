// Run-time loading of cuBLAS and cuSOLVER (CUDA builds only); see cuda/libraries.hpp.
#include "cuda/libraries.hpp"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <atomic>
#include <mutex>
#include <string>

namespace dynascope::cuda_lib {

#define DYNASCOPE_LIB_STR2(x) #x
#define DYNASCOPE_LIB_STR(x) DYNASCOPE_LIB_STR2(x)

namespace {

constexpr const char* kCublasSoname = "libcublas.so." DYNASCOPE_LIB_STR(CUBLAS_VER_MAJOR);
constexpr const char* kCusolverSoname = "libcusolver.so." DYNASCOPE_LIB_STR(CUSOLVER_VER_MAJOR);

std::string loader_message() {
  const char* e = ::dlerror();
  return e ? std::string(e) : std::string("unknown dynamic loader error");
}

// One library's table, published once it is complete. The storage is never freed and the library
// never closed: handles may be destroyed by static destructors after main returns.
template <class Table>
struct Slot {
  std::mutex mutex;
  std::atomic<const Table*> ready{nullptr};
  Table table;
};

template <class Table>
Slot<Table>& slot() {
  static Slot<Table>* s = new Slot<Table>;  // leaked on purpose, see above
  return *s;
}

void fill(Cublas& t, void* h) {
#define DYNASCOPE_LIB_RESOLVE(fn) \
  t.fn = reinterpret_cast<decltype(t.fn)>(resolve_symbol(ErrorCategory::cublas, h, kCublasSoname, DYNASCOPE_LIB_STR(fn)));
  DYNASCOPE_CUBLAS_FUNCTIONS(DYNASCOPE_LIB_RESOLVE)
#undef DYNASCOPE_LIB_RESOLVE
}

void fill(Cusolver& t, void* h) {
#define DYNASCOPE_LIB_RESOLVE(fn)                                                                          \
  t.fn = reinterpret_cast<decltype(t.fn)>(resolve_symbol(ErrorCategory::cusolver, h, kCusolverSoname, \
                                                         DYNASCOPE_LIB_STR(fn)));
  DYNASCOPE_CUSOLVER_FUNCTIONS(DYNASCOPE_LIB_RESOLVE)
#undef DYNASCOPE_LIB_RESOLVE
}

template <class Table>
const Table& load(ErrorCategory category, const char* label, const char* soname) {
  Slot<Table>& s = slot<Table>();
  if (const Table* t = s.ready.load(std::memory_order_acquire)) return *t;
  std::lock_guard lock(s.mutex);
  if (const Table* t = s.ready.load(std::memory_order_relaxed)) return *t;
  // dlopen of a library that is already open only counts a reference; a failed attempt (missing
  // symbol) leaves the handle open, which is harmless.
  fill(s.table, open_library(category, label, soname));
  s.ready.store(&s.table, std::memory_order_release);
  return s.table;
}

}  // namespace

void* open_library(ErrorCategory category, const char* label, const char* soname) {
  ::dlerror();
  if (void* h = ::dlopen(soname, RTLD_NOW | RTLD_LOCAL)) return h;
  std::string why = loader_message();
#ifdef DYNASCOPE_CUDA_LIBRARY_DIR
  // The toolkit this build was configured with, for machines whose loader path lacks it.
  const std::string path = std::string(DYNASCOPE_CUDA_LIBRARY_DIR) + "/" + soname;
  ::dlerror();
  if (void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) return h;
  why += "; also tried " + path + ": " + loader_message();
#endif
  throw Error(category, std::string("cannot load ") + label + " (" + soname + "), which a cuda context needs for " +
                            (category == ErrorCategory::cusolver ? "LAPACK" : "BLAS") + " calls: " + why +
                            ". Install the " + label + " library of CUDA " + std::to_string(CUDART_VERSION / 1000) +
                            " where the dynamic loader finds it (ldconfig or LD_LIBRARY_PATH), or use the host backend");
}

void* resolve_symbol(ErrorCategory category, void* handle, const char* soname, const char* symbol) {
  ::dlerror();
  void* p = ::dlsym(handle, symbol);
  if (p == nullptr)
    throw Error(category, std::string(soname) + " has no symbol " + symbol + " (" + loader_message() +
                              "): the library is older than the CUDA toolkit dynascope was built with");
  return p;
}

const Cublas& cublas() { return load<Cublas>(ErrorCategory::cublas, "cuBLAS", kCublasSoname); }
const Cusolver& cusolver() { return load<Cusolver>(ErrorCategory::cusolver, "cuSOLVER", kCusolverSoname); }

const Cublas* cublas_if_loaded() noexcept { return slot<Cublas>().ready.load(std::memory_order_acquire); }
const Cusolver* cusolver_if_loaded() noexcept { return slot<Cusolver>().ready.load(std::memory_order_acquire); }

const char* cublas_soname() noexcept { return kCublasSoname; }
const char* cusolver_soname() noexcept { return kCusolverSoname; }

}  // namespace dynascope::cuda_lib
