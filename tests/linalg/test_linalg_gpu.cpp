// Lanczos, SLQ and the curvature operators on every backend against oracles computed another way:
// a matrix built with a known spectrum, the Hutchinson form SLQ's trace reduces to on the same
// probes, and Hessian / Gauss-Newton products of a naive float64 MLP (dual numbers through its
// reverse pass). Each case runs as .../host and .../cuda (the latter skips without a device).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "dynascope/curvature.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/random.hpp"
#include "linalg/spectra_test_util.hpp"
#include "model/model_test_util.hpp"
#include "support/backend_test.hpp"
#include "support/naive_mlp.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

class LinalgOnBackends : public test::BackendTest {};

// SLQ's trace estimate n mean_v sum_j tau_j theta_j is exactly mean_v z_v^T A z_v for its
// Rademacher probes z_v (the quadrature integrates f(x) = x exactly: the first Lanczos
// coefficient is q_1^T A q_1, q_1 = z_v / sqrt(n)). The probes, as slq draws them: n * probes
// Rademacher values of Philox stream (seed, "slq", 0), probe v the v-th run of n.
double slq_trace_oracle(const std::vector<double>& a, index_t n, const linalg::SlqOptions& o) {
  std::vector<double> z(static_cast<std::size_t>(n * o.probes));
  random::fill_rademacher<double>(Context::host(), {o.seed, 0x736c71u, 0}, vector_view(z.data(), n * o.probes));
  double sum = 0;
  for (index_t v = 0; v < o.probes; ++v) {
    const double* zv = z.data() + v * n;
    for (index_t p = 0; p < n; ++p) {
      double az = 0;
      for (index_t q = 0; q < n; ++q) az += a[std::size_t(p * n + q)] * zv[q];
      sum += zv[p] * az;
    }
  }
  return sum / double(o.probes);
}

TEST_P(LinalgOnBackends, LanczosFindsAKnownSpectrumAndSlqItsTrace) {
  const index_t n = 700;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = std::exp(-0.03 * double(i));
  const auto a = test::with_spectrum(l, 1);  // Q^T diag(l) Q: eigenvalues l, largest first
  const Array<double> da = Array<double>::from_host(ctx(), {n, n}, a);
  linalg::DenseOperator<double> op(ctx(), da.matrix());
  linalg::LanczosOptions o;
  o.k = 6;
  o.tol = 1e-10;
  o.method = linalg::EigenMethod::lanczos;
  const auto r = linalg::eigsh<double>(op, o);
  ASSERT_TRUE(r.all_converged);
  for (index_t i = 0; i < o.k; ++i) EXPECT_NEAR(r.values[std::size_t(i)], l[std::size_t(i)], 1e-9);
  const linalg::SlqOptions so{};
  const auto s = linalg::slq<double>(op, so);
  const double trace = slq_trace_oracle(a, n, so);
  EXPECT_NEAR(s.trace_estimate, trace, 1e-8 * std::abs(trace));
}

TEST_P(LinalgOnBackends, LanczosOnAStridedMatrix) {
  // The matrix stored with ld = n + 5 and NaN between rows: the solver must read only the view.
  const index_t n = 300, ld = n + 5;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = 2.0 / (1.0 + double(i));
  const auto a = test::with_spectrum(l, 4);
  const Array<double> da = Array<double>::from_host(ctx(), {n, ld}, test::with_ld(a, n, n, ld));
  linalg::DenseOperator<double> op(ctx(), test::strided(da, n));
  linalg::LanczosOptions o;
  o.k = 4;
  o.tol = 1e-10;
  o.method = linalg::EigenMethod::lanczos;
  const auto r = linalg::eigsh<double>(op, o);
  ASSERT_TRUE(r.all_converged);
  for (index_t i = 0; i < o.k; ++i) EXPECT_NEAR(r.values[std::size_t(i)], l[std::size_t(i)], 1e-9);
}

TEST_P(LinalgOnBackends, CurvatureOperatorsMatchTheNaiveNetwork) {
  // Exact Hessian and Gauss-Newton products of xent (labels) and mse (values) over a 4-16-3 tanh
  // network, with x contiguous and with x strided (ld = D + 3, NaN padding).
  const auto s = model::MlpSpec::from_arch("4-16-3", model::parse_activation("tanh"));
  const index_t n = 10, D = 4, O = 3, P = s.num_params();
  const auto w = test::random_vector(std::size_t(P), 2, 0.5), x = test::random_vector(std::size_t(n * D), 3);
  const std::vector<std::int64_t> labels{0, 1, 2, 0, 1, 2, 0, 1, 2, 0};
  const auto y = test::random_vector(std::size_t(n * O), 5);
  const auto v = test::random_vector(std::size_t(3 * P), 4);
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, w), dv = Array<double>::from_host(ctx(), {3, P}, v);
  const Array<double> dx = Array<double>::from_host(ctx(), {n, D}, x), dy = Array<double>::from_host(ctx(), {n, O}, y);
  const Array<double> dxs = Array<double>::from_host(ctx(), {n, D + 3}, test::with_ld(x, n, D, D + 3));
  const Array<std::int64_t> dl = Array<std::int64_t>::from_host(ctx(), {n}, labels);
  for (model::Loss loss : {model::Loss::xent, model::Loss::mse}) {
    model::Targets<double> t;
    test::naive::Targets nt;
    if (loss == model::Loss::xent) {
      t.labels = dl.vector();
      nt.labels = labels;
    } else {
      t.values = dy.matrix();
      nt.values = y;
    }
    for (auto kind : {linalg::Curvature::hessian, linalg::Curvature::gauss_newton}) {
      const auto ref = test::naive::curvature_apply(s, w, x, n, nt, loss, kind == linalg::Curvature::hessian, v, 3);
      for (const MatrixView<const double> xv : {dx.matrix(), test::strided(dxs, D)}) {
        linalg::CurvatureOperator<double> op(ctx(), kind, s, dw.data(), xv, t, loss);
        Array<double> yd(ctx(), {3, P});
        op.apply(dv.matrix(), yd.matrix());
        EXPECT_LT(test::max_rel_diff(yd.to_vector(ctx()).data(), ref.data(), 3 * P), 1e-12)
            << model::to_string(loss) << " " << linalg::to_string(kind) << " ld " << xv.ld;
        EXPECT_NEAR(op.loss_value(), test::naive::loss_value(loss, test::naive::outputs(s, w, x, n), nt, n), 1e-13);
      }
    }
  }
}

DYNASCOPE_BACKEND_TESTS(LinalgOnBackends);

}  // namespace
}  // namespace dynascope
