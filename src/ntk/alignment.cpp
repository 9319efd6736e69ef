// Spectrum alignment and kernel motion (DIAGNOSTICS.md section 1), in float64 on the host.
#include <algorithm>
#include <cmath>
#include <string>

#include "dynascope/blas.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::ntk {

template <class T>
Eigen<T> eigen_descending(const Context& ctx, MatrixView<const T> kernel) {
  if (kernel.rows != kernel.cols)
    throw ShapeMismatch("eigen_descending: the kernel must be square, got " + std::to_string(kernel.rows) + "x" +
                        std::to_string(kernel.cols));
  const index_t m = kernel.rows;
  Array<T> a(ctx, {m, m});
  copy(ctx, kernel, a.matrix());
  Array<T> w(ctx, {m});
  lapack::syevd<T>(ctx, a.matrix(), w.vector());
  std::vector<T> wh(static_cast<std::size_t>(m));
  detail::copy_bytes(ctx, wh.data(), Backend::host, w.data(), w.backend(), w.bytes());
  Eigen<T> e;
  e.values.resize(static_cast<std::size_t>(m));
  for (index_t i = 0; i < m; ++i) e.values[std::size_t(i)] = double(wh[std::size_t(m - 1 - i)]);
  // Rows of `a` are eigenvectors in ascending order: reverse them.
  e.vectors = Array<T>(ctx, {m, m});
  for (index_t i = 0; i < m; ++i)
    copy(ctx, MatrixView<const T>(a.matrix().block(m - 1 - i, 0, 1, m)), e.vectors.matrix().block(i, 0, 1, m));
  return e;
}

template <class T>
std::vector<double> cumulative_energy(const Eigen<T>& eig, MatrixView<const double> v, const std::vector<index_t>& ks) {
  const index_t m = static_cast<index_t>(eig.values.size());
  if (v.rows != m) throw ShapeMismatch("cumulative_energy: targets have " + std::to_string(v.rows) + " rows, the kernel " + std::to_string(m));
  if (eig.vectors.backend() != Backend::host || v.backend != Backend::host)
    throw InvalidArgument("cumulative_energy: eigenvectors and targets must be on the host");
  double total = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t c = 0; c < v.cols; ++c) total += v(i, c) * v(i, c);
  // Projections ||u_i^T V||^2, then their prefix sums.
  std::vector<double> proj(static_cast<std::size_t>(m), 0.0);
  const T* u = eig.vectors.data();
  for (index_t i = 0; i < m; ++i)
    for (index_t c = 0; c < v.cols; ++c) {
      double s = 0;
      for (index_t j = 0; j < m; ++j) s += double(u[i * m + j]) * v(j, c);
      proj[std::size_t(i)] += s * s;
    }
  std::vector<double> prefix(static_cast<std::size_t>(m + 1), 0.0);
  for (index_t i = 0; i < m; ++i) prefix[std::size_t(i + 1)] = prefix[std::size_t(i)] + proj[std::size_t(i)];
  std::vector<double> out;
  for (index_t k : ks) {
    const index_t kk = std::clamp<index_t>(k, 0, m);
    out.push_back(total > 0 ? prefix[std::size_t(kk)] / total : 0.0);
  }
  return out;
}

namespace {
// K -> HKH and Y -> HY into fresh buffers.
void center(MatrixView<const double> k, MatrixView<const double> y, std::vector<double>& kc, std::vector<double>& yc) {
  const index_t m = k.rows;
  std::vector<double> row(std::size_t(m), 0.0), col(std::size_t(m), 0.0);
  double all = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j) {
      row[std::size_t(i)] += k(i, j);
      col[std::size_t(j)] += k(i, j);
      all += k(i, j);
    }
  kc.resize(std::size_t(m * m));
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j)
      kc[std::size_t(i * m + j)] = k(i, j) - row[std::size_t(i)] / double(m) - col[std::size_t(j)] / double(m) + all / double(m * m);
  yc.resize(std::size_t(m * y.cols));
  for (index_t c = 0; c < y.cols; ++c) {
    double mean = 0;
    for (index_t i = 0; i < m; ++i) mean += y(i, c);
    mean /= double(m);
    for (index_t i = 0; i < m; ++i) yc[std::size_t(i * y.cols + c)] = y(i, c) - mean;
  }
}

double alignment(MatrixView<const double> k, MatrixView<const double> y) {
  const index_t m = k.rows, c = y.cols;
  // <K, Y Y^T> = sum_c y_c^T K y_c ;  ||Y Y^T||_F^2 = ||Y^T Y||_F^2
  double num = 0, kf = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j) {
      kf += k(i, j) * k(i, j);
      double yy = 0;
      for (index_t q = 0; q < c; ++q) yy += y(i, q) * y(j, q);
      num += k(i, j) * yy;
    }
  double yf = 0;
  for (index_t p = 0; p < c; ++p)
    for (index_t q = 0; q < c; ++q) {
      double s = 0;
      for (index_t i = 0; i < m; ++i) s += y(i, p) * y(i, q);
      yf += s * s;
    }
  const double denom = std::sqrt(kf) * std::sqrt(yf);
  return denom > 0 ? num / denom : 0.0;
}
}  // namespace

double kernel_target_alignment(MatrixView<const double> k, MatrixView<const double> y, bool centered) {
  if (k.backend != Backend::host || y.backend != Backend::host)
    throw InvalidArgument("kernel_target_alignment: the kernel and targets must be on the host");
  if (k.rows != k.cols) throw ShapeMismatch("kernel_target_alignment: the kernel must be square");
  if (y.rows != k.rows)
    throw ShapeMismatch("kernel_target_alignment: targets have " + std::to_string(y.rows) + " rows, the kernel " + std::to_string(k.rows));
  if (!centered) return alignment(k, y);
  std::vector<double> kc, yc;
  center(k, y, kc, yc);
  return alignment({kc.data(), k.rows, k.rows, k.rows}, {yc.data(), y.rows, y.cols, y.cols});
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
  return 1.0 - dot / (std::sqrt(n1) * std::sqrt(n2));
}

std::vector<index_t> energy_ks(index_t m) {
  std::vector<index_t> ks;
  for (index_t base = 1; base <= m; base *= 10)
    for (index_t f : {1, 2, 5})
      if (base * f <= m) ks.push_back(base * f);
  if (ks.empty() || ks.back() != m) ks.push_back(m);
  return ks;
}

template Eigen<float> eigen_descending<float>(const Context&, MatrixView<const float>);
template Eigen<double> eigen_descending<double>(const Context&, MatrixView<const double>);
template std::vector<double> cumulative_energy<float>(const Eigen<float>&, MatrixView<const double>, const std::vector<index_t>&);
template std::vector<double> cumulative_energy<double>(const Eigen<double>&, MatrixView<const double>, const std::vector<index_t>&);

}  // namespace dynascope::ntk
