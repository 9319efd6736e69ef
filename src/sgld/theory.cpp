// Closed-form learning coefficients (include/dynascope/llc_theory.hpp).
#include "dynascope/llc_theory.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "dynascope/error.hpp"

namespace dynascope::sgld::theory {

double reduced_rank_llc(index_t M, index_t H, index_t N, index_t r) {
  const auto need_positive = [](const char* name, index_t v) {
    if (v < 1) throw InvalidArgument(std::string("reduced_rank_llc: ") + name + " must be >= 1, got " + std::to_string(v));
  };
  need_positive("M (input width)", M);
  need_positive("H (hidden width)", H);
  need_positive("N (output width)", N);
  if (r < 0 || r > std::min({M, H, N}))
    throw InvalidArgument("reduced_rank_llc: the true rank r must be in [0, min(M, H, N)] = [0, " +
                          std::to_string(std::min({M, H, N})) + "], got " + std::to_string(r));
  // Aoyagi & Watanabe (2005), main theorem; the three strict cases exclude one another (any two
  // of them added give H < r, M < r or N < r).
  if (M + H < N + r) return static_cast<double>(H * M - H * r + N * r) / 2.0;
  if (N + H < M + r) return static_cast<double>(H * N - H * r + M * r) / 2.0;
  if (M + N < H + r) return static_cast<double>(M * N) / 2.0;
  const index_t odd = (M + H + N + r) % 2;
  return static_cast<double>(2 * (H + r) * (M + N) - (M - N) * (M - N) - (H + r) * (H + r) + odd) / 8.0;
}

double deep_linear_llc(const std::vector<index_t>& widths, index_t r) {
  if (widths.size() < 2)
    throw InvalidArgument("deep_linear_llc: widths must list at least the input and output widths, got " +
                          std::to_string(widths.size()));
  constexpr index_t kMaxWidth = index_t{1} << 24;  // keeps the integer numerator below 2^63
  for (std::size_t k = 0; k < widths.size(); ++k)
    if (widths[k] < 1 || widths[k] > kMaxWidth)
      throw InvalidArgument("deep_linear_llc: widths[" + std::to_string(k) + "] must be in [1, 2^24], got " +
                            std::to_string(widths[k]));
  const index_t min_width = *std::min_element(widths.begin(), widths.end());
  if (r < 0 || r > min_width)
    throw InvalidArgument("deep_linear_llc: the true rank r must be in [0, min(widths)] = [0, " +
                          std::to_string(min_width) + "], got " + std::to_string(r));

  // Aoyagi (2024), main theorem. Condition 1 (max over Σ < min over the rest) makes Σ the ℓ + 1
  // smallest Δ, never splitting a tie, so it is a prefix of the sorted Δ; the whole list meets
  // conditions 1 and 3 vacuously, and the theorem guarantees a prefix that also meets condition 2.
  // The smallest such prefix is taken (tests/sgld/test_llc_theory.cpp checks by enumeration that
  // every subset meeting the conditions gives the same λ).
  std::vector<index_t> delta(widths.size());
  for (std::size_t k = 0; k < widths.size(); ++k) delta[k] = widths[k] - r;
  std::sort(delta.begin(), delta.end());
  const std::size_t count = delta.size();
  std::size_t size = 0;  // |Σ| = ℓ + 1
  index_t sum = 0;
  for (std::size_t k = 2; k <= count && size == 0; ++k) {
    const index_t ell = static_cast<index_t>(k) - 1;
    sum = 0;
    for (std::size_t i = 0; i < k; ++i) sum += delta[i];
    const index_t max_in = delta[k - 1];
    const bool rest = k < count;
    const bool gap = !rest || max_in < delta[k];            // condition 1
    const bool enough = sum >= ell * max_in;                 // condition 2
    const bool below = !rest || sum < ell * delta[k];        // condition 3
    if (gap && enough && below) size = k;
  }
  if (size == 0)  // cannot happen by the theorem; a bug here must not pass for a number
    throw InvalidArgument("deep_linear_llc: no index set meets Aoyagi's conditions for these widths");

  // 4ℓλ = 2ℓ [r (H_0 + H_L) - r²] + a (ℓ - a) - (ℓ - 1) S² + 4ℓ · ½ Σ_{i<j} Δ_i Δ_j, all integers.
  const index_t ell = static_cast<index_t>(size) - 1;
  const index_t S = sum;
  const index_t Mceil = (S + ell - 1) / ell;  // ceil(S / ℓ), S >= 0
  const index_t a = S - (Mceil - 1) * ell;
  index_t pairs = 0;
  for (std::size_t i = 0; i < size; ++i)
    for (std::size_t j = i + 1; j < size; ++j) pairs += delta[i] * delta[j];
  const index_t ends = widths.front() + widths.back();
  const index_t numerator = 2 * ell * (r * ends - r * r) + a * (ell - a) - (ell - 1) * S * S + 2 * ell * pairs;
  return static_cast<double>(numerator) / static_cast<double>(4 * ell);
}

double quadratic_llc_expectation(const std::vector<double>& h, double nbeta, double gamma, double epsilon) {
  const std::string who = "quadratic_llc_expectation: ";
  // %g, not std::to_string's %f, which prints a step of 1e-7 as 0.000000.
  const auto num = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return std::string(buf);
  };
  if (h.empty()) throw InvalidArgument(who + "h (the curvatures h_i) must not be empty");
  for (std::size_t i = 0; i < h.size(); ++i)
    if (!(std::isfinite(h[i]) && h[i] >= 0))
      throw InvalidArgument(who + "h[" + std::to_string(i) + "] must be finite and >= 0 (w* a minimum), got " + num(h[i]));
  if (!(std::isfinite(nbeta) && nbeta > 0)) throw InvalidArgument(who + "nbeta must be finite and > 0, got " + num(nbeta));
  if (!(std::isfinite(gamma) && gamma >= 0)) throw InvalidArgument(who + "gamma must be finite and >= 0, got " + num(gamma));
  if (!(std::isfinite(epsilon) && epsilon >= 0))
    throw InvalidArgument(who + "epsilon must be finite and >= 0, got " + num(epsilon));
  double total = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    const double a = nbeta * h[i] + gamma;
    const double damping = 1.0 - epsilon * a / 4.0;
    // |1 - εa/2| < 1, the AR(1) coordinate's stability, is 0 < εa < 4.
    if (damping <= 0)
      throw InvalidArgument(who + "epsilon = " + num(epsilon) + " is unstable for coordinate " + std::to_string(i) +
                            ": SGLD needs epsilon < 4 / (nbeta h_i + gamma) = " + num(4.0 / a));
    if (h[i] == 0) continue;
    total += 0.5 * (nbeta * h[i] / a) / damping;
  }
  return total;
}

}  // namespace dynascope::sgld::theory
