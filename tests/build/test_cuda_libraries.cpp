// The run-time loader of cuBLAS and cuSOLVER (src/cuda/libraries.cpp, compiled into this test).
// Needs no GPU: dlopen and dlsym work without a driver, and cublasGetStatusName touches no device.
#include <gtest/gtest.h>

#include <dlfcn.h>

#include <string>

#include "cuda/libraries.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using test::expect_error;

TEST(CudaLibraries, SonamesAreTheToolkitMajorVersions) {
  EXPECT_EQ(std::string(cuda_lib::cublas_soname()), "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR));
  EXPECT_EQ(std::string(cuda_lib::cusolver_soname()), "libcusolver.so." + std::to_string(CUSOLVER_VER_MAJOR));
}

TEST(CudaLibraries, MissingLibraryIsAnErrorNamingItAndTheLoaderReason) {
  try {
    (void)cuda_lib::open_library(ErrorCategory::cublas, "cuBLAS", "libdynascope-absent-test.so.7");
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::cublas);
    const std::string m = e.what();
    for (const char* phrase : {"cannot load cuBLAS (libdynascope-absent-test.so.7)",
                               "libdynascope-absent-test.so.7: cannot open shared object file", "use the host backend"})
      EXPECT_NE(m.find(phrase), std::string::npos) << "message lacks '" << phrase << "': " << m;
  }
}

TEST(CudaLibraries, MissingSymbolIsAnErrorNamingItAndTheLibrary) {
  void* libc = cuda_lib::open_library(ErrorCategory::cusolver, "the C library", "libc.so.6");
  ASSERT_NE(libc, nullptr);
  EXPECT_NE(cuda_lib::resolve_symbol(ErrorCategory::cusolver, libc, "libc.so.6", "malloc"), nullptr);
  try {
    (void)cuda_lib::resolve_symbol(ErrorCategory::cusolver, libc, "libc.so.6", "cusolverDnCreate");
    ADD_FAILURE() << "expected an Error";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::cusolver);
    EXPECT_NE(std::string(e.what()).find("libc.so.6 has no symbol cusolverDnCreate"), std::string::npos) << e.what();
  }
}

// Every entry of both tables resolves against the installed toolkit, under the exported name
// (cublasSgemm is the macro for cublasSgemm_v2), and the tables hold the functions themselves.
TEST(CudaLibraries, TablesResolveEveryEntryOfTheInstalledToolkit) {
  for (const char* soname : {cuda_lib::cublas_soname(), cuda_lib::cusolver_soname()}) {
    void* probe = ::dlopen(soname, RTLD_LAZY | RTLD_LOCAL);
#ifdef DYNASCOPE_CUDA_LIBRARY_DIR
    if (!probe) probe = ::dlopen((std::string(DYNASCOPE_CUDA_LIBRARY_DIR) + "/" + soname).c_str(), RTLD_LAZY | RTLD_LOCAL);
#endif
    if (!probe) GTEST_SKIP() << soname << " is not installed here";
    ::dlclose(probe);
  }
  EXPECT_EQ(cuda_lib::cublas_if_loaded(), nullptr);  // nothing before the first use
  const cuda_lib::Cublas& blas = cuda_lib::cublas();
  EXPECT_EQ(cuda_lib::cublas_if_loaded(), &blas);
  int entries = 0;
#define DS_EXPECT_ENTRY(fn) \
  EXPECT_NE(blas.fn, nullptr) << #fn;  \
  ++entries;
  DYNASCOPE_CUBLAS_FUNCTIONS(DS_EXPECT_ENTRY)
#undef DS_EXPECT_ENTRY
  EXPECT_EQ(entries, 22);
  // The pointer is the real function: it answers without a device.
  EXPECT_STREQ(blas.cublasGetStatusName(CUBLAS_STATUS_NOT_INITIALIZED), "CUBLAS_STATUS_NOT_INITIALIZED");
  // The _v2 spelling is what was looked up.
  void* self = ::dlopen(cuda_lib::cublas_soname(), RTLD_LAZY | RTLD_NOLOAD);
  ASSERT_NE(self, nullptr);
  EXPECT_EQ(reinterpret_cast<void*>(blas.cublasSgemm), ::dlsym(self, "cublasSgemm_v2"));
  ::dlclose(self);

  const cuda_lib::Cusolver& solver = cuda_lib::cusolver();
  EXPECT_EQ(cuda_lib::cusolver_if_loaded(), &solver);
  entries = 0;
#define DS_EXPECT_ENTRY(fn)             \
  EXPECT_NE(solver.fn, nullptr) << #fn; \
  ++entries;
  DYNASCOPE_CUSOLVER_FUNCTIONS(DS_EXPECT_ENTRY)
#undef DS_EXPECT_ENTRY
  EXPECT_EQ(entries, 19);
}

}  // namespace
}  // namespace dynascope
