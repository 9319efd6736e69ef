// The NTK on cuda against the host backend, every method, output on the device and on the host.
#include <gtest/gtest.h>

#include "dynascope/ntk.hpp"
#include "model/model_test_util.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

class NtkGpu : public test::GpuTest {};

TEST_F(NtkGpu, EveryMethodMatchesHost) {
  Context dev = cuda();
  const auto s = model::MlpSpec::from_arch("6-32-32-3", model::parse_activation("gelu"));
  const index_t n = 21, D = 6, P = s.num_params();
  const auto w = test::random_vector(std::size_t(P), 1, 0.5), x = test::random_vector(std::size_t(n * D), 2);
  Array<double> dw(dev, {P}), dx(dev, {n, D});
  detail::copy_bytes(dev, dw.data(), Backend::cuda, w.data(), Backend::host, dw.bytes());
  detail::copy_bytes(dev, dx.data(), Backend::cuda, x.data(), Backend::host, dx.bytes());
  for (ntk::Method m : {ntk::Method::structured, ntk::Method::jvp, ntk::Method::jacobian})
    for (ntk::Outputs mode : {ntk::Outputs::full, ntk::Outputs::diagonal, ntk::Outputs::trace, ntk::Outputs::sum}) {
      const auto h = ntk::empirical_ntk<double>(host, s, w.data(), {x.data(), n, D, D}, std::nullopt, {mode, m});
      // Device output.
      const auto d = ntk::empirical_ntk<double>(dev, s, dw.data(), dx.matrix(), std::nullopt, {mode, m});
      std::vector<double> back(static_cast<std::size_t>(d.kernel.size()));
      detail::copy_bytes(dev, back.data(), Backend::host, d.kernel.data(), Backend::cuda, d.kernel.bytes());
      EXPECT_LT(test::max_rel_diff(back.data(), h.kernel.data(), h.kernel.size()), 1e-12);
      // Host output from a cuda computation, tiled.
      Context tiled = cuda();
      tiled.set_workspace_budget(40000);
      std::vector<double> host_out(static_cast<std::size_t>(h.kernel.size()));
      const auto shape = ntk::kernel_shape(mode, n, n, 3);
      ntk::empirical_ntk_into<double>(tiled, s, dw.data(), dx.matrix(), std::nullopt, {mode, m},
                                      {host_out.data(), shape.rows, shape.cols, shape.cols, Backend::host});
      EXPECT_LT(test::max_rel_diff(host_out.data(), h.kernel.data(), h.kernel.size()), 1e-12);
    }
}

TEST_F(NtkGpu, RectangularPerLayerAndOperatorMatchHost) {
  Context dev = cuda();
  const auto s = model::MlpSpec::from_arch("4-16-16-2", model::parse_activation("tanh"));
  const index_t n1 = 13, n2 = 7, D = 4, P = s.num_params(), m = n1 * 2;
  const auto w = test::random_vector(std::size_t(P), 3, 0.5), x1 = test::random_vector(std::size_t(n1 * D), 4),
             x2 = test::random_vector(std::size_t(n2 * D), 5), v = test::random_vector(std::size_t(3 * m), 6);
  auto up = [&](const std::vector<double>& h, Shape shape) {
    Array<double> a(dev, std::move(shape));
    detail::copy_bytes(dev, a.data(), Backend::cuda, h.data(), Backend::host, a.bytes());
    return a;
  };
  const Array<double> dw = up(w, {P}), dx1 = up(x1, {n1, D}), dx2 = up(x2, {n2, D}), dv = up(v, {3, m});
  auto down = [&](const Array<double>& a) {
    std::vector<double> h(static_cast<std::size_t>(a.size()));
    detail::copy_bytes(dev, h.data(), Backend::host, a.data(), Backend::cuda, a.bytes());
    return h;
  };
  for (ntk::Method method : {ntk::Method::structured, ntk::Method::jacobian}) {
    const ntk::NtkOptions o{ntk::Outputs::full, method, true};
    const auto h = ntk::empirical_ntk<double>(host, s, w.data(), {x1.data(), n1, D, D}, MatrixView<const double>{x2.data(), n2, D, D}, o);
    const auto d = ntk::empirical_ntk<double>(dev, s, dw.data(), dx1.matrix(), MatrixView<const double>(dx2.matrix()), o);
    EXPECT_LT(test::max_rel_diff(down(d.kernel).data(), h.kernel.data(), h.kernel.size()), 1e-12);
    for (std::size_t l = 0; l < h.per_layer.size(); ++l)
      EXPECT_LT(test::max_rel_diff(down(d.per_layer[l]).data(), h.per_layer[l].data(), h.per_layer[l].size()), 1e-12);
  }
  ntk::NtkOperator<double> oh(host, s, w.data(), {x1.data(), n1, D, D}), od(dev, s, dw.data(), dx1.matrix());
  std::vector<double> yh(std::size_t(3 * m));
  Array<double> yd(dev, {3, m});
  oh.apply({v.data(), 3, m, m}, {yh.data(), 3, m, m});
  od.apply(dv.matrix(), yd.matrix());
  EXPECT_LT(test::max_rel_diff(down(yd).data(), yh.data(), 3 * m), 1e-12);
}

}  // namespace
}  // namespace dynascope
