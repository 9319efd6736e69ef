#pragma once
// Non-owning views. Row-major: element (i, j) of a MatrixView is data[i * ld + j], ld >= cols.
// Views carry the backend of the memory they point to and, for cuda memory, the device that holds
// it (0 for host memory). They are plain structs usable inside kernel bodies on both backends.
#include <cstdint>
#include <type_traits>

#include "dynascope/types.hpp"

#if defined(__CUDACC__)
#define DYNASCOPE_HD __host__ __device__
#else
#define DYNASCOPE_HD
#endif

namespace dynascope {

template <class T>
struct VectorView {
  T* data = nullptr;
  index_t size = 0;
  index_t stride = 1;
  Backend backend = Backend::host;
  int device = 0;  // the cuda device holding the memory; 0 for host memory

  DYNASCOPE_HD T& operator[](index_t i) const { return data[i * stride]; }
  // Mutable views convert to const views (a template, so that T = const U declares nothing).
  template <class U, std::enable_if_t<std::is_same_v<U, const T> && !std::is_const_v<T>, int> = 0>
  operator VectorView<U>() const {
    return {data, size, stride, backend, device};
  }
};

template <class T>
struct MatrixView {
  T* data = nullptr;
  index_t rows = 0;
  index_t cols = 0;
  index_t ld = 0;  // row stride in elements
  Backend backend = Backend::host;
  int device = 0;  // the cuda device holding the memory; 0 for host memory

  DYNASCOPE_HD T& operator()(index_t i, index_t j) const { return data[i * ld + j]; }
  DYNASCOPE_HD bool contiguous() const { return ld == cols || rows <= 1; }
  DYNASCOPE_HD index_t size() const { return rows * cols; }
  VectorView<T> row(index_t i) const { return {data + i * ld, cols, 1, backend, device}; }
  VectorView<T> col(index_t j) const { return {data + j, rows, ld, backend, device}; }
  MatrixView block(index_t r0, index_t c0, index_t nr, index_t nc) const {
    return {data + r0 * ld + c0, nr, nc, ld, backend, device};
  }
  template <class U, std::enable_if_t<std::is_same_v<U, const T> && !std::is_const_v<T>, int> = 0>
  operator MatrixView<U>() const {
    return {data, rows, cols, ld, backend, device};
  }
};

template <class T>
MatrixView<T> matrix_view(T* data, index_t rows, index_t cols, Backend backend = Backend::host, int device = 0) {
  return {data, rows, cols, cols, backend, device};
}
template <class T>
VectorView<T> vector_view(T* data, index_t n, Backend backend = Backend::host, int device = 0) {
  return {data, n, 1, backend, device};
}

}  // namespace dynascope
