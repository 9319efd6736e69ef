#pragma once
// OneBlasThread: for its scope, BLAS calls made by this thread run on this thread alone. The OpenMP
// build of OpenBLAS threads a call with the calling thread's nthreads ICV unless it is inside an
// active parallel region; a one-thread team is not active, so the ICV is set to 1 for the scope
// (and restored). Used where the library runs its own parallel schedule of BLAS calls (the
// batched engine's per-set schedule, the curvature operator's sample chunks).
#include <omp.h>

namespace dynascope::detail {

class OneBlasThread {
 public:
  OneBlasThread() : saved_(omp_get_max_threads()) {
    if (saved_ != 1) omp_set_num_threads(1);
  }
  ~OneBlasThread() {
    if (omp_get_max_threads() != saved_) omp_set_num_threads(saved_);
  }
  OneBlasThread(const OneBlasThread&) = delete;
  OneBlasThread& operator=(const OneBlasThread&) = delete;

 private:
  int saved_;
};

}  // namespace dynascope::detail
