// Lanczos, SLQ and the curvature operators on cuda against the host backend.
#include <gtest/gtest.h>

#include "dynascope/spectra.hpp"
#include "linalg/spectra_test_util.hpp"
#include "model/model_test_util.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

class LinalgGpu : public test::GpuTest {};

template <class T>
Array<T> upload(const Context& dev, const std::vector<T>& v, Shape shape) {
  Array<T> a(dev, std::move(shape));
  detail::copy_bytes(dev, a.data(), Backend::cuda, v.data(), Backend::host, a.bytes());
  return a;
}

TEST_F(LinalgGpu, LanczosAndSlqMatchHost) {
  Context dev = cuda();
  const index_t n = 700;
  std::vector<double> l(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) l[std::size_t(i)] = std::exp(-0.03 * double(i));
  const auto a = test::with_spectrum(l, 1);
  const Array<double> da = upload(dev, a, {n, n});
  linalg::DenseOperator<double> hop(host, {a.data(), n, n, n}), dop(dev, da.matrix());
  linalg::LanczosOptions o;
  o.k = 6;
  o.tol = 1e-10;
  o.method = linalg::EigenMethod::lanczos;
  const auto rh = linalg::eigsh<double>(hop, o), rd = linalg::eigsh<double>(dop, o);
  ASSERT_TRUE(rd.all_converged);
  for (index_t i = 0; i < o.k; ++i) EXPECT_NEAR(rd.values[std::size_t(i)], rh.values[std::size_t(i)], 1e-9);
  const auto sh = linalg::slq<double>(hop, {}), sd = linalg::slq<double>(dop, {});
  EXPECT_NEAR(sd.trace_estimate, sh.trace_estimate, 1e-8 * std::abs(sh.trace_estimate));  // same Philox probes
}

TEST_F(LinalgGpu, HessianOperatorMatchesHost) {
  Context dev = cuda();
  const auto s = model::MlpSpec::from_arch("4-16-3", model::parse_activation("tanh"));
  const index_t n = 10, P = s.num_params();
  const auto w = test::random_vector(std::size_t(P), 2, 0.5), x = test::random_vector(std::size_t(n * 4), 3);
  std::vector<std::int64_t> labels{0, 1, 2, 0, 1, 2, 0, 1, 2, 0};
  const auto v = test::random_vector(std::size_t(3 * P), 4);
  const Array<double> dw = upload(dev, w, {P}), dx = upload(dev, x, {n, 4}), dv = upload(dev, v, {3, P});
  const Array<std::int64_t> dl = upload(dev, labels, {n});
  model::Targets<double> th, td;
  th.labels = {labels.data(), n, 1};
  td.labels = {dl.data(), n, 1, Backend::cuda};
  for (auto kind : {linalg::Curvature::hessian, linalg::Curvature::gauss_newton}) {
    linalg::CurvatureOperator<double> oh(host, kind, s, w.data(), {x.data(), n, 4, 4}, th, model::Loss::xent);
    linalg::CurvatureOperator<double> od(dev, kind, s, dw.data(), dx.matrix(), td, model::Loss::xent);
    std::vector<double> yh(std::size_t(3 * P));
    Array<double> yd(dev, {3, P});
    oh.apply({v.data(), 3, P, P}, {yh.data(), 3, P, P});
    od.apply(dv.matrix(), yd.matrix());
    std::vector<double> back(std::size_t(3 * P));
    detail::copy_bytes(dev, back.data(), Backend::host, yd.data(), Backend::cuda, yd.bytes());
    EXPECT_LT(test::max_rel_diff(back.data(), yh.data(), 3 * P), 1e-12);
  }
}

}  // namespace
}  // namespace dynascope
