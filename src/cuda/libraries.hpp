#pragma once
// cuBLAS and cuSOLVER, loaded at run time on first use (CUDA builds only).
//
// libdynascope links neither: a process that never asks a cuda context for a BLAS or LAPACK call
// maps none of their ~700 MB (cuBLASLt alone is 540 MB and costs tens of milliseconds to map), and
// a CUDA build starts on machines that lack them. The first Context::cublas() / cusolver() opens
// the library by the soname of the toolkit's major version this build was compiled against and
// resolves the table below; a missing library or symbol is an Error of category cublas / cusolver
// naming the library and what the dynamic loader said.
//
// The tables are typed from the real prototypes (decltype), so a call through them is checked
// exactly like a direct call. The lists name functions as the code calls them: names that
// cublas_v2.h maps to _v2 symbols (cublasSgemm -> cublasSgemm_v2) expand here too, so the member
// and the symbol looked up are the exported _v2 ones while call sites keep the documented name.
#include <cublas_v2.h>
#include <cusolverDn.h>

#include "dynascope/error.hpp"

namespace dynascope::cuda_lib {

#define DYNASCOPE_CUBLAS_FUNCTIONS(X)                                                          \
  X(cublasCreate) X(cublasDestroy) X(cublasSetStream) X(cublasSetPointerMode)                 \
  X(cublasGetStatusName) X(cublasGetStatusString)                                              \
  X(cublasSgemm) X(cublasDgemm) X(cublasSgemmStridedBatched) X(cublasDgemmStridedBatched)     \
  X(cublasSsyrk) X(cublasDsyrk) X(cublasSgemv) X(cublasDgemv) X(cublasSdot) X(cublasDdot)     \
  X(cublasSnrm2) X(cublasDnrm2) X(cublasSaxpy) X(cublasDaxpy) X(cublasSscal) X(cublasDscal)

#define DYNASCOPE_CUSOLVER_FUNCTIONS(X)                                                        \
  X(cusolverDnCreate) X(cusolverDnDestroy) X(cusolverDnSetStream)                              \
  X(cusolverDnSsyevd_bufferSize) X(cusolverDnDsyevd_bufferSize)                                \
  X(cusolverDnSsyevd) X(cusolverDnDsyevd)                                                      \
  X(cusolverDnSsyevdx_bufferSize) X(cusolverDnDsyevdx_bufferSize)                              \
  X(cusolverDnSsyevdx) X(cusolverDnDsyevdx)                                                    \
  X(cusolverDnSgeqrf_bufferSize) X(cusolverDnDgeqrf_bufferSize)                                \
  X(cusolverDnSgeqrf) X(cusolverDnDgeqrf)                                                      \
  X(cusolverDnSorgqr_bufferSize) X(cusolverDnDorgqr_bufferSize)                                \
  X(cusolverDnSorgqr) X(cusolverDnDorgqr)

#define DYNASCOPE_LIB_ENTRY(fn) decltype(&::fn) fn = nullptr;
struct Cublas {
  DYNASCOPE_CUBLAS_FUNCTIONS(DYNASCOPE_LIB_ENTRY)
};
struct Cusolver {
  DYNASCOPE_CUSOLVER_FUNCTIONS(DYNASCOPE_LIB_ENTRY)
};
#undef DYNASCOPE_LIB_ENTRY

// The loaded tables. The first call opens the library (thread-safe; it stays loaded for the life
// of the process, so handles may be destroyed at any time); a failure throws Error (category
// cublas / cusolver) and the next call tries again.
const Cublas& cublas();
const Cusolver& cusolver();
// The table when the library is already loaded, nullptr otherwise; never loads anything.
const Cublas* cublas_if_loaded() noexcept;
const Cusolver* cusolver_if_loaded() noexcept;

// "libcublas.so.13", "libcusolver.so.12": the sonames of the toolkit this build was compiled with.
const char* cublas_soname() noexcept;
const char* cusolver_soname() noexcept;

// The loader under the tables, for tests: opens `soname` (by the loader's search path, then from
// the toolkit's library directory this build was configured with) and returns its handle, or
// throws Error(category) saying that `label` cannot be loaded, with the loader's message.
void* open_library(ErrorCategory category, const char* label, const char* soname);
// dlsym(handle, symbol), or Error(category) naming the symbol and the library.
void* resolve_symbol(ErrorCategory category, void* handle, const char* soname, const char* symbol);

}  // namespace dynascope::cuda_lib
