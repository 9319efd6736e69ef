#pragma once
// Small networks and naive float64 references for the model tests.
#include <cmath>
#include <random>
#include <vector>

#include "dynascope/engine.hpp"
#include "kernels/activation.cuh"

namespace dynascope::test {

inline std::vector<double> random_vector(std::size_t n, unsigned seed, double scale = 1.0) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(gen);
  return v;
}

// f(x; w) for every sample by the textbook loop: the reference the engine is compared with.
inline std::vector<double> naive_forward(const model::MlpSpec& s, const std::vector<double>& w,
                                         const std::vector<double>& x, index_t n) {
  std::vector<double> out;
  for (index_t i = 0; i < n; ++i) {
    std::vector<double> a(x.begin() + i * s.inputs(), x.begin() + (i + 1) * s.inputs());
    for (index_t l = 0; l < s.layers(); ++l) {
      const index_t in = s.fan_in(l), o = s.fan_out(l);
      std::vector<double> z(static_cast<std::size_t>(o), 0.0);
      for (index_t r = 0; r < o; ++r) {
        double acc = 0;
        for (index_t c = 0; c < in; ++c) acc += w[std::size_t(s.weight_offset(l) + r * in + c)] * a[std::size_t(c)];
        z[std::size_t(r)] = s.weight_scale(l) * acc + (s.bias[std::size_t(l)] ? s.bias_scale * w[std::size_t(s.bias_offset(l) + r)] : 0.0);
      }
      if (l + 1 < s.layers()) {
        const auto& act = s.activations[std::size_t(l)];
        const kern::ActParams p{static_cast<kern::Act>(static_cast<int>(act.kind)), act.slope};
        for (auto& v : z) v = kern::act_value(p, v);
      }
      a = z;
    }
    out.insert(out.end(), a.begin(), a.end());
  }
  return out;
}

// The trace of the empirical NTK, sum_i sum_a ||d f_a(x_i) / d w||^2, by central differences of
// naive_forward: the float64 reference for kernels computed by the library.
inline double fd_ntk_trace(const model::MlpSpec& s, const std::vector<double>& w, const std::vector<double>& x,
                           index_t n) {
  const double h = 1e-6;
  double trace = 0;
  for (std::size_t p = 0; p < w.size(); ++p) {
    auto wp = w, wm = w;
    wp[p] += h;
    wm[p] -= h;
    const auto fp = naive_forward(s, wp, x, n), fm = naive_forward(s, wm, x, n);
    for (std::size_t k = 0; k < fp.size(); ++k) {
      const double d = (fp[k] - fm[k]) / (2 * h);
      trace += d * d;
    }
  }
  return trace;
}

}  // namespace dynascope::test
