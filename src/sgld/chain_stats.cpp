// Split R-hat and effective sample size (include/dynascope/chain_stats.hpp). Every step follows
// ArviZ 0.23's diagnostics.py (_split_chains, _z_scale, _rhat, _rhat_rank, _ess) so that the
// numbers agree with it to rounding; the comments say where a choice is ArviZ's rather than ours.
#include "dynascope/chain_stats.hpp"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdio>
#include <limits>
#include <numbers>
#include <numeric>
#include <string>
#include <vector>

#include "dynascope/error.hpp"

namespace dynascope::stats {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

void check_trace(const char* who, const double* trace, index_t chains, index_t draws) {
  const std::string w = who;
  if (chains < 1) throw InvalidArgument(w + ": chains must be >= 1, got " + std::to_string(chains));
  if (draws < 4)
    throw InvalidArgument(w + ": draws must be >= 4 (each chain is split into two halves of at least two draws), got " +
                          std::to_string(draws));
  if (trace == nullptr) throw InvalidArgument(w + ": trace is null");
  for (index_t c = 0; c < chains; ++c)
    for (index_t d = 0; d < draws; ++d)
      if (!std::isfinite(trace[c * draws + d]))
        throw InvalidArgument(w + ": trace holds a non-finite value at chain " + std::to_string(c) + ", draw " +
                              std::to_string(d) + "; pass only the chains that did not diverge");
}

// Constant over the split draws (the middle draw of an odd count does not take part).
bool constant(const std::vector<double>& x) {
  return std::all_of(x.begin(), x.end(), [&](double v) { return v == x[0]; });
}

// The halves [2 * chains, n], n = floor(draws / 2): first halves of chains 0..C-1, then the last
// halves (ArviZ stacks them in this order; the order only changes summation rounding).
std::vector<double> split_chains(const double* trace, index_t chains, index_t draws) {
  const index_t n = draws / 2;
  std::vector<double> out(static_cast<std::size_t>(2 * chains * n));
  for (index_t c = 0; c < chains; ++c) {
    const double* row = trace + c * draws;
    std::copy(row, row + n, out.begin() + c * n);
    std::copy(row + draws - n, row + draws, out.begin() + (chains + c) * n);
  }
  return out;
}

// Φ⁻¹(q) for q in (0, 0.5]: Acklam's rational approximation (relative error < 1.2e-9), then
// Halley steps on Φ(z) - q with Φ from erfc (accurate to an ulp in the lower tail) or erf.
double lower_quantile(double q) {
  static constexpr double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                 1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static constexpr double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                 6.680131188771972e+01,  -1.328068155288572e+01};
  static constexpr double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                 -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static constexpr double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                                 3.754408661907416e+00};
  double z;
  if (q < 0.02425) {
    const double t = std::sqrt(-2.0 * std::log(q));
    z = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) /
        ((((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1.0);
  } else {
    const double r = q - 0.5, s = r * r;
    z = (((((a[0] * s + a[1]) * s + a[2]) * s + a[3]) * s + a[4]) * s + a[5]) * r /
        (((((b[0] * s + b[1]) * s + b[2]) * s + b[3]) * s + b[4]) * s + 1.0);
  }
  // exp(z²/2) overflows below q ~ 1e-300; the approximation alone is then as good as it gets.
  if (q < 1e-300) return z;
  for (int it = 0; it < 3; ++it) {
    // Φ(z) - q without cancellation: near the centre through erf and the exact q - 1/2 (Sterbenz),
    // whose absolute error ~1e-17 keeps z's relative error small as z -> 0.
    const double e = q >= 0.25 ? 0.5 * std::erf(z / std::numbers::sqrt2) - (q - 0.5)
                               : 0.5 * std::erfc(-z / std::numbers::sqrt2) - q;
    const double u = e * std::sqrt(2.0 * std::numbers::pi) * std::exp(0.5 * z * z);
    const double step = u / (1.0 + 0.5 * z * u);
    z -= step;
    if (std::abs(step) <= 1e-17 * std::abs(z)) break;
  }
  return z;
}

// Blom's rank normalisation over all values: Φ⁻¹((rank - 3/8) / (S + 1/4)), ties at their average
// rank (scipy.stats.rankdata(method="average"), as ArviZ's _z_scale). The upper half uses the
// mirrored rank, so that ranks r and S + 1 - r map to exactly opposite values.
std::vector<double> rank_normalize(const std::vector<double>& x) {
  const std::size_t s = x.size();
  std::vector<std::size_t> order(s);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t i, std::size_t j) { return x[i] < x[j]; });
  std::vector<double> z(s);
  const double denom = static_cast<double>(s) + 0.25;
  for (std::size_t lo = 0; lo < s;) {
    std::size_t hi = lo + 1;
    while (hi < s && x[order[hi]] == x[order[lo]]) ++hi;
    // 1-based ranks lo+1 .. hi share their mean (lo + 1 + hi) / 2.
    const double rank = 0.5 * static_cast<double>(lo + 1 + hi);
    const double mirrored = static_cast<double>(s) + 1.0 - rank;
    const double value = rank <= mirrored ? lower_quantile((rank - 0.375) / denom)
                                          : -lower_quantile((mirrored - 0.375) / denom);
    for (std::size_t k = lo; k < hi; ++k) z[order[k]] = value;
    lo = hi;
  }
  return z;
}

double mean(const double* x, index_t n) {
  double s = 0;
  for (index_t i = 0; i < n; ++i) s += x[i];
  return s / static_cast<double>(n);
}

// Sample variance with denominator n - 1 (n >= 2).
double var1(const double* x, index_t n) {
  const double m = mean(x, n);
  double s = 0;
  for (index_t i = 0; i < n; ++i) s += (x[i] - m) * (x[i] - m);
  return s / static_cast<double>(n - 1);
}

// Split R-hat of halves [m, n] (ArviZ's _rhat): sqrt((B / W + n - 1) / n).
double rhat_of_halves(const std::vector<double>& h, index_t m, index_t n) {
  std::vector<double> means(static_cast<std::size_t>(m));
  double within = 0;
  for (index_t c = 0; c < m; ++c) {
    means[c] = mean(h.data() + c * n, n);
    within += var1(h.data() + c * n, n);
  }
  within /= static_cast<double>(m);
  const double between = static_cast<double>(n) * var1(means.data(), m);
  if (within == 0) return between > 0 ? kInf : kNaN;
  return std::sqrt((between / within + static_cast<double>(n) - 1.0) / static_cast<double>(n));
}

// Effective sample size of halves [m, n] (ArviZ's _ess, Stan's ess): autocorrelations pooled over
// the halves, Geyer's initial positive then initial monotone sequence.
double ess_of_halves(const std::vector<double>& h, index_t m, index_t n) {
  const double size = static_cast<double>(m * n);
  std::vector<double> mean_acov(static_cast<std::size_t>(n), 0.0), means(static_cast<std::size_t>(m));
  for (index_t c = 0; c < m; ++c) {
    const std::vector<double> acov = autocovariance(h.data() + c * n, n);
    for (index_t t = 0; t < n; ++t) mean_acov[t] += acov[t];
    means[c] = mean(h.data() + c * n, n);
  }
  for (double& v : mean_acov) v /= static_cast<double>(m);
  const double nd = static_cast<double>(n);
  const double mean_var = mean_acov[0] * nd / (nd - 1.0);  // W: the mean within-half variance
  const double var_plus = mean_var * (nd - 1.0) / nd + var1(means.data(), m);
  auto rho_at = [&](index_t t) { return 1.0 - (mean_var - mean_acov[t]) / var_plus; };

  std::vector<double> rho(static_cast<std::size_t>(n), 0.0);
  double rho_even = 1.0, rho_odd = rho_at(1);
  rho[0] = rho_even;
  rho[1] = rho_odd;
  // Initial positive sequence: sum pairs (ρ_{2k}, ρ_{2k+1}) while the pair sum stays positive.
  index_t t = 1;
  while (t < n - 3 && rho_even + rho_odd > 0.0) {
    rho_even = rho_at(t + 1);
    rho_odd = rho_at(t + 2);
    if (rho_even + rho_odd >= 0) {
      rho[t + 1] = rho_even;
      rho[t + 2] = rho_odd;
    }
    t += 2;
  }
  const index_t max_t = t - 2;
  // ArviZ (after Stan) keeps the last even lag when it is positive, even past the cut.
  if (rho_even > 0) rho[max_t + 1] = rho_even;
  // Initial monotone sequence: pair sums may not increase.
  for (t = 1; t <= max_t - 2; t += 2) {
    if (rho[t + 1] + rho[t + 2] > rho[t - 1] + rho[t]) {
      rho[t + 1] = 0.5 * (rho[t - 1] + rho[t]);
      rho[t + 2] = rho[t + 1];
    }
  }
  double tau = -1.0 + rho[max_t + 1];
  for (index_t i = 0; i <= max_t; ++i) tau += 2.0 * rho[i];
  tau = std::max(tau, 1.0 / std::log10(size));
  for (double r : rho)
    if (std::isnan(r)) return kNaN;
  return size / tau;
}

}  // namespace

double normal_quantile(double p) {
  if (!(p >= 0.0 && p <= 1.0))
  {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", p);
    throw InvalidArgument(std::string("normal_quantile: p must be in [0, 1], got ") + buf);
  }
  if (p == 0.0) return -kInf;
  if (p == 1.0) return kInf;
  // 1 - p is exact for p >= 0.5 (Sterbenz), so the upper half loses nothing by mirroring.
  return p <= 0.5 ? lower_quantile(p) : -lower_quantile(1.0 - p);
}

std::vector<double> autocovariance(const double* x, index_t n) {
  if (n < 1) throw InvalidArgument("autocovariance: n must be >= 1, got " + std::to_string(n));
  if (x == nullptr) throw InvalidArgument("autocovariance: x is null");
  const double mu = mean(x, n);
  // Zero padding to m >= 2n makes the circular correlation the linear one for lags < n.
  std::size_t m = 1;
  while (m < static_cast<std::size_t>(2 * n)) m <<= 1;
  std::vector<std::complex<double>> a(m);
  for (index_t i = 0; i < n; ++i) a[static_cast<std::size_t>(i)] = x[i] - mu;
  // Twiddles from cos/sin of each angle (no recurrence, so no drift with m).
  std::vector<std::complex<double>> w(m / 2);
  for (std::size_t k = 0; k < m / 2; ++k) {
    const double angle = -2.0 * std::numbers::pi * static_cast<double>(k) / static_cast<double>(m);
    w[k] = {std::cos(angle), std::sin(angle)};
  }
  // Iterative radix-2 FFT (forward; with conjugated twiddles when inverse).
  auto fft = [&](bool inverse) {
    for (std::size_t i = 1, j = 0; i < m; ++i) {
      std::size_t bit = m >> 1;
      for (; j & bit; bit >>= 1) j ^= bit;
      j ^= bit;
      if (i < j) std::swap(a[i], a[j]);
    }
    for (std::size_t len = 2; len <= m; len <<= 1) {
      const std::size_t stride = m / len;
      for (std::size_t i = 0; i < m; i += len)
        for (std::size_t k = 0; k < len / 2; ++k) {
          const std::complex<double> tw = inverse ? std::conj(w[k * stride]) : w[k * stride];
          const std::complex<double> u = a[i + k], v = a[i + k + len / 2] * tw;
          a[i + k] = u + v;
          a[i + k + len / 2] = u - v;
        }
    }
  };
  fft(false);
  for (auto& v : a) v = std::norm(v);  // |X_k|²: the transform of the circular autocorrelation
  fft(true);
  std::vector<double> acov(static_cast<std::size_t>(n));
  const double scale = 1.0 / (static_cast<double>(m) * static_cast<double>(n));
  for (index_t t = 0; t < n; ++t) acov[t] = a[static_cast<std::size_t>(t)].real() * scale;
  return acov;
}

double split_rhat(const double* trace, index_t chains, index_t draws) {
  check_trace("split_rhat", trace, chains, draws);
  const index_t m = 2 * chains, n = draws / 2;
  std::vector<double> halves = split_chains(trace, chains, draws);
  if (constant(halves)) return kNaN;
  const double bulk = rhat_of_halves(rank_normalize(halves), m, n);
  // Folded about the median of the split draws (numpy's median: mean of the middle two when even).
  std::vector<double> sorted = halves;
  const auto middle = sorted.begin() + static_cast<std::ptrdiff_t>(sorted.size() / 2);
  std::nth_element(sorted.begin(), middle, sorted.end());
  double median = *middle;
  if (sorted.size() % 2 == 0) median = 0.5 * (*std::max_element(sorted.begin(), middle) + median);
  for (double& v : halves) v = std::abs(v - median);
  const double tail = rhat_of_halves(rank_normalize(halves), m, n);
  // Python's max(bulk, tail): a NaN tail (the folded trace constant) leaves the bulk value.
  return tail > bulk ? tail : bulk;
}

double bulk_ess(const double* trace, index_t chains, index_t draws) {
  check_trace("bulk_ess", trace, chains, draws);
  const index_t m = 2 * chains, n = draws / 2;
  std::vector<double> halves = split_chains(trace, chains, draws);
  if (constant(halves)) return static_cast<double>(m * n);
  return ess_of_halves(rank_normalize(halves), m, n);
}

double basic_ess(const double* trace, index_t chains, index_t draws) {
  check_trace("basic_ess", trace, chains, draws);
  const index_t m = 2 * chains, n = draws / 2;
  // ArviZ calls a trace constant when its range is below 1e-15 in absolute terms; here only when
  // every value is equal, so that small-scale traces are measured rather than declared constant.
  std::vector<double> halves = split_chains(trace, chains, draws);
  if (constant(halves)) return static_cast<double>(m * n);
  return ess_of_halves(halves, m, n);
}

}  // namespace dynascope::stats
