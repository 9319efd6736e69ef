#pragma once
// Symmetric test matrices with a prescribed spectrum: A = Q diag(lambda) Q^T, Q random orthogonal,
// and float64 references for what the solvers return.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "dynascope/blas.hpp"

namespace dynascope::test {

inline std::vector<double> with_spectrum(const std::vector<double>& lambda, unsigned seed) {
  const index_t n = static_cast<index_t>(lambda.size());
  Context ctx = Context::host();
  std::vector<double> q(static_cast<std::size_t>(n * n)), qs(static_cast<std::size_t>(n * n)), a(static_cast<std::size_t>(n * n));
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> d;
  for (auto& v : q) v = d(gen);
  lapack::orthonormalize_rows<double>(ctx, {q.data(), n, n, n});  // rows of Q: eigenvectors
  for (index_t i = 0; i < n; ++i)
    for (index_t j = 0; j < n; ++j) qs[std::size_t(i * n + j)] = q[std::size_t(i * n + j)] * lambda[std::size_t(i)];
  // A = Q^T diag(lambda) Q with Q's rows the eigenvectors.
  blas::gemm<double>(ctx, blas::Op::trans, blas::Op::none, 1.0, {q.data(), n, n, n}, {qs.data(), n, n, n}, 0.0, {a.data(), n, n, n});
  for (index_t i = 0; i < n; ++i)
    for (index_t j = i + 1; j < n; ++j) a[std::size_t(j * n + i)] = a[std::size_t(i * n + j)];
  return a;
}

// All eigenvalues of the symmetric n x n matrix a, ascending, by LAPACK's syevd in float64 (the
// dense oracle: a different algorithm from Lanczos).
inline std::vector<double> dense_eigenvalues(const std::vector<double>& a, index_t n) {
  Context ctx = Context::host();
  std::vector<double> work(a), w(static_cast<std::size_t>(n));
  lapack::syevd<double>(ctx, {work.data(), n, n, n}, {w.data(), n, 1});
  return w;
}

// ||A u - lambda u|| by a naive float64 loop over a float64 matrix, for a vector of any type.
template <class T>
double naive_residual(const std::vector<double>& a, index_t n, const T* u, double lambda) {
  double res = 0;
  for (index_t p = 0; p < n; ++p) {
    double s = -lambda * double(u[p]);
    for (index_t q = 0; q < n; ++q) s += a[std::size_t(p * n + q)] * double(u[q]);
    res += s * s;
  }
  return std::sqrt(res);
}

}  // namespace dynascope::test
