// Batched SGLD chains and the local learning coefficient (include/dynascope/sgld.hpp).
//
// One step for all C chains, with no host round trip:
//   1. minibatch indices [C, m] from Philox (seed, stream 2^31 + c, step), with replacement;
//   2. the batched loss and gradient (the MLP engine over [C, P], or the caller's callback);
//   3. the fused update (kernels/sgld.cuh): drift, noise, preconditioner, mask, box, and the
//      per-chain sums the diagnostics need, per (chain, slice) item;
//   4. one item per chain: MALA acceptance, traces at draw steps, divergence.
// The host reads the chains' state only at progress points and at the end.
#include "dynascope/sgld.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "core/buffer.hpp"
#include "core/checks.hpp"
#include "dynascope/batched_engine.hpp"
#include "dynascope/blas.hpp"
#include "dynascope/chain_stats.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/primitives.hpp"
#include "kernels/launch.cuh"
#include "kernels/philox.cuh"
#include "kernels/sgld.cuh"
#include "sgld/host_update.hpp"

#if defined(__CUDACC__)
#include <cuda_runtime.h>
#endif

namespace dynascope::sgld {

Sampler parse_sampler(const std::string& text) { return parse_name(sampler_names, text); }
const char* to_string(Sampler sampler) noexcept { return name_of(sampler_names, sampler); }

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kBatchStream = 0x80000000u;  // minibatch draws: stream 2^31 + chain

void check_options(const LlcOptions& o, index_t n, index_t P) {
  const auto bad = [](const std::string& what) { throw InvalidArgument("estimate_llc: " + what); };
  if (n < 1) bad("the dataset is empty (n = 0)");
  if (o.chains < 1) bad("chains must be >= 1, got " + std::to_string(o.chains));
  if (o.chains >= index_t{kBatchStream}) bad("chains must be < 2^31");
  if (o.draws < 1) bad("draws must be >= 1, got " + std::to_string(o.draws));
  if (o.burnin < 0) bad("burnin must be >= 0, got " + std::to_string(o.burnin));
  if (o.thin < 1) bad("thin must be >= 1, got " + std::to_string(o.thin));
  if (!(o.epsilon > 0) || !std::isfinite(o.epsilon)) bad("epsilon (the step size) must be > 0 and finite, got " + std::to_string(o.epsilon));
  if (!(o.gamma >= 0) || !std::isfinite(o.gamma)) bad("gamma (the localization) must be >= 0 and finite, got " + std::to_string(o.gamma));
  if (o.batch < 0) bad("batch must be >= 0 (0 = full batch), got " + std::to_string(o.batch));
  if (o.batch > n)
    bad("batch (" + std::to_string(o.batch) + ") is larger than the dataset (" + std::to_string(n) + " samples)");
  if (o.nbeta_rule == NBeta::value && !(o.nbeta > 0 && std::isfinite(o.nbeta)))
    bad("nbeta must be > 0 and finite, got " + std::to_string(o.nbeta));
  if (!o.mask.empty() && static_cast<index_t>(o.mask.size()) != P)
    bad("mask has " + std::to_string(o.mask.size()) + " entries, the model " + std::to_string(P) + " parameters");
  if (!(o.bounding_box >= 0) || !std::isfinite(o.bounding_box)) bad("bounding_box must be >= 0 and finite");
  if (o.sampler == Sampler::rmsprop_sgld) {
    if (!(o.rmsprop_alpha >= 0 && o.rmsprop_alpha < 1)) bad("rmsprop_alpha must be in [0, 1)");
    if (!(o.rmsprop_eps > 0) || !std::isfinite(o.rmsprop_eps)) bad("rmsprop_eps must be > 0 and finite");
  }
  if (o.progress_every < 0) bad("progress_every must be >= 0");
  const double steps = double(o.burnin) + double(o.draws - 1) * double(o.thin) + 1;
  if (steps >= 4294967296.0) bad("burnin + draws * thin must be below 2^32 steps");
}

double resolve_nbeta(const LlcOptions& o, index_t n) {
  const auto rule = [](double m) {
    if (m < 2) throw InvalidArgument("estimate_llc: nbeta auto/batch needs at least 2 samples (m / ln m)");
    return m / std::log(m);
  };
  switch (o.nbeta_rule) {
    case NBeta::dataset: return rule(double(n));
    case NBeta::batch: return rule(double(o.batch > 0 ? o.batch : n));
    case NBeta::value: return o.nbeta;
  }
  throw InvalidArgument("estimate_llc: unknown nbeta rule");
}

#if defined(__CUDACC__)
constexpr int kUpdateBlock = 256;

template <class T>
__global__ void sgld_update_kernel(kern::SgldUpdate<T> u, index_t slices, double* partials) {
  const index_t item = blockIdx.x;
  const index_t c = item / slices, s = item % slices;
  const index_t begin = s * kern::kSgldSlice, end = std::min(u.P, begin + kern::kSgldSlice);
  double sums[kern::kSgldSums] = {0, 0, 0};
  for (index_t i = begin + 2 * index_t(threadIdx.x); i < end; i += 2 * kUpdateBlock)
    u.run(c, i, std::min(end, i + 2), sums);
  __shared__ double shared[kern::kSgldSums][kUpdateBlock];
  for (int q = 0; q < kern::kSgldSums; ++q) shared[q][threadIdx.x] = sums[q];
  __syncthreads();
  for (int half = kUpdateBlock / 2; half > 0; half /= 2) {
    if (int(threadIdx.x) < half)
      for (int q = 0; q < kern::kSgldSums; ++q) shared[q][threadIdx.x] += shared[q][threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x < kern::kSgldSums) partials[item * kern::kSgldSums + threadIdx.x] = shared[threadIdx.x][0];
}
#endif

// The fused update over every (chain, slice) item; partials [C * slices * 3].
template <class T>
void launch_update(const Context& ctx, const kern::SgldUpdate<T>& u, index_t chains, index_t slices, double* partials) {
  if (ctx.is_cuda()) {
#if defined(__CUDACC__)
    const index_t items = chains * slices;  // one block each; gridDim.x allows 2^31 - 1
    if (items >= (index_t{1} << 31)) throw InvalidArgument("estimate_llc: chains x parameter slices exceed a CUDA grid");
    kern::CudaDeviceScope on_device(ctx.device());
    sgld_update_kernel<T><<<static_cast<unsigned>(items), kUpdateBlock, 0, static_cast<cudaStream_t>(ctx.stream())>>>(
        u, slices, partials);
    DYNASCOPE_CUDA_CHECK(cudaGetLastError());
#else
    kern::throw_not_compiled_for_cuda(__func__);
#endif
    return;
  }
  // Each item is thousands of elements: worth a thread from 2 items on (host_update.cpp, which
  // picks an FMA build of the loop where the CPU has one).
  detail::host_update(u, chains, slices, partials, kern::host_threads(ctx));
}

template <class T>
struct Chains {
  const Context& ctx;
  const BatchedLossGrad<T>& fn;
  VectorView<const T> w_star;
  index_t n, P;
  const LlcOptions& o;
  double nbeta;
  std::function<double(VectorView<const T>)> full_loss;  // L_n at w* (InitLoss::full)
};

template <class T>
LlcResult run_chains(const Chains<T>& job) {
  const Context& ctx = job.ctx;
  const LlcOptions& o = job.o;
  const index_t C = o.chains, D = o.draws, P = job.P, m = o.batch;
  const index_t total_steps = o.burnin + (D - 1) * o.thin + 1;
  const auto start = Clock::now();

  LlcResult r;
  r.chains = C;
  r.draws = D;
  r.n = job.n;
  r.nbeta = job.nbeta;
  if (o.init_loss == InitLoss::full || m == 0) r.init_loss = job.full_loss(job.w_star);

  // Parameters start at w* in every chain.
  Array<T> params(ctx, {C, P}), grads(ctx, {C, P});
  {
    T* p = params.data();
    const T* w = job.w_star.data;
    kern::parallel_for_2d(ctx, C, P, [p, w, P] DYNASCOPE_HD(index_t c, index_t i) { p[c * P + i] = w[i]; });
  }
  Array<T> prev, square_avg;
  if (o.mala) prev = Array<T>(ctx, {C, P});
  if (o.sampler == Sampler::rmsprop_sgld) square_avg = Array<T>::zeros(ctx, {C, P});
  Array<std::uint8_t> mask;
  if (!o.mask.empty()) mask = Array<std::uint8_t>::from_host(ctx, {P}, o.mask);
  Array<std::int64_t> batch;
  if (m > 0) batch = Array<std::int64_t>(ctx, {C, m});
  Array<T> losses(ctx, {C});
  const index_t slices = (P + kern::kSgldSlice - 1) / kern::kSgldSlice;
  Array<double> partials(ctx, {C * slices * kern::kSgldSums});
  Array<double> loss_trace = Array<double>::zeros(ctx, {C, D}), distance_trace = Array<double>::zeros(ctx, {C, D});
  std::vector<kern::SgldChainState> init_state(static_cast<std::size_t>(C), kern::SgldChainState{0, 0, 0, -1});
  Array<kern::SgldChainState> state = Array<kern::SgldChainState>::from_host(ctx, {C}, init_state);
  Array<double> first_losses;  // InitLoss::minibatch: the losses at w* of step 0
  if (o.init_loss == InitLoss::minibatch && m > 0) first_losses = Array<double>(ctx, {C});

  kern::SgldUpdate<T> u{};
  u.params = params.data();
  u.grads = grads.data();
  u.w_star = job.w_star.data;
  u.prev = o.mala ? prev.data() : nullptr;
  u.square_avg = o.sampler == Sampler::rmsprop_sgld ? square_avg.data() : nullptr;
  u.mask = o.mask.empty() ? nullptr : mask.data();
  u.P = P;
  u.half_eps = 0.5 * o.epsilon;
  u.sqrt_eps = std::sqrt(o.epsilon);
  u.nbeta = job.nbeta;
  u.gamma = o.gamma;
  u.box = o.bounding_box;
  u.alpha = o.rmsprop_alpha;
  u.rms_eps = o.rmsprop_eps;
  u.seed = o.seed;

  kern::SgldFinish<T> fin{};
  fin.partials = partials.data();
  fin.slices = slices;
  fin.losses = losses.data();
  fin.state = state.data();
  fin.loss_trace = loss_trace.data();
  fin.distance_trace = distance_trace.data();
  fin.draws = D;
  fin.nbeta = job.nbeta;
  fin.gamma = o.gamma;
  fin.two_eps = 2.0 * o.epsilon;
  fin.mala = o.mala;

  const index_t every = o.progress_every > 0 ? o.progress_every : std::max<index_t>(1, total_steps / 100);
  index_t counted = 0;  // MALA transitions counted (the same for every chain)
  LossGradRequest<T> req;
  req.params = params.matrix();
  req.losses = losses.vector();
  req.grads = grads.matrix();
  req.batch = MatrixView<const std::int64_t>{nullptr, C, 0, 0, ctx.backend(), ctx.device()};

  const auto report = [&](index_t steps_done, index_t draws_done) {
    if (!o.on_progress) return;
    LlcProgress p;
    p.step = steps_done;
    p.total_steps = total_steps;
    p.draws = draws_done;
    if (draws_done > 0) {
      const std::vector<double> lt = loss_trace.to_vector(ctx);
      const std::vector<kern::SgldChainState> st = state.to_vector(ctx);
      double sum = 0;
      index_t healthy = 0;
      for (index_t c = 0; c < C; ++c) {
        if (st[std::size_t(c)].first_bad >= 0) {
          ++p.diverged;
          continue;
        }
        double s = 0;
        for (index_t d = 0; d < draws_done; ++d) s += lt[std::size_t(c * D + d)];
        sum += s / double(draws_done);
        ++healthy;
      }
      if (healthy > 0 && (o.init_loss == InitLoss::full || m == 0))
        p.llc_mean = job.nbeta * (sum / double(healthy) - r.init_loss);
    }
    if (!o.on_progress(p))
      throw Cancelled("estimate_llc: cancelled by the progress callback at step " + std::to_string(steps_done) + " of " +
                      std::to_string(total_steps));
  };

  for (index_t t = 0; t < total_steps; ++t) {
    ctx.check_cancelled();   // every step: progress comes only every progress_every steps
    const auto step = static_cast<std::uint32_t>(t);
    if (m > 0) {
      const std::uint64_t seed = o.seed;
      const auto range = static_cast<std::uint64_t>(job.n);
      std::int64_t* b = batch.data();
      kern::parallel_for(ctx, C * m, [b, seed, step, m, range] DYNASCOPE_HD(index_t k) {
        const index_t c = k / m, j = k % m;
        const kern::PhiloxBlock blk = kern::philox_block(seed, kBatchStream + static_cast<std::uint32_t>(c), step,
                                                         static_cast<std::uint64_t>(j) >> 1);
        const int w = static_cast<int>(j & 1) * 2;
        const std::uint64_t bits = (static_cast<std::uint64_t>(blk.v[w]) << 32) | blk.v[w + 1];
        b[k] = static_cast<std::int64_t>(kern::mulhi64(bits, range));
      });
      req.batch = MatrixView<const std::int64_t>{batch.data(), C, m, m, ctx.backend(), ctx.device()};
    }
    req.step = t;
    job.fn(req);
    if (t == 0 && first_losses.size() > 0) {
      double* f = first_losses.data();
      const T* l = losses.data();
      kern::parallel_for(ctx, C, [f, l] DYNASCOPE_HD(index_t c) { f[c] = static_cast<double>(l[c]); });
    }

    u.step = step;
    u.first_step = t == 0;
    launch_update(ctx, u, C, slices, partials.data());

    const bool is_draw = t >= o.burnin && (t - o.burnin) % o.thin == 0;
    fin.draw = is_draw ? (t - o.burnin) / o.thin : -1;
    fin.have_previous = t > 0;
    fin.count_acceptance = t > 0 && t >= o.burnin;
    if (o.mala && fin.count_acceptance) ++counted;
    kern::parallel_for(ctx, C, fin);

    const index_t done = t + 1;
    if (done % every == 0 || done == total_steps) {
      const index_t draws_done = done > o.burnin ? std::min(D, (done - o.burnin + o.thin - 1) / o.thin) : 0;
      report(done, draws_done);
    }
  }

  // Results to the host.
  r.loss_trace = loss_trace.to_vector(ctx);
  r.distance_trace = distance_trace.to_vector(ctx);
  const std::vector<kern::SgldChainState> st = state.to_vector(ctx);
  if (o.init_loss == InitLoss::minibatch && m > 0) {
    const std::vector<double> f = first_losses.to_vector(ctx);
    double s = 0;
    for (double v : f) s += v;
    r.init_loss = s / double(C);
  }

  r.llc_per_chain.assign(std::size_t(C), std::numeric_limits<double>::quiet_NaN());
  std::vector<double> healthy_trace;
  std::vector<double> healthy_llc;
  double accept = 0;
  index_t below_init = 0;
  for (index_t c = 0; c < C; ++c) {
    const auto& sc = st[std::size_t(c)];
    if (sc.first_bad >= 0) {
      r.diverged[c] = sc.first_bad;
      continue;
    }
    double s = 0;
    for (index_t d = 0; d < D; ++d) {
      const double v = r.loss_trace[std::size_t(c * D + d)];
      s += v;
      below_init += v < r.init_loss;
    }
    const double llc = job.nbeta * (s / double(D) - r.init_loss);
    r.llc_per_chain[std::size_t(c)] = llc;
    healthy_llc.push_back(llc);
    healthy_trace.insert(healthy_trace.end(), r.loss_trace.begin() + c * D, r.loss_trace.begin() + (c + 1) * D);
    if (counted > 0) accept += sc.accept_sum / double(counted);
  }
  const auto healthy = static_cast<index_t>(healthy_llc.size());
  if (healthy > 0) {
    double mean = 0;
    for (double v : healthy_llc) mean += v;
    mean /= double(healthy);
    double ss = 0;
    for (double v : healthy_llc) ss += (v - mean) * (v - mean);
    r.llc_mean = mean;
    r.llc_std = healthy > 1 ? std::sqrt(ss / double(healthy - 1)) : std::numeric_limits<double>::quiet_NaN();
    r.llc_stderr = healthy > 1 ? r.llc_std / std::sqrt(double(healthy)) : std::numeric_limits<double>::quiet_NaN();
    if (o.mala && counted > 0) r.mala_acceptance = accept / double(healthy);
    if (D >= 4) {
      bool constant = true;
      for (double v : healthy_trace) constant = constant && v == healthy_trace.front();
      if (!constant) {
        r.r_hat = stats::split_rhat(healthy_trace.data(), healthy, D);
        r.ess = stats::bulk_ess(healthy_trace.data(), healthy, D);
      }
    }
  } else {
    r.llc_mean = r.llc_std = r.llc_stderr = std::numeric_limits<double>::quiet_NaN();
  }

  // Health.
  if (healthy == 0)
    r.warnings.push_back("every chain diverged (a non-finite loss or distance): no estimate; lower epsilon");
  else if (!r.diverged.empty())
    r.warnings.push_back(std::to_string(r.diverged.size()) + " of " + std::to_string(C) +
                         " chains diverged (a non-finite loss or distance): the step size epsilon is too large "
                         "for them; the estimate uses the other chains");
  if (healthy == 1)
    r.warnings.push_back("one chain: no standard deviation or standard error (run 2 or more chains)");
  if (healthy > 0 && D < 4) r.warnings.push_back("fewer than 4 draws: no R-hat or effective sample size");
  if (healthy > 0 && below_init * 2 > healthy * D)
    r.warnings.push_back("the chains' loss is below the loss at w* in " +
                         std::to_string(int(std::lround(100.0 * double(below_init) / double(healthy * D)))) +
                         "% of the draws: w* is not a local minimum (train longer) or gamma is too weak");
  // With minibatches the two potentials of a step come from different minibatches (as in
  // devinterp), so the acceptance also carries the minibatch noise of nβ L_B and says little about
  // ε: the acceptance warnings are given for full batches only.
  if (m == 0 && std::isfinite(r.mala_acceptance) && r.mala_acceptance < 0.5)
    r.warnings.push_back("MALA acceptance " + std::to_string(r.mala_acceptance) +
                         " is low: epsilon is too large for the SGLD step to follow the posterior");
  if (m == 0 && std::isfinite(r.mala_acceptance) && r.mala_acceptance > 0.999)
    r.warnings.push_back("MALA acceptance " + std::to_string(r.mala_acceptance) +
                         " is near 1: epsilon may be so small that the chains barely move");
  if (std::isfinite(r.r_hat) && r.r_hat > 1.1) {
    // The localization pulls w back to w* at the rate ε γ / 2 per step: a burn-in of a few
    // 2 / (ε γ) steps lets the chains forget their common start.
    std::string advice = "use more burn-in or draws, or a larger epsilon";
    if (o.gamma > 0)
      advice = "the localization relaxes in 2/(epsilon gamma) = " +
               std::to_string(std::llround(2.0 / (o.epsilon * o.gamma))) +
               " steps: use a burn-in of a few times that, more draws, or a larger epsilon";
    r.warnings.push_back("R-hat " + std::to_string(r.r_hat) + " > 1.1: the chains have not mixed; " + advice);
  }
  r.gradient_evaluations = double(C) * double(total_steps) * double(m > 0 ? m : job.n) / double(job.n);
  r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Generic chains over the caller's batched loss and gradient.

template <class T>
LlcResult estimate_llc(const Context& ctx, const BatchedLossGrad<T>& fn, VectorView<const T> w_star, index_t n,
                       const LlcOptions& options) {
  dynascope::detail::check_vector(ctx, w_star, "estimate_llc", "w_star");
  if (w_star.stride != 1) throw InvalidArgument("estimate_llc: w_star must be contiguous (stride 1)");
  if (!fn) throw InvalidArgument("estimate_llc: the loss-and-gradient callback is empty");
  const index_t P = w_star.size;
  if (P < 1) throw InvalidArgument("estimate_llc: w_star is empty");
  check_options(options, n, P);
  const double nbeta = resolve_nbeta(options, n);
  const auto full_loss = [&](VectorView<const T> w) {
    Array<T> loss(ctx, {1}), grad(ctx, {1, P});
    LossGradRequest<T> req;
    req.params = MatrixView<const T>{w.data, 1, P, P, w.backend, w.device};
    req.batch = MatrixView<const std::int64_t>{nullptr, 1, 0, 0, ctx.backend(), ctx.device()};
    req.step = 0;
    req.losses = loss.vector();
    req.grads = grad.matrix();
    fn(req);
    return static_cast<double>(loss.to_vector(ctx)[0]);
  };
  return run_chains<T>({ctx, fn, w_star, n, P, options, nbeta, full_loss});
}

// ---------------------------------------------------------------------------------------------
// Chains of an MLP through the batched-parameters engine.

namespace {

// Rows per set in one pass of the engine: an eighth of the workspace budget per set, a function
// of the network and the budget only (never of the chain count), so that a chain's products have
// the same shapes whatever C is.
index_t row_bytes(const model::MlpSpec& spec, std::size_t elem_size) {
  index_t widths = 0;
  for (index_t w : spec.widths) widths += w;
  return index_t(std::size_t(widths) * 3 * elem_size);  // z, a, delta
}
index_t rows_per_tile(const model::MlpSpec& spec, std::size_t elem_size, std::size_t budget) {
  return std::max<index_t>(1, index_t(budget / 8 / std::size_t(row_bytes(spec, elem_size))));
}

template <class T>
struct MlpLossGrad {
  const Context& ctx;
  const model::MlpSpec& spec;
  MatrixView<const T> x;
  const model::Targets<T>& targets;
  model::Loss loss;
  index_t n, P, tile, group;
  model::BatchedMlpEngine<T> engine;
  Array<T> xb, yb, tile_loss, tile_grads;
  Array<std::int64_t> lb, idx;

  MlpLossGrad(const Context& c, const model::MlpSpec& s, MatrixView<const T> x_, const model::Targets<T>& t,
              model::Loss l, index_t chains)
      : ctx(c), spec(s), x(x_), targets(t), loss(l), n(x_.rows), P(s.num_params()), engine(c, s) {
    tile = rows_per_tile(spec, sizeof(T), ctx.workspace_budget());
    // Chains per pass: as many as the workspace budget holds (at least one).
    const double per_set = double(std::min(tile, n)) * double(row_bytes(spec, sizeof(T))) + 2.0 * double(P) * sizeof(T);
    group = std::clamp<index_t>(index_t(double(ctx.workspace_budget()) / per_set), 1, chains);
  }

  void operator()(const LossGradRequest<T>& req) {
    const index_t C = req.params.rows;
    const bool full = req.batch.cols == 0;
    const index_t rows = full ? n : req.batch.cols;
    const index_t O = spec.outputs();
    if (tile_loss.size() < C) {
      tile_loss = Array<T>(ctx, {C});
    }
    for (index_t g0 = 0; g0 < C; g0 += group) {
      const index_t G = std::min(group, C - g0);
      MatrixView<const T> params{req.params.data + g0 * req.params.ld, G, P, req.params.ld, req.params.backend,
                                 req.params.device};
      MatrixView<T> grads{req.grads.data + g0 * req.grads.ld, G, P, req.grads.ld, req.grads.backend, req.grads.device};
      T* losses = req.losses.data + g0 * req.losses.stride;
      const index_t lstride = req.losses.stride;
      const bool single = rows <= tile;
      if (!single && tile_grads.size() < G * P) tile_grads = Array<T>(ctx, {G, P});
      for (index_t r0 = 0; r0 < rows; r0 += tile) {
        const index_t R = std::min(tile, rows - r0);
        const T weight = static_cast<T>(double(R) / double(rows));
        MatrixView<const T> out;
        model::Targets<T> tt;
        if (full) {
          MatrixView<const T> xs{x.data + r0 * x.ld, R, x.cols, x.ld, x.backend, x.device};
          out = engine.forward_shared(params, xs);
          if (targets.has_labels())
            tt.labels = VectorView<const std::int64_t>{targets.labels.data + r0 * targets.labels.stride, R,
                                                       targets.labels.stride, targets.labels.backend,
                                                       targets.labels.device};
          else
            tt.values = MatrixView<const T>{targets.values.data + r0 * targets.values.ld, R, targets.values.cols,
                                            targets.values.ld, targets.values.backend, targets.values.device};
        } else {
          // Gather this tile's rows of every chain's minibatch: [G*R] indices, chain-major.
          if (idx.size() < G * R) idx = Array<std::int64_t>(ctx, {G * R});
          const std::int64_t* bsrc = req.batch.data + g0 * req.batch.ld + r0;
          const index_t bld = req.batch.ld;
          std::int64_t* d = idx.data();
          kern::parallel_for(ctx, G * R, [d, bsrc, bld, R] DYNASCOPE_HD(index_t k) {
            d[k] = bsrc[(k / R) * bld + k % R];
          });
          VectorView<const std::int64_t> iv{idx.data(), G * R, 1, ctx.backend(), ctx.device()};
          if (xb.size() < G * R * x.cols) xb = Array<T>(ctx, {G * R, x.cols});
          MatrixView<T> xv{xb.data(), G * R, x.cols, x.cols, ctx.backend(), ctx.device()};
          primitives::gather_rows<T>(ctx, x, iv, xv);
          out = engine.forward(params, MatrixView<const T>(xv));
          if (targets.has_labels()) {
            if (lb.size() < G * R) lb = Array<std::int64_t>(ctx, {G * R});
            VectorView<std::int64_t> lv{lb.data(), G * R, 1, ctx.backend(), ctx.device()};
            primitives::gather(ctx, targets.labels, iv, lv);
            tt.labels = VectorView<const std::int64_t>(lv);
          } else {
            const index_t tc = targets.values.cols;
            if (yb.size() < G * R * tc) yb = Array<T>(ctx, {G * R, tc});
            MatrixView<T> yv{yb.data(), G * R, tc, tc, ctx.backend(), ctx.device()};
            primitives::gather_rows<T>(ctx, targets.values, iv, yv);
            tt.values = MatrixView<const T>(yv);
          }
        }
        // d(loss of the whole batch)/df = weight * d(tile loss)/df: the tile's cotangents.
        const index_t rows_out = G * R;
        MatrixView<T> cot = cotangents(rows_out, O);
        VectorView<T> tl{tile_loss.data(), G, 1, ctx.backend(), ctx.device()};
        model::batched_loss_and_grad<T>(ctx, loss, G, out, tt, tl, cot);
        engine.backprop(params, MatrixView<const T>(cot));
        if (single) {
          engine.param_grads(grads);
          const T* l = tile_loss.data();
          kern::parallel_for(ctx, G, [losses, lstride, l] DYNASCOPE_HD(index_t c) {
            losses[c * lstride] = l[c];
          });
        } else {
          MatrixView<T> tg{tile_grads.data(), G, P, P, ctx.backend(), ctx.device()};
          engine.param_grads(tg);
          const bool first = r0 == 0;
          const index_t gld = grads.ld, np = P;
          T* g = grads.data;
          const T* s = tile_grads.data();
          kern::parallel_for_2d(ctx, G, np, [g, gld, s, np, weight, first] DYNASCOPE_HD(
                                               index_t c, index_t i) {
            const T v = weight * s[c * np + i];
            g[c * gld + i] = first ? v : g[c * gld + i] + v;
          });
          const T* l = tile_loss.data();
          kern::parallel_for(ctx, G, [losses, lstride, l, weight, first] DYNASCOPE_HD(index_t c) {
            const T v = weight * l[c];
            losses[c * lstride] = first ? v : losses[c * lstride] + v;
          });
        }
      }
    }
  }

  Array<T> cot_buffer;
  MatrixView<T> cotangents(index_t rows, index_t cols) {
    if (cot_buffer.size() < rows * cols) cot_buffer = Array<T>(ctx, {rows, cols});
    return {cot_buffer.data(), rows, cols, cols, ctx.backend(), ctx.device()};
  }
};

template <class T>
void check_data(const Context& ctx, const model::MlpSpec& spec, MatrixView<const T> x, const model::Targets<T>& t,
                model::Loss loss) {
  dynascope::detail::check_matrix(ctx, x, "estimate_llc", "x");
  if (x.cols != spec.inputs())
    throw ShapeMismatch("estimate_llc: x has " + std::to_string(x.cols) + " columns, the network " +
                        std::to_string(spec.inputs()) + " inputs");
  if (t.has_labels()) {
    dynascope::detail::check_vector(ctx, t.labels, "estimate_llc", "labels");
    if (t.labels.size != x.rows)
      throw ShapeMismatch("estimate_llc: " + std::to_string(t.labels.size) + " labels for " + std::to_string(x.rows) +
                          " samples");
  } else {
    dynascope::detail::check_matrix(ctx, t.values, "estimate_llc", "targets");
    if (t.values.rows != x.rows || t.values.cols != spec.outputs())
      throw ShapeMismatch("estimate_llc: targets are " + std::to_string(t.values.rows) + "x" +
                          std::to_string(t.values.cols) + ", expected " + std::to_string(x.rows) + "x" +
                          std::to_string(spec.outputs()) + " (samples x outputs)");
    if (loss == model::Loss::xent)
      throw InvalidArgument("estimate_llc: the xent loss needs integer labels, not float targets");
  }
}

}  // namespace

template <class T>
LlcResult estimate_llc(const Context& ctx, const model::MlpSpec& spec, const T* params, MatrixView<const T> x,
                       const model::Targets<T>& targets, model::Loss loss, const LlcOptions& options) {
  spec.validate();
  if (!params) throw InvalidArgument("estimate_llc: params is null");
  check_data(ctx, spec, x, targets, loss);
  const index_t P = spec.num_params();
  check_options(options, x.rows, P);
  const double nbeta = resolve_nbeta(options, x.rows);
  MlpLossGrad<T> mlp(ctx, spec, x, targets, loss, options.chains);
  const BatchedLossGrad<T> fn = [&mlp](const LossGradRequest<T>& req) { mlp(req); };
  const VectorView<const T> w_star{params, P, 1, ctx.backend(), ctx.device()};
  const auto full_loss = [&](VectorView<const T> w) {
    // L_n(w*) through the same engine, one set, tiles of the same rows.
    Array<T> loss_value(ctx, {1}), grad(ctx, {1, P});
    LossGradRequest<T> req;
    req.params = MatrixView<const T>{w.data, 1, P, P, w.backend, w.device};
    req.batch = MatrixView<const std::int64_t>{nullptr, 1, 0, 0, ctx.backend(), ctx.device()};
    req.losses = loss_value.vector();
    req.grads = grad.matrix();
    mlp(req);
    return static_cast<double>(loss_value.to_vector(ctx)[0]);
  };
  return run_chains<T>({ctx, fn, w_star, x.rows, P, options, nbeta, full_loss});
}

template <class T>
std::vector<CalibrationPoint> calibrate(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                        MatrixView<const T> x, const model::Targets<T>& targets, model::Loss loss,
                                        const LlcOptions& options, const std::vector<double>& epsilons,
                                        const std::vector<double>& nbetas) {
  if (epsilons.empty() || nbetas.empty())
    throw InvalidArgument("calibrate: give at least one epsilon and one nbeta");
  std::vector<CalibrationPoint> out;
  for (double nb : nbetas)
    for (double eps : epsilons) {
      LlcOptions o = options;
      o.epsilon = eps;
      o.nbeta_rule = NBeta::value;
      o.nbeta = nb;
      CalibrationPoint p;
      p.epsilon = eps;
      p.nbeta = nb;
      p.result = estimate_llc<T>(ctx, spec, params, x, targets, loss, o);
      out.push_back(std::move(p));
    }
  return out;
}

#define DS_INSTANTIATE(T)                                                                                            \
  template LlcResult estimate_llc<T>(const Context&, const model::MlpSpec&, const T*, MatrixView<const T>,          \
                                     const model::Targets<T>&, model::Loss, const LlcOptions&);                      \
  template LlcResult estimate_llc<T>(const Context&, const BatchedLossGrad<T>&, VectorView<const T>, index_t,       \
                                     const LlcOptions&);                                                             \
  template std::vector<CalibrationPoint> calibrate<T>(const Context&, const model::MlpSpec&, const T*,              \
                                                      MatrixView<const T>, const model::Targets<T>&, model::Loss,    \
                                                      const LlcOptions&, const std::vector<double>&,                 \
                                                      const std::vector<double>&);
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
#undef DS_INSTANTIATE

}  // namespace dynascope::sgld
