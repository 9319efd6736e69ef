#pragma once
// From a run-time dtype to the compile-time precision the templates take: one switch for every
// front end (the command line, language bindings), instead of a copy per command.
//
//   return dispatch_float(dtype, [&](auto tag) {
//     using T = typename decltype(tag)::type;  // float or double
//     return run<T>(options);
//   });
#include <string>
#include <type_traits>
#include <utility>

#include "dynascope/error.hpp"
#include "dynascope/types.hpp"

namespace dynascope {

// Calls f(std::type_identity<float>{}) for f32 and f(std::type_identity<double>{}) for f64 and
// returns what it returns (both calls must return the same type). Any other dtype is an
// InvalidArgument naming it.
template <class F>
decltype(auto) dispatch_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return std::forward<F>(f)(std::type_identity<float>{});
    case DType::f64: return std::forward<F>(f)(std::type_identity<double>{});
    default: break;
  }
  throw InvalidArgument(std::string("dtype ") + to_string(dtype) +
                        " is not a floating-point type: this computation runs in float32 or float64");
}

}  // namespace dynascope
