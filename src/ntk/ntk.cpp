// Empirical NTK engines. All three fill the kernel tile by tile: a tile is the block of the
// output for sample blocks I (rows) and J (columns); on the symmetric path only J >= I is
// computed and the mirror image is written by a transpose (within the diagonal tiles too), so the
// symmetric kernel is exactly symmetric.
#include "dynascope/ntk.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "core/buffer.hpp"
#include "core/checks.hpp"
#include "dynascope/blas.hpp"
#include "kernels/launch.cuh"

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
  const index_t r = tile.rows, c = tile.cols;
  if (mode == Outputs::diagonal) {
    // tile is [b1, b2*o] -> dst [b2, b1*o]
    kern::parallel_for(ctx, r * c, [=] DYNASCOPE_HD(index_t idx) {
      const index_t n = idx / c, rest = idx % c, m = rest / o, a = rest % o;
      dst(m, n * o + a) = tile(n, rest);
    });
  } else {
    kern::parallel_for(ctx, r * c, [=] DYNASCOPE_HD(index_t idx) {
      const index_t i = idx / c, j = idx % c;
      dst(j, i) = tile(i, j);
    });
  }
}

// A diagonal tile of the symmetric path (I == J) holds both entries of each pair (n, m), (m, n),
// and BLAS may round the two differently (they sit in different places of its kernels: row tails,
// thread partitions). Its upper triangle is kept and mirrored, as the off-diagonal tiles are, so
// that the symmetric kernel is exactly symmetric whatever BLAS kernel ran. One pass over the
// diagonal tiles only: nothing next to the GEMMs that fill them.
template <class T>
void symmetrize_tile(const Context& ctx, Outputs mode, index_t o, MatrixView<const T> tile, MatrixView<T> dst) {
  const index_t r = tile.rows, c = tile.cols;
  if (mode == Outputs::diagonal) {
    // tile is [b, b*o]: (n, m*o + a) pairs with (m, n*o + a)
    kern::parallel_for(ctx, r * c, [=] DYNASCOPE_HD(index_t idx) {
      const index_t n = idx / c, rest = idx % c, m = rest / o, a = rest % o;
      dst(n, rest) = m >= n ? tile(n, rest) : tile(m, n * o + a);
    });
  } else {
    kern::parallel_for(ctx, r * c, [=] DYNASCOPE_HD(index_t idx) {
      const index_t i = idx / c, j = idx % c;
      dst(i, j) = j >= i ? tile(i, j) : tile(j, i);
    });
  }
}

// Tiles of the output over sample blocks, with the bookkeeping shared by the engines: a scratch
// tile on the context's backend, copied (and mirrored) into the caller's output.
template <class T>
struct TileWriter {
  const Context& ctx;
  Outputs mode;
  index_t o;
  bool symmetric;
  Buffer<T> mirror;

  void write(MatrixView<const T> tile, index_t r0, index_t c0, MatrixView<T> out) {
    const index_t rps = rows_per_sample(mode, o), cps = cols_per_sample(mode, o);
    if (symmetric && r0 == c0) {
      MatrixView<T> m = mirror.reserve(ctx, tile.rows, tile.cols);
      symmetrize_tile<T>(ctx, mode, o, tile, m);
      copy(ctx, MatrixView<const T>(m), out.block(r0 * rps, c0 * cps, tile.rows, tile.cols));
      return;
    }
    copy(ctx, tile, out.block(r0 * rps, c0 * cps, tile.rows, tile.cols));
    if (!symmetric) return;
    const index_t b1 = tile.rows / rps, b2 = tile.cols / cps;
    MatrixView<T> m = mirror.reserve(ctx, b2 * rps, b1 * cps);
    mirror_tile<T>(ctx, mode, o, tile, m);
    copy(ctx, MatrixView<const T>(m), out.block(c0 * rps, r0 * cps, m.rows, m.cols));
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

// Features of one sample block: activations and the deltas of every output (or of their sum).
template <class T>
struct Features {
  MlpEngine<T> engine;
  Buffer<T> cot;
  index_t rows = 0, first = -1;
  Features(const Context& ctx, const MlpSpec& s) : engine(ctx, s) {}

  // block = number of cotangent blocks: O (one-hot e_a) or 1 (all ones, the kernel of sum_a f_a).
  void compute(const Context& ctx, const T* params, MatrixView<const T> x, index_t row0, index_t b, index_t blocks) {
    if (first == row0 && rows == b) return;
    const index_t o = engine.spec().outputs();
    engine.forward(params, x.block(row0, 0, b, x.cols));
    MatrixView<T> c = cot.reserve(ctx, blocks * b, o);
    const bool one_hot = blocks > 1 || o == 1;
    kern::parallel_for(ctx, blocks * b * o, [=] DYNASCOPE_HD(index_t idx) {
      const index_t a = idx % o, blk = idx / (b * o);
      c.data[idx] = one_hot ? (a == blk ? T(1) : T(0)) : T(1);
    });
    engine.backprop(params, c, blocks);
    first = row0;
    rows = b;
  }
};

template <class T>
std::size_t structured_bytes(const MlpSpec& s, Outputs mode, index_t b, bool per_layer) {
  const index_t o = s.outputs(), k = mode == Outputs::sum ? 1 : o;
  index_t widths = 0, outs = 0;
  for (index_t l = 1; l <= s.layers(); ++l) {
    widths += s.widths[std::size_t(l)];
    outs += s.widths[std::size_t(l)];
  }
  const index_t engine = 2 * b * widths + k * b * outs + k * b * o;
  const index_t gd = mode == Outputs::full ? o * o * b * b : mode == Outputs::diagonal ? o * b * b : b * b;
  const index_t tile = b * b * rows_per_sample(mode, o) * cols_per_sample(mode, o);
  const index_t scratch = b * b + gd + tile * (per_layer ? 3 : 2);
  return sizeof(T) * std::size_t(2 * engine + scratch);
}

template <class T>
double structured_flops(const MlpSpec& s, Outputs mode, index_t n1, index_t n2, bool symmetric) {
  const double o = double(s.outputs()), k = mode == Outputs::sum ? 1.0 : o;
  double per_pair = 0, per_sample = 0;
  for (index_t l = 0; l < s.layers(); ++l) {
    const double a = double(s.fan_in(l)), b = double(s.fan_out(l));
    per_pair += 2 * a + 2 * b * (mode == Outputs::full ? o * o : k);
    per_sample += 2 * a * b * (1 + k);
  }
  const double pairs = symmetric ? 0.5 * double(n1) * double(n1 + 1) : double(n1) * double(n2);
  return pairs * per_pair + double(n1 + (symmetric ? 0 : n2)) * per_sample;
}

template <class T>
void structured_tile(const Context& ctx, const MlpSpec& s, Outputs mode, const Features<T>& f1, const Features<T>& f2,
                     index_t b1, index_t b2, Buffer<T>& ga_buf, Buffer<T>& gd_buf, MatrixView<T> total,
                     Buffer<T>* layer_buf, const std::function<void(index_t, MatrixView<const T>)>& layer_out,
                     NtkInfo& info) {
  const index_t o = s.outputs(), k = mode == Outputs::sum ? 1 : o;
  const index_t tc = total.cols;
  MatrixView<T> ga = ga_buf.reserve(ctx, b1, b2);
  for (index_t l = 1; l <= s.layers(); ++l) {
    const index_t out = s.widths[std::size_t(l)];
    const auto t0 = std::chrono::steady_clock::now();
    const T w = static_cast<T>(s.weight_scale(l - 1) * s.weight_scale(l - 1));
    const T bb = s.bias[std::size_t(l - 1)] ? static_cast<T>(s.bias_scale * s.bias_scale) : T(0);
    blas::gemm<T>(ctx, Op::none, Op::trans, T(1), f1.engine.activation(l - 1), f2.engine.activation(l - 1), T(0), ga);
    MatrixView<const T> d1 = f1.engine.delta(l), d2 = f2.engine.delta(l);
    // Delta Delta'^T in the layout each mode needs.
    MatrixView<T> gd;
    if (mode == Outputs::full) {
      gd = gd_buf.reserve(ctx, o * b1, o * b2);  // rows a*b1 + n, cols b*b2 + m
      blas::gemm<T>(ctx, Op::none, Op::trans, T(1), d1, d2, T(0), gd);
    } else if (mode == Outputs::diagonal) {
      gd = gd_buf.reserve(ctx, o * b1, b2);  // block a: Delta_a Delta'_a^T
      blas::gemm_strided_batched<T>(ctx, Op::none, Op::trans, T(1), d1.block(0, 0, b1, out), b1 * out,
                                    d2.block(0, 0, b2, out), b2 * out, T(0), gd.block(0, 0, b1, b2), b1 * b2, o);
    } else {
      gd = gd_buf.reserve(ctx, b1, b2);  // sum over the k blocks
      for (index_t a = 0; a < k; ++a)
        blas::gemm<T>(ctx, Op::none, Op::trans, T(1), d1.block(a * b1, 0, b1, out), d2.block(a * b2, 0, b2, out),
                      a == 0 ? T(0) : T(1), gd);
    }
    if (ctx.is_host()) {
      info.gram_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double kk = mode == Outputs::full ? double(o * o) : double(k);
      info.gram_flops += 2.0 * double(b1) * double(b2) * (double(s.widths[std::size_t(l - 1)]) + kk * double(out));
    }
    MatrixView<T> dst = total;
    bool accumulate = true;
    if (layer_buf) {
      dst = layer_buf->reserve(ctx, total.rows, total.cols);
      accumulate = false;
    }
    const MatrixView<const T> gac = ga, gdc = gd;
    const index_t tile_size = total.rows * total.cols;
    kern::parallel_for(ctx, tile_size, [=] DYNASCOPE_HD(index_t idx) {
      const index_t r = idx / tc, c = idx % tc;
      index_t n, m, a = 0, b = 0;
      T g;
      switch (mode) {
        case Outputs::full:
          n = r / o, a = r % o, m = c / o, b = c % o;
          g = gdc(a * b1 + n, b * b2 + m);
          break;
        case Outputs::diagonal:
          n = r, m = c / o, a = c % o;
          g = gdc(a * b1 + n, m);
          break;
        default:
          n = r, m = c;
          g = gdc(n, m);
          break;
      }
      const T v = (w * gac(n, m) + bb) * g;
      dst(r, c) = accumulate ? dst(r, c) + v : v;
    });
    if (layer_buf) {
      layer_out(l - 1, dst);
      MatrixView<T> tot = total;
      kern::parallel_for(ctx, tile_size, [=] DYNASCOPE_HD(index_t idx) { tot.data[idx] += dst.data[idx]; });
    }
  }
}

template <class T>
NtkInfo structured(const Context& ctx, const MlpSpec& s, const T* params, MatrixView<const T> x1, MatrixView<const T> x2,
                   bool symmetric, Outputs mode, index_t b, MatrixView<T> out, const std::vector<MatrixView<T>>& per_layer) {
  const index_t o = s.outputs(), k = mode == Outputs::sum ? 1 : o;
  const index_t n1 = x1.rows, n2 = x2.rows;
  Features<T> f1(ctx, s), f2(ctx, s);
  Buffer<T> ga, gd, tile_buf, layer_buf;
  TileWriter<T> writer{ctx, mode, o, symmetric, {}};
  TileWriter<T> layer_writer{ctx, mode, o, symmetric, {}};
  const index_t rps = rows_per_sample(mode, o), cps = cols_per_sample(mode, o);
  NtkInfo info;
  const Blocks blocks{n1, n2, b, b, symmetric};
  const index_t total_tiles = blocks.count();
  for (index_t r0 = 0; r0 < n1; r0 += b) {
    const index_t b1 = std::min(b, n1 - r0);
    f1.compute(ctx, params, x1, r0, b1, k);
    for (index_t c0 = symmetric ? r0 : 0; c0 < n2; c0 += b) {
      const index_t b2 = std::min(b, n2 - c0);
      const Features<T>* g2 = &f1;
      if (!(symmetric && c0 == r0)) {
        f2.compute(ctx, params, x2, c0, b2, k);
        g2 = &f2;
      }
      MatrixView<T> tile = tile_buf.reserve(ctx, b1 * rps, b2 * cps);
      detail::fill_zero_bytes(ctx, tile.data, tile.backend, std::size_t(tile.size()) * sizeof(T));
      std::function<void(index_t, MatrixView<const T>)> layer_out = [&](index_t l, MatrixView<const T> t) {
        layer_writer.write(t, r0, c0, per_layer[std::size_t(l)]);
      };
      structured_tile<T>(ctx, s, mode, f1, *g2, b1, b2, ga, gd, tile, per_layer.empty() ? nullptr : &layer_buf, layer_out,
                         info);
      writer.write(tile, r0, c0, out);
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
