// The curvature operators of a network's loss: Gauss-Newton J^T (H_loss (J V)) and the exact
// Hessian by the R-operator through the network.
//
// Work per product (src/model/engine.cpp has the cost model): with m_l = 2 N d_{l-1} d_l, the
// Hessian needs 2 m_1 + 6 sum_{l>=2} m_l flops per vector, the Gauss-Newton 2 m_1 + 4 sum_{l>=2}
// m_l (jvp m_1 + 2 m_l, backprop 2 m_l, parameter gradients m_1 + m_l). Everything that depends
// only on the parameters is done once, in the constructor: the forward pass, the loss gradient,
// the R-operator's deltas of that gradient (MlpEngine::hvp_prepare) and, for cross-entropy on
// host, the softmax the loss Hessian multiplies by (the loss Hessian recomputed it, 2 N O
// exponentials in double per product: about 0.3 ms at N = 1024, O = 10).
//
// On host the samples are split into chunks (CurvatureOptions::sample_chunks), each with its own
// engine that did the forward pass on its rows: a product is a sum over samples, so each chunk
// computes its rows' share with one-thread BLAS and the shares are added, in one parallel region
// per product. A threaded GEMM per layer instead forks and joins about 20 times per product and
// splits GEMMs whose single-thread rate is already near the core's peak.
#include "dynascope/curvature.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <string>
#include <vector>

#include "core/buffer.hpp"
#include "core/omp_threads.hpp"
#include "dynascope/engine.hpp"
#include "dynascope/losses.hpp"
#include "linalg/operator_checks.hpp"

namespace dynascope::linalg {

using detail::Buffer;

Curvature parse_curvature(const std::string& text) { return parse_name(curvature_names, text); }
const char* to_string(Curvature c) noexcept { return name_of(curvature_names, c); }

namespace {

// Samples per chunk below which splitting costs more than it saves (a chunk's GEMMs have this
// many rows; at 256 the first layer's single-thread sgemm still runs at its full rate).
constexpr index_t kMinChunkRows = 256;

using detail::OneBlasThread;

int host_threads(const Context& ctx) { return ctx.threads() > 0 ? ctx.threads() : omp_get_max_threads(); }

}  // namespace

template <class T>
struct CurvatureOperator<T>::Impl {
  struct Chunk {
    model::MlpEngine<T> engine;
    index_t r0, m;
    Buffer<T> fdot, gdot, y;  // y: this chunk's share of the product (chunk 0 writes the caller's)
    MatrixView<const T> f;    // the chunk's outputs [m, O] (the engine's)
    Chunk(const Context& ctx, const model::MlpSpec& s, index_t r, index_t rows) : engine(ctx, s), r0(r), m(rows) {}
  };
  Context ctx;
  Curvature kind;
  const T* params;
  model::Targets<T> targets;
  model::Loss loss;
  index_t n = 0, o = 0;
  std::vector<Chunk> chunks;
  Buffer<T> f_all, g, softmax;  // all samples' outputs (several chunks), dL/df, softmax(f) (host xent)
  MatrixView<const T> f;
  bool cached_softmax = false;
  index_t sized_k = 0;  // the largest block every chunk's buffers hold (a larger one runs serially first)
  double value = 0;

  Impl(const Context& c, Curvature k, const model::MlpSpec& s, const T* p, MatrixView<const T> x,
       const model::Targets<T>& t, model::Loss l, const CurvatureOptions& options)
      : ctx(c), kind(k), params(p), targets(t), loss(l), n(x.rows), o(s.outputs()) {
    if (t.rows() != x.rows)
      throw ShapeMismatch("CurvatureOperator: " + std::to_string(x.rows) + " inputs but " + std::to_string(t.rows()) + " targets");
    if (options.sample_chunks < 0)
      throw InvalidArgument("CurvatureOptions::sample_chunks must be >= 0 (0: automatic), got " +
                            std::to_string(options.sample_chunks));
    index_t count = options.sample_chunks;
    if (count == 0) count = std::min<index_t>(host_threads(ctx), n / kMinChunkRows);
    if (!ctx.is_host()) count = 1;
    count = std::max<index_t>(1, std::min(count, n));
    chunks.reserve(std::size_t(count));
    for (index_t i = 0; i < count; ++i) {
      const index_t r0 = n * i / count, r1 = n * (i + 1) / count;
      chunks.emplace_back(ctx, s, r0, r1 - r0);
    }
    if (count == 1) {
      f = chunks[0].f = chunks[0].engine.forward(p, x);
    } else {
      MatrixView<T> all = f_all.reserve(ctx, n, o);
      for (Chunk& ch : chunks) {
        ch.f = ch.engine.forward(p, x.block(ch.r0, 0, ch.m, x.cols));
        copy(ctx, ch.f, all.block(ch.r0, 0, ch.m, o));
      }
      f = all;
    }
    MatrixView<T> gv = g.reserve(ctx, n, o);
    value = model::loss_and_grad<T>(ctx, loss, f, targets, gv).loss;
    if (kind == Curvature::hessian)
      for (Chunk& ch : chunks) ch.engine.hvp_prepare(p, gv.block(ch.r0, 0, ch.m, o));
    if (ctx.is_host() && loss == model::Loss::xent) cache_softmax();
  }

  // p = softmax(f) per sample, in double as loss_hessian_apply computes it.
  void cache_softmax() {
    MatrixView<T> pv = softmax.reserve(ctx, n, o);
    for (index_t i = 0; i < n; ++i) {
      T mx = f(i, 0);
      for (index_t j = 1; j < o; ++j) mx = f(i, j) > mx ? f(i, j) : mx;
      double se = 0;
      for (index_t j = 0; j < o; ++j) se += std::exp(double(f(i, j) - mx));
      for (index_t j = 0; j < o; ++j) pv(i, j) = static_cast<T>(std::exp(double(f(i, j) - mx)) / se);
    }
    cached_softmax = true;
  }

  // out = H_loss fdot for a chunk's k blocks of m rows (global samples r0..r0+m-1): the loss
  // Hessian of the whole batch restricted to those rows, so the chunks' shares add up to it.
  void loss_hessian(const Chunk& ch, index_t k, MatrixView<const T> fd, MatrixView<T> out) const {
    if (!ctx.is_host()) {  // one chunk: all samples
      model::loss_hessian_apply<T>(ctx, loss, f, targets, fd, out);
      return;
    }
    const index_t rows = k * ch.m;
    if (loss == model::Loss::mse) {
      const T scale = T(2) / static_cast<T>(double(n) * double(o));
      for (index_t r = 0; r < rows; ++r)
        for (index_t j = 0; j < o; ++j) out(r, j) = scale * fd(r, j);
      return;
    }
    if (!targets.has_labels()) throw InvalidArgument("loss xent: needs integer class labels as targets");
    // (diag p - p p^T) v / N = p .* (v - <p, v>) / N, one row per (block, sample).
    const T inv_n = T(1) / static_cast<T>(n);
    const MatrixView<const T> pv = softmax.view(n, o);
    for (index_t r = 0; r < rows; ++r) {
      const index_t i = ch.r0 + r % ch.m;
      double dot = 0;
      for (index_t j = 0; j < o; ++j) dot += double(pv(i, j)) * double(fd(r, j));
      for (index_t j = 0; j < o; ++j) out(r, j) = inv_n * static_cast<T>(double(pv(i, j)) * (double(fd(r, j)) - dot));
    }
  }

  // This chunk's share of the product for the block v [k, P], into y.
  void product(Chunk& ch, MatrixView<const T> v, MatrixView<T> y) {
    const index_t k = v.rows, rows = k * ch.m;
    MatrixView<T> gd = ch.gdot.reserve(ctx, rows, o);
    if (kind == Curvature::gauss_newton) {
      MatrixView<T> fd = ch.fdot.reserve(ctx, rows, o);
      ch.engine.jvp(params, v, fd);
      loss_hessian(ch, k, fd, gd);
      ch.engine.backprop(params, gd, k);
      ch.engine.param_grads(y);
    } else {
      const MatrixView<const T> fd = ch.engine.hvp_forward(params, v);
      loss_hessian(ch, k, fd, gd);
      ch.engine.hvp_backward(params, gd, v, y);
    }
  }
};

template <class T>
CurvatureOperator<T>::CurvatureOperator(const Context& ctx, Curvature kind, const model::MlpSpec& spec, const T* params,
                                        MatrixView<const T> x, const model::Targets<T>& targets, model::Loss loss,
                                        const CurvatureOptions& options)
    : ctx_(ctx), impl_(std::make_unique<Impl>(ctx, kind, spec, params, x, targets, loss, options)) {}
template <class T>
CurvatureOperator<T>::~CurvatureOperator() = default;
template <class T>
index_t CurvatureOperator<T>::size() const { return impl_->chunks[0].engine.spec().num_params(); }
template <class T>
double CurvatureOperator<T>::loss_value() const { return impl_->value; }
template <class T>
index_t CurvatureOperator<T>::sample_chunks() const { return index_t(impl_->chunks.size()); }

template <class T>
index_t CurvatureOperator<T>::max_block() const {
  const Impl& s = *impl_;
  const model::MlpSpec& spec = s.chunks.front().engine.spec();
  index_t widths = 0, widest = 0;
  for (index_t l = 1; l <= spec.layers(); ++l) {
    widths += spec.widths[std::size_t(l)];
    widest = std::max(widest, spec.widths[std::size_t(l)]);
  }
  // Per vector: the tangents of z and a of every layer, the delta tangents (ping-pong and
  // pre-activation), output tangents, and a product share for every chunk but the first.
  const double per_vector = double(sizeof(T)) * (double(s.n) * double(2 * widths + 3 * widest + 2 * s.o) +
                                                 double(index_t(s.chunks.size()) - 1) * double(spec.num_params()));
  const double budget = std::min(double(std::size_t(64) << 20), double(s.ctx.workspace_budget()) / 4);
  return std::max<index_t>(1, static_cast<index_t>(budget / std::max(per_vector, 1.0)));
}

// Gauss-Newton: J^T (H_loss (J V)). Hessian: the R-operator through the network.
template <class T>
void CurvatureOperator<T>::apply(MatrixView<const T> v, MatrixView<T> y) {
  check_apply_block(*this, v, y, "CurvatureOperator");
  Impl& s = *impl_;
  const index_t k = v.rows, P = size(), count = index_t(s.chunks.size());
  if (k == 0) return;
  if (count == 1) {
    s.product(s.chunks[0], v, y);
    return;
  }
  std::vector<MatrixView<T>> share(static_cast<std::size_t>(count));
  share[0] = y;
  for (index_t c = 1; c < count; ++c) share[std::size_t(c)] = s.chunks[std::size_t(c)].y.reserve(ctx_, k, P);
  const int threads = int(std::min<index_t>(host_threads(ctx_), count));
  // y += the other chunks' shares, in chunk order (the same sum on any number of threads).
  const auto add_shares = [&](index_t j0, index_t j1) {
    for (index_t r = 0; r < k; ++r) {
      T* __restrict yr = y.data + r * y.ld;
      for (index_t c = 1; c < count; ++c) {
        const T* __restrict sr = share[std::size_t(c)].data + r * P;
        for (index_t j = j0; j < j1; ++j) yr[j] += sr[j];
      }
    }
  };
  if (k > s.sized_k || threads <= 1) {
    // The first product of a block size sizes every chunk's buffers (allocation through the
    // context stays on this thread); its results are those of the parallel schedule.
    OneBlasThread one;
    for (index_t c = 0; c < count; ++c) s.product(s.chunks[std::size_t(c)], v, share[std::size_t(c)]);
    s.sized_k = std::max(s.sized_k, k);
    add_shares(0, P);
    return;
  }
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(count));
#pragma omp parallel num_threads(threads)
  {
    OneBlasThread one;
#pragma omp for schedule(dynamic, 1)
    for (index_t c = 0; c < count; ++c) {
      try {
        s.product(s.chunks[std::size_t(c)], v, share[std::size_t(c)]);
      } catch (...) {
        errors[std::size_t(c)] = std::current_exception();
      }
    }
    // The loop's barrier: every share is complete. Each thread adds its slice of the columns.
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    add_shares(P * t / nt, P * (t + 1) / nt);
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

template class CurvatureOperator<float>;
template class CurvatureOperator<double>;

}  // namespace dynascope::linalg
