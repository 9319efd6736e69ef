#pragma once
// Float64 oracles that share no code with the library's BLAS/LAPACK paths: a cyclic Jacobi
// eigensolver for dense symmetric matrices.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "dynascope/types.hpp"

namespace dynascope::test {

struct SymmetricEigen {
  std::vector<double> values;   // ascending
  std::vector<double> vectors;  // [n, n], row i = unit eigenvector of values[i]
};

// All eigenpairs of the symmetric n x n matrix `a` (row-major; both triangles read) by cyclic
// Jacobi rotations in float64. Slow (O(n^3) per sweep) but simple and accurate to a few ulps of
// ||A|| for the eigenvalues, and to ulps / gap for the eigenvectors.
inline SymmetricEigen jacobi_eigen(std::vector<double> a, index_t n) {
  const auto at = [n](std::vector<double>& m, index_t i, index_t j) -> double& { return m[std::size_t(i * n + j)]; };
  std::vector<double> v(static_cast<std::size_t>(n * n), 0.0);  // A = V diag V^T, eigenvectors in V's columns
  for (index_t i = 0; i < n; ++i) at(v, i, i) = 1.0;
  double frob = 0;
  for (double x : a) frob += x * x;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0;
    for (index_t p = 0; p < n; ++p)
      for (index_t q = p + 1; q < n; ++q) off += at(a, p, q) * at(a, p, q);
    if (off <= 1e-34 * frob) break;
    for (index_t p = 0; p < n; ++p)
      for (index_t q = p + 1; q < n; ++q) {
        const double apq = at(a, p, q);
        if (apq == 0) continue;
        // Rotation J (J_pp = J_qq = c, J_pq = s, J_qp = -s) with (J^T A J)_pq = 0.
        const double theta = (at(a, q, q) - at(a, p, p)) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (index_t k = 0; k < n; ++k) {  // A J
          const double kp = at(a, k, p), kq = at(a, k, q);
          at(a, k, p) = c * kp - s * kq;
          at(a, k, q) = s * kp + c * kq;
        }
        for (index_t k = 0; k < n; ++k) {  // J^T (A J)
          const double pk = at(a, p, k), qk = at(a, q, k);
          at(a, p, k) = c * pk - s * qk;
          at(a, q, k) = s * pk + c * qk;
        }
        for (index_t k = 0; k < n; ++k) {  // V J
          const double kp = at(v, k, p), kq = at(v, k, q);
          at(v, k, p) = c * kp - s * kq;
          at(v, k, q) = s * kp + c * kq;
        }
      }
  }
  std::vector<index_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), index_t{0});
  std::stable_sort(order.begin(), order.end(), [&](index_t i, index_t j) { return at(a, i, i) < at(a, j, j); });
  SymmetricEigen e;
  e.values.resize(static_cast<std::size_t>(n));
  e.vectors.resize(static_cast<std::size_t>(n * n));
  for (index_t r = 0; r < n; ++r) {
    const index_t i = order[std::size_t(r)];
    e.values[std::size_t(r)] = at(a, i, i);
    for (index_t k = 0; k < n; ++k) e.vectors[std::size_t(r * n + k)] = at(v, k, i);
  }
  return e;
}

}  // namespace dynascope::test
