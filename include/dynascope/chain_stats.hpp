#pragma once
// Convergence diagnostics of MCMC traces: the rank-normalised split R-hat and the effective sample
// size of Vehtari, Gelman, Simpson, Carpenter and Bürkner, "Rank-normalization, folding, and
// localization: an improved R-hat for assessing convergence of MCMC" (Bayesian Analysis, 2021),
// computed as ArviZ 0.23 does (rhat(method="rank"), ess(method="bulk"), ess(method="mean")): the
// tests (tests/sgld/test_chain_stats.cpp) find them equal to ArviZ's to a few 1e-15, relative.
//
// A trace is [chains, draws], row-major: trace[c * draws + d] is draw d of chain c. Every chain is
// split into its first and last floor(draws / 2) draws (the middle draw of an odd count is dropped),
// so one chain already gives two halves to compare. Rank normalisation replaces each value by
// Φ⁻¹((rank - 3/8) / (S + 1/4)), its rank among all S split draws (ties get their average rank),
// which makes both statistics well defined for heavy tails and invariant under monotone maps.
//
// Shared contract: chains >= 1 and draws >= 4 (each half needs two draws for a variance), a
// non-null trace, every value finite (drop diverged chains first); otherwise InvalidArgument
// naming the argument. Cost: O(S log S) for the ranks and O(chains * draws * log draws) for the
// autocovariances (FFT), no allocation beyond O(chains * draws).
#include <vector>

#include "dynascope/export.h"
#include "dynascope/types.hpp"

namespace dynascope::stats {

// max(bulk R-hat, tail R-hat): the split R-hat of the rank-normalised trace and of the rank-
// normalised folded trace |x - median| (median over the split draws). Near 1 for chains that agree;
// 1.01 is the usual threshold. With n draws per half and m = 2 * chains halves,
//   R = sqrt((B / W + n - 1) / n),  B = n * var(half means), W = mean(var within halves)
// (both variances with n - 1 / m - 1 denominators). Constant trace (every value equal): NaN, as
// in ArviZ, since there is nothing to compare. Every half constant but halves not all equal (chains
// stuck at different values): +inf. A tail R-hat that is NaN (the folded trace constant, e.g. a
// trace of two values symmetric about the median) is ignored and the bulk R-hat returned. One chain
// is allowed (ArviZ returns NaN for it; Stan's posterior package computes it the same way).
DYNASCOPE_API double split_rhat(const double* trace, index_t chains, index_t draws);

// Bulk effective sample size: the split-chain ESS of the rank-normalised trace, with the
// autocorrelations combined across halves as in Stan (ρ_t = 1 - (W - mean_c acov_c(t)) / var⁺) and
// summed by Geyer's initial positive sequence, then made monotone (Geyer's initial monotone
// sequence). ESS = S / τ with τ = -1 + 2 Σ ρ_t, clipped below at 1 / log10(S), so antithetic
// chains can give ESS > S. Constant trace: S (the number of split draws), as in ArviZ.
DYNASCOPE_API double bulk_ess(const double* trace, index_t chains, index_t draws);

// The same ESS on the split trace without rank normalisation (ArviZ's ess(method="mean"), Stan's
// ess_basic): the effective sample size for estimating the mean, meaningful when the variance is
// finite. Constant trace: S.
DYNASCOPE_API double basic_ess(const double* trace, index_t chains, index_t draws);

// Φ⁻¹(p), the standard normal quantile, to a few ulp for p in (0, 1): -inf at 0, +inf at 1;
// InvalidArgument for p outside [0, 1] or NaN.
DYNASCOPE_API double normal_quantile(double p);

// Biased autocovariance of x[0..n): acov[t] = (1/n) Σ_{i < n - t} (x_i - x̄)(x_{i+t} - x̄) for
// t = 0..n-1, by a zero-padded FFT (O(n log n)). n >= 1; x finite.
DYNASCOPE_API std::vector<double> autocovariance(const double* x, index_t n);

}  // namespace dynascope::stats
