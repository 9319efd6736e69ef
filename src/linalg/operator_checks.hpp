#pragma once
// The block check every built-in operator's apply() makes, with one wording.
#include <string>

#include "core/checks.hpp"
#include "dynascope/linalg.hpp"

namespace dynascope::linalg {

// X and Y [k, size()] with the same k; ShapeMismatch naming the operator otherwise.
template <class T>
void check_apply_block(const LinearOperator<T>& op, MatrixView<const T> x, MatrixView<T> y, const char* who) {
  if (x.cols != op.size() || y.cols != op.size() || x.rows != y.rows)
    throw ShapeMismatch(std::string(who) + "::apply: X and Y must be [k, " + std::to_string(op.size()) + "], got " +
                        detail::dims(x.rows, x.cols) + " and " + detail::dims(y.rows, y.cols));
}

}  // namespace dynascope::linalg
