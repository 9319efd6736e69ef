// Empirical NTK engines. All three fill the kernel tile by tile: a tile is the block of the
// output for sample blocks I (rows) and J (columns); on the symmetric path only J >= I is
// computed and the mirror image is written by a transpose (within the diagonal tiles too), so the
// symmetric kernel is exactly symmetric.
#include "dynascope/ntk.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "core/buffer.hpp"
#include "core/checks.hpp"
#include "dynascope/blas.hpp"
#include "kernels/activation.cuh"
#include "kernels/launch.cuh"
#include "model/kernel_activation.hpp"

namespace dynascope::ntk {

using blas::Op;
using detail::Buffer;
using detail::check_matrix;
using detail::dims;
using model::MlpEngine;
using model::MlpSpec;

Outputs parse_outputs(const std::string& t) { return parse_name(outputs_names, t); }
Method parse_method(const std::string& t) { return parse_name(method_names, t); }
const char* to_string(Outputs o) noexcept { return name_of(outputs_names, o); }
const char* to_string(Method m) noexcept { return name_of(method_names, m); }

KernelShape kernel_shape(Outputs mode, index_t n1, index_t n2, index_t o) {
  switch (mode) {
    case Outputs::full: return {{n1, o, n2, o}, n1 * o, n2 * o};
    case Outputs::diagonal: return {{n1, n2, o}, n1, n2 * o};
    case Outputs::trace:
    case Outputs::sum: return {{n1, n2}, n1, n2};
  }
  return {};
}

namespace {

// Output rows/cols per sample of X1 / X2.
index_t rows_per_sample(Outputs m, index_t o) { return m == Outputs::full ? o : 1; }
index_t cols_per_sample(Outputs m, index_t o) { return m == Outputs::trace || m == Outputs::sum ? 1 : o; }

// The mirror of a tile for the symmetric path: entry (I-sample n, J-sample m) moves to (m, n).
// full and trace/sum: the matrix transpose; diagonal: the transpose of each output's block.
template <class T>
void mirror_tile(const Context& ctx, Outputs mode, index_t o, MatrixView<const T> tile, MatrixView<T> dst) {
  if (mode == Outputs::diagonal) {
    // tile is [b1, b2*o] -> dst [b2, b1*o]: one (n, m) pair per body, its o entries inside
    kern::parallel_for_2d(ctx, tile.rows, tile.cols / o, [=] DYNASCOPE_HD(index_t n, index_t m) {
      for (index_t a = 0; a < o; ++a) dst(m, n * o + a) = tile(n, m * o + a);
    });
  } else {
    kern::parallel_for_2d(ctx, tile.rows, tile.cols, [=] DYNASCOPE_HD(index_t i, index_t j) { dst(j, i) = tile(i, j); });
  }
}

// A diagonal tile of the symmetric path (I == J) holds both entries of each pair (n, m), (m, n),
// and BLAS may round the two differently (they sit in different places of its kernels: row tails,
// thread partitions), or leave one of them unwritten (the full mode computes the upper part only).
// Its upper triangle is kept and mirrored, as the off-diagonal tiles are, so that the symmetric
// kernel is exactly symmetric whatever BLAS kernel ran.
template <class T>
void symmetrize_tile(const Context& ctx, Outputs mode, index_t o, MatrixView<const T> tile, MatrixView<T> dst) {
  if (mode == Outputs::diagonal) {
    // tile is [b, b*o]: (n, m*o + a) pairs with (m, n*o + a)
    kern::parallel_for_2d(ctx, tile.rows, tile.cols / o, [=] DYNASCOPE_HD(index_t n, index_t m) {
      for (index_t a = 0; a < o; ++a) dst(n, m * o + a) = m >= n ? tile(n, m * o + a) : tile(m, n * o + a);
    });
  } else {
    kern::parallel_for_2d(ctx, tile.rows, tile.cols, [=] DYNASCOPE_HD(index_t i, index_t j) {
      dst(i, j) = j >= i ? tile(i, j) : tile(j, i);
    });
  }
}

// symmetrize_tile in place: the lower part of a diagonal tile from its upper part (only the lower
// entries are written).
template <class T>
void symmetrize_in_place(const Context& ctx, Outputs mode, index_t o, MatrixView<T> t) {
  if (mode == Outputs::diagonal) {
    kern::parallel_for_2d(ctx, t.rows, t.cols / o, [=] DYNASCOPE_HD(index_t n, index_t m) {
      if (m < n)
        for (index_t a = 0; a < o; ++a) t(n, m * o + a) = t(m, n * o + a);
    });
  } else {
    // In 32 x 32 blocks (the block pairs below the diagonal and the diagonal ones), so that the
    // transposed reads stay within a few cache lines: row by row, each read of a large tile (the
    // full mode's N O x N O) would touch a new line.
    constexpr index_t kB = 32;
    const index_t nb = (t.rows + kB - 1) / kB;
    kern::parallel_for_2d(ctx, nb, nb, [=] DYNASCOPE_HD(index_t bi, index_t bj) {
      if (bj > bi) return;
      const index_t i1 = bi * kB + kB < t.rows ? bi * kB + kB : t.rows;
      const index_t j1 = bj * kB + kB < t.cols ? bj * kB + kB : t.cols;
      for (index_t i = bi * kB; i < i1; ++i)
        for (index_t j = bj * kB; j < j1 && j < i; ++j) t(i, j) = t(j, i);
    });
  }
}

// Tiles of the output over sample blocks, with the bookkeeping shared by the engines: a scratch
// tile on the context's backend, written (and mirrored) into the caller's output, directly when
// the output is on the context's backend, else through a staging buffer and a copy.
template <class T>
struct TileWriter {
  const Context& ctx;
  Outputs mode;
  index_t o;
  bool symmetric;
  Buffer<T> mirror;

  // Whether `out` is on the context's backend (and device): tiles can be computed in it.
  bool direct(MatrixView<T> out) const {
    return out.backend == ctx.backend() && (ctx.is_host() || out.device == ctx.device());
  }

  // A tile computed in place in `out` at sample offsets (r0, c0), b1 x b2 samples: its mirror.
  void finish_in_place(index_t r0, index_t c0, index_t b1, index_t b2, MatrixView<T> out) {
    if (!symmetric) return;
    const index_t rps = rows_per_sample(mode, o), cps = cols_per_sample(mode, o);
    MatrixView<T> t = out.block(r0 * rps, c0 * cps, b1 * rps, b2 * cps);
    if (r0 == c0) symmetrize_in_place<T>(ctx, mode, o, t);
    else mirror_tile<T>(ctx, mode, o, t, out.block(c0 * rps, r0 * cps, b2 * rps, b1 * cps));
  }

  void write(MatrixView<const T> tile, index_t r0, index_t c0, MatrixView<T> out) {
    const index_t rps = rows_per_sample(mode, o), cps = cols_per_sample(mode, o);
    const bool direct = this->direct(out);
    const auto place = [&](index_t rows, index_t cols, index_t at_r, index_t at_c, auto&& fill) {
      MatrixView<T> target = out.block(at_r, at_c, rows, cols);
      if (direct) {
        fill(target);
        return;
      }
      MatrixView<T> m = mirror.reserve(ctx, rows, cols);
      fill(m);
      copy(ctx, MatrixView<const T>(m), target);
    };
    if (symmetric && r0 == c0) {
      place(tile.rows, tile.cols, r0 * rps, c0 * cps, [&](MatrixView<T> d) { symmetrize_tile<T>(ctx, mode, o, tile, d); });
      return;
    }
    copy(ctx, tile, out.block(r0 * rps, c0 * cps, tile.rows, tile.cols));
    if (!symmetric) return;
    const index_t b1 = tile.rows / rps, b2 = tile.cols / cps;
    place(b2 * rps, b1 * cps, c0 * rps, r0 * cps, [&](MatrixView<T> d) { mirror_tile<T>(ctx, mode, o, tile, d); });
  }
};

struct Blocks {
  index_t n1, n2, b1, b2;
  bool symmetric;
  index_t count() const {
    const index_t t1 = (n1 + b1 - 1) / b1, t2 = (n2 + b2 - 1) / b2;
    return symmetric ? t1 * (t1 + 1) / 2 : t1 * t2;
  }
};

// ---------------------------------------------------------------------------------------------
// structured: Theta_l = (c_l^2 A A'^T + beta^2 [bias]) .* (Delta Delta'^T), summed over layers
// ---------------------------------------------------------------------------------------------
//
// Cost model (what the method must do; NtkInfo::flops counts exactly this). Layer l = 1..L maps
// width w_{l-1} to w_l; k = O cotangents (full, diagonal, trace) or 1 (sum).
//   Per sample: the forward pass, sum_l 2 w_{l-1} w_l, and the deltas Delta_l = d f / d z_l for
//     l < L, one batched backward sweep of the k cotangents: 2 k w_{l+1} w_l for l = 1..L-2. No
//     sweep into the input (nothing needs d f / d x), none through the output layer (Delta_L is
//     the identity: Delta_{L-1,a} = c_L W_L[a, :] .* s'(z_{L-1}), elementwise), and in trace mode
//     of a two-layer network none at all.
//   Per pair of samples (N (N + 1) / 2 pairs for a symmetric kernel: SYRK on the diagonal tiles
//     and only the upper tiles; N1 N2 otherwise), per layer: A A'^T, 2 w_{l-1}; and the delta Gram
//     - output layer: none. Delta_L Delta_L'^T is I_O (full), 1 (diagonal), O (trace, sum).
//     - layer L-1 in trace mode: sum_a Delta_a(n) . Delta_a(m) = s'(n)^T D s'(m) with
//       D = diag(c_L^2 sum_a W_L[a, j]^2): one product of width w_{L-1}, 2 w_{L-1}, instead of O.
//     - otherwise 2 k w_l (trace, sum: one GEMM over the deltas laid out sample-major as
//       [N, k w_l]), 2 O w_l (diagonal: O GEMMs), 2 O^2 w_l (full: the [N O, w_l] Gram, already
//       in the output's (n, a) x (m, b) layout).
//   The Hadamard products and sums are O(tile) memory passes, not counted.
// On 784-512-512-10, trace, N = 256: 1.68 GFLOP per call in the per-sample work (80 % of it the
// backward sweep [N O, 512] x [512, 512]) and 0.49 GFLOP in the Grams.

// Features of one sample block: the forward pass, and the deltas of every layer below the output
// one in sample-major layout: delta(l) is [b, k * w_l], row n holding Delta_{l,0}(n), ...,
// Delta_{l,k-1}(n) (so [b * k, w_l] row-major is the same memory: the batched sweep is one GEMM
// and the full mode's Gram comes out in the kernel's own row order). In trace mode `collapsed` holds
// s'(z_{L-1}) .* sqrt(diag D) [b, w_{L-1}], the factor of layer L-1's collapsed Gram.
template <class T>
struct Features {
  MlpEngine<T> engine;
  std::vector<Buffer<T>> delta;  // index 1..L-1
  Buffer<T> collapsed;
  index_t rows = 0, first = -1;
  Features(const Context& ctx, const MlpSpec& s) : engine(ctx, s), delta(std::size_t(s.layers())) {}

  MatrixView<const T> deltas(index_t l, index_t k) const {
    return delta[std::size_t(l)].view(rows, k * engine.spec().widths[std::size_t(l)]);
  }
  MatrixView<const T> collapsed_view() const {
    const MlpSpec& s = engine.spec();
    return collapsed.view(rows, s.widths[std::size_t(s.layers() - 1)]);
  }

  // head: [k, w_{L-1}], row a = c_L W_L[a, :] (k = O) or c_L sum_a W_L[a, :] (k = 1); sqrt_d
  // [w_{L-1}] (trace mode only, else null).
  void compute(const Context& ctx, const T* params, MatrixView<const T> x, index_t row0, index_t b, index_t k,
                 MatrixView<const T> head, const T* sqrt_d) {
    if (first == row0 && rows == b) return;
    const MlpSpec& s = engine.spec();
    const index_t L = s.layers();
    engine.forward(params, x.block(row0, 0, b, x.cols));
    first = row0;
    rows = b;
    if (L == 1) return;
    const index_t top = L - 1, wt = s.widths[std::size_t(top)];
    const kern::ActParams act_top = model::internal::act_params(s.activations[std::size_t(top - 1)]);
    const T* z_top = engine.preactivation(top).data;
    if (sqrt_d != nullptr) {  // trace: the collapsed factor of layer L-1
      MatrixView<T> cf = collapsed.reserve(ctx, b, wt);
      const double slope = act_top.slope;
      DYNASCOPE_WITH_ACT(act_top.kind, A, kern::parallel_for_2d(ctx, b, wt, [=] DYNASCOPE_HD(index_t n, index_t j) {
        cf.data[n * wt + j] = kern::act_deriv(kern::ActParams{A, slope}, z_top[n * wt + j]) * sqrt_d[j];
      }));
      if (top == 1) return;  // nothing below needs the deltas
    }
    // Delta_{L-1}[n, a w + j] = head[a, j] s'(z_{L-1}(n))_j: the output layer's sweep, elementwise.
    MatrixView<T> d_top = delta[std::size_t(top)].reserve(ctx, b, k * wt);
    {
      const double slope = act_top.slope;
      const MatrixView<const T> h = head;
      DYNASCOPE_WITH_ACT(act_top.kind, A, kern::parallel_for_2d(ctx, b * k, wt, [=] DYNASCOPE_HD(index_t r, index_t j) {
        const index_t n = r / k, a = r % k;
        d_top.data[r * wt + j] = h(a, j) * kern::act_deriv(kern::ActParams{A, slope}, z_top[n * wt + j]);
      }));
    }
    // Delta_l = (c_{l+1} Delta_{l+1} W_{l+1}) .* s'(z_l), all k cotangents in one GEMM.
    for (index_t l = top - 1; l >= 1; --l) {
      const index_t w_out = s.widths[std::size_t(l + 1)], w = s.widths[std::size_t(l)];
      const MatrixView<const T> above = delta[std::size_t(l + 1)].view(b * k, w_out);
      const MatrixView<const T> weight{params + s.weight_offset(l), w_out, w, w, ctx.backend(), ctx.device()};
      MatrixView<T> below = delta[std::size_t(l)].reserve(ctx, b * k, w);
      blas::gemm<T>(ctx, Op::none, Op::none, static_cast<T>(s.weight_scale(l)), above, weight, T(0), below);
      const kern::ActParams act = model::internal::act_params(s.activations[std::size_t(l - 1)]);
      const double slope = act.slope;
      const T* z = engine.preactivation(l).data;
      DYNASCOPE_WITH_ACT(act.kind, A, kern::parallel_for_2d(ctx, b * k, w, [=] DYNASCOPE_HD(index_t r, index_t j) {
        below.data[r * w + j] *= kern::act_deriv(kern::ActParams{A, slope}, z[(r / k) * w + j]);
      }));
    }
  }
};

// Cotangent blocks: O, or 1 for the kernel of sum_a f_a.
index_t cotangents(Outputs mode, index_t o) { return mode == Outputs::sum ? 1 : o; }

// Full mode: samples per panel of the delta Gram [panel*o, b2*o]: about 400 rows, enough for the
// panel's GEMM to run near the machine's rate (at 4 MB panels, 100 rows for N = 1024, O = 10, ran
// at 70 % of it), while a panel of each layer stays small enough to be read back from cache by its
// Hadamard product (384 b2 o floats: 16 MB at b2 = 1024, O = 10).
constexpr index_t kFullPanelRows = 384;
template <class T>
index_t full_panel(index_t o, index_t b1, index_t /*b2*/) {
  return std::clamp<index_t>((kFullPanelRows + o - 1) / std::max<index_t>(o, 1), 1, std::max<index_t>(b1, 1));
}

template <class T>
std::size_t structured_bytes(const MlpSpec& s, Outputs mode, index_t b, bool per_layer) {
  const index_t o = s.outputs(), k = cotangents(mode, o), L = s.layers();
  index_t widths = 0, hidden = 0, wmax = 0;
  for (index_t l = 1; l <= L; ++l) widths += s.widths[std::size_t(l)];
  for (index_t l = 1; l < L; ++l) {
    hidden += s.widths[std::size_t(l)];
    wmax = std::max(wmax, s.widths[std::size_t(l)]);
  }
  // Per Features: the engine's activations and pre-activations, the deltas, the collapsed factor.
  const index_t features = 2 * b * widths + k * b * hidden + b * wmax;
  const index_t gd = mode == Outputs::full ? L * (b * b + full_panel<T>(o, b, b) * o * o * b)
                                           : mode == Outputs::diagonal ? o * b * b : b * b;
  const index_t tile = b * b * rows_per_sample(mode, o) * cols_per_sample(mode, o);
  const index_t scratch = b * b + gd + tile * (per_layer ? 3 : 2) + k * wmax + wmax;
  return sizeof(T) * std::size_t(2 * features + scratch);
}

// The cost model above for whole inputs (every sample's features once).
template <class T>
double structured_flops(const MlpSpec& s, Outputs mode, index_t n1, index_t n2, bool symmetric) {
  const index_t o = s.outputs(), k = cotangents(mode, o), L = s.layers();
  // A Gram of rows r1 x r2 over width K: 2 r1 r2 K, or r1 (r1 + 1) K by SYRK on the symmetric path.
  const auto gram_cost = [&](index_t per_sample, double width) {
    const double r1 = double(n1 * per_sample), r2 = double(n2 * per_sample);
    return (symmetric ? r1 * (r1 + 1) : 2.0 * r1 * r2) * width;
  };
  double flops = 0, per_sample = 0;
  for (index_t l = 0; l < L; ++l) per_sample += 2.0 * double(s.fan_in(l)) * double(s.fan_out(l));
  for (index_t l = 1; l <= L - 2; ++l)  // the sweep's GEMMs give Delta_l for l = 1..L-2
    per_sample += 2.0 * double(k) * double(s.widths[std::size_t(l + 1)]) * double(s.widths[std::size_t(l)]);
  for (index_t l = 1; l <= L; ++l) {
    const double w_in = double(s.widths[std::size_t(l - 1)]), w = double(s.widths[std::size_t(l)]);
    flops += gram_cost(1, w_in);
    if (l == L) continue;  // the output layer's delta Gram is a constant
    if (mode == Outputs::trace && l == L - 1) flops += gram_cost(1, w);  // collapsed
    else if (mode == Outputs::full) flops += gram_cost(o, w);            // the [N O, w] Gram
    else flops += double(mode == Outputs::diagonal ? o : 1) * gram_cost(1, double(mode == Outputs::diagonal ? 1 : k) * w);
  }
  return flops + double(n1 + (symmetric ? 0 : n2)) * per_sample;
}

// G = X Y^T, or X X^T by SYRK when the two blocks are the same samples (both triangles written).
// Returns the flops done.
template <class T>
double gram(const Context& ctx, MatrixView<const T> x, MatrixView<const T> y, bool same, MatrixView<T> g) {
  if (same) {
    blas::syrk<T>(ctx, Op::none, T(1), x, T(0), g);
    return double(x.rows) * double(x.rows + 1) * double(x.cols);
  }
  blas::gemm<T>(ctx, Op::none, Op::trans, T(1), x, y, T(0), g);
  return 2.0 * double(x.rows) * double(y.rows) * double(x.cols);
}

// Full mode: the delta Gram of layer l for the panel of samples [p0, p1) of f1 against the samples
// of f2 from c0 on (c0 = p0 on a diagonal tile of the symmetric kernel: the panel's own block by
// SYRK, the rest by GEMM; else c0 = 0, one GEMM), [(p1 - p0) o, (b2 - c0) o] in `buf`. Returns
// the flops done.
template <class T>
double full_delta_panel(const Context& ctx, const Features<T>& f1, const Features<T>& f2, index_t l, index_t o,
                        index_t out, index_t p0, index_t p1, index_t b2, bool same, Buffer<T>& buf, MatrixView<T>& g) {
  const index_t c0 = same ? p0 : 0, rows = (p1 - p0) * o;
  g = buf.reserve(ctx, rows, (b2 - c0) * o);
  const MatrixView<const T> d1 = f1.deltas(l, o), d2 = f2.deltas(l, o);
  const MatrixView<const T> r1{d1.data + p0 * o * out, rows, out, out, d1.backend, d1.device};
  const MatrixView<const T> r2{d2.data + (same ? p1 : 0) * o * out, (b2 - (same ? p1 : 0)) * o, out, out, d2.backend,
                               d2.device};
  if (!same) return gram<T>(ctx, r1, r2, false, g);
  double flops = gram<T>(ctx, r1, r1, true, g.block(0, 0, rows, rows));
  if (p1 < b2) flops += gram<T>(ctx, r1, r2, false, g.block(0, rows, rows, (b2 - p1) * o));
  return flops;
}

// Full mode, panel [p0, p1) of a tile: dst[r, m*o + q] (+)= (w ga(n, m) + bb) * G[r, m*o + q] for its rows
// r = n*o + a and the columns of samples m in [c0, c1), with G the panel's delta Gram gp (its row 0 is
// row p0*o, its column 0 column c0*o) or, for the output layer, I_O (G = 1 where q == a).
template <bool Identity, bool Accumulate, class T>
void full_hadamard(const Context& ctx, index_t o, index_t p0, index_t p1, index_t c0, index_t c1, T w, T bb,
                   MatrixView<const T> ga, MatrixView<const T> gp, MatrixView<T> dst) {
  kern::parallel_for_2d(ctx, (p1 - p0) * o, c1 - c0, [=] DYNASCOPE_HD(index_t rl, index_t ml) {
    const index_t r = p0 * o + rl, m = c0 + ml;
    const T g = w * ga(r / o, m) + bb;
    T* row = dst.data + r * dst.ld + m * o;
    // Plain ifs on the template constants (nvcc refuses a first capture inside if constexpr in an
    // extended lambda); each instantiation folds them away.
    if (Identity) {
      const index_t a = r % o;
      if (Accumulate) {
        row[a] += g;
      } else {
        for (index_t q = 0; q < o; ++q) row[q] = q == a ? g : T(0);
      }
    } else {
      const T* gr = gp.data + rl * gp.ld + ml * o;
      if (Accumulate) {
        for (index_t q = 0; q < o; ++q) row[q] += g * gr[q];
      } else {
        for (index_t q = 0; q < o; ++q) row[q] = g * gr[q];
      }
    }
  });
}

// Full mode without per-layer kernels, all layers fused: the activation Grams of every layer first
// (b1 x b2 each), then panel by panel the delta Gram panels of every layer below the output one and
// one pass that writes sum_l (c_l^2 A A'^T + beta^2) .* Delta Delta'^T into the tile: the O^2-sized
// tile is written once instead of read and written once per layer. Up to kMaxFused layers (deeper
// networks take the layer-by-layer path).
constexpr int kMaxFused = 8;

template <class T>
struct FusedLayers {
  int count = 0;  // layers, the last one the output layer (its delta Gram is I_O)
  T w[kMaxFused], bb[kMaxFused];
  const T* ga[kMaxFused];
  index_t ga_ld[kMaxFused];
  const T* gp[kMaxFused];  // the panel's delta Gram of layers 1..count-1
  index_t gp_ld[kMaxFused];
};

template <class T>
struct FusedScratch {
  std::vector<Buffer<T>> ga, gd;
};

template <class T>
void full_tile_fused(const Context& ctx, const MlpSpec& s, const Features<T>& f1, const Features<T>& f2, index_t b1,
                     index_t b2, FusedScratch<T>& scratch, MatrixView<T> dst, NtkInfo& info) {
  const index_t o = s.outputs(), L = s.layers();
  const bool same = &f1 == &f2;
  scratch.ga.resize(std::size_t(L));
  scratch.gd.resize(std::size_t(L - 1));  // layers below the output one
  FusedLayers<T> fl;
  fl.count = static_cast<int>(L);
  auto t0 = std::chrono::steady_clock::now();
  double flops = 0;
  for (index_t l = 1; l <= L; ++l) {
    MatrixView<T> ga = scratch.ga[std::size_t(l - 1)].reserve(ctx, b1, b2);
    flops += gram<T>(ctx, f1.engine.activation(l - 1), f2.engine.activation(l - 1), same, ga);
    fl.w[l - 1] = static_cast<T>(s.weight_scale(l - 1) * s.weight_scale(l - 1));
    fl.bb[l - 1] = s.bias[std::size_t(l - 1)] ? static_cast<T>(s.bias_scale * s.bias_scale) : T(0);
    fl.ga[l - 1] = ga.data;
    fl.ga_ld[l - 1] = ga.ld;
  }
  const index_t panel = full_panel<T>(o, b1, b2);
  for (index_t p0 = 0; p0 < b1; p0 += panel) {
    const index_t p1 = std::min(b1, p0 + panel), c0 = same ? p0 : 0, rows = (p1 - p0) * o;
    for (index_t l = 1; l < L; ++l) {
      const index_t out = s.widths[std::size_t(l)];
      MatrixView<T> g;
      flops += full_delta_panel<T>(ctx, f1, f2, l, o, out, p0, p1, b2, same, scratch.gd[std::size_t(l - 1)], g);
      fl.gp[l - 1] = g.data;
      fl.gp_ld[l - 1] = g.ld;
    }
    if (ctx.is_host()) {
      info.gram_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      info.gram_flops += flops;
    }
    flops = 0;
    kern::parallel_for_2d(ctx, rows, b2 - c0, [=] DYNASCOPE_HD(index_t rl, index_t ml) {
      const index_t r = p0 * o + rl, m = c0 + ml, n = r / o, a = r % o;
      T* row = dst.data + r * dst.ld + m * o;
      const int last = fl.count - 1;
      const T g_out = fl.w[last] * fl.ga[last][n * fl.ga_ld[last] + m] + fl.bb[last];
      for (index_t q = 0; q < o; ++q) row[q] = q == a ? g_out : T(0);
      for (int l = 0; l < last; ++l) {
        const T g = fl.w[l] * fl.ga[l][n * fl.ga_ld[l] + m] + fl.bb[l];
        const T* gr = fl.gp[l] + rl * fl.gp_ld[l] + ml * o;
        for (index_t q = 0; q < o; ++q) row[q] += g * gr[q];
      }
    });
    t0 = std::chrono::steady_clock::now();
  }
}

template <class T>
void structured_tile(const Context& ctx, const MlpSpec& s, Outputs mode, const Features<T>& f1, const Features<T>& f2,
                     index_t b1, index_t b2, Buffer<T>& ga_buf, Buffer<T>& gd_buf, MatrixView<T> total,
                     Buffer<T>* layer_buf, const std::function<void(index_t, MatrixView<const T>)>& layer_out,
                     NtkInfo& info, FusedScratch<T>& fused) {
  const index_t o = s.outputs(), k = cotangents(mode, o), L = s.layers();
  const bool same = &f1 == &f2;  // a diagonal tile of the symmetric kernel
  if (mode == Outputs::full && layer_buf == nullptr && L <= kMaxFused) {
    full_tile_fused<T>(ctx, s, f1, f2, b1, b2, fused, total, info);
    return;
  }
  MatrixView<T> ga = ga_buf.reserve(ctx, b1, b2);
  for (index_t l = 1; l <= L; ++l) {
    const index_t out = s.widths[std::size_t(l)];
    const auto t0 = std::chrono::steady_clock::now();
    const T w = static_cast<T>(s.weight_scale(l - 1) * s.weight_scale(l - 1));
    const T bb = s.bias[std::size_t(l - 1)] ? static_cast<T>(s.bias_scale * s.bias_scale) : T(0);
    double flops = gram<T>(ctx, f1.engine.activation(l - 1), f2.engine.activation(l - 1), same, ga);
    // Delta Delta'^T in the layout each mode needs; none for the output layer (its value is
    // `unit`: I_O, 1 or O).
    MatrixView<T> gd;
    const bool output_layer = l == L;
    if (!output_layer) {
      if (mode == Outputs::trace && l == L - 1) {
        gd = gd_buf.reserve(ctx, b1, b2);
        flops += gram<T>(ctx, f1.collapsed_view(), f2.collapsed_view(), same, gd);
      } else if (mode == Outputs::full) {
        // Panel by panel below, each fused with its Hadamard product.
      } else if (mode == Outputs::diagonal) {
        gd = gd_buf.reserve(ctx, o * b1, b2);  // block a: Delta_a Delta'_a^T
        const MatrixView<const T> d1 = f1.deltas(l, k), d2 = f2.deltas(l, k);
        for (index_t a = 0; a < o; ++a)
          flops += gram<T>(ctx, d1.block(0, a * out, b1, out), d2.block(0, a * out, b2, out), same, gd.block(a * b1, 0, b1, b2));
      } else {  // trace, sum: one product over the k cotangents side by side
        gd = gd_buf.reserve(ctx, b1, b2);
        flops += gram<T>(ctx, f1.deltas(l, k), f2.deltas(l, k), same, gd);
      }
    }
    if (ctx.is_host()) {
      info.gram_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      info.gram_flops += flops;
    }
    const MatrixView<const T> gac = ga;
    // The tile is written by the first layer and accumulated by the others (no zero fill); per-layer
    // kernels go to their own buffer and are added after.
    MatrixView<T> dst = total;
    bool accumulate = l > 1;
    if (layer_buf) {
      dst = layer_buf->reserve(ctx, total.rows, total.cols);
      accumulate = false;
      // The full mode's diagonal tiles leave the lower part unwritten (the writer mirrors the upper
      // one); the sum over layers below reads the whole buffer.
      if (mode == Outputs::full && same) detail::fill_zero_bytes(ctx, dst.data, dst.backend, std::size_t(dst.size()) * sizeof(T));
    }
    const MatrixView<const T> gdc = gd;
    const T unit = mode == Outputs::trace || mode == Outputs::sum ? static_cast<T>(o) : T(1);
    // (c_l^2 A A'^T + beta^2) .* Delta Delta'^T, one sample pair (n, m) per body call, its O x O
    // (full) or O (diagonal) entries in an inner loop: no index division per entry.
    switch (mode) {
      case Outputs::full: {
        // Panels of `panel` samples (rows n*o + a): the panel's delta Gram [panel*o, cols*o], then at
        // once its Hadamard product while the panel is in cache. On a diagonal tile of the symmetric
        // kernel only the columns from the panel's first sample on (the upper part the writer
        // mirrors): SYRK for the panel's own block, GEMM right of it.
        const index_t panel = full_panel<T>(o, b1, b2);
        for (index_t p0 = 0; p0 < b1; p0 += panel) {
          const index_t p1 = std::min(b1, p0 + panel), c0 = same ? p0 : 0;
          MatrixView<const T> gp;
          if (!output_layer) {
            const auto tg = std::chrono::steady_clock::now();
            MatrixView<T> g;
            const double pf = full_delta_panel<T>(ctx, f1, f2, l, o, out, p0, p1, b2, same, gd_buf, g);
            gp = g;
            if (ctx.is_host()) {
              info.gram_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - tg).count();
              info.gram_flops += pf;
            }
          }
          if (output_layer)
            (accumulate ? full_hadamard<true, true, T> : full_hadamard<true, false, T>)(ctx, o, p0, p1, c0, b2, w, bb, gac, gp, dst);
          else
            (accumulate ? full_hadamard<false, true, T> : full_hadamard<false, false, T>)(ctx, o, p0, p1, c0, b2, w, bb, gac, gp, dst);
        }
        break;
      }
      case Outputs::diagonal:
        kern::parallel_for_2d(ctx, b1, b2, [=] DYNASCOPE_HD(index_t n, index_t m) {
          const T g = w * gac(n, m) + bb;
          T* row = dst.data + n * dst.ld + m * o;
          for (index_t q = 0; q < o; ++q) {
            const T v = g * (output_layer ? T(1) : gdc(q * b1 + n, m));
            row[q] = accumulate ? row[q] + v : v;
          }
        });
        break;
      default:
        kern::parallel_for_2d(ctx, b1, b2, [=] DYNASCOPE_HD(index_t n, index_t m) {
          const T v = (w * gac(n, m) + bb) * (output_layer ? unit : gdc(n, m));
          dst(n, m) = accumulate ? dst(n, m) + v : v;
        });
        break;
    }
    if (layer_buf) {
      layer_out(l - 1, dst);
      MatrixView<T> tot = total;
      const MatrixView<const T> layer = dst;
      if (l == 1) copy(ctx, layer, tot);
      else kern::parallel_for_2d(ctx, tot.rows, tot.cols, [=] DYNASCOPE_HD(index_t i, index_t j) { tot(i, j) += layer(i, j); });
    }
  }
}

template <class T>
NtkInfo structured(const Context& ctx, const MlpSpec& s, const T* params, MatrixView<const T> x1, MatrixView<const T> x2,
                   bool symmetric, Outputs mode, index_t b, MatrixView<T> out, const std::vector<MatrixView<T>>& per_layer) {
  const index_t o = s.outputs(), k = cotangents(mode, o), L = s.layers();
  const index_t n1 = x1.rows, n2 = x2.rows;
  Features<T> f1(ctx, s), f2(ctx, s);
  Buffer<T> ga, gd, tile_buf, layer_buf, head_buf, sqrt_d_buf;
  FusedScratch<T> fused;
  // The output layer's backward step, once: head[a, :] = c_L W_L[a, :] (or their sum), and in
  // trace mode sqrt(D)_j = c_L sqrt(sum_a W_L[a, j]^2).
  MatrixView<const T> head;
  const T* sqrt_d = nullptr;
  if (L >= 2) {
    const index_t wt = s.widths[std::size_t(L - 1)];
    const T c = static_cast<T>(s.weight_scale(L - 1));
    const MatrixView<const T> wl{params + s.weight_offset(L - 1), o, wt, wt, ctx.backend(), ctx.device()};
    MatrixView<T> h = head_buf.reserve(ctx, k, wt);
    const bool summed = k == 1 && o > 1;
    kern::parallel_for_2d(ctx, k, wt, [=] DYNASCOPE_HD(index_t a, index_t j) {
      T v = T(0);
      if (summed)
        for (index_t q = 0; q < o; ++q) v += wl(q, j);
      else
        v = wl(a, j);
      h(a, j) = c * v;
    });
    head = h;
    if (mode == Outputs::trace) {
      MatrixView<T> d = sqrt_d_buf.reserve(ctx, 1, wt);
      kern::parallel_for(ctx, wt, [=] DYNASCOPE_HD(index_t j) {
        double acc = 0;
        for (index_t q = 0; q < o; ++q) acc += double(wl(q, j)) * double(wl(q, j));
        d.data[j] = static_cast<T>(double(c) * sqrt(acc));
      });
      sqrt_d = d.data;
    }
  }
  TileWriter<T> writer{ctx, mode, o, symmetric, {}};
  TileWriter<T> layer_writer{ctx, mode, o, symmetric, {}};
  const index_t rps = rows_per_sample(mode, o), cps = cols_per_sample(mode, o);
  NtkInfo info;
  const Blocks blocks{n1, n2, b, b, symmetric};
  const index_t total_tiles = blocks.count();
  const bool in_place = writer.direct(out);
  for (index_t r0 = 0; r0 < n1; r0 += b) {
    const index_t b1 = std::min(b, n1 - r0);
    f1.compute(ctx, params, x1, r0, b1, k, head, sqrt_d);
    for (index_t c0 = symmetric ? r0 : 0; c0 < n2; c0 += b) {
      const index_t b2 = std::min(b, n2 - c0);
      const Features<T>* g2 = &f1;
      if (!(symmetric && c0 == r0)) {
        f2.compute(ctx, params, x2, c0, b2, k, head, sqrt_d);
        g2 = &f2;
      }
      // Written whole by the first layer (the upper part on diagonal tiles of the full mode), in the
      // output itself when it is on the context's backend.
      MatrixView<T> tile = in_place ? out.block(r0 * rps, c0 * cps, b1 * rps, b2 * cps) : tile_buf.reserve(ctx, b1 * rps, b2 * cps);
      std::function<void(index_t, MatrixView<const T>)> layer_out = [&](index_t l, MatrixView<const T> t) {
        layer_writer.write(t, r0, c0, per_layer[std::size_t(l)]);
      };
      structured_tile<T>(ctx, s, mode, f1, *g2, b1, b2, ga, gd, tile, per_layer.empty() ? nullptr : &layer_buf, layer_out,
                         info, fused);
      if (in_place) writer.finish_in_place(r0, c0, b1, b2, out);
      else writer.write(tile, r0, c0, out);
      ++info.tiles;
      if (total_tiles > 1) ctx.progress("ntk", info.tiles, total_tiles);  // one tile: nothing to tell
    }
  }
  info.flops = structured_flops<T>(s, mode, n1, n2, symmetric);
  return info;
}

// ---------------------------------------------------------------------------------------------
// jacobian: G = J1 J2^T from Jacobian tiles [B*O, P], reduced to the output mode
// ---------------------------------------------------------------------------------------------

// Reduces the full Gram tile G [(n,a), (m,b)] to the output mode and adds it into `dst`.
template <class T>
void reduce_full_gram(const Context& ctx, Outputs mode, index_t o, MatrixView<const T> g, MatrixView<T> dst, bool add) {
  const index_t tc = dst.cols;
  kern::parallel_for(ctx, dst.rows * dst.cols, [=] DYNASCOPE_HD(index_t idx) {
    const index_t r = idx / tc, c = idx % tc;
    T v;
    switch (mode) {
      case Outputs::full: v = g(r, c); break;
      case Outputs::diagonal: {
        const index_t m = c / o, a = c % o;
        v = g(r * o + a, m * o + a);
        break;
      }
      case Outputs::trace: {
        v = T(0);
        for (index_t a = 0; a < o; ++a) v += g(r * o + a, c * o + a);
        break;
      }
      default: {
        v = T(0);
        for (index_t a = 0; a < o; ++a)
          for (index_t b = 0; b < o; ++b) v += g(r * o + a, c * o + b);
        break;
      }
    }
    dst(r, c) = add ? dst(r, c) + v : v;
  });
}

template <class T>
std::size_t jacobian_bytes(index_t o, index_t p, Outputs mode, index_t b, bool per_layer) {
  const index_t tile = b * b * rows_per_sample(mode, o) * cols_per_sample(mode, o);
  return sizeof(T) * std::size_t(2 * b * o * p + b * b * o * o + tile * (per_layer ? 3 : 2));
}

template <class T>
NtkInfo gram_core(const Context& ctx, const JacobianSource<T>& s1, index_t n1, const JacobianSource<T>& s2, index_t n2,
                  bool symmetric, index_t o, index_t p, Outputs mode, index_t b, MatrixView<T> out,
                  const std::vector<std::pair<index_t, index_t>>& layer_cols, const std::vector<MatrixView<T>>& per_layer) {
  Buffer<T> j1, j2, g, tile_buf, layer_buf;
  TileWriter<T> writer{ctx, mode, o, symmetric, {}};
  TileWriter<T> layer_writer{ctx, mode, o, symmetric, {}};
  const index_t rps = rows_per_sample(mode, o), cps = cols_per_sample(mode, o);
  NtkInfo info;
  double flops = 0;
  const index_t total_tiles = Blocks{n1, n2, b, b, symmetric}.count();
  for (index_t r0 = 0; r0 < n1; r0 += b) {
    const index_t b1 = std::min(b, n1 - r0);
    MatrixView<T> ja = j1.reserve(ctx, b1 * o, p);
    s1(r0, b1, ja);
    for (index_t c0 = symmetric ? r0 : 0; c0 < n2; c0 += b) {
      const index_t b2 = std::min(b, n2 - c0);
      MatrixView<T> jb = ja;
      if (!(symmetric && c0 == r0)) {
        jb = j2.reserve(ctx, b2 * o, p);
        s2(c0, b2, jb);
      }
      MatrixView<T> tile = tile_buf.reserve(ctx, b1 * rps, b2 * cps);
      if (per_layer.empty() && mode == Outputs::trace && ja.ld == p && jb.ld == p) {
        // trace: K[n, m] = sum_a <J_a(n), J_a(m)> is the inner product of rows n and m of J viewed
        // as [N, O*P] (the O rows of a sample are adjacent): one GEMM with O*P columns instead of
        // the [b1*O, b2*O] Gram and its diagonal blocks, O times fewer flops (10x on 10 outputs).
        const MatrixView<const T> ra{ja.data, b1, o * p, o * p, ja.backend, ja.device};
        const MatrixView<const T> rb{jb.data, b2, o * p, o * p, jb.backend, jb.device};
        blas::gemm<T>(ctx, Op::none, Op::trans, T(1), ra, rb, T(0), tile);
        flops += 2.0 * double(b1) * double(b2) * double(o) * double(p);
      } else if (per_layer.empty()) {
        MatrixView<T> gv = g.reserve(ctx, b1 * o, b2 * o);
        blas::gemm<T>(ctx, Op::none, Op::trans, T(1), ja, jb, T(0), gv);
        reduce_full_gram<T>(ctx, mode, o, gv, tile, false);
        flops += 2.0 * double(b1) * double(b2) * double(o) * double(o) * double(p);
      } else {
        MatrixView<T> gv = g.reserve(ctx, b1 * o, b2 * o);
        flops += 2.0 * double(b1) * double(b2) * double(o) * double(o) * double(p);
        detail::fill_zero_bytes(ctx, tile.data, tile.backend, std::size_t(tile.size()) * sizeof(T));
        for (std::size_t l = 0; l < layer_cols.size(); ++l) {
          const auto [c_begin, c_end] = layer_cols[l];
          blas::gemm<T>(ctx, Op::none, Op::trans, T(1), ja.block(0, c_begin, ja.rows, c_end - c_begin),
                        jb.block(0, c_begin, jb.rows, c_end - c_begin), T(0), gv);
          MatrixView<T> lt = layer_buf.reserve(ctx, tile.rows, tile.cols);
          reduce_full_gram<T>(ctx, mode, o, gv, lt, false);
          layer_writer.write(lt, r0, c0, per_layer[l]);
          reduce_full_gram<T>(ctx, mode, o, gv, tile, true);
        }
      }
      writer.write(tile, r0, c0, out);
      ++info.tiles;
      if (total_tiles > 1) ctx.progress("ntk", info.tiles, total_tiles);  // one tile: nothing to tell
    }
  }
  info.flops = flops;   // the GEMMs done (symmetric runs skip the lower tiles)
  return info;
}

// Our own Jacobian rows: for each output a, a backward pass with cotangent e_a and the
// per-sample gradients written to rows n*O + a.
template <class T>
JacobianSource<T> mlp_jacobian_source(const Context& ctx, MlpEngine<T>& engine, const T* params, MatrixView<const T> x,
                                      Buffer<T>& cot) {
  return [&ctx, &engine, params, x, &cot](index_t row0, index_t rows, MatrixView<T> j) {
    const index_t o = engine.spec().outputs();
    engine.forward(params, x.block(row0, 0, rows, x.cols));
    MatrixView<T> c = cot.reserve(ctx, rows, o);
    for (index_t a = 0; a < o; ++a) {
      kern::parallel_for(ctx, rows * o, [=] DYNASCOPE_HD(index_t idx) { c.data[idx] = idx % o == a ? T(1) : T(0); });
      engine.backprop(params, c);
      engine.per_sample_grads({j.data + a * j.ld, rows, j.cols, o * j.ld, j.backend, j.device});
    }
  };
}

// ---------------------------------------------------------------------------------------------
// jvp: column blocks Theta[:, (m, b)] = J1 v_(m,b) with v_(m,b) = J2 row (m, b)
// ---------------------------------------------------------------------------------------------

template <class T>
NtkInfo jvp_method(const Context& ctx, const MlpSpec& s, const T* params, MatrixView<const T> x1, MatrixView<const T> x2,
                   bool symmetric, Outputs mode, index_t b, MatrixView<T> out) {
  const index_t o = s.outputs(), p = s.num_params(), n1 = x1.rows, n2 = x2.rows;
  MlpEngine<T> e1(ctx, s), e2(ctx, s);
  Buffer<T> cot, tangents, jv, g, tile_buf;
  TileWriter<T> writer{ctx, mode, o, symmetric, {}};
  const index_t rps = rows_per_sample(mode, o), cps = cols_per_sample(mode, o);
  const JacobianSource<T> src2 = mlp_jacobian_source<T>(ctx, e2, params, x2, cot);
  NtkInfo info;
  const index_t total_tiles = Blocks{n1, n2, b, b, symmetric}.count();
  double flops = 0;
  for (index_t c0 = 0; c0 < n2; c0 += b) {
    const index_t b2 = std::min(b, n2 - c0);
    MatrixView<T> v = tangents.reserve(ctx, b2 * o, p);
    src2(c0, b2, v);
    for (index_t r0 = 0; r0 < (symmetric ? std::min(n1, c0 + b2) : n1); r0 += b) {
      const index_t b1 = std::min(b, n1 - r0);
      if (symmetric && r0 > c0) break;
      e1.forward(params, x1.block(r0, 0, b1, x1.cols));
      MatrixView<T> y = jv.reserve(ctx, b2 * o * b1, o);  // row t*b1 + n, col a: Theta[(n,a), t]
      e1.jvp(params, v, y);
      // Rearrange into the full Gram layout [(n,a), t] and reduce to the mode.
      MatrixView<T> gv = g.reserve(ctx, b1 * o, b2 * o);
      const index_t t_count = b2 * o;
      MatrixView<const T> yc = y;
      kern::parallel_for(ctx, b1 * o * t_count, [=] DYNASCOPE_HD(index_t idx) {
        const index_t r = idx / t_count, t = idx % t_count;
        gv(r, t) = yc(t * b1 + r / o, r % o);
      });
      MatrixView<T> tile = tile_buf.reserve(ctx, b1 * rps, b2 * cps);
      reduce_full_gram<T>(ctx, mode, o, gv, tile, false);
      writer.write(tile, r0, c0, out);
      ++info.tiles;
      if (total_tiles > 1) ctx.progress("ntk", info.tiles, total_tiles);  // one tile: nothing to tell
      for (index_t l = 0; l < s.layers(); ++l)
        flops += 4.0 * double(t_count) * double(b1) * double(s.fan_in(l)) * double(s.fan_out(l));
    }
  }
  info.flops = flops;
  return info;
}

// Largest block size b <= n whose tiles fit the budget.
index_t fit_block(index_t n, const std::function<std::size_t(index_t)>& bytes, std::size_t budget) {
  if (bytes(1) > budget) return 0;
  index_t lo = 1, hi = std::max<index_t>(n, 1);
  while (lo < hi) {
    const index_t mid = lo + (hi - lo + 1) / 2;
    if (bytes(mid) <= budget) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

}  // namespace

template <class T>
NtkInfo empirical_ntk_into(const Context& ctx, const MlpSpec& spec, const T* params, MatrixView<const T> x1,
                           std::optional<MatrixView<const T>> x2_opt, const NtkOptions& options, MatrixView<T> out,
                           const std::vector<MatrixView<T>>& per_layer) {
  spec.validate();
  const bool symmetric = !x2_opt.has_value();
  const MatrixView<const T> x2 = symmetric ? x1 : *x2_opt;
  const index_t o = spec.outputs(), p = spec.num_params(), L = spec.layers();
  if (x1.rows == 0 || x2.rows == 0) throw InvalidArgument("empirical_ntk: the input sets must not be empty");
  if (x1.cols != spec.inputs() || x2.cols != spec.inputs())
    throw ShapeMismatch("empirical_ntk: inputs have " + std::to_string(x1.cols) + (symmetric ? "" : " and " + std::to_string(x2.cols)) +
                        " columns but the network " + spec.arch_string() + " takes " + std::to_string(spec.inputs()));
  check_matrix(ctx, x1, "empirical_ntk", "x1");
  check_matrix(ctx, x2, "empirical_ntk", "x2");
  const Outputs mode = options.outputs;
  const KernelShape shape = kernel_shape(mode, x1.rows, x2.rows, o);
  if (out.rows != shape.rows || out.cols != shape.cols)
    throw ShapeMismatch("empirical_ntk: the output must be " + dims(shape.rows, shape.cols) + " (" + to_string(mode) + " " +
                        shape_string(shape.tensor) + "), got " + dims(out.rows, out.cols));
  if (out.backend != ctx.backend() && out.backend != Backend::host)
    throw InvalidArgument("empirical_ntk: the output must be on the context's backend or on the host");
  if (!per_layer.empty()) {
    if (static_cast<index_t>(per_layer.size()) != L)
      throw ShapeMismatch("empirical_ntk: per-layer output needs " + std::to_string(L) + " views");
    for (const auto& v : per_layer) {
      if (v.rows != shape.rows || v.cols != shape.cols) throw ShapeMismatch("empirical_ntk: per-layer views must have the kernel's shape");
      if (v.backend != ctx.backend() && v.backend != Backend::host)
        throw InvalidArgument("empirical_ntk: per-layer outputs must be on the context's backend or on the host");
    }
  }
  const std::size_t budget = ctx.workspace_budget();
  const index_t nmax = std::max(x1.rows, x2.rows);
  const bool want_layers = !per_layer.empty();
  const index_t b_struct = fit_block(nmax, [&](index_t b) { return structured_bytes<T>(spec, mode, b, want_layers); }, budget);
  const index_t b_jac = fit_block(nmax, [&](index_t b) { return jacobian_bytes<T>(o, p, mode, b, want_layers); }, budget);
  const index_t b_jvp = fit_block(nmax, [&](index_t b) { return jacobian_bytes<T>(o, p, mode, b, false) + sizeof(T) * std::size_t(b * b * o * o); }, budget);

  Method method = options.method;
  NtkInfo info;
  if (method == Method::automatic) {
    // Flop model; structured wins for every MLP, but the choice is made, not assumed.
    const double fs = b_struct ? structured_flops<T>(spec, mode, x1.rows, x2.rows, symmetric) : 1e300;
    const double pairs = symmetric ? 0.5 * double(x1.rows) * double(x1.rows + 1) : double(x1.rows) * double(x2.rows);
    const double fj = b_jac ? 2.0 * pairs * double(o * o) * double(p) : 1e300;
    if (fs >= 1e300 && fj >= 1e300)
      throw OutOfMemory("empirical_ntk: the workspace budget of " + std::to_string(budget) + " bytes cannot hold one tile of any method");
    method = fs <= fj ? Method::structured : Method::jacobian;
    info.reason = std::string("flop model: structured ") + (fs < 1e300 ? std::to_string(fs) : "does not fit") + ", jacobian " +
                  (fj < 1e300 ? std::to_string(fj) : "does not fit");
  }
  const auto need = [&](index_t b, const char* name) {
    if (b == 0)
      throw OutOfMemory(std::string("empirical_ntk: the workspace budget of ") + std::to_string(budget) +
                        " bytes cannot hold one tile of the " + name + " method");
  };
  NtkInfo got;
  switch (method) {
    case Method::structured:
      need(b_struct, "structured");
      got = structured<T>(ctx, spec, params, x1, x2, symmetric, mode, b_struct, out, per_layer);
      break;
    case Method::jacobian: {
      need(b_jac, "jacobian");
      MlpEngine<T> e1(ctx, spec), e2(ctx, spec);
      Buffer<T> c1, c2;
      const JacobianSource<T> s1 = mlp_jacobian_source<T>(ctx, e1, params, x1, c1);
      const JacobianSource<T> s2 = mlp_jacobian_source<T>(ctx, e2, params, x2, c2);
      std::vector<std::pair<index_t, index_t>> cols;
      for (index_t l = 0; l < L; ++l)
        cols.emplace_back(spec.weight_offset(l), l + 1 < L ? spec.weight_offset(l + 1) : p);
      got = gram_core<T>(ctx, s1, x1.rows, s2, x2.rows, symmetric, o, p, mode, b_jac, out, cols, per_layer);
      break;
    }
    case Method::jvp:
      if (want_layers) throw InvalidArgument("empirical_ntk: per-layer kernels need the structured or jacobian method");
      need(b_jvp, "jvp");
      got = jvp_method<T>(ctx, spec, params, x1, x2, symmetric, mode, b_jvp, out);
      break;
    case Method::automatic: break;
  }
  got.method = method;
  got.reason = info.reason.empty() ? "requested" : info.reason;
  if (!ctx.is_host()) got.gram_flops = got.gram_seconds = 0;
  got.shape = shape;
  return got;
}

template <class T>
NtkResult<T> empirical_ntk(const Context& ctx, const MlpSpec& spec, const T* params, MatrixView<const T> x1,
                           std::optional<MatrixView<const T>> x2, const NtkOptions& options) {
  const KernelShape shape = kernel_shape(options.outputs, x1.rows, x2 ? x2->rows : x1.rows, spec.outputs());
  NtkResult<T> r;
  r.kernel = Array<T>(ctx, shape.tensor);
  std::vector<MatrixView<T>> views;
  if (options.per_layer)
    for (index_t l = 0; l < spec.layers(); ++l) {
      r.per_layer.emplace_back(ctx, shape.tensor);
      views.push_back({r.per_layer.back().data(), shape.rows, shape.cols, shape.cols, ctx.backend(), ctx.device()});
    }
  r.info = empirical_ntk_into<T>(ctx, spec, params, x1, x2, options,
                                 {r.kernel.data(), shape.rows, shape.cols, shape.cols, ctx.backend(), ctx.device()}, views);
  return r;
}

template <class T>
NtkInfo gram_from_jacobians(const Context& ctx, const JacobianSource<T>& source1, index_t n1, const JacobianSource<T>* source2,
                            index_t n2, index_t outputs, index_t params, Outputs mode, MatrixView<T> out) {
  const bool symmetric = source2 == nullptr;
  if (symmetric) n2 = n1;
  if (n1 <= 0 || n2 <= 0 || outputs <= 0 || params <= 0)
    throw InvalidArgument("gram_from_jacobians: samples, outputs and parameters must be positive");
  const KernelShape shape = kernel_shape(mode, n1, n2, outputs);
  if (out.rows != shape.rows || out.cols != shape.cols)
    throw ShapeMismatch("gram_from_jacobians: the output must be " + dims(shape.rows, shape.cols) + ", got " +
                        dims(out.rows, out.cols));
  if (out.backend != ctx.backend() && out.backend != Backend::host)
    throw InvalidArgument("gram_from_jacobians: the output must be on the context's backend or on the host");
  const index_t b = fit_block(std::max(n1, n2), [&](index_t bb) { return jacobian_bytes<T>(outputs, params, mode, bb, false); },
                              ctx.workspace_budget());
  if (b == 0)
    throw OutOfMemory("gram_from_jacobians: the workspace budget of " + std::to_string(ctx.workspace_budget()) +
                      " bytes cannot hold the Jacobian of one sample");
  NtkInfo info = gram_core<T>(ctx, source1, n1, symmetric ? source1 : *source2, n2, symmetric, outputs, params, mode, b, out, {}, {});
  info.method = Method::jacobian;
  info.reason = "caller-supplied Jacobians";
  info.shape = shape;
  return info;
}

// ---------------------------------------------------------------------------------------------
// NtkOperator: Y = J (J^T V), one batched backward and one batched forward-mode pass
// ---------------------------------------------------------------------------------------------
template <class T>
struct NtkOperator<T>::Impl {
  Context ctx;
  MlpEngine<T> engine;
  const T* params;
  MatrixView<const T> x;
  Buffer<T> grads;
  index_t applied = 0;
  Impl(const Context& c, const MlpSpec& s, const T* p, MatrixView<const T> xv) : ctx(c), engine(c, s), params(p), x(xv) {
    engine.forward(params, x);
  }
};

template <class T>
NtkOperator<T>::NtkOperator(const Context& ctx, const MlpSpec& spec, const T* params, MatrixView<const T> x)
    : impl_(std::make_unique<Impl>(ctx, spec, params, x)) {}
template <class T>
NtkOperator<T>::~NtkOperator() = default;
template <class T>
NtkOperator<T>::NtkOperator(NtkOperator&&) noexcept = default;
template <class T>
index_t NtkOperator<T>::size() const { return impl_->x.rows * impl_->engine.spec().outputs(); }
template <class T>
const Context& NtkOperator<T>::context() const { return impl_->ctx; }
template <class T>
index_t NtkOperator<T>::applications() const { return impl_->applied; }

template <class T>
void NtkOperator<T>::apply(MatrixView<const T> v, MatrixView<T> y) {
  Impl& s = *impl_;
  const index_t n = s.x.rows, o = s.engine.spec().outputs(), m = n * o, k = v.rows, p = s.engine.spec().num_params();
  if (v.cols != m || y.cols != m || y.rows != k)
    throw ShapeMismatch("NtkOperator::apply: V and Y must be [k, " + std::to_string(m) + "], got " + dims(v.rows, v.cols) +
                        " and " + dims(y.rows, y.cols));
  if (!v.contiguous() || !y.contiguous()) throw InvalidArgument("NtkOperator::apply: V and Y must be contiguous");
  check_matrix(s.ctx, v, "NtkOperator::apply", "V");
  check_matrix(s.ctx, y, "NtkOperator::apply", "Y");
  if (k == 0) return;
  // The engine keeps the forward pass of x; backprop and jvp only need it.
  s.engine.backprop(s.params, {v.data, k * n, o, o, v.backend, v.device}, k);
  MatrixView<T> g = s.grads.reserve(s.ctx, k, p);
  s.engine.param_grads(g);
  s.engine.jvp(s.params, g, {y.data, k * n, o, o, y.backend, y.device});
  s.applied += k;
}

#define DS_INSTANTIATE(T)                                                                                               \
  template NtkInfo empirical_ntk_into<T>(const Context&, const MlpSpec&, const T*, MatrixView<const T>,                \
                                         std::optional<MatrixView<const T>>, const NtkOptions&, MatrixView<T>,         \
                                         const std::vector<MatrixView<T>>&);                                            \
  template NtkResult<T> empirical_ntk<T>(const Context&, const MlpSpec&, const T*, MatrixView<const T>,                \
                                         std::optional<MatrixView<const T>>, const NtkOptions&);                        \
  template NtkInfo gram_from_jacobians<T>(const Context&, const JacobianSource<T>&, index_t, const JacobianSource<T>*, \
                                          index_t, index_t, index_t, Outputs, MatrixView<T>);                          \
  template class NtkOperator<T>;
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
#undef DS_INSTANTIATE

}  // namespace dynascope::ntk
