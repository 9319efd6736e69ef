#pragma once
// The few elementwise kernels the BLAS/LAPACK dispatch needs. They live in their own translation
// unit, compiled by nvcc in CUDA builds (DYNASCOPE_KERNEL_SOURCES), so that core/blas.cpp itself
// is plain C++ calling libraries.
#include "dynascope/view.hpp"

namespace dynascope {
class Context;
namespace blas_detail {

// Mirrors the lower triangle of a square row-major matrix into the upper one (after SYRK).
template <class T>
void mirror_lower(const Context& ctx, MatrixView<T> c);

}  // namespace blas_detail
}  // namespace dynascope
