// The aging fit R_t ~ A t^(-beta) and the Student t quantile its confidence interval needs
// (include/dynascope/response.hpp). The t distribution goes through our own regularized
// incomplete beta function (a continued fraction), so the interval needs no statistics library.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>
#include <string>
#include <vector>

#include "dynascope/chain_stats.hpp"
#include "dynascope/error.hpp"
#include "dynascope/response.hpp"

namespace dynascope::response {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// ln B(a, 1/2). lgamma's absolute error grows with its value, and ln Gamma(a) - ln Gamma(a + 1/2)
// cancels to ~ -0.5 ln a: for large a (large dof) take the difference from Stirling's series
// instead, term by term, where nothing cancels.
double log_beta_half(double a) {
  if (a < 20) return std::lgamma(a) + std::lgamma(0.5) - std::lgamma(a + 0.5);
  // S(z) = ln Gamma(z) - [(z - 1/2) ln z - z + ln(2 pi) / 2]; truncation below 1e-17 for z >= 20.
  const auto stirling_tail = [](double z) {
    const double w = 1.0 / (z * z);
    return (1.0 / 12.0 - w * (1.0 / 360.0 - w * (1.0 / 1260.0 - w * (1.0 / 1680.0 - w / 1188.0)))) / z;
  };
  // ln Gamma(a + 1/2) - ln Gamma(a) = a ln(1 + 1/(2a)) + ln(a) / 2 - 1/2 + S(a + 1/2) - S(a).
  const double diff = (a * std::log1p(0.5 / a) - 0.5) + 0.5 * std::log(a) + (stirling_tail(a + 0.5) - stirling_tail(a));
  return 0.5 * std::log(std::numbers::pi) - diff;
}

// The continued fraction of I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * cf, by the modified Lentz
// method; it converges quickly for x < (a + 1) / (a + b + 2) (Numerical Recipes' betacf).
double beta_continued_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300;
  constexpr double tol = 1e-15;
  constexpr int max_iterations = 1000000;  // ~ sqrt(max(a, b)) are needed; dof 1e9 still converges
  const auto guard = [](double v) { return std::abs(v) < tiny ? tiny : v; };
  const double qab = a + b, qap = a + 1.0, qam = a - 1.0;
  double c = 1.0;
  double d = 1.0 / guard(1.0 - qab * x / qap);
  double h = d;
  for (int m = 1; m <= max_iterations; ++m) {
    const double md = m, m2 = 2.0 * m;
    double aa = md * (b - md) * x / ((qam + m2) * (a + m2));  // even step
    d = 1.0 / guard(1.0 + aa * d);
    c = guard(1.0 + aa / c);
    h *= d * c;
    aa = -(a + md) * (qab + md) * x / ((a + m2) * (qap + m2));  // odd step
    d = 1.0 / guard(1.0 + aa * d);
    c = guard(1.0 + aa / c);
    const double del = d * c;
    h *= del;
    if (std::abs(del - 1.0) < tol) return h;
  }
  throw InvalidArgument("student_t_quantile: the incomplete beta continued fraction did not converge (a = " +
                        num(a) + ", b = " + num(b) + ", x = " + num(x) + ")");
}

// For t >= 0 and T ~ Student t with nu degrees of freedom: ln P(T > t) and P(|T| < t), each
// computed where it has full relative precision (the tail from the far side, the central mass from
// the near side), and the density f(t). With x = nu / (nu + t^2), y = 1 - x = t^2 / (nu + t^2):
//   P(|T| > t) = I_x(nu/2, 1/2),   P(|T| < t) = I_y(1/2, nu/2),
// all from logarithms, so t up to the largest double works without t^2 overflowing.
struct TProbs {
  double log_tail = 0, central = 0, log_density = 0;
};
TProbs t_probs(double t, double nu) {
  const double a = 0.5 * nu, b = 0.5;
  const double log_beta = log_beta_half(a);
  TProbs out;
  if (t == 0) {
    out.log_tail = -std::numbers::ln2;
    out.central = 0;
    out.log_density = -log_beta - 0.5 * std::log(nu);
    return out;
  }
  const double r = t / std::sqrt(nu);  // x = 1 / (1 + r^2)
  double ln_x, ln_y;
  if (r <= 1) {
    const double r2 = r * r;
    ln_x = -std::log1p(r2);
    ln_y = 2.0 * std::log(r) - std::log1p(r2);
  } else {
    const double inv2 = 1.0 / r / r;  // may underflow to 0 for huge r; then ln(1 + r^2) = 2 ln r
    ln_x = -2.0 * std::log(r) - std::log1p(inv2);
    ln_y = -std::log1p(inv2);
  }
  const double x = std::exp(ln_x), y = std::exp(ln_y);
  const double ln_front = a * ln_x + b * ln_y - log_beta;  // ln(x^a y^b / B(a, b))
  out.log_density = (a + 0.5) * ln_x - log_beta - 0.5 * std::log(nu);
  // Numerical Recipes' choice (the side where the fraction converges fast), with one exception:
  // the x side's fraction cancels in 1 + d_m D_{m-1} (d_m ~ -x), losing ~ eps / y of relative
  // precision, which for large dof (y ~ t^2 / dof) is most of it. The y side gives the central
  // mass to full precision and the tail to ~eps / tail, the better of the two while a y <= 4
  // (y < 1e-3: a > 4000). Further out the y side's fraction itself goes unstable (measured
  // against mpmath: 1e-12 at a y = 5, 1e-7 at 10, no digits at 20), so there the x side stays.
  const auto central_from_y = [&] { return std::exp(ln_front) * beta_continued_fraction(b, a, y) / b; };  // I_y(b, a)
  bool use_x = x < (a + 1.0) / (a + b + 2.0);
  double central = 0;
  if (use_x && y < 1e-3 && a * y <= 4.0) {
    central = central_from_y();
    use_x = false;
  } else if (!use_x) {
    central = central_from_y();
  }
  if (use_x) {
    const double cf = beta_continued_fraction(a, b, x);
    out.log_tail = ln_front + std::log(cf) - std::log(a) - std::numbers::ln2;  // ln(I_x(a, b) / 2)
    out.central = 1.0 - std::exp(ln_front) * cf / a;
  } else {
    out.central = central;
    out.log_tail = std::log1p(-central) - std::numbers::ln2;
  }
  return out;
}

}  // namespace

double student_t_quantile(double p, double dof) {
  if (!(p > 0.0 && p < 1.0)) throw InvalidArgument("student_t_quantile: p must be in (0, 1), got " + num(p));
  if (!(dof > 0.0) || !std::isfinite(dof))
    throw InvalidArgument("student_t_quantile: dof must be finite and > 0, got " + num(dof));
  if (p == 0.5) return 0.0;
  if (dof >= 1e6) {
    // x = dof / (dof + t^2) holds t^2 / dof only to eps / y: the incomplete beta route loses
    // ~1e-18 dof of relative precision (1e-11 at dof 1e7). Here the expansion around the normal
    // quantile z (Cornish-Fisher, Abramowitz & Stegun 26.7.5) is exact to rounding: its next term
    // is ~ 1e-2 z^11 / dof^5 < 1e-16 z for every z a double p can reach (|z| < 38.5).
    const double z = stats::normal_quantile(p), z2 = z * z;
    const double g1 = (z2 + 1) * z / 4;
    const double g2 = ((5 * z2 + 16) * z2 + 3) * z / 96;
    const double g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384;
    const double g4 = ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / 92160;
    return z + (g1 + (g2 + (g3 + g4 / dof) / dof) / dof) / dof;
  }
  // By symmetry, solve P(T > t) = q for t > 0 with q = min(p, 1 - p) (1 - p is exact for p >= 1/2).
  const double q = p < 0.5 ? p : 1.0 - p;
  const double sign = p < 0.5 ? -1.0 : 1.0;
  // Far in the tail (q < 1/4) match ln P(T > t) to ln q; nearer the centre match P(|T| < t) to
  // 1 - 2q (exact), which keeps full relative precision in small quantiles. Both are decreasing in
  // u = ln t, and both are solved in u: the tail is ~ t^(-dof), close to linear in u.
  const bool far = q < 0.25;
  const double log_q = std::log(q), central_q = 1.0 - 2.0 * q;
  const auto g = [&](double u, double* slope) {
    const double t = std::exp(u);
    const TProbs pr = t_probs(t, dof);
    if (far) {
      *slope = -std::exp(u + pr.log_density - pr.log_tail);  // d ln P(T > t) / d ln t = -t f / P
      return pr.log_tail - log_q;
    }
    *slope = -2.0 * std::exp(u + pr.log_density);
    return central_q - pr.central;
  };

  // Bracket the root in u: g(lo) > 0 >= g(hi).
  constexpr double u_max = 709.0, u_min = -745.0;  // exp(u) finite and non-zero
  double slope = 0;
  double lo = 0, hi = 0;
  if (g(0.0, &slope) > 0) {
    double step = 1;
    hi = step;
    while (g(hi, &slope) > 0) {
      lo = hi;
      if (hi >= u_max) return sign * kInf;  // the quantile exceeds the largest double (tiny dof)
      step *= 2;
      hi = std::min(hi + step, u_max);
    }
  } else {
    double step = 1;
    lo = -step;
    while (g(lo, &slope) <= 0) {
      hi = lo;
      if (lo <= u_min) return sign * 0.0;  // below the smallest double
      step *= 2;
      lo = std::max(lo - step, u_min);
    }
  }

  // Newton in u, safeguarded by bisection whenever a step leaves the bracket.
  double u = 0.5 * (lo + hi);
  for (int it = 0; it < 400; ++it) {
    const double gu = g(u, &slope);
    if (gu > 0) lo = u;
    else hi = u;
    if (gu == 0) break;
    const double step = gu / slope;
    const double newton = u - step;
    const bool newton_ok = slope < 0 && std::isfinite(step) && newton > lo && newton < hi;
    u = newton_ok ? newton : 0.5 * (lo + hi);
    const double scale = std::max(1.0, std::abs(u));
    if ((newton_ok && std::abs(step) <= 1e-15 * scale) || hi - lo <= 4e-16 * scale) break;
  }
  return sign * std::exp(u);
}

PowerLawFit fit_power_law(std::span<const double> t, std::span<const double> r, double t_min, double t_max,
                          double confidence) {
  if (t.size() != r.size())
    throw InvalidArgument("fit_power_law: t and r must have the same length, got " + std::to_string(t.size()) +
                          " and " + std::to_string(r.size()));
  if (!(confidence > 0.0 && confidence < 1.0))
    throw InvalidArgument("fit_power_law: confidence must be in (0, 1), got " + num(confidence));
  if (std::isnan(t_min) || std::isnan(t_max) || t_min > t_max)
    throw InvalidArgument("fit_power_law: the window [t_min, t_max] = [" + num(t_min) + ", " + num(t_max) +
                          "] is empty or not a range");

  PowerLawFit fit;
  fit.confidence = confidence;
  std::vector<double> lx, ly;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (!(t[i] >= t_min && t[i] <= t_max)) continue;  // outside the window: not part of the fit
    // In the window but without a logarithm (or with an infinite one): skipped, and counted.
    if (!(t[i] > 0 && r[i] > 0 && std::isfinite(t[i]) && std::isfinite(r[i]))) {
      ++fit.skipped;
      continue;
    }
    lx.push_back(std::log(t[i]));
    ly.push_back(std::log(r[i]));
  }
  const auto n = static_cast<index_t>(lx.size());
  if (n < 3)
    throw InvalidArgument("fit_power_law: " + std::to_string(n) + " usable points with t in the window [" +
                          num(t_min) + ", " + num(t_max) + "] (" + std::to_string(fit.skipped) +
                          " skipped for t <= 0 or r <= 0); need at least 3");
  fit.points = n;

  // Centred sums (two passes) of the data shifted by its first point: steps far from 1 cost no
  // precision, and a constant response centres to exact zeros (sum / n of n equal values need not
  // return the value, which would leave rounding noise to be "explained").
  const double nd = static_cast<double>(n);
  const double x0 = lx[0], y0 = ly[0];
  double mx = 0, my = 0;
  for (index_t i = 0; i < n; ++i) {
    lx[i] -= x0;
    ly[i] -= y0;
    mx += lx[i];
    my += ly[i];
  }
  mx /= nd;
  my /= nd;
  double sxx = 0, sxy = 0, syy = 0;
  for (index_t i = 0; i < n; ++i) {
    const double dx = lx[i] - mx, dy = ly[i] - my;
    sxx += dx * dx;
    sxy += dx * dy;
    syy += dy * dy;
  }
  if (!(sxx > 0))
    throw InvalidArgument("fit_power_law: every usable t in the window [" + num(t_min) + ", " + num(t_max) +
                          "] is the same step; the exponent needs at least two distinct steps");
  const double slope = sxy / sxx;
  const double intercept = my - slope * mx;  // of the shifted data: ln r - y0 = intercept + slope (ln t - x0)
  double sse = 0;
  for (index_t i = 0; i < n; ++i) {
    const double e = ly[i] - (intercept + slope * lx[i]);
    sse += e * e;
  }
  fit.beta = -slope;
  fit.amplitude = std::exp(y0 + intercept - slope * x0);
  fit.beta_stderr = std::sqrt(sse / (nd - 2.0) / sxx);
  // R^2 of a constant response (syy = 0, the beta = 0 of a fixed kernel) is 0/0: its fit is exact.
  fit.r_squared = syy > 0 ? 1.0 - sse / syy : 1.0;
  const double half_width = student_t_quantile(0.5 * (1.0 + confidence), nd - 2.0) * fit.beta_stderr;
  fit.beta_low = fit.beta - half_width;
  fit.beta_high = fit.beta + half_width;
  return fit;
}

}  // namespace dynascope::response
