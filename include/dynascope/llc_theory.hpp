#pragma once
// Known values of the (local) learning coefficient λ, the references the SGLD estimator is tested
// against (docs/definitions.md, "Local learning coefficient"). All closed forms; no sampling.
#include <vector>

#include "dynascope/export.h"
#include "dynascope/types.hpp"

namespace dynascope::sgld::theory {

// Reduced-rank regression y = B A x, A: H x M, B: N x H, at a true map of rank r (Aoyagi and
// Watanabe, "Stochastic complexities of reduced rank regression in Bayesian estimation", Neural
// Networks 18, 2005, main theorem):
//   M + H < N + r:  (HM - Hr + Nr) / 2
//   N + H < M + r:  (HN - Hr + Mr) / 2
//   M + N < H + r:  MN / 2
//   otherwise:      [2(H + r)(M + N) - (M - N)² - (H + r)² + (1 if M + H + N + r is odd)] / 8.
// InvalidArgument naming the argument unless M, H, N >= 1 and 0 <= r <= min(M, H, N).
DYNASCOPE_API double reduced_rank_llc(index_t M, index_t H, index_t N, index_t r);

// Deep linear network x -> W_L ... W_1 x with widths[0] = H_0 (input), ..., widths[L] = H_L
// (output), W_k: H_k x H_{k-1}, at a true product of rank r (Aoyagi, "Consideration on the learning
// efficiency of multiple-layered neural networks with linear units", Neural Networks 172, 2024,
// main theorem; preprint doi:10.2139/ssrn.4404877). With Δ_k = H_k - r, take the set Σ of ℓ + 1
// indices holding the smallest Δ such that max_Σ Δ < min_{not Σ} Δ, Σ_Σ Δ >= ℓ max_Σ Δ and
// Σ_Σ Δ < ℓ min_{not Σ} Δ; with S = Σ_Σ Δ, M = ceil(S / ℓ) and a = S - (M - 1) ℓ,
//   λ = [r (H_0 + H_L) - r²] / 2 + a (ℓ - a) / (4ℓ) - ℓ (ℓ - 1) / 4 (S / ℓ)² + ½ Σ_{i<j in Σ} Δ_i Δ_j.
// One layer (two widths) gives the regular H_0 H_1 / 2, one hidden layer reduced_rank_llc, and
// r = min(widths) gives r (H_0 + H_L - r) / 2, half the dimension of the rank-r matrices.
// Computed in exact integer arithmetic. InvalidArgument naming the argument unless
// widths.size() >= 2, every width in [1, 2^24] and 0 <= r <= min(widths).
DYNASCOPE_API double deep_linear_llc(const std::vector<index_t>& widths, index_t r);

// E[λ̂] of full-batch, stationary SGLD (the step of sgld.hpp) for the quadratic loss
// L(w) = ½ Σ_i h_i (w_i - w*_i)²: each coordinate is the AR(1) chain x <- (1 - ε a_i / 2) x + √ε ξ
// with a_i = nβ h_i + γ, whose stationary variance is 1 / (a_i (1 - ε a_i / 4)), so
//   E[λ̂] = nβ E[L] = ½ Σ_i [nβ h_i / (nβ h_i + γ)] / (1 - ε (nβ h_i + γ) / 4),
// which tends to d/2 (d = number of h_i > 0) as ε, γ -> 0. A coordinate with h_i = 0 contributes 0
// (the loss does not see it, even when γ = 0 leaves it a random walk). ε = 0 gives the Langevin
// diffusion's value. InvalidArgument naming the argument for an empty h, h_i < 0 or non-finite,
// nbeta <= 0, gamma < 0, epsilon < 0, and for a step that is unstable for some coordinate
// (1 - ε (nβ h_i + γ) / 4 <= 0, i.e. ε >= 4 / (nβ h_i + γ)).
DYNASCOPE_API double quadratic_llc_expectation(const std::vector<double>& h, double nbeta, double gamma,
                                               double epsilon);

}  // namespace dynascope::sgld::theory
