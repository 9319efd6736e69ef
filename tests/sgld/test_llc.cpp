// The LLC estimator (include/dynascope/sgld.hpp) against known values: the closed-form expectation
// for a quadratic loss, normal crossings, reduced-rank regression and deep linear networks
// (Aoyagi), plus the sampler's bookkeeping against a naive float64 re-implementation, chain
// independence, divergence handling and bad input. Stochastic checks use fixed seeds and
// tolerances derived from the reported standard error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "dynascope/batched_engine.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/llc_theory.hpp"
#include "dynascope/random.hpp"
#include "dynascope/sgld.hpp"
#include "dynascope/train.hpp"
#include "support/backend_test.hpp"

namespace dynascope::sgld {
namespace {

using model::MlpSpec;

// A host callback from a per-chain function of the parameters: loss(w) and grad(w).
template <class T, class F>
BatchedLossGrad<T> per_chain(F f) {
  return [f](const LossGradRequest<T>& req) {
    for (index_t c = 0; c < req.params.rows; ++c) {
      const T* w = req.params.data + c * req.params.ld;
      T* g = req.grads.data + c * req.grads.ld;
      req.losses.data[c * req.losses.stride] = f(w, g, req.params.cols, c, req.step);
    }
  };
}

// L = 1/2 sum h_i (w_i - w*_i)^2.
template <class T>
BatchedLossGrad<T> quadratic(std::vector<double> h, std::vector<double> w_star) {
  return per_chain<T>([h, w_star](const T* w, T* g, index_t P, index_t, index_t) {
    double l = 0;
    for (index_t i = 0; i < P; ++i) {
      const double d = double(w[i]) - w_star[std::size_t(i)];
      l += 0.5 * h[std::size_t(i)] * d * d;
      g[i] = static_cast<T>(h[std::size_t(i)] * d);
    }
    return static_cast<T>(l);
  });
}

std::vector<double> logspace(double lo, double hi, int n) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[std::size_t(i)] = std::exp(std::log(lo) + (std::log(hi) - std::log(lo)) * i / (n - 1));
  return v;
}

// --- the quadratic loss: E[λ̂] = 1/2 Σ [nβh/(nβh+γ)] / (1 - ε(nβh+γ)/4) -----------------------

template <class T>
void check_quadratic(double gamma, double epsilon) {
  const std::vector<double> h = logspace(0.2, 5.0, 12);
  const std::vector<double> w_star(h.size(), 0.25);
  const index_t n = 2000;
  LlcOptions o;
  o.chains = 16;
  o.burnin = 4000;
  o.draws = 3000;
  o.gamma = gamma;
  o.epsilon = epsilon;
  o.seed = 7;
  const Context ctx = Context::host(1);
  std::vector<T> ws(w_star.begin(), w_star.end());
  const LlcResult r = estimate_llc<T>(ctx, quadratic<T>(h, w_star), VectorView<const T>{ws.data(), index_t(ws.size())}, n, o);
  const double nbeta = double(n) / std::log(double(n));
  EXPECT_DOUBLE_EQ(r.nbeta, nbeta);
  EXPECT_DOUBLE_EQ(r.init_loss, 0.0);
  const double expected = theory::quadratic_llc_expectation(h, nbeta, gamma, epsilon);
  const double tol = std::max(0.01 * expected, 4 * r.llc_stderr);
  EXPECT_NEAR(r.llc_mean, expected, tol) << "SE " << r.llc_stderr << " eps " << epsilon << " gamma " << gamma;
  EXPECT_TRUE(r.diverged.empty());
  EXPECT_LT(r.r_hat, 1.05);
  EXPECT_GT(r.ess, 100);
  // ε sized so that the discretization matters (1 - ε a / 4 well below 1 for the stiffest
  // direction): the closed form must follow it, not the ε -> 0 limit d/2.
  EXPECT_GT(r.mala_acceptance, 0.5);
  EXPECT_LE(r.mala_acceptance, 1.0);
}

TEST(LlcQuadratic, MatchesTheClosedFormExpectation) { check_quadratic<double>(10.0, 1e-3); }
TEST(LlcQuadratic, MatchesWithStrongDiscretization) { check_quadratic<double>(50.0, 2e-3); }
TEST(LlcQuadratic, MatchesInFloat) { check_quadratic<float>(10.0, 1e-3); }

// --- normal crossing: y = x · Π w_i^{k_i}, λ = 1 / (2 max k) ----------------------------------

// The exact tempered-posterior mean of nβ K for K = c w^{2k} with the localization prior
// exp(-γ w^2 / 2), by quadrature (the γ-free value is exactly 1/(2k)).
double crossing_expectation(int k, double nbeta_c, double gamma) {
  const double scale = std::pow(nbeta_c, -1.0 / (2 * k));
  const int steps = 200000;
  const double lim = 12 * scale;
  double z = 0, e = 0;
  for (int i = 0; i <= steps; ++i) {
    const double w = -lim + 2 * lim * i / steps;
    const double t = nbeta_c * std::pow(w, 2 * k);
    const double p = std::exp(-t - 0.5 * gamma * w * w) * ((i == 0 || i == steps) ? 0.5 : 1.0);
    z += p;
    e += t * p;
  }
  return e / z;
}

// y_n = x_n · Π w_i^{k_i} with teacher w = 0: L(w) = mean_n (x_n Π w^k)^2 = c (Π w_i^{k_i})^2.
BatchedLossGrad<double> crossing(std::vector<int> k, double c) {
  return per_chain<double>([k, c](const double* w, double* g, index_t P, index_t, index_t) {
    double prod = 1;
    for (index_t i = 0; i < P; ++i) prod *= std::pow(w[i], k[std::size_t(i)]);
    for (index_t i = 0; i < P; ++i) {
      const int ki = k[std::size_t(i)];
      double others = 1;
      for (index_t j = 0; j < P; ++j)
        if (j != i) others *= std::pow(w[j], k[std::size_t(j)]);
      const double dprod = ki == 0 ? 0.0 : ki * std::pow(w[i], ki - 1) * others;
      g[i] = 2 * c * prod * dprod;
    }
    return c * prod * prod;
  });
}

TEST(LlcNormalCrossing, OneOverTwiceTheLargestPower) {
  // The second parameter does not enter the model (k = 0): it only feels the localization.
  const index_t n = 5000;
  const double nbeta = double(n) / std::log(double(n));
  const double c = 1.3;  // mean of x^2 of the data
  const double gamma = 0.01;
  for (int k = 1; k <= 3; ++k) {
    LlcOptions o;
    o.chains = 32;
    o.burnin = 5000;
    o.draws = 4000;
    o.gamma = gamma;
    // k = 1 is a quadratic of curvature a = 2 nβ c: ε a / 4 below 1 % keeps the discretization
    // bias (a factor 1 / (1 - ε a / 4)) under the tolerance; flatter k > 1 tolerate larger steps.
    o.epsilon = k == 1 ? 1e-5 : 1e-3;
    o.seed = 11;
    const std::vector<double> w_star = {0.0, 0.0};
    const LlcResult r = estimate_llc<double>(Context::host(1), crossing({k, 0}, c),
                                             VectorView<const double>{w_star.data(), 2}, n, o);
    const double exact = crossing_expectation(k, nbeta * c, gamma);
    EXPECT_NEAR(exact, 1.0 / (2 * k), 0.01 / (2 * k)) << "the localization barely matters";
    EXPECT_NEAR(r.llc_mean, exact, std::max(0.01 * exact, 4 * r.llc_stderr))
        << "k = " << k << " SE " << r.llc_stderr << " acceptance " << r.mala_acceptance << " ess " << r.ess;
  }
}

TEST(LlcNormalCrossing, TheOriginIsMoreDegenerateThanARegularPoint) {
  // y = x w1^2 w2: at the origin λ = 1/4; at w* = (1, 0) only w2 matters (w1 is a flat direction
  // of K ≈ w2^2), λ = 1/2.
  const index_t n = 100000;
  LlcOptions o;
  o.chains = 16;
  o.burnin = 4000;
  o.draws = 4000;
  o.gamma = 10.0;
  o.epsilon = 5e-5;
  o.seed = 3;
  const auto fn = crossing({2, 1}, 1.0);
  const std::vector<double> origin = {0.0, 0.0}, regular = {1.0, 0.0};
  const LlcResult a = estimate_llc<double>(Context::host(1), fn, VectorView<const double>{origin.data(), 2}, n, o);
  const LlcResult b = estimate_llc<double>(Context::host(1), fn, VectorView<const double>{regular.data(), 2}, n, o);
  EXPECT_LT(a.llc_mean + 4 * std::hypot(a.llc_stderr, b.llc_stderr), b.llc_mean) << a.llc_mean << " vs " << b.llc_mean;
  EXPECT_NEAR(b.llc_mean, 0.5, std::max(0.05, 4 * b.llc_stderr)) << b.llc_stderr;
}

// --- the sampler's bookkeeping against a naive float64 re-implementation -----------------------

TEST(LlcSampler, MatchesANaiveReimplementation) {
  // A quartic loss, so that gradients are not linear; minibatch indices checked through the
  // callback; every trace value, the distances and the MALA acceptance recomputed here with
  // densities written out (not the sampler's sums).
  const index_t P = 5, n = 40, m = 7;
  const std::vector<double> w_star = {0.1, -0.2, 0.3, 0.0, 0.5};
  LlcOptions o;
  o.chains = 3;
  o.burnin = 4;
  o.draws = 6;
  o.thin = 2;
  o.epsilon = 1e-3;
  o.gamma = 5;
  o.batch = m;
  o.seed = 99;
  const Context host = Context::host(1);
  const double nbeta = double(n) / std::log(double(n));
  // loss of chain c on its batch: mean over the batch of (1 + idx/n) * sum (w - w*)^4 / 4
  std::vector<std::vector<std::int64_t>> seen;
  const BatchedLossGrad<double> fn = [&](const LossGradRequest<double>& req) {
    if (req.batch.cols == 0) {  // L_n(w*) for the init loss: all n samples
      ASSERT_EQ(req.params.rows, 1);
      double l = 0;
      for (index_t i = 0; i < P; ++i) {
        const double d = req.params.data[i] - w_star[std::size_t(i)];
        l += 1.5 * d * d * d * d / 4;  // mean over i < n of (1 + i/n) is 1.5 - 1/(2n); here d = 0
      }
      req.losses.data[0] = l;
      return;
    }
    ASSERT_EQ(req.batch.cols, m);
    for (index_t c = 0; c < req.params.rows; ++c) {
      // the batch is Philox (seed, 2^31 + c, step), integers in [0, n)
      std::vector<std::int64_t> expect(static_cast<std::size_t>(m));
      random::fill_integers(host, random::Stream{o.seed, 0x80000000u + std::uint32_t(c), std::uint32_t(req.step)},
                            VectorView<std::int64_t>{expect.data(), m}, n);
      double weight = 0;
      for (index_t j = 0; j < m; ++j) {
        EXPECT_EQ(req.batch.data[c * req.batch.ld + j], expect[std::size_t(j)]);
        weight += 1.0 + double(expect[std::size_t(j)]) / double(n);
      }
      weight /= double(m);
      double l = 0;
      for (index_t i = 0; i < P; ++i) {
        const double d = req.params.data[c * req.params.ld + i] - w_star[std::size_t(i)];
        l += weight * d * d * d * d / 4;
        req.grads.data[c * req.grads.ld + i] = weight * d * d * d;
      }
      req.losses.data[c] = l;
    }
  };
  const LlcResult r = estimate_llc<double>(host, fn, VectorView<const double>{w_star.data(), P}, n, o);

  // Oracle.
  const index_t T = o.burnin + (o.draws - 1) * o.thin + 1;
  double accept_total = 0;
  for (index_t c = 0; c < o.chains; ++c) {
    std::vector<double> w = w_star, w_prev;
    double u_prev = 0, accept = 0;
    std::vector<double> g_prev;
    index_t counted = 0;
    for (index_t t = 0; t < T; ++t) {
      std::vector<std::int64_t> idx(static_cast<std::size_t>(m));
      random::fill_integers(host, random::Stream{o.seed, 0x80000000u + std::uint32_t(c), std::uint32_t(t)},
                            VectorView<std::int64_t>{idx.data(), m}, n);
      double weight = 0;
      for (auto i : idx) weight += 1.0 + double(i) / double(n);
      weight /= double(m);
      double loss = 0, dist2 = 0;
      std::vector<double> gu(static_cast<std::size_t>(P));  // ∇U = nβ ∇L + γ (w - w*)
      for (index_t i = 0; i < P; ++i) {
        const double d = w[std::size_t(i)] - w_star[std::size_t(i)];
        loss += weight * d * d * d * d / 4;
        dist2 += d * d;
        gu[std::size_t(i)] = nbeta * weight * d * d * d + o.gamma * d;
      }
      const double u = nbeta * loss + 0.5 * o.gamma * dist2;
      if (t > 0 && t >= o.burnin) {
        // log π(w) - log π(w_prev) + log q(w_prev | w) - log q(w | w_prev), q(a | b) = N(b - (ε/2)∇U(b), ε I)
        double fwd = 0, rev = 0;
        for (index_t i = 0; i < P; ++i) {
          const double f = w[std::size_t(i)] - (w_prev[std::size_t(i)] - 0.5 * o.epsilon * g_prev[std::size_t(i)]);
          const double b = w_prev[std::size_t(i)] - (w[std::size_t(i)] - 0.5 * o.epsilon * gu[std::size_t(i)]);
          fwd += f * f;
          rev += b * b;
        }
        const double log_alpha = (-u) - (-u_prev) + (-rev / (2 * o.epsilon)) - (-fwd / (2 * o.epsilon));
        accept += std::min(1.0, std::exp(log_alpha));
        ++counted;
      }
      if (t >= o.burnin && (t - o.burnin) % o.thin == 0) {
        const index_t d = (t - o.burnin) / o.thin;
        EXPECT_NEAR(r.loss_trace[std::size_t(c * o.draws + d)], loss, 1e-12 * std::max(1.0, loss)) << c << " " << d;
        EXPECT_NEAR(r.distance_trace[std::size_t(c * o.draws + d)], std::sqrt(dist2), 1e-12) << c << " " << d;
      }
      // the step, noise Philox (seed, c, t)
      std::vector<double> xi(static_cast<std::size_t>(P));
      random::fill_normal(host, random::Stream{o.seed, std::uint32_t(c), std::uint32_t(t)},
                          VectorView<double>{xi.data(), P});
      w_prev = w;
      g_prev = gu;
      u_prev = u;
      for (index_t i = 0; i < P; ++i)
        w[std::size_t(i)] += -0.5 * o.epsilon * gu[std::size_t(i)] + std::sqrt(o.epsilon) * xi[std::size_t(i)];
    }
    accept_total += accept / double(counted);
  }
  EXPECT_NEAR(r.mala_acceptance, accept_total / double(o.chains), 1e-9);
  // λ̂ from the traces, init loss = the full-data loss at w* = 0.
  EXPECT_DOUBLE_EQ(r.init_loss, 0.0);
  for (index_t c = 0; c < o.chains; ++c) {
    double s = 0;
    for (index_t d = 0; d < o.draws; ++d) s += r.loss_trace[std::size_t(c * o.draws + d)];
    EXPECT_NEAR(r.llc_per_chain[std::size_t(c)], nbeta * s / double(o.draws), 1e-12);
  }
  EXPECT_NEAR(r.gradient_evaluations, double(o.chains * T * m) / double(n), 1e-12);
}

TEST(LlcSampler, ChainsDoNotDependOnTheChainCount) {
  // The generic path: chain c's trace is bit-identical whatever C is.
  const std::vector<double> h = logspace(0.5, 3, 6), w_star(6, 0.0);
  LlcOptions o;
  o.burnin = 10;
  o.draws = 20;
  o.batch = 0;
  o.seed = 5;
  o.epsilon = 1e-3;
  auto run = [&](index_t chains) {
    o.chains = chains;
    return estimate_llc<double>(Context::host(2), quadratic<double>(h, w_star), VectorView<const double>{w_star.data(), 6},
                                100, o);
  };
  const LlcResult one = run(1), many = run(16);
  for (index_t d = 0; d < o.draws; ++d) {
    EXPECT_EQ(one.loss_trace[std::size_t(d)], many.loss_trace[std::size_t(d)]);
    EXPECT_EQ(one.distance_trace[std::size_t(d)], many.distance_trace[std::size_t(d)]);
  }
}

TEST(LlcSampler, DivergedChainsAreMarkedAndTheOthersKept) {
  // The callback turns chains 2 and 5 non-finite from step 30 on (draw 10 with burnin 20).
  const std::vector<double> w_star(4, 0.0), h(4, 1.0);
  const auto base = quadratic<double>(h, w_star);
  const BatchedLossGrad<double> fn = [&](const LossGradRequest<double>& req) {
    base(req);
    if (req.step >= 30)
      for (index_t c : {2, 5}) req.losses.data[c] = std::numeric_limits<double>::infinity();
  };
  LlcOptions o;
  o.chains = 8;
  o.burnin = 20;
  o.draws = 30;
  o.epsilon = 1e-3;
  const LlcResult r = estimate_llc<double>(Context::host(1), fn, VectorView<const double>{w_star.data(), 4}, 100, o);
  ASSERT_EQ(r.diverged.size(), 2u);
  EXPECT_EQ(r.diverged.at(2), 10);
  EXPECT_EQ(r.diverged.at(5), 10);
  double s = 0;
  index_t k = 0;
  for (index_t c = 0; c < 8; ++c) {
    if (c == 2 || c == 5) {
      EXPECT_TRUE(std::isnan(r.llc_per_chain[std::size_t(c)]));
      continue;
    }
    EXPECT_TRUE(std::isfinite(r.llc_per_chain[std::size_t(c)]));
    s += r.llc_per_chain[std::size_t(c)];
    ++k;
  }
  EXPECT_NEAR(r.llc_mean, s / double(k), 1e-12);
  EXPECT_TRUE(std::isfinite(r.r_hat));
  ASSERT_FALSE(r.warnings.empty());
  EXPECT_NE(r.warnings.front().find("2 of 8 chains diverged"), std::string::npos);
}

TEST(LlcSampler, WarningsSayWhatIsMissing) {
  const std::vector<double> w_star(3, 0.0), h(3, 1.0);
  const VectorView<const double> w{w_star.data(), 3};
  const auto has = [](const LlcResult& r, const std::string& needle) {
    for (const std::string& x : r.warnings)
      if (x.find(needle) != std::string::npos) return true;
    return false;
  };
  LlcOptions o;
  o.chains = 1;
  o.draws = 3;
  o.burnin = 0;
  LlcResult r = estimate_llc<double>(Context::host(1), quadratic<double>(h, w_star), w, 50, o);
  EXPECT_TRUE(std::isnan(r.llc_stderr));
  EXPECT_TRUE(has(r, "one chain: no standard deviation"));
  EXPECT_TRUE(std::isnan(r.r_hat));
  EXPECT_TRUE(has(r, "fewer than 4 draws"));
  // Every chain non-finite: no "other chains" to use.
  const auto base = quadratic<double>(h, w_star);
  const BatchedLossGrad<double> nan = [&](const LossGradRequest<double>& req) {
    base(req);
    for (index_t c = 0; c < req.params.rows; ++c) req.losses.data[c] = std::numeric_limits<double>::quiet_NaN();
  };
  o.chains = 3;
  o.draws = 10;
  r = estimate_llc<double>(Context::host(1), nan, w, 50, o);
  EXPECT_EQ(r.diverged.size(), 3u);
  EXPECT_TRUE(has(r, "every chain diverged"));
  EXPECT_FALSE(has(r, "the other chains"));
  // R-hat's advice names the localization's relaxation time 2 / (ε γ).
  o = {};
  o.chains = 4;
  o.draws = 20;
  o.burnin = 0;
  o.epsilon = 1e-4;
  o.gamma = 100;
  const BatchedLossGrad<double> stuck = [&](const LossGradRequest<double>& req) {
    base(req);
    for (index_t c = 0; c < req.params.rows; ++c) req.losses.data[c] += double(c);  // chains far apart
  };
  r = estimate_llc<double>(Context::host(1), stuck, w, 50, o);
  EXPECT_GT(r.r_hat, 1.1);
  EXPECT_TRUE(has(r, "2/(epsilon gamma) = 200 steps"));
}

TEST(LlcSampler, AStepSizeThatBlowsUpSomeChainsMarksExactlyThose) {
  // U = nβ (w^4/4 + w^2 / 2) per coordinate: with a large ε, chains whose noise pushes them out far
  // enough explode (the quartic drift overshoots), the others stay bounded.
  const index_t P = 3;
  const std::vector<double> w_star(std::size_t(P), 0.0);
  const auto fn = per_chain<double>([](const double* w, double* g, index_t n, index_t, index_t) {
    double l = 0;
    for (index_t i = 0; i < n; ++i) {
      l += w[i] * w[i] * w[i] * w[i] / 4 + w[i] * w[i] / 2;
      g[i] = w[i] * w[i] * w[i] + w[i];
    }
    return l;
  });
  LlcOptions o;
  o.chains = 64;
  o.burnin = 0;
  o.draws = 400;
  o.gamma = 0;
  o.nbeta_rule = NBeta::value;
  o.nbeta = 1;
  o.epsilon = 0.45;  // about a third of the chains diverge within 400 steps (simulated)
  o.seed = 1;
  const LlcResult r = estimate_llc<double>(Context::host(1), fn, VectorView<const double>{w_star.data(), P}, 100, o);
  ASSERT_GT(r.diverged.size(), 0u) << "the step size should blow up some chains";
  ASSERT_LT(r.diverged.size(), 64u) << "and keep others";
  for (index_t c = 0; c < o.chains; ++c) {
    index_t first_bad = -1;
    for (index_t d = 0; d < o.draws && first_bad < 0; ++d)
      if (!std::isfinite(r.loss_trace[std::size_t(c * o.draws + d)])) first_bad = d;
    if (first_bad >= 0) {
      ASSERT_TRUE(r.diverged.count(c)) << c;
      EXPECT_EQ(r.diverged.at(c), first_bad);
    } else {
      EXPECT_FALSE(r.diverged.count(c)) << c;
      EXPECT_TRUE(std::isfinite(r.llc_per_chain[std::size_t(c)]));
    }
  }
  EXPECT_TRUE(std::isfinite(r.llc_mean));
}

TEST(LlcSampler, ProgressIsReportedAndCanCancel) {
  const std::vector<double> w_star(3, 0.0), h(3, 1.0);
  LlcOptions o;
  o.chains = 2;
  o.burnin = 10;
  o.draws = 90;
  o.progress_every = 25;
  std::vector<index_t> steps;
  o.on_progress = [&](const LlcProgress& p) {
    steps.push_back(p.step);
    EXPECT_EQ(p.total_steps, 100);
    return true;
  };
  estimate_llc<double>(Context::host(1), quadratic<double>(h, w_star), VectorView<const double>{w_star.data(), 3}, 50, o);
  EXPECT_EQ(steps, (std::vector<index_t>{25, 50, 75, 100}));
  o.on_progress = [&](const LlcProgress& p) { return p.step < 50; };
  EXPECT_THROW(estimate_llc<double>(Context::host(1), quadratic<double>(h, w_star),
                                    VectorView<const double>{w_star.data(), 3}, 50, o),
               Cancelled);
}

TEST(LlcSampler, RejectsBadInput) {
  const std::vector<double> w_star(3, 0.0), h(3, 1.0);
  const auto fn = quadratic<double>(h, w_star);
  const VectorView<const double> w{w_star.data(), 3};
  const Context ctx = Context::host(1);
  auto expect_error = [&](LlcOptions o, index_t n, const char* needle) {
    try {
      estimate_llc<double>(ctx, fn, w, n, o);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  LlcOptions o;
  o.epsilon = 0;
  expect_error(o, 10, "epsilon");
  o = {};
  o.epsilon = -1;
  expect_error(o, 10, "epsilon");
  o = {};
  o.batch = 11;
  expect_error(o, 10, "batch (11) is larger than the dataset (10 samples)");
  o = {};
  expect_error(o, 0, "empty");
  o = {};
  o.chains = 0;
  expect_error(o, 10, "chains");
  o = {};
  o.chains = -3;
  expect_error(o, 10, "chains");
  o = {};
  o.mask = {1, 0};
  expect_error(o, 10, "mask");
  o = {};
  o.nbeta_rule = NBeta::value;
  expect_error(o, 10, "nbeta");
  o = {};
  o.gamma = -1;
  expect_error(o, 10, "gamma");
  o = {};
  o.thin = 0;
  expect_error(o, 10, "thin");
}

// --- MLPs through the batched-parameters engine ---------------------------------------------------

template <class T>
struct Problem {
  MlpSpec spec;
  std::vector<T> params, x, y;
  index_t n = 0;
};

// Reduced-rank regression: y = A x + noise, A = rank r (N x M), a 2-layer linear network without
// bias of hidden width H, w* = the trained network.
Problem<double> reduced_rank(index_t M, index_t H, index_t N, index_t r, index_t n, unsigned seed) {
  Problem<double> p;
  p.n = n;
  p.spec.widths = {M, H, N};
  p.spec.bias = {false, false};
  p.spec.activations = {model::ActivationSpec{model::Activation::identity}};
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> nd;
  std::vector<double> U(static_cast<std::size_t>(N * r)), V(std::size_t(r * M));
  for (auto& v : U) v = nd(gen);
  for (auto& v : V) v = nd(gen) / std::sqrt(double(M));
  p.x.resize(std::size_t(n * M));
  p.y.resize(std::size_t(n * N));
  for (auto& v : p.x) v = nd(gen);
  for (index_t s = 0; s < n; ++s)
    for (index_t o = 0; o < N; ++o) {
      double f = 0;
      for (index_t k = 0; k < r; ++k) {
        double vx = 0;
        for (index_t i = 0; i < M; ++i) vx += V[std::size_t(k * M + i)] * p.x[std::size_t(s * M + i)];
        f += U[std::size_t(o * r + k)] * vx;
      }
      p.y[std::size_t(s * N + o)] = f + 0.1 * nd(gen);
    }
  return p;
}

// Trains p.params from a small random start with Adam, full batch, to the empirical minimum.
template <class T>
void train_to_minimum(const Context& ctx, Problem<T>& p, model::Loss loss, index_t steps, double lr) {
  model::InitOptions io;
  io.seed = 1;
  io.scale = 0.5;
  Array<T> params = model::init_params<T>(ctx, p.spec, io);
  Array<T> x = Array<T>::from_host(ctx, {p.n, p.spec.inputs()}, p.x);
  Array<T> y = Array<T>::from_host(ctx, {p.n, p.spec.outputs()}, p.y);
  model::MlpEngine<T> engine(ctx, p.spec);
  model::OptimizerOptions oo;
  oo.kind = model::OptimizerKind::adam;
  oo.lr = lr;
  model::Optimizer<T> opt(ctx, oo, p.spec.num_params());
  Array<T> g(ctx, {p.n, p.spec.outputs()}), grads(ctx, {1, p.spec.num_params()});
  model::Targets<T> t;
  t.values = y.matrix();
  // Adam at lr, then at lr / 10 for the last third: the small steps settle into the minimum.
  model::OptimizerOptions fine = oo;
  fine.lr = lr / 10;
  model::Optimizer<T> settle(ctx, fine, p.spec.num_params());
  for (index_t s = 0; s < steps; ++s) {
    auto out = engine.forward(params.data(), x.matrix());
    model::loss_and_grad<T>(ctx, loss, out, t, g.matrix());
    engine.backprop(params.data(), g.matrix());
    engine.param_grads(grads.matrix());
    if (s + 1 == steps) {
      // the gradient at the end must be tiny: w* is a minimum
      const auto gv = grads.to_vector(ctx);
      double norm = 0;
      for (T v : gv) norm += double(v) * double(v);
      EXPECT_LT(std::sqrt(norm), 1e-3) << "training did not reach a minimum";
    }
    if (3 * s < 2 * steps)
      opt.step(params.data(), grads.data());
    else
      settle.step(params.data(), grads.data());
  }
  p.params = params.to_vector(ctx);
}

template <class T>
LlcResult mlp_llc(const Context& ctx, const Problem<T>& p, model::Loss loss, const LlcOptions& o) {
  Array<T> params = Array<T>::from_host(ctx, {p.spec.num_params()}, p.params);
  Array<T> x = Array<T>::from_host(ctx, {p.n, p.spec.inputs()}, p.x);
  Array<T> y = Array<T>::from_host(ctx, {p.n, p.spec.outputs()}, p.y);
  model::Targets<T> t;
  t.values = y.matrix();
  return estimate_llc<T>(ctx, p.spec, params.data(), x.matrix(), t, loss, o);
}

// Two runs' loss and distance traces, value by value, to rounding (1e-11 relative).
void expect_traces_near(const LlcResult& got, const LlcResult& want) {
  ASSERT_EQ(got.loss_trace.size(), want.loss_trace.size());
  for (std::size_t i = 0; i < want.loss_trace.size(); ++i) {
    EXPECT_NEAR(got.loss_trace[i], want.loss_trace[i], 1e-11 * want.loss_trace[i]) << i;
    EXPECT_NEAR(got.distance_trace[i], want.distance_trace[i], 1e-11 * (1 + want.distance_trace[i])) << i;
  }
}

// The linear networks' known-value runs: 16 chains, full batch, a weak localization (the theory is
// for a flat prior) and a step small enough that its bias is below the 20 % tolerance.
LlcOptions known_value_options(std::uint64_t seed) {
  LlcOptions o;
  o.chains = 16;
  o.burnin = 2000;
  o.draws = 2000;
  o.epsilon = 5e-5;
  o.gamma = 1;
  o.seed = seed;
  return o;
}

class LlcMlp : public test::BackendTest {};

TEST_P(LlcMlp, ReducedRankRegressionMatchesAoyagiWatanabe) {
  struct Case {
    index_t M, H, N, r;
  };
  for (const Case c : {Case{6, 4, 5, 2}, Case{3, 3, 6, 1}, Case{8, 2, 3, 1}}) {
    Problem<double> p = reduced_rank(c.M, c.H, c.N, c.r, 4000, 17);
    train_to_minimum(host, p, model::Loss::mse, 3000, 1e-2);
    const LlcResult r = mlp_llc<double>(ctx(), p, model::Loss::mse, known_value_options(2));
    const double expected = theory::reduced_rank_llc(c.M, c.H, c.N, c.r);
    std::printf("reduced rank M H N r = %d %d %d %d: llc %.3f +- %.3f (SE), theory %.3f, r_hat %.3f, acceptance %.3f\n",
                int(c.M), int(c.H), int(c.N), int(c.r), r.llc_mean, r.llc_stderr, expected, r.r_hat, r.mala_acceptance);
    EXPECT_NEAR(r.llc_mean, expected, 0.2 * expected)
        << "M H N r = " << c.M << " " << c.H << " " << c.N << " " << c.r << ", SE " << r.llc_stderr;
    EXPECT_TRUE(r.diverged.empty());
  }
}

TEST_P(LlcMlp, DeepLinearNetworksMatchAoyagi) {
  // Deep linear networks without bias, teacher of rank r, against Aoyagi's formula (itself tested
  // against the reduced-rank special case in test_llc_theory.cpp).
  struct Case {
    std::vector<index_t> widths;
    index_t r;
  };
  for (const Case& c : {Case{{5, 5, 5, 5}, 2}, Case{{3, 4, 4, 3}, 1}}) {
    const index_t M = c.widths.front(), N = c.widths.back();
    Problem<double> p = reduced_rank(M, 1, N, c.r, 4000, 23);  // data of a rank-r teacher
    p.spec.widths = c.widths;
    p.spec.bias.assign(c.widths.size() - 1, false);
    p.spec.activations.assign(c.widths.size() - 2, model::ActivationSpec{model::Activation::identity});
    train_to_minimum(host, p, model::Loss::mse, 4000, 1e-2);
    const LlcResult r = mlp_llc<double>(ctx(), p, model::Loss::mse, known_value_options(4));
    const double expected = theory::deep_linear_llc(c.widths, c.r);
    std::printf("deep linear %s r = %d: llc %.3f +- %.3f (SE), theory %.3f, r_hat %.3f, acceptance %.3f\n",
                p.spec.arch_string().c_str(), int(c.r), r.llc_mean, r.llc_stderr, expected, r.r_hat, r.mala_acceptance);
    EXPECT_NEAR(r.llc_mean, expected, 0.2 * expected) << p.spec.arch_string() << " r = " << c.r << ", SE " << r.llc_stderr;
    EXPECT_TRUE(r.diverged.empty());
  }
}

// A small ReLU classifier / regressor and its data.
template <class T>
Problem<T> relu_problem(bool classify, index_t n, unsigned seed) {
  Problem<T> p;
  p.n = n;
  p.spec = MlpSpec::from_arch(classify ? "4-12-3" : "4-12-2");
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> nd;
  p.x.resize(std::size_t(n * 4));
  for (auto& v : p.x) v = static_cast<T>(nd(gen));
  p.y.resize(std::size_t(n * (classify ? 1 : 2)));
  for (index_t i = 0; i < n; ++i) {
    const double a = double(p.x[std::size_t(i * 4)]), b = double(p.x[std::size_t(i * 4 + 1)]);
    if (classify) {
      p.y[std::size_t(i)] = static_cast<T>(a + b > 0.5 ? 2 : (a > 0 ? 1 : 0));
    } else {
      p.y[std::size_t(i * 2)] = static_cast<T>(std::max(a, 0.0) + 0.1 * nd(gen));
      p.y[std::size_t(i * 2 + 1)] = static_cast<T>(a - b + 0.1 * nd(gen));
    }
  }
  model::InitOptions io;
  io.seed = seed;
  p.params = model::init_params<T>(Context::host(), p.spec, io).to_vector(Context::host());
  return p;
}

// The generic sampler with a callback that runs one MlpEngine per chain on its own minibatch:
// what the batched MLP path must reproduce (to rounding: the batched engine's GEMMs have other
// shapes).
template <class T>
BatchedLossGrad<T> per_chain_engine(const Problem<T>& p, model::Loss loss, bool classify) {
  return [&p, loss, classify](const LossGradRequest<T>& req) {
    const Context host = Context::host(1);
    model::MlpEngine<T> engine(host, p.spec);
    const index_t P = p.spec.num_params(), d = p.spec.inputs(), O = p.spec.outputs();
    const bool full = req.batch.cols == 0;
    const index_t m = full ? p.n : req.batch.cols;
    std::vector<T> x(std::size_t(m * d)), y(std::size_t(m * (classify ? 1 : O)));
    std::vector<std::int64_t> labels(static_cast<std::size_t>(m));
    for (index_t c = 0; c < req.params.rows; ++c) {
      for (index_t j = 0; j < m; ++j) {
        const index_t i = full ? j : req.batch.data[c * req.batch.ld + j];
        std::copy_n(p.x.begin() + i * d, d, x.begin() + j * d);
        if (classify)
          labels[std::size_t(j)] = static_cast<std::int64_t>(p.y[std::size_t(i)]);
        else
          std::copy_n(p.y.begin() + i * O, O, y.begin() + j * O);
      }
      const T* w = req.params.data + c * req.params.ld;
      auto out = engine.forward(w, MatrixView<const T>{x.data(), m, d, d});
      std::vector<T> g(std::size_t(m * O));
      model::Targets<T> t;
      if (classify)
        t.labels = VectorView<const std::int64_t>{labels.data(), m};
      else
        t.values = MatrixView<const T>{y.data(), m, O, O};
      const model::LossValue lv = model::loss_and_grad<T>(host, loss, out, t, MatrixView<T>{g.data(), m, O, O});
      engine.backprop(w, MatrixView<const T>{g.data(), m, O, O});
      engine.param_grads(MatrixView<T>{req.grads.data + c * req.grads.ld, 1, P, P});
      req.losses.data[c * req.losses.stride] = static_cast<T>(lv.loss);
    }
  };
}

template <class T>
LlcResult mlp_llc_labels(const Context& ctx, const Problem<T>& p, const LlcOptions& o) {
  Array<T> params = Array<T>::from_host(ctx, {p.spec.num_params()}, p.params);
  Array<T> x = Array<T>::from_host(ctx, {p.n, p.spec.inputs()}, p.x);
  std::vector<std::int64_t> l(p.y.size());
  for (std::size_t i = 0; i < l.size(); ++i) l[i] = static_cast<std::int64_t>(p.y[i]);
  Array<std::int64_t> labels = Array<std::int64_t>::from_host(ctx, {p.n}, l);
  model::Targets<T> t;
  t.labels = labels.vector();
  return estimate_llc<T>(ctx, p.spec, params.data(), x.matrix(), t, model::Loss::xent, o);
}

TEST_P(LlcMlp, TheBatchedPathEqualsOneEnginePerChain) {
  for (const bool classify : {false, true})
    for (const index_t batch : {index_t{0}, index_t{16}})
      for (const std::size_t budget : {std::size_t{0}, std::size_t{4096}}) {
        // budget 4096 bytes: a few rows per tile and one chain per pass, so the row tiles and
        // chain groups are exercised
        const Problem<double> p = relu_problem<double>(classify, 50, 5);
        LlcOptions o;
        o.chains = 5;
        o.burnin = 3;
        o.draws = 12;
        o.batch = batch;
        o.epsilon = 1e-4;
        o.gamma = 10;
        o.seed = 8;
        Context c = new_context();
        if (budget) c.set_workspace_budget(budget);
        const LlcResult got = classify ? mlp_llc_labels<double>(c, p, o) : mlp_llc<double>(c, p, model::Loss::mse, o);
        const LlcResult want = estimate_llc<double>(host, per_chain_engine<double>(p, classify ? model::Loss::xent : model::Loss::mse, classify),
                                                    VectorView<const double>{p.params.data(), p.spec.num_params()}, p.n, o);
        SCOPED_TRACE(testing::Message() << "classify " << classify << " batch " << batch << " budget " << budget);
        EXPECT_NEAR(got.init_loss, want.init_loss, 1e-12 * want.init_loss);
        expect_traces_near(got, want);
        EXPECT_NEAR(got.mala_acceptance, want.mala_acceptance, 1e-8);
      }
}

TEST_P(LlcMlp, AChainDoesNotDependOnTheChainCount) {
  // Host: bit-identical (each chain's products have the same shapes whatever C is, and a chain
  // runs single-threaded here); cuda: to rounding.
  const Problem<float> p = relu_problem<float>(true, 200, 9);
  LlcOptions o;
  o.burnin = 5;
  o.draws = 20;
  o.batch = 32;
  o.epsilon = 1e-4;
  o.seed = 21;
  Context c = backend() == Backend::host ? Context::host(1) : ctx();
  o.chains = 1;
  const LlcResult one = mlp_llc_labels<float>(c, p, o);
  o.chains = 16;
  const LlcResult many = mlp_llc_labels<float>(c, p, o);
  for (index_t d = 0; d < o.draws; ++d) {
    if (backend() == Backend::host) {
      EXPECT_EQ(one.loss_trace[std::size_t(d)], many.loss_trace[std::size_t(d)]) << d;
      EXPECT_EQ(one.distance_trace[std::size_t(d)], many.distance_trace[std::size_t(d)]) << d;
    } else {
      EXPECT_NEAR(one.loss_trace[std::size_t(d)], many.loss_trace[std::size_t(d)], 1e-5 * many.loss_trace[std::size_t(d)]);
    }
  }
}

TEST_P(LlcMlp, ReluRescalingLeavesTheEstimateWithinItsErrorBar) {
  // (W1, b1) α and W2 / α compute the same function; the LLC is a property of the function's
  // neighbourhood, so λ̂ may move only by sampling error.
  Problem<double> p = relu_problem<double>(false, 2000, 13);
  train_to_minimum(host, p, model::Loss::mse, 3000, 1e-2);
  LlcOptions o;
  o.chains = 16;
  o.burnin = 1000;
  o.draws = 1000;
  o.batch = 200;
  o.epsilon = 2e-5;
  o.gamma = 100;
  o.seed = 6;
  const LlcResult base = mlp_llc<double>(ctx(), p, model::Loss::mse, o);
  Problem<double> q = p;
  const double alpha = 1.5;
  const index_t w2 = p.spec.weight_offset(1);
  for (index_t i = 0; i < w2; ++i) q.params[std::size_t(i)] *= alpha;  // W1 and b1
  for (index_t i = w2; i < w2 + p.spec.fan_in(1) * p.spec.fan_out(1); ++i) q.params[std::size_t(i)] /= alpha;
  const LlcResult scaled = mlp_llc<double>(ctx(), q, model::Loss::mse, o);
  EXPECT_NEAR(scaled.init_loss, base.init_loss, 1e-12 * base.init_loss) << "the same function";
  // the difference of two independent estimates, against 4 of its standard errors
  EXPECT_NEAR(scaled.llc_mean, base.llc_mean, 4 * std::hypot(base.llc_stderr, scaled.llc_stderr))
      << base.llc_mean << " ± " << base.llc_stderr << " vs " << scaled.llc_mean << " ± " << scaled.llc_stderr;
}

TEST_P(LlcMlp, TracesAgreeAcrossBackendsAndThreadCounts) {
  // This case's backend against the single-threaded host run: rounding only (cuBLAS's order,
  // another summation order in the update's per-chain sums), over a short run where rounding
  // cannot grow into a different trajectory.
  const Problem<double> p = relu_problem<double>(true, 120, 4);
  LlcOptions o;
  o.chains = 6;
  o.burnin = 4;
  o.draws = 16;
  o.batch = 24;
  o.epsilon = 1e-4;
  o.seed = 12;
  o.sampler = Sampler::rmsprop_sgld;
  const LlcResult got = mlp_llc_labels<double>(ctx(), p, o);
  const LlcResult want = mlp_llc_labels<double>(Context::host(1), p, o);
  expect_traces_near(got, want);
  EXPECT_NEAR(got.mala_acceptance, want.mala_acceptance, 1e-9);
}

TEST_P(LlcMlp, RejectsMismatchedData) {
  const Problem<double> p = relu_problem<double>(false, 20, 1);
  Array<double> params = Array<double>::from_host(ctx(), {p.spec.num_params()}, p.params);
  Array<double> x = Array<double>::from_host(ctx(), {p.n, 4}, p.x);
  Array<double> y = Array<double>::from_host(ctx(), {p.n, 2}, p.y);
  Array<double> x3 = Array<double>::zeros(ctx(), {p.n, 3});
  model::Targets<double> t;
  t.values = y.matrix();
  LlcOptions o;
  EXPECT_THROW(estimate_llc<double>(ctx(), p.spec, params.data(), x3.matrix(), t, model::Loss::mse, o), ShapeMismatch);
  EXPECT_THROW(estimate_llc<double>(ctx(), p.spec, params.data(), x.matrix(), t, model::Loss::xent, o), InvalidArgument);
  MatrixView<const double> few{x.data(), 10, 4, 4, ctx().backend(), ctx().device()};
  EXPECT_THROW(estimate_llc<double>(ctx(), p.spec, params.data(), few, t, model::Loss::mse, o), ShapeMismatch);
  MatrixView<const double> none{x.data(), 0, 4, 4, ctx().backend(), ctx().device()};
  model::Targets<double> t0;
  t0.values = MatrixView<const double>{y.data(), 0, 2, 2, ctx().backend(), ctx().device()};
  EXPECT_THROW(estimate_llc<double>(ctx(), p.spec, params.data(), none, t0, model::Loss::mse, o), InvalidArgument);
}

DYNASCOPE_BACKEND_TESTS(LlcMlp);

}  // namespace
}  // namespace dynascope::sgld
