// The NTK on every backend against the kernel of naive float64 per-sample Jacobians: every method
// and output mode, output on the context's backend and (tiled) on the host, rectangular and
// per-layer kernels, the function-space operator, strided inputs and outputs, empty input sets
// and a NaN sample. Each case runs as .../host and .../cuda (the latter skips without a device).
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <vector>

#include "dynascope/ntk.hpp"
#include "model/model_test_util.hpp"
#include "support/backend_test.hpp"
#include "support/naive_mlp.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

class NtkOnBackends : public test::BackendTest {};

// Theta(x1_i, x2_j)_ab = sum_p J_i[a, p] J_j[b, p] over the parameters p with in_layer(p) (all of
// them for the whole kernel), laid out as ntk.hpp documents each output mode.
std::vector<double> naive_ntk(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x1, index_t n1,
                              const std::vector<double>& x2, index_t n2, ntk::Outputs mode, index_t layer = -1) {
  const index_t O = s.outputs(), P = s.num_params(), D = s.inputs();
  std::vector<bool> in_layer(static_cast<std::size_t>(P), layer < 0);
  if (layer >= 0) {
    for (index_t p = 0; p < s.fan_in(layer) * s.fan_out(layer); ++p) in_layer[std::size_t(s.weight_offset(layer) + p)] = true;
    if (s.bias[std::size_t(layer)])
      for (index_t p = 0; p < s.fan_out(layer); ++p) in_layer[std::size_t(s.bias_offset(layer) + p)] = true;
  }
  std::vector<std::vector<double>> j1, j2;
  for (index_t i = 0; i < n1; ++i) j1.push_back(test::naive::jacobian(s, w, test::naive::row(x1, i, D)));
  for (index_t j = 0; j < n2; ++j) j2.push_back(test::naive::jacobian(s, w, test::naive::row(x2, j, D)));
  const auto theta = [&](index_t i, index_t j, index_t a, index_t b) {
    double sum = 0;
    for (index_t p = 0; p < P; ++p)
      if (in_layer[std::size_t(p)]) sum += j1[std::size_t(i)][std::size_t(a * P + p)] * j2[std::size_t(j)][std::size_t(b * P + p)];
    return sum;
  };
  std::vector<double> k;
  for (index_t i = 0; i < n1; ++i) {
    if (mode == ntk::Outputs::full) {
      for (index_t a = 0; a < O; ++a)
        for (index_t j = 0; j < n2; ++j)
          for (index_t b = 0; b < O; ++b) k.push_back(theta(i, j, a, b));
      continue;
    }
    for (index_t j = 0; j < n2; ++j) {
      double acc = 0;
      for (index_t a = 0; a < O; ++a) {
        if (mode == ntk::Outputs::diagonal) k.push_back(theta(i, j, a, a));
        if (mode == ntk::Outputs::trace) acc += theta(i, j, a, a);
        if (mode == ntk::Outputs::sum)
          for (index_t b = 0; b < O; ++b) acc += theta(i, j, a, b);
      }
      if (mode != ntk::Outputs::diagonal) k.push_back(acc);
    }
  }
  return k;
}

TEST_P(NtkOnBackends, EveryMethodAndOutputModeMatchesTheNaiveKernel) {
  const auto s = model::MlpSpec::from_arch("6-32-32-3", model::parse_activation("gelu"));
  const index_t n = 21, D = 6, P = s.num_params();
  const auto w = test::random_vector(std::size_t(P), 1, 0.5), x = test::random_vector(std::size_t(n * D), 2);
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, w), dx = Array<double>::from_host(ctx(), {n, D}, x);
  for (ntk::Outputs mode : {ntk::Outputs::full, ntk::Outputs::diagonal, ntk::Outputs::trace, ntk::Outputs::sum}) {
    const auto ref = naive_ntk(s, w, x, n, x, n, mode);
    for (ntk::Method m : {ntk::Method::structured, ntk::Method::jvp, ntk::Method::jacobian}) {
      // Output on the context's backend.
      const auto d = ntk::empirical_ntk<double>(ctx(), s, dw.data(), dx.matrix(), std::nullopt, {mode, m});
      EXPECT_LT(test::max_rel_diff(d.kernel.to_vector(ctx()).data(), ref.data(), index_t(ref.size())), 1e-12)
          << ntk::to_string(m) << " " << ntk::to_string(mode);
      // Output in host memory, tiled under a small workspace budget. (A Jacobian tile holds 2 b O P
      // values: 66 kB for one sample here, so those methods get a budget for about 4 samples.)
      Context tiled = new_context();
      tiled.set_workspace_budget(m == ntk::Method::structured ? 40000 : 300000);
      std::vector<double> host_out(ref.size());
      const auto shape = ntk::kernel_shape(mode, n, n, 3);
      const auto info = ntk::empirical_ntk_into<double>(tiled, s, dw.data(), dx.matrix(), std::nullopt, {mode, m},
                                                        {host_out.data(), shape.rows, shape.cols, shape.cols, Backend::host});
      EXPECT_GT(info.tiles, 1) << ntk::to_string(m) << " " << ntk::to_string(mode);
      EXPECT_LT(test::max_rel_diff(host_out.data(), ref.data(), index_t(ref.size())), 1e-12)
          << ntk::to_string(m) << " " << ntk::to_string(mode) << " tiled into host memory";
    }
  }
}

TEST_P(NtkOnBackends, RectangularPerLayerAndOperatorMatchTheNaiveKernel) {
  const auto s = model::MlpSpec::from_arch("4-16-16-2", model::parse_activation("tanh"));
  const index_t n1 = 13, n2 = 7, D = 4, P = s.num_params(), m = n1 * 2;
  const auto w = test::random_vector(std::size_t(P), 3, 0.5), x1 = test::random_vector(std::size_t(n1 * D), 4),
             x2 = test::random_vector(std::size_t(n2 * D), 5), v = test::random_vector(std::size_t(3 * m), 6);
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, w), dx1 = Array<double>::from_host(ctx(), {n1, D}, x1),
                      dx2 = Array<double>::from_host(ctx(), {n2, D}, x2), dv = Array<double>::from_host(ctx(), {3, m}, v);
  const auto ref = naive_ntk(s, w, x1, n1, x2, n2, ntk::Outputs::full);
  for (ntk::Method method : {ntk::Method::structured, ntk::Method::jacobian}) {
    const ntk::NtkOptions o{ntk::Outputs::full, method, true};
    const auto d = ntk::empirical_ntk<double>(ctx(), s, dw.data(), dx1.matrix(), MatrixView<const double>(dx2.matrix()), o);
    EXPECT_LT(test::max_rel_diff(d.kernel.to_vector(ctx()).data(), ref.data(), index_t(ref.size())), 1e-12) << ntk::to_string(method);
    ASSERT_EQ(index_t(d.per_layer.size()), s.layers());
    for (index_t l = 0; l < s.layers(); ++l) {
      const auto layer_ref = naive_ntk(s, w, x1, n1, x2, n2, ntk::Outputs::full, l);
      EXPECT_LT(test::max_rel_diff(d.per_layer[std::size_t(l)].to_vector(ctx()).data(), layer_ref.data(), index_t(layer_ref.size())), 1e-12)
          << ntk::to_string(method) << " layer " << l;
    }
  }
  // Theta V over the samples of x1, V [3, N1 O], against the naive full kernel of x1 with itself.
  const auto k11 = naive_ntk(s, w, x1, n1, x1, n1, ntk::Outputs::full);
  std::vector<double> yref(static_cast<std::size_t>(3 * m), 0.0);
  for (index_t t = 0; t < 3; ++t)
    for (index_t r = 0; r < m; ++r)
      for (index_t c = 0; c < m; ++c) yref[std::size_t(t * m + r)] += k11[std::size_t(r * m + c)] * v[std::size_t(t * m + c)];
  ntk::NtkOperator<double> op(ctx(), s, dw.data(), dx1.matrix());
  Array<double> yd(ctx(), {3, m});
  op.apply(dv.matrix(), yd.matrix());
  EXPECT_LT(test::max_rel_diff(yd.to_vector(ctx()).data(), yref.data(), 3 * m), 1e-12);
}

TEST_P(NtkOnBackends, StridedInputsAndOutputs) {
  // x1, x2 with ld > D and NaN padding (reading it would poison the kernel); the output with ld >
  // cols and a sentinel padding that must survive.
  const auto s = model::MlpSpec::from_arch("5-12-12-3", model::parse_activation("softplus"));
  const index_t n1 = 9, n2 = 6, D = 5, P = s.num_params();
  const auto w = test::random_vector(std::size_t(P), 7, 0.5), x1 = test::random_vector(std::size_t(n1 * D), 8),
             x2 = test::random_vector(std::size_t(n2 * D), 9);
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, w);
  const Array<double> dx1 = Array<double>::from_host(ctx(), {n1, D + 2}, test::with_ld(x1, n1, D, D + 2));
  const Array<double> dx2 = Array<double>::from_host(ctx(), {n2, D + 1}, test::with_ld(x2, n2, D, D + 1));
  for (bool symmetric : {true, false})
    for (ntk::Outputs mode : {ntk::Outputs::full, ntk::Outputs::trace}) {
      const index_t m2 = symmetric ? n1 : n2;
      const auto ref = naive_ntk(s, w, x1, n1, symmetric ? x1 : x2, m2, mode);
      const auto shape = ntk::kernel_shape(mode, n1, m2, 3);
      for (ntk::Method m : {ntk::Method::structured, ntk::Method::jvp, ntk::Method::jacobian}) {
        const index_t ld = shape.cols + 3;
        Array<double> out = Array<double>::from_host(ctx(), {shape.rows, ld},
                                                     std::vector<double>(std::size_t(shape.rows * ld), test::kSentinel<double>));
        const auto x2v = symmetric ? std::nullopt : std::optional<MatrixView<const double>>(test::strided(dx2, D));
        ntk::empirical_ntk_into<double>(ctx(), s, dw.data(), test::strided(dx1, D), x2v, {mode, m}, test::strided(out, shape.cols));
        const auto got = out.to_vector(ctx());
        EXPECT_LT(test::max_rel_diff(test::without_ld(got, shape.rows, shape.cols, ld).data(), ref.data(), index_t(ref.size())), 1e-12)
            << ntk::to_string(m) << " " << ntk::to_string(mode) << (symmetric ? " symmetric" : " x1 x2");
        EXPECT_EQ(test::padding_changed(got, shape.rows, shape.cols, ld), 0) << ntk::to_string(m);
      }
    }
}

TEST_P(NtkOnBackends, EmptyInputSetsAreRejected) {
  const auto s = model::MlpSpec::from_arch("3-4-2", model::parse_activation("tanh"));
  const auto w = test::random_vector(std::size_t(s.num_params()), 10);
  const Array<double> dw = Array<double>::from_host(ctx(), {s.num_params()}, w);
  const Array<double> dx = Array<double>::from_host(ctx(), {2, 3}, test::random_vector(6, 11));
  const MatrixView<const double> none{nullptr, 0, 3, 3, ctx().backend()};
  test::expect_error<InvalidArgument>([&] { ntk::empirical_ntk<double>(ctx(), s, dw.data(), none); }, {"empirical_ntk", "empty"});
  test::expect_error<InvalidArgument>([&] { ntk::empirical_ntk<double>(ctx(), s, dw.data(), dx.matrix(), none); },
                                      {"empirical_ntk", "empty"});
}

TEST_P(NtkOnBackends, ANanSampleStaysInItsRowAndColumn) {
  // A NaN input of sample 4: its kernel row and column are NaN, every other entry is finite and
  // equals the naive kernel, whatever the method. (The matrix-free NtkOperator is not per-sample:
  // J^T v sums over all samples, so one NaN sample poisons every Theta v.)
  const auto s = model::MlpSpec::from_arch("4-10-10-2", model::parse_activation("tanh"));
  const index_t n = 9, D = 4, P = s.num_params();
  const auto w = test::random_vector(std::size_t(P), 12, 0.5);
  auto x = test::random_vector(std::size_t(n * D), 13);
  x[std::size_t(4 * D + 1)] = test::kNaN<double>;
  const Array<double> dw = Array<double>::from_host(ctx(), {P}, w), dx = Array<double>::from_host(ctx(), {n, D}, x);
  for (ntk::Outputs mode : {ntk::Outputs::full, ntk::Outputs::trace}) {
    const auto ref = naive_ntk(s, w, x, n, x, n, mode);
    index_t nan_ref = 0;
    for (double r : ref) nan_ref += std::isnan(r);
    ASSERT_GT(nan_ref, 0);
    ASSERT_LT(nan_ref, index_t(ref.size()));
    for (ntk::Method m : {ntk::Method::structured, ntk::Method::jvp, ntk::Method::jacobian}) {
      const auto d = ntk::empirical_ntk<double>(ctx(), s, dw.data(), dx.matrix(), std::nullopt, {mode, m});
      const auto got = d.kernel.to_vector(ctx());
      const auto diff = test::max_rel_diff_finite(got.data(), ref.data(), index_t(ref.size()));
      EXPECT_EQ(diff.finiteness_mismatches, 0) << ntk::to_string(m) << " " << ntk::to_string(mode);
      EXPECT_LT(diff.max_rel, 1e-12) << ntk::to_string(m) << " " << ntk::to_string(mode);
    }
  }
}

DYNASCOPE_BACKEND_TESTS(NtkOnBackends);

}  // namespace
}  // namespace dynascope
