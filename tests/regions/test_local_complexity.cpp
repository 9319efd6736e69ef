// Local complexity against a known arrangement, the exact first-layer formula and a naive float64
// vertex loop; frames, tiling and threads; bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "dynascope/regions.hpp"
// The kernel bodies run here on host contexts only.
#define DYNASCOPE_HOST_LAUNCH_ONLY
#include "kernels/launch.cuh"
#include "kernels/regions.cuh"
#include "model/model_test_util.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using regions::Frame;
using regions::LcOptions;

template <class T>
Array<T> host_array(const std::vector<double>& v, Shape shape) {
  Array<T> a(Context::host(), std::move(shape));
  for (std::size_t i = 0; i < v.size(); ++i) a.data()[i] = static_cast<T>(v[i]);
  return a;
}

std::vector<std::int32_t> as_vector(const Array<std::int32_t>& a) {
  return std::vector<std::int32_t>(a.data(), a.data() + a.size());
}

// The naive reference: for each sample, every vertex x +- r v_p through the textbook forward
// loop, every layer's pre-activations compared with vertex 0's by sign.
std::vector<std::int32_t> naive_counts(const model::MlpSpec& s, const std::vector<double>& w,
                                       const std::vector<double>& x, index_t n, const std::vector<double>& frame,
                                       index_t p, double r, bool per_sample) {
  const index_t d = s.inputs(), layers = s.layers();
  std::vector<std::int32_t> counts;
  for (index_t i = 0; i < n; ++i) {
    std::vector<std::vector<std::vector<double>>> z;  // [vertex][layer][neuron]
    for (index_t v = 0; v < 2 * p; ++v) {
      const double sign = (v & 1) ? -1.0 : 1.0;
      const index_t f0 = (per_sample ? i * p : 0) + v / 2;
      std::vector<double> a(static_cast<std::size_t>(d), 0.0);
      for (index_t c = 0; c < d; ++c) a[std::size_t(c)] = x[std::size_t(i * d + c)] + sign * r * frame[std::size_t(f0 * d + c)];
      std::vector<std::vector<double>> zs;
      for (index_t l = 0; l < layers; ++l) {
        std::vector<double> zl(std::size_t(s.fan_out(l)));
        for (index_t o = 0; o < s.fan_out(l); ++o) {
          double acc = 0;
          for (index_t c = 0; c < s.fan_in(l); ++c)
            acc += w[std::size_t(s.weight_offset(l) + o * s.fan_in(l) + c)] * a[std::size_t(c)];
          zl[std::size_t(o)] = s.weight_scale(l) * acc + (s.bias[std::size_t(l)] ? s.bias_scale * w[std::size_t(s.bias_offset(l) + o)] : 0.0);
        }
        zs.push_back(zl);
        if (l + 1 < layers) {
          const auto& act = s.activations[std::size_t(l)];
          const kern::ActParams ap{static_cast<kern::Act>(static_cast<int>(act.kind)), act.slope};
          a.assign(zl.size(), 0.0);
          for (std::size_t o = 0; o < zl.size(); ++o) a[o] = kern::act_value(ap, zl[o]);
        }
      }
      z.push_back(zs);
    }
    for (index_t l = 0; l < layers; ++l) {
      std::int32_t c = 0;
      for (index_t o = 0; o < s.fan_out(l); ++o) {
        const bool pos0 = z[0][std::size_t(l)][std::size_t(o)] > 0;
        for (index_t v = 1; v < 2 * p; ++v)
          if ((z[std::size_t(v)][std::size_t(l)][std::size_t(o)] > 0) != pos0) {
            ++c;
            break;
          }
      }
      counts.push_back(c);
    }
  }
  return counts;
}

// The arrangement of the definition's worked example: D = 2, neurons x - k and y - k for
// k = -2..2, frame = identity, r = 1.5, x = 0: neurons with |k| < 1.5 change sign, 3 per axis.
TEST(LocalComplexity, KnownArrangementCountsSix) {
  const Context ctx = Context::host();
  model::MlpSpec spec = model::MlpSpec::from_arch("2-10-1");
  std::vector<double> w(std::size_t(spec.num_params()), 0.0);
  for (int k = -2; k <= 2; ++k) {
    const index_t jx = k + 2, jy = k + 7;
    w[std::size_t(spec.weight_offset(0) + jx * 2 + 0)] = 1.0;
    w[std::size_t(spec.weight_offset(0) + jy * 2 + 1)] = 1.0;
    w[std::size_t(spec.bias_offset(0) + jx)] = -k;
    w[std::size_t(spec.bias_offset(0) + jy)] = -k;
  }
  for (index_t j = 0; j < 10; ++j) w[std::size_t(spec.weight_offset(1) + j)] = 1.0;
  const auto params = host_array<double>(w, {spec.num_params()});
  const auto x = host_array<double>({0.0, 0.0}, {1, 2});
  const auto frame = host_array<double>({1, 0, 0, 1}, {2, 2});
  LcOptions o;
  o.radius = 1.5;
  o.frame = Frame::given;
  const auto lc = regions::local_complexity<double>(ctx, spec, params.data(), x.matrix(), o, frame.matrix());
  ASSERT_EQ(lc.counts.shape(), (Shape{1, 2}));
  EXPECT_EQ(lc.counts.data()[0], 6);
  EXPECT_EQ(lc.dims, 2);
  EXPECT_DOUBLE_EQ(lc.total_mean, 6.0);
  EXPECT_DOUBLE_EQ(lc.per_layer_mean[0], 6.0);
  const auto exact = regions::first_layer_counts<double>(ctx, spec, params.data(), x.matrix(), frame.matrix(), 1.5);
  ASSERT_EQ(exact.shape(), (Shape{1}));
  EXPECT_EQ(exact.data()[0], 6);
}

struct Net {
  model::MlpSpec spec;
  std::vector<double> w;
  std::vector<double> x;
  index_t n;
};

Net random_net(const std::string& arch, const std::string& act, index_t n, unsigned seed) {
  Net net{model::MlpSpec::from_arch(arch, model::parse_activation(act)), {}, {}, n};
  net.w = test::random_vector(std::size_t(net.spec.num_params()), seed, 0.7);
  net.x = test::random_vector(std::size_t(n * net.spec.inputs()), seed + 1);
  return net;
}

TEST(LocalComplexity, FirstLayerVertexTestEqualsExactFormula) {
  const Context ctx = Context::host(2);
  for (unsigned seed : {1u, 2u, 3u}) {
    const Net net = random_net("6-40-20-3", "relu", 50, seed);
    const auto params = host_array<double>(net.w, {net.spec.num_params()});
    const auto x = host_array<double>(net.x, {net.n, 6});
    const auto frame = regions::random_frame<double>(ctx, 6, 4, seed);
    LcOptions o;
    o.radius = 0.4;
    o.dims = 4;
    o.seed = seed;
    const auto lc = regions::local_complexity<double>(ctx, net.spec, params.data(), x.matrix(), o);
    const auto exact = regions::first_layer_counts<double>(ctx, net.spec, params.data(), x.matrix(), frame.matrix(), 0.4);
    long total = 0;
    for (index_t i = 0; i < net.n; ++i) {
      EXPECT_EQ(lc.counts.data()[i * 3], exact.data()[i]) << "sample " << i << " seed " << seed;
      total += exact.data()[i];
    }
    EXPECT_GT(total, 0);  // the radius is large enough for the test to mean something
  }
}

TEST(LocalComplexity, MatchesNaiveVertexLoopOnEveryLayer) {
  const Context ctx = Context::host(2);
  for (const char* act : {"relu", "tanh", "leaky_relu:0.2"}) {
    const Net net = random_net("5-16-12-9-3", act, 17, 7);
    const auto params = host_array<double>(net.w, {net.spec.num_params()});
    const auto x = host_array<double>(net.x, {net.n, 5});
    for (Frame kind : {Frame::shared, Frame::per_sample}) {
      LcOptions o;
      o.radius = 0.6;
      o.dims = 3;
      o.seed = 11;
      o.frame = kind;
      const auto lc = regions::local_complexity<double>(ctx, net.spec, params.data(), x.matrix(), o);
      std::vector<double> frames;
      for (index_t i = 0; i < (kind == Frame::per_sample ? net.n : 1); ++i) {
        const auto f = regions::random_frame<double>(ctx, 5, 3, 11, kind, i);
        frames.insert(frames.end(), f.data(), f.data() + f.size());
      }
      const auto want = naive_counts(net.spec, net.w, net.x, net.n, frames, 3, 0.6, kind == Frame::per_sample);
      EXPECT_EQ(as_vector(lc.counts), want) << act;
      double sum_hidden = 0, sum_all = 0;
      std::vector<double> per_layer(4, 0.0);
      for (std::size_t i = 0; i < want.size(); ++i) {
        per_layer[i % 4] += want[i];
        sum_all += want[i];
        if (i % 4 != 3) sum_hidden += want[i];
      }
      EXPECT_DOUBLE_EQ(lc.total_mean, sum_hidden / 17);
      EXPECT_DOUBLE_EQ(lc.all_layers_mean, sum_all / 17);
      for (std::size_t l = 0; l < 4; ++l) EXPECT_DOUBLE_EQ(lc.per_layer_mean[l], per_layer[l] / 17);
      EXPECT_GT(sum_hidden, 0);
    }
  }
}

TEST(LocalComplexity, TinyRadiusCountsNothing) {
  const Context ctx = Context::host();
  const Net net = random_net("4-30-30-2", "relu", 40, 3);
  const auto params = host_array<double>(net.w, {net.spec.num_params()});
  const auto x = host_array<double>(net.x, {net.n, 4});
  LcOptions o;
  o.radius = 1e-12;
  o.dims = 4;
  const auto lc = regions::local_complexity<double>(ctx, net.spec, params.data(), x.matrix(), o);
  for (index_t i = 0; i < lc.counts.size(); ++i) EXPECT_EQ(lc.counts.data()[i], 0);
}

TEST(LocalComplexity, RandomFramesAreOrthonormalAndReproducible) {
  const Context ctx = Context::host();
  for (Frame kind : {Frame::shared, Frame::per_sample}) {
    const auto f = regions::random_frame<double>(ctx, 30, 25, 5, kind, 3);
    for (index_t i = 0; i < 25; ++i)
      for (index_t k = 0; k < 25; ++k) {
        double dot = 0;
        for (index_t c = 0; c < 30; ++c) dot += f.data()[i * 30 + c] * f.data()[k * 30 + c];
        EXPECT_NEAR(dot, i == k ? 1.0 : 0.0, 1e-13);
      }
    const auto g = regions::random_frame<double>(ctx, 30, 25, 5, kind, 3);
    for (index_t i = 0; i < f.size(); ++i) ASSERT_EQ(f.data()[i], g.data()[i]);
  }
  // Per-sample frames differ between samples and from the shared one; the seed matters.
  const auto a = regions::random_frame<double>(ctx, 30, 2, 5, Frame::per_sample, 0);
  const auto b = regions::random_frame<double>(ctx, 30, 2, 5, Frame::per_sample, 1);
  const auto s = regions::random_frame<double>(ctx, 30, 2, 5, Frame::shared);
  const auto t = regions::random_frame<double>(ctx, 30, 2, 6, Frame::shared);
  EXPECT_NE(a.data()[0], b.data()[0]);
  EXPECT_NE(a.data()[0], s.data()[0]);
  EXPECT_NE(s.data()[0], t.data()[0]);
}

TEST(LocalComplexity, SharedPerSampleAndGivenFramesAgreeOnTheSameDirections) {
  const Context ctx = Context::host();
  const Net net = random_net("8-24-24-4", "relu", 9, 21);
  const auto params = host_array<double>(net.w, {net.spec.num_params()});
  const auto x = host_array<double>(net.x, {net.n, 8});
  LcOptions o;
  o.radius = 0.5;
  o.dims = 5;
  o.seed = 4;
  const auto shared = regions::local_complexity<double>(ctx, net.spec, params.data(), x.matrix(), o);
  LcOptions g = o;
  g.frame = Frame::given;
  const auto f = regions::random_frame<double>(ctx, 8, 5, 4);
  const auto given = regions::local_complexity<double>(ctx, net.spec, params.data(), x.matrix(), g, f.matrix());
  EXPECT_EQ(as_vector(shared.counts), as_vector(given.counts));
  o.frame = Frame::per_sample;
  const auto per = regions::local_complexity<double>(ctx, net.spec, params.data(), x.matrix(), o);
  for (index_t i = 0; i < net.n; ++i) {
    const auto fi = regions::random_frame<double>(ctx, 8, 5, 4, Frame::per_sample, i);
    const auto one = regions::local_complexity<double>(ctx, net.spec, params.data(),
                                                       MatrixView<const double>(x.matrix().block(i, 0, 1, 8)), g, fi.matrix());
    for (index_t l = 0; l < 3; ++l) EXPECT_EQ(per.counts.data()[i * 3 + l], one.counts.data()[l]) << i;
  }
}

TEST(LocalComplexity, IndependentOfTilingAndThreads) {
  const Net net = random_net("10-32-32-32-5", "relu", 23, 8);
  const auto params = host_array<float>(net.w, {net.spec.num_params()});
  const auto x = host_array<float>(net.x, {net.n, 10});
  for (Frame kind : {Frame::shared, Frame::per_sample}) {
    LcOptions o;
    o.radius = 0.3;
    o.dims = 6;
    o.frame = kind;
    Context one = Context::host(1);
    const auto ref = regions::local_complexity<float>(one, net.spec, params.data(), x.matrix(), o);
    Context two = Context::host(2);
    two.set_workspace_budget(32000);  // 2 or 3 samples per tile (about 10.8 kB each)
    index_t calls = 0;
    two.set_progress_sink([&](std::string_view, index_t, index_t) { ++calls; });
    const auto tiled = regions::local_complexity<float>(two, net.spec, params.data(), x.matrix(), o);
    EXPECT_GT(calls, 3);  // really tiled
    EXPECT_EQ(as_vector(ref.counts), as_vector(tiled.counts));
  }
}

TEST(LocalComplexity, StridedInputsAndEmptySets) {
  const Context ctx = Context::host();
  const Net net = random_net("3-10-2", "relu", 6, 2);
  const auto params = host_array<double>(net.w, {net.spec.num_params()});
  // The same samples inside a wider matrix (ld 5).
  std::vector<double> wide(6 * 5, 99.0);
  for (index_t i = 0; i < 6; ++i)
    for (index_t c = 0; c < 3; ++c) wide[std::size_t(i * 5 + c)] = net.x[std::size_t(i * 3 + c)];
  const auto w5 = host_array<double>(wide, {6, 5});
  const auto x = host_array<double>(net.x, {6, 3});
  LcOptions o;
  o.radius = 0.8;
  o.dims = 2;
  const auto a = regions::local_complexity<double>(ctx, net.spec, params.data(), x.matrix(), o);
  const auto b = regions::local_complexity<double>(ctx, net.spec, params.data(),
                                                   MatrixView<const double>(w5.matrix().block(0, 0, 6, 3)), o);
  EXPECT_EQ(as_vector(a.counts), as_vector(b.counts));
  const auto none = regions::local_complexity<double>(ctx, net.spec, params.data(),
                                                      MatrixView<const double>{nullptr, 0, 3, 3}, o);
  EXPECT_EQ(none.counts.shape(), (Shape{0, 2}));
  EXPECT_EQ(none.total_mean, 0.0);
}

// The cuda path's sign-change kernels (SignChangeFlags + CountFlags) against the host path's
// row-wise count, run here on host, on pre-activations with ties at 0, widths past the row sweep's
// 256-neuron chunk, and a NaN in one sample.
TEST(LocalComplexity, CudaSignKernelsEqualTheHostRowCount) {
  const Context ctx = Context::host(2);
  const index_t n = 9, vertices = 6, width = 300;
  std::vector<double> z = test::random_vector(std::size_t(n * vertices * width), 17);
  for (std::size_t i = 0; i < z.size(); i += 7) z[i] = 0.0;         // ties: 0 counts as not positive
  for (index_t j = 0; j < width; j += 3)                            // sample 4: all vertices positive
    for (index_t v = 0; v < vertices; ++v) z[std::size_t((4 * vertices + v) * width + j)] = 1.0 + double(v);
  z[std::size_t((6 * vertices + 2) * width + 11)] = std::numeric_limits<double>::quiet_NaN();
  const MatrixView<const double> zv{z.data(), n * vertices, width, width};
  std::vector<std::int32_t> flags(std::size_t(n * width)), a(std::size_t(n), -5), b(std::size_t(n), -5);
  const MatrixView<std::int32_t> fl{flags.data(), n, width, width}, ca{a.data(), n, 1, 1}, cb{b.data(), n, 1, 1};
  kern::parallel_for_2d(ctx, n, width, kern::SignChangeFlags<double>{zv, vertices, fl});
  kern::parallel_for(ctx, n, kern::CountFlags{fl, ca, 0, 0});
  kern::host_parallel_for(ctx, n, kern::SignChangeCountsRows<double>{zv, vertices, cb, 0, 0}, 1);
  EXPECT_EQ(a, b);
  // And both against the definition, written out.
  for (index_t s = 0; s < n; ++s) {
    std::int32_t want = 0;
    bool bad = false;
    for (index_t j = 0; j < width; ++j) {
      bool changed = false;
      for (index_t v = 0; v < vertices; ++v) {
        const double x = z[std::size_t((s * vertices + v) * width + j)];
        bad = bad || std::isnan(x);
        changed = changed || ((x > 0) != (z[std::size_t(s * vertices * width + j)] > 0));
      }
      want += changed;
    }
    EXPECT_EQ(a[std::size_t(s)], bad ? -1 : want) << "sample " << s;
  }
  EXPECT_EQ(a[6], -1);
}

TEST(LocalComplexity, BadInputGetsClearErrors) {
  const Context ctx = Context::host();
  const Net net = random_net("3-10-2", "relu", 4, 2);
  const auto params = host_array<double>(net.w, {net.spec.num_params()});
  auto x = host_array<double>(net.x, {4, 3});
  LcOptions o;
  o.radius = 0.5;
  o.dims = 2;
  auto run = [&](const LcOptions& opt, MatrixView<const double> f = {}) {
    return regions::local_complexity<double>(ctx, net.spec, params.data(), x.matrix(), opt, f);
  };
  LcOptions r0 = o;
  r0.radius = 0;
  test::expect_error<InvalidArgument>([&] { run(r0); }, {"radius", "positive"});
  r0.radius = std::numeric_limits<double>::quiet_NaN();
  test::expect_error<InvalidArgument>([&] { run(r0); }, {"radius"});
  LcOptions big = o;
  big.dims = 4;
  test::expect_error<InvalidArgument>([&] { run(big); }, {"between 1 and the input width 3", "got 4"});
  LcOptions given = o;
  given.frame = Frame::given;
  const auto narrow = host_array<double>({1, 0}, {1, 2});
  test::expect_error<InvalidArgument>([&] { run(given, narrow.matrix()); }, {"frame", "2 columns", "3 inputs"});
  const auto skew = host_array<double>({1, 0, 0, 0.6, 0.8, 0.1}, {2, 3});
  test::expect_error<InvalidArgument>([&] { run(given, skew.matrix()); }, {"orthonormal", "row 1"});
  const auto scaled = host_array<double>({2, 0, 0}, {1, 3});
  test::expect_error<InvalidArgument>([&] { run(given, scaled.matrix()); }, {"orthonormal", "squared norm"});
  test::expect_error<InvalidArgument>([&] { run(o, scaled.matrix()); }, {"Frame::given"});
  x.data()[5] = std::numeric_limits<double>::quiet_NaN();
  test::expect_error<InvalidArgument>([&] { run(o); }, {"sample 1", "NaN"});
  const auto wrong = host_array<double>(net.x, {3, 4});
  test::expect_error<ShapeMismatch>(
      [&] { regions::local_complexity<double>(ctx, net.spec, params.data(), wrong.matrix(), o); }, {"x", "3x3"});
  Context tiny = Context::host();
  tiny.set_workspace_budget(64);
  test::expect_error<OutOfMemory>(
      [&] { regions::local_complexity<double>(tiny, net.spec, params.data(), x.matrix(), o); }, {"workspace budget"});
}

}  // namespace
}  // namespace dynascope
