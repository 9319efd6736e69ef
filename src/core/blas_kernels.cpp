#include "core/blas_kernels.hpp"

#include "kernels/launch.cuh"

namespace dynascope::blas_detail {

template <class T>
void mirror_lower(const Context& ctx, MatrixView<T> c) {
  const index_t n = c.rows;
  kern::parallel_for(ctx, n * n, [c, n] DYNASCOPE_HD(index_t idx) {
    const index_t i = idx / n, j = idx % n;
    if (j > i) c(i, j) = c(j, i);
  });
}

template void mirror_lower<float>(const Context&, MatrixView<float>);
template void mirror_lower<double>(const Context&, MatrixView<double>);

}  // namespace dynascope::blas_detail
