#pragma once
// The argument checks every entry point makes on views: a valid shape or stride, an expected
// shape, and memory on the context's backend. One wording everywhere, so a user who passes a host
// array to a cuda context reads the same sentence from blas::, the engine, the NTK and random::.
#include <algorithm>
#include <string>

#include "dynascope/context.hpp"
#include "dynascope/error.hpp"
#include "dynascope/view.hpp"

namespace dynascope::detail {

// "3x4".
inline std::string dims(index_t rows, index_t cols) { return std::to_string(rows) + "x" + std::to_string(cols); }

// Throws InvalidArgument unless a non-empty view lives where ctx computes: on ctx's backend and,
// for cuda, on ctx's device (a kernel of one device cannot read another's memory through the
// context's stream). Empty views may come from anywhere (a default-constructed view says host).
template <class View>
void require_on_context(const Context& ctx, const View& v, const char* call, const char* name) {
  index_t n = 0;
  if constexpr (requires { v.rows; }) n = v.rows * v.cols;
  else n = v.size;
  if (n <= 0) return;
  if (v.backend != ctx.backend())
    throw InvalidArgument(std::string(call) + ": " + name + " lives on " + to_string(v.backend) +
                          " but the context is " + to_string(ctx.backend()));
  if (v.backend == Backend::cuda && v.device != ctx.device())
    throw InvalidArgument(std::string(call) + ": " + name + " lives on cuda device " + std::to_string(v.device) +
                          " but the context computes on cuda device " + std::to_string(ctx.device()) +
                          " (copy it with Array::to, or use a context on that device)");
}

// A matrix view with a sane shape and leading dimension, on ctx's backend.
template <class T>
void check_matrix(const Context& ctx, const MatrixView<T>& m, const char* call, const char* name) {
  if (m.rows < 0 || m.cols < 0 || m.ld < std::max<index_t>(m.cols, 1))
    throw InvalidArgument(std::string(call) + ": " + name + " has an invalid shape or leading dimension (" +
                          dims(m.rows, m.cols) + ", ld " + std::to_string(m.ld) + ")");
  require_on_context(ctx, m, call, name);
}

// As above, and exactly rows x cols (ShapeMismatch otherwise).
template <class T>
void check_matrix(const Context& ctx, const MatrixView<T>& m, index_t rows, index_t cols, const char* call,
                  const char* name) {
  if (m.rows != rows || m.cols != cols)
    throw ShapeMismatch(std::string(call) + ": " + name + " must be " + dims(rows, cols) + ", got " +
                        dims(m.rows, m.cols));
  check_matrix(ctx, m, call, name);
}

// A vector view with a non-negative size and a positive stride, on ctx's backend.
template <class T>
void check_vector(const Context& ctx, const VectorView<T>& v, const char* call, const char* name) {
  if (v.size < 0 || v.stride < 1)
    throw InvalidArgument(std::string(call) + ": " + name + " has an invalid size (" + std::to_string(v.size) +
                          ") or stride (" + std::to_string(v.stride) + ")");
  require_on_context(ctx, v, call, name);
}

}  // namespace dynascope::detail
