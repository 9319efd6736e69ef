// Spectrum alignment and kernel motion (docs/definitions.md, "Alignment with the targets"), float64 sums on the host.
#include <algorithm>
#include <cmath>
#include <string>

#include "dynascope/linalg.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::ntk {

template <class T>
std::vector<double> cumulative_energy(MatrixView<const T> u, MatrixView<const double> v, const std::vector<index_t>& ks) {
  const index_t k = u.rows, m = u.cols;
  if (v.rows != m) throw ShapeMismatch("cumulative_energy: targets have " + std::to_string(v.rows) + " rows, the eigenvectors " + std::to_string(m));
  if (u.backend != Backend::host || v.backend != Backend::host)
    throw InvalidArgument("cumulative_energy: eigenvectors and targets must be on the host");
  for (index_t q : ks)
    if (q < 1 || q > k)
      throw InvalidArgument("cumulative_energy: k = " + std::to_string(q) + " needs " + std::to_string(q) +
                            " eigenvectors, " + std::to_string(k) + " were given");
  double total = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t c = 0; c < v.cols; ++c) total += v(i, c) * v(i, c);
  // Projections ||u_i^T V||^2, then their prefix sums.
  std::vector<double> prefix(static_cast<std::size_t>(k + 1), 0.0);
  for (index_t i = 0; i < k; ++i) {
    double proj = 0;
    for (index_t c = 0; c < v.cols; ++c) {
      double s = 0;
      for (index_t j = 0; j < m; ++j) s += double(u(i, j)) * v(j, c);
      proj += s * s;
    }
    prefix[std::size_t(i + 1)] = prefix[std::size_t(i)] + proj;
  }
  std::vector<double> out;
  for (index_t q : ks) out.push_back(total > 0 ? prefix[std::size_t(q)] / total : 0.0);
  return out;
}

template <class T>
std::vector<double> cumulative_energy(const linalg::EigenResult<T>& eig, MatrixView<const double> v, const std::vector<index_t>& ks) {
  const MatrixView<const T> u = eig.vectors.matrix();
  const index_t m = v.rows;
  if (u.rows != static_cast<index_t>(eig.values.size()))
    throw ShapeMismatch("cumulative_energy: the eigen result holds " + std::to_string(eig.values.size()) + " values but " +
                        std::to_string(u.rows) + " eigenvectors");
  if (m == 0 && u.rows == 0) return std::vector<double>(ks.size(), 0.0);
  if (u.cols != m)
    throw ShapeMismatch("cumulative_energy: targets have " + std::to_string(m) + " rows, the eigenvectors " + std::to_string(u.cols));
  if (u.backend != Backend::host) throw InvalidArgument("cumulative_energy: eigenvectors and targets must be on the host");
  std::vector<index_t> clipped;
  for (index_t k : ks) clipped.push_back(std::clamp<index_t>(k, 1, m));
  return cumulative_energy<T>(u, v, clipped);
}

namespace {

// <K, Y Y^T>_F / (||K||_F ||Y Y^T||_F) without copying K. Centred (Cortes et al.): with H = I - 11^T/m,
// <HKH, HY (HY)^T> = <K, Yc Yc^T> for Yc = HY (H is symmetric and idempotent), and for symmetric K
// ||HKH||_F^2 = ||K||_F^2 - (2/m) ||K 1||^2 + (1^T K 1)^2 / m^2, so one pass over K suffices.
template <class T>
double alignment(MatrixView<const T> k, MatrixView<const double> y, bool centered) {
  const index_t m = k.rows, c = y.cols;
  std::vector<double> yc(std::size_t(m * c));
  for (index_t q = 0; q < c; ++q) {
    double mean = 0;
    if (centered) {
      for (index_t i = 0; i < m; ++i) mean += y(i, q);
      mean /= double(m);
    }
    for (index_t i = 0; i < m; ++i) yc[std::size_t(i * c + q)] = y(i, q) - mean;
  }
  double num = 0, kf = 0, all = 0, rows2 = 0;
  for (index_t i = 0; i < m; ++i) {
    double row = 0;
    const double* yi = yc.data() + i * c;
    for (index_t j = 0; j < m; ++j) {
      const double kij = double(k(i, j));
      kf += kij * kij;
      row += kij;
      const double* yj = yc.data() + j * c;
      double yy = 0;
      for (index_t q = 0; q < c; ++q) yy += yi[q] * yj[q];
      num += kij * yy;
    }
    all += row;
    rows2 += row * row;
  }
  if (centered) kf = std::max(0.0, kf - 2.0 / double(m) * rows2 + all * all / (double(m) * double(m)));
  double yf = 0;
  for (index_t p = 0; p < c; ++p)
    for (index_t q = 0; q < c; ++q) {
      double s = 0;
      for (index_t i = 0; i < m; ++i) s += yc[std::size_t(i * c + p)] * yc[std::size_t(i * c + q)];
      yf += s * s;
    }
  const double denom = std::sqrt(kf) * std::sqrt(yf);
  return denom > 0 ? num / denom : 0.0;
}

template <class T>
double checked_alignment(MatrixView<const T> k, MatrixView<const double> y, bool centered) {
  if (k.backend != Backend::host || y.backend != Backend::host)
    throw InvalidArgument("kernel_target_alignment: the kernel and targets must be on the host");
  if (k.rows != k.cols) throw ShapeMismatch("kernel_target_alignment: the kernel must be square");
  if (y.rows != k.rows)
    throw ShapeMismatch("kernel_target_alignment: targets have " + std::to_string(y.rows) + " rows, the kernel " + std::to_string(k.rows));
  return alignment(k, y, centered);
}
}  // namespace

double kernel_target_alignment(MatrixView<const double> k, MatrixView<const double> y, bool centered) {
  return checked_alignment(k, y, centered);
}

double kernel_target_alignment(MatrixView<const float> k, MatrixView<const double> y, bool centered) {
  return checked_alignment(k, y, centered);
}

double kernel_distance(MatrixView<const double> k1, MatrixView<const double> k2) {
  if (k1.backend != Backend::host || k2.backend != Backend::host)
    throw InvalidArgument("kernel_distance: the kernels must be on the host");
  if (k1.rows != k2.rows || k1.cols != k2.cols) throw ShapeMismatch("kernel_distance: the kernels must have the same shape");
  double dot = 0, n1 = 0, n2 = 0;
  for (index_t i = 0; i < k1.rows; ++i)
    for (index_t j = 0; j < k1.cols; ++j) {
      dot += k1(i, j) * k2(i, j);
      n1 += k1(i, j) * k1(i, j);
      n2 += k2(i, j) * k2(i, j);
    }
  if (n1 == 0 || n2 == 0) throw InvalidArgument("kernel_distance: a kernel is zero");
  // Cauchy-Schwarz bounds the cosine by 1; rounding can push it a few ulps over (identical kernels
  // gave -4e-15), and a distance is never negative.
  return std::max(0.0, 1.0 - dot / (std::sqrt(n1) * std::sqrt(n2)));
}

std::vector<index_t> energy_ks(index_t m) {
  std::vector<index_t> ks;
  for (index_t base = 1; base <= m; base *= 10)
    for (index_t f : {1, 2, 5})
      if (base * f <= m) ks.push_back(base * f);
  if (ks.empty() || ks.back() != m) ks.push_back(m);
  return ks;
}

template std::vector<double> cumulative_energy<float>(const linalg::EigenResult<float>&, MatrixView<const double>, const std::vector<index_t>&);
template std::vector<double> cumulative_energy<double>(const linalg::EigenResult<double>&, MatrixView<const double>, const std::vector<index_t>&);
template std::vector<double> cumulative_energy<float>(MatrixView<const float>, MatrixView<const double>, const std::vector<index_t>&);
template std::vector<double> cumulative_energy<double>(MatrixView<const double>, MatrixView<const double>, const std::vector<index_t>&);

}  // namespace dynascope::ntk
