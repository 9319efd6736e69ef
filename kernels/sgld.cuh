#pragma once
// The fused SGLD update over all chains (src/sgld/sampler.cpp).
//
// Work is cut into items (chain c, slice s) of kSlice consecutive parameters; an item updates its
// parameters and returns three sums over them (in double):
//   0: |w - w*|^2                                  at the current w (the draw's distance)
//   1: |w_prev - w + (ε/2) P ∇U(w)|^2_{P^-1}       the reverse MALA proposal term of the last step
//   2: |w_new - w + (ε/2) P ∇U(w)|^2_{P^-1}        the forward term of this step
// with ∇U(w) = nβ ∇L_B(w) + γ (w - w*) and P the diagonal preconditioner (1 for plain SGLD).
// The host runs each item as one serial loop; cuda runs each item as one block that reduces its
// sums in shared memory. Slices are the same on both backends and for any chain count, so a
// chain's parameters never depend on how many chains run; the sums agree to rounding.
#include <cmath>
#include <cstdint>

#include "kernels/philox.cuh"

namespace dynascope::kern {

inline constexpr index_t kSgldSlice = 4096;  // even: Box-Muller pairs never straddle two items
inline constexpr int kSgldSums = 3;

template <class T>
struct SgldUpdate {
  T* params;                 // [C, P]
  const T* grads;            // [C, P]: ∇L_B at params
  const T* w_star;           // [P]
  T* prev;                   // [C, P] parameters before the last step (MALA), or null
  T* square_avg;             // [C, P] RMSprop state, or null for plain SGLD
  const std::uint8_t* mask;  // [P] (0 = frozen), or null
  index_t P = 0;
  double half_eps = 0;       // ε / 2
  double sqrt_eps = 0;       // sqrt(ε)
  double nbeta = 0, gamma = 0;
  double box = 0;            // > 0: clamp to w* ± box
  double alpha = 0.99, rms_eps = 0.1;
  bool first_step = true;    // no previous step: no reverse term
  std::uint64_t seed = 0;
  std::uint32_t step = 0;

  // Elements [begin, end) of chain c (begin even). Adds to sums[0..2].
  DYNASCOPE_HD void run(index_t c, index_t begin, index_t end, double* sums) const {
    for (index_t i = begin; i < end; i += 2) {
      // One Philox block per pair of elements (random.hpp's normal convention): element i of
      // chain c at step t is the same draw as random::fill_normal(Stream{seed, c, t}).
      double first, second;
      box_muller(philox_block(seed, static_cast<std::uint32_t>(c), step, static_cast<std::uint64_t>(i) >> 1), &first,
                 &second);
      element(c, i, first, sums);
      if (i + 1 < end) element(c, i + 1, second, sums);
    }
  }

  DYNASCOPE_HD void element(index_t c, index_t i, double xi, double* sums) const {
    const index_t k = c * P + i;
    const double w = static_cast<double>(params[k]);
    const double w0 = static_cast<double>(w_star[i]);
    const double d = w - w0;
    sums[0] += d * d;
    if (mask && mask[i] == 0) {
      if (prev) prev[k] = params[k];
      return;
    }
    const double g = static_cast<double>(grads[k]);
    double precond = 1.0;
    if (square_avg) {
      const double v = alpha * static_cast<double>(square_avg[k]) + (1.0 - alpha) * g * g;
      square_avg[k] = static_cast<T>(v);
      // devinterp's RMSpropSGLD: the raw minibatch gradient, no bias correction, eps outside the root
      precond = 1.0 / (sqrt(v) + rms_eps);
    }
    const double drift = half_eps * precond * (nbeta * g + gamma * d);  // (ε/2) P ∇U(w)
    if (prev && !first_step) {
      const double r = static_cast<double>(prev[k]) - w + drift;
      sums[1] += r * r / precond;
    }
    double w_new = w - drift + sqrt_eps * sqrt(precond) * xi;
    if (box > 0) w_new = fmin(fmax(w_new, w0 - box), w0 + box);
    const T stored = static_cast<T>(w_new);
    const double f = static_cast<double>(stored) - w + drift;
    sums[2] += f * f / precond;
    if (prev) prev[k] = params[k];
    params[k] = stored;
  }
};

// Per-chain bookkeeping after the update: sums of the items, MALA acceptance, traces and
// divergence. One work item per chain.
struct SgldChainState {
  double potential;  // U(w) of the last step: nβ L_B(w) + γ/2 |w - w*|^2
  double forward;    // the last step's forward proposal term
  double accept_sum; // sum of min(1, exp(log α)) over counted transitions
  std::int64_t first_bad;  // first non-finite draw, -1 while healthy
};

template <class T>
struct SgldFinish {
  const double* partials;  // [C, slices, kSgldSums]
  index_t slices = 0;
  const T* losses;         // [C]: L_B at the parameters before this step's update
  SgldChainState* state;   // [C]
  double* loss_trace;      // [C, D]
  double* distance_trace;  // [C, D]
  index_t draws = 0;
  index_t draw = -1;       // this step's draw index, or -1
  double nbeta = 0, gamma = 0, two_eps = 0;
  bool mala = false, have_previous = false, count_acceptance = false;

  // NaN or infinity fails (v - v is NaN for both); no <cmath> overload questions on either compiler
  DYNASCOPE_HD static bool finite(double v) { return v - v == 0.0; }

  DYNASCOPE_HD void operator()(index_t c) const {
    double s[kSgldSums] = {0, 0, 0};
    for (index_t j = 0; j < slices; ++j)
      for (int q = 0; q < kSgldSums; ++q) s[q] += partials[(c * slices + j) * kSgldSums + q];
    const double loss = static_cast<double>(losses[c]);
    SgldChainState& st = state[c];
    const double u = nbeta * loss + 0.5 * gamma * s[0];
    if (mala && have_previous && count_acceptance) {
      // log α for the move w_prev -> w: the target ratio exp(U_prev - U) times the ratio of the
      // proposal densities q(w_prev | w) / q(w | w_prev).
      const double log_alpha = st.potential - u - s[1] / two_eps + st.forward / two_eps;
      const double a = log_alpha >= 0 ? 1.0 : exp(log_alpha);
      if (a == a) st.accept_sum += a;  // NaN (a diverged chain) adds nothing
    }
    st.potential = u;
    st.forward = s[2];
    if (draw >= 0) {
      const double dist = sqrt(s[0]);
      loss_trace[c * draws + draw] = loss;
      distance_trace[c * draws + draw] = dist;
      if (st.first_bad < 0 && !(finite(loss) && finite(dist))) st.first_bad = draw;
    }
  }
};

}  // namespace dynascope::kern
