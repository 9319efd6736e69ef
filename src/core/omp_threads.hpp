#pragma once
// OmpThreads: for its scope, the calling thread's OpenMP nthreads ICV is `want` (set only when it
// differs, restored on exit), so the library's own thread choices never leak to embedders. Both
// the OpenMP build of OpenBLAS (unless inside an active parallel region) and Thrust's OpenMP system
// size their teams by that ICV. Used by BLAS calls (small products on one thread), by Thrust
// primitives (the context's thread count), and as OneBlasThread where the library runs its own
// parallel schedule of BLAS calls (the batched engine's per-set schedule, the curvature operator's
// sample chunks): a one-thread team is not an active region, so the ICV is set to 1 there.
#include <omp.h>

namespace dynascope::detail {

class OmpThreads {
 public:
  explicit OmpThreads(int want) : saved_(omp_get_max_threads()) {
    if (want != saved_) omp_set_num_threads(want);
  }
  ~OmpThreads() {
    if (omp_get_max_threads() != saved_) omp_set_num_threads(saved_);
  }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_;
};

// BLAS calls made by this thread run on this thread alone, for the scope.
class OneBlasThread : public OmpThreads {
 public:
  OneBlasThread() : OmpThreads(1) {}
};

}  // namespace dynascope::detail
