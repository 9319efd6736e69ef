#pragma once
// Activation functions with first and second derivatives, for kernel bodies on both backends.
// Definitions follow PyTorch: gelu is the exact (erf) form, softplus has beta 1 and switches to
// the identity above 20, leaky_relu has the given negative slope, abs has derivative 0 at 0.
#include <cmath>

#include "dynascope/view.hpp"

namespace dynascope::kern {

// Unqualified calls pick the float or double overload on both backends.
using std::erf;
using std::exp;
using std::log1p;
using std::tanh;

enum class Act : int { identity, relu, leaky_relu, abs, tanh, gelu, softplus, sigmoid };

struct ActParams {
  Act kind = Act::identity;
  double slope = 0.01;
};

template <class T>
DYNASCOPE_HD inline T sigmoid_of(T z) {
  // Stable for large |z|.
  if (z >= T(0)) return T(1) / (T(1) + exp(-z));
  const T e = exp(z);
  return e / (T(1) + e);
}

// sigma(z)
template <class T>
DYNASCOPE_HD inline T act_value(ActParams p, T z) {
  switch (p.kind) {
    case Act::identity: return z;
    case Act::relu: return z > T(0) ? z : T(0);
    case Act::leaky_relu: return z > T(0) ? z : static_cast<T>(p.slope) * z;
    case Act::abs: return z >= T(0) ? z : -z;
    case Act::tanh: return tanh(z);
    case Act::gelu: return T(0.5) * z * (T(1) + erf(z * T(0.70710678118654752440)));
    case Act::softplus: return z > T(20) ? z : log1p(exp(z));
    case Act::sigmoid: return sigmoid_of(z);
  }
  return z;
}

// sigma'(z)
template <class T>
DYNASCOPE_HD inline T act_deriv(ActParams p, T z) {
  switch (p.kind) {
    case Act::identity: return T(1);
    case Act::relu: return z > T(0) ? T(1) : T(0);
    case Act::leaky_relu: return z > T(0) ? T(1) : static_cast<T>(p.slope);
    case Act::abs: return z > T(0) ? T(1) : (z < T(0) ? T(-1) : T(0));
    case Act::tanh: {
      const T t = tanh(z);
      return T(1) - t * t;
    }
    case Act::gelu: {
      // Phi(z) + z phi(z)
      const T cdf = T(0.5) * (T(1) + erf(z * T(0.70710678118654752440)));
      const T pdf = T(0.39894228040143267794) * exp(T(-0.5) * z * z);
      return cdf + z * pdf;
    }
    case Act::softplus: return z > T(20) ? T(1) : sigmoid_of(z);
    case Act::sigmoid: {
      const T s = sigmoid_of(z);
      return s * (T(1) - s);
    }
  }
  return T(1);
}

// sigma''(z) (zero almost everywhere for the piecewise-linear activations)
template <class T>
DYNASCOPE_HD inline T act_deriv2(ActParams p, T z) {
  switch (p.kind) {
    case Act::identity:
    case Act::relu:
    case Act::leaky_relu:
    case Act::abs: return T(0);
    case Act::tanh: {
      const T t = tanh(z);
      return T(-2) * t * (T(1) - t * t);
    }
    case Act::gelu: {
      // phi(z) (2 - z^2)
      const T pdf = T(0.39894228040143267794) * exp(T(-0.5) * z * z);
      return pdf * (T(2) - z * z);
    }
    case Act::softplus: {
      if (z > T(20)) return T(0);
      const T s = sigmoid_of(z);
      return s * (T(1) - s);
    }
    case Act::sigmoid: {
      const T s = sigmoid_of(z);
      return s * (T(1) - s) * (T(1) - T(2) * s);
    }
  }
  return T(0);
}

// Runs `statement` with `A` a constexpr Act equal to `kind`, so that kernel bodies written with
// ActParams{A, slope} have the activation fixed at compile time (on the host the per-element
// switch disappears and the loops vectorize).
#define DYNASCOPE_WITH_ACT(kind, A, ...)                                                  \
  switch (kind) {                                                                       \
    case ::dynascope::kern::Act::identity: {                                            \
      constexpr ::dynascope::kern::Act A = ::dynascope::kern::Act::identity;            \
      __VA_ARGS__;                                                                      \
    } break;                                                                            \
    case ::dynascope::kern::Act::relu: {                                                \
      constexpr ::dynascope::kern::Act A = ::dynascope::kern::Act::relu;                \
      __VA_ARGS__;                                                                      \
    } break;                                                                            \
    case ::dynascope::kern::Act::leaky_relu: {                                          \
      constexpr ::dynascope::kern::Act A = ::dynascope::kern::Act::leaky_relu;          \
      __VA_ARGS__;                                                                      \
    } break;                                                                            \
    case ::dynascope::kern::Act::abs: {                                                 \
      constexpr ::dynascope::kern::Act A = ::dynascope::kern::Act::abs;                 \
      __VA_ARGS__;                                                                      \
    } break;                                                                            \
    case ::dynascope::kern::Act::tanh: {                                                \
      constexpr ::dynascope::kern::Act A = ::dynascope::kern::Act::tanh;                \
      __VA_ARGS__;                                                                      \
    } break;                                                                            \
    case ::dynascope::kern::Act::gelu: {                                                \
      constexpr ::dynascope::kern::Act A = ::dynascope::kern::Act::gelu;                \
      __VA_ARGS__;                                                                      \
    } break;                                                                            \
    case ::dynascope::kern::Act::softplus: {                                            \
      constexpr ::dynascope::kern::Act A = ::dynascope::kern::Act::softplus;            \
      __VA_ARGS__;                                                                      \
    } break;                                                                            \
    case ::dynascope::kern::Act::sigmoid: {                                             \
      constexpr ::dynascope::kern::Act A = ::dynascope::kern::Act::sigmoid;             \
      __VA_ARGS__;                                                                      \
    } break;                                                                            \
  }

}  // namespace dynascope::kern
