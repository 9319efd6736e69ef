#pragma once
// A reusable scratch matrix: grows when a call needs more room, never shrinks, so steady-state
// calls allocate nothing. Its views carry the backend and device of its storage.
#include <algorithm>

#include "dynascope/array.hpp"

namespace dynascope::detail {

template <class T>
class Buffer {
 public:
  // A contiguous rows x cols view, reallocating (contents lost) only when the capacity is short.
  MatrixView<T> reserve(const Context& ctx, index_t rows, index_t cols) {
    const index_t need = std::max<index_t>(rows * cols, 1);
    if (storage_.size() < need || storage_.backend() != ctx.backend() || storage_.device() != ctx.device())
      storage_ = Array<T>(ctx, {need});
    return view(rows, cols);
  }
  MatrixView<T> view(index_t rows, index_t cols) {
    return {storage_.data(), rows, cols, cols, storage_.backend(), storage_.device()};
  }
  MatrixView<const T> view(index_t rows, index_t cols) const {
    return {storage_.data(), rows, cols, cols, storage_.backend(), storage_.device()};
  }
  T* data() { return storage_.data(); }
  const T* data() const { return storage_.data(); }

 private:
  Array<T> storage_;
};

}  // namespace dynascope::detail
