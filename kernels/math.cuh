#pragma once
// Small math helpers usable in kernel bodies on both backends.
#include <cmath>

#include "dynascope/view.hpp"

namespace dynascope::kern {

// kern::sqrt, kern::exp, ... pick the float or double overload on both backends.
using std::exp;
using std::log;
using std::sqrt;

// Fused multiply-add a * b + c, rounded once, for float and double alike.
DYNASCOPE_HD inline float fmadd(float a, float b, float c) { return fmaf(a, b, c); }
DYNASCOPE_HD inline double fmadd(double a, double b, double c) { return fma(a, b, c); }

}  // namespace dynascope::kern
