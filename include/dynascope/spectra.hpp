#pragma once
// Everything for the spectra of a network in one include, for convenience: the solvers and
// generic operators (linalg.hpp: eigsh, eigh, slq, Hutchinson / Hutch++, power iteration), the
// curvature operators (curvature.hpp: Gauss-Newton, loss Hessian) and the NTK operator (ntk.hpp).
// Code that needs only the solvers includes linalg.hpp, which pulls in no network code; the
// library's own sources include the specific headers, never this one.
#include "dynascope/curvature.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/ntk.hpp"
