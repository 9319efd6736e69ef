#pragma once
// Kernel bodies of the linear-regions family (include/dynascope/regions.hpp), one functor per
// formula, each over one work item and usable on both backends.
#include <cmath>
#include <cstdint>

#include "dynascope/view.hpp"
#include "kernels/math.cuh"
#include "kernels/philox.cuh"

namespace dynascope::kern {

using std::pow;

// Gaussian entries of random frames, in double: element e = p * D + d of frame f is
// philox_normal(seed, stream, step, e) with (stream, step) = (first_frame + f, 1) for per-sample
// frames and (0, 0) for the one shared frame. Item i = f * frame_size + e.
struct DrawFrameEntries {
  double* out;
  index_t frame_size;  // P * D
  std::uint64_t seed;
  index_t first_frame;
  bool per_sample;
  DYNASCOPE_HD void operator()(index_t i) const {
    const index_t f = i / frame_size;
    const index_t e = i % frame_size;
    const auto stream = per_sample ? static_cast<std::uint32_t>(first_frame + f) : std::uint32_t{0};
    const std::uint32_t step = per_sample ? 1u : 0u;
    out[i] = philox_normal(seed, stream, step, static_cast<std::uint64_t>(e));
  }
};

// Orthonormal rows by modified Gram-Schmidt, each row projected out of the rows before it twice
// ("twice is enough": Giraud, Langou & Rozloznik), in double. Item f orthonormalizes the P rows
// of length D of frame f (frames packed [F * P, D]). A row whose norm after projection falls
// below 1e-10 of its norm before (the draw was rank deficient: probability zero for Gaussian
// rows, but never divide by it) sets *deficient.
struct OrthonormalizeFrame {
  double* frames;
  index_t p;
  index_t d;
  int* deficient;
  DYNASCOPE_HD void operator()(index_t f) const {
    double* base = frames + f * p * d;
    for (index_t i = 0; i < p; ++i) {
      double* ri = base + i * d;
      double before = 0;
      for (index_t c = 0; c < d; ++c) before += ri[c] * ri[c];
      for (int pass = 0; pass < 2; ++pass) {
        for (index_t k = 0; k < i; ++k) {
          const double* rk = base + k * d;
          double dot = 0;
          for (index_t c = 0; c < d; ++c) dot += ri[c] * rk[c];
          for (index_t c = 0; c < d; ++c) ri[c] -= dot * rk[c];
        }
      }
      double norm2 = 0;
      for (index_t c = 0; c < d; ++c) norm2 += ri[c] * ri[c];
      if (!(norm2 > 1e-20 * before)) {
        *deficient = 1;
        return;
      }
      const double inv = 1.0 / sqrt(norm2);
      for (index_t c = 0; c < d; ++c) ri[c] *= inv;
    }
  }
};

// The cross-polytope vertices of a tile of samples: row s * 2P + v, with v = 2p (x_s + r v_p) or
// 2p + 1 (x_s - r v_p), column c; frame f = s for per-sample frames, 0 otherwise. Computed in
// double and rounded once to T. Body of parallel_for_2d over (2P * n rows, D columns).
template <class T>
struct CrossPolytopeVertices {
  MatrixView<const T> x;   // [n, D]
  const double* frames;    // [F * P, D]
  index_t p;
  double radius;
  bool per_sample;
  MatrixView<T> out;       // [n * 2P, D]
  DYNASCOPE_HD void operator()(index_t row, index_t c) const {
    const index_t s = row / (2 * p);
    const index_t v = row % (2 * p);
    const index_t dir = v / 2;
    const double sign = (v & 1) ? -1.0 : 1.0;
    const index_t f = per_sample ? s : 0;
    const double offset = sign * radius * frames[(f * p + dir) * x.cols + c];
    out(row, c) = static_cast<T>(static_cast<double>(x(s, c)) + offset);
  }
};

// flags(s, j) = 1 when neuron j's pre-activation sign (z > 0 or not) is not the same at all 2P
// vertices of sample s (compared with vertex 0), 0 when it is, 2 when any of them is NaN or
// infinite (the count would be meaningless). z is [n * 2P, width]. Body of parallel_for_2d over
// (n, width): consecutive items read consecutive neurons of the same vertex row.
template <class T>
struct SignChangeFlags {
  MatrixView<const T> z;
  index_t vertices;  // 2P
  MatrixView<std::int32_t> flags;  // [n, width]
  DYNASCOPE_HD void operator()(index_t s, index_t j) const {
    const index_t base = s * vertices;
    const T z0 = z(base, j);
    if (!isfinite(z0)) {
      flags(s, j) = 2;
      return;
    }
    const bool positive = z0 > T(0);
    std::int32_t changed = 0;
    for (index_t v = 1; v < vertices; ++v) {
      const T zv = z(base + v, j);
      if (!isfinite(zv)) {
        flags(s, j) = 2;
        return;
      }
      if ((zv > T(0)) != positive) changed = 1;
    }
    flags(s, j) = changed;
  }
  DYNASCOPE_HD static bool isfinite(T v) { return v == v && v - v == T(0); }
};

// Host twin of SignChangeFlags + CountFlags for one sample: sweeps the sample's [2P, width] block
// of z row by row, so the inner loop runs over contiguous neurons and vectorizes (the (s, j)
// layout above, one neuron's 2P vertices strided by the width, is the coalesced one on a GPU but
// neither vectorizes nor streams on a CPU), and writes the count directly: counts(first + s,
// layer) = neurons whose sign is not the same at all vertices, or -1 when any z is NaN or
// infinite. Host only: launch with host_parallel_for over the samples of a tile.
template <class T>
struct SignChangeCountsRows {
  MatrixView<const T> z;  // [n * 2P, width]
  index_t vertices;       // 2P
  MatrixView<std::int32_t> counts;
  index_t first;
  index_t layer;
  void operator()(index_t s) const {
    constexpr index_t kChunk = 256;  // neurons per sweep: the flags stay in L1
    std::int32_t total = 0;
    bool nonfinite = false;
    for (index_t j0 = 0; j0 < z.cols; j0 += kChunk) {
      const index_t m = z.cols - j0 < kChunk ? z.cols - j0 : kChunk;
      unsigned char changed[kChunk], bad[kChunk];
      const T* z0 = &z(s * vertices, j0);
      for (index_t j = 0; j < m; ++j) {
        changed[j] = 0;
        bad[j] = !(z0[j] - z0[j] == T(0));
      }
      for (index_t v = 1; v < vertices; ++v) {
        const T* zv = &z(s * vertices + v, j0);
        for (index_t j = 0; j < m; ++j) {
          changed[j] |= (zv[j] > T(0)) != (z0[j] > T(0));
          bad[j] |= !(zv[j] - zv[j] == T(0));
        }
      }
      for (index_t j = 0; j < m; ++j) {
        total += changed[j];
        nonfinite |= bad[j] != 0;
      }
    }
    counts(first + s, layer) = nonfinite ? -1 : total;
  }
};

// The exact first-layer test: flags(s, j) = 1 iff |z(s, j)| < radius * reach[j], with
// reach[j] = max_p |c w_j . v_p|; 2 when z is not finite.
template <class T>
struct FirstLayerFlags {
  MatrixView<const T> z;     // [n, width] first-layer pre-activations
  const double* reach;       // [width]
  double radius;
  MatrixView<std::int32_t> flags;
  DYNASCOPE_HD void operator()(index_t s, index_t j) const {
    const double v = static_cast<double>(z(s, j));
    if (!(v == v) || v - v != 0.0) {
      flags(s, j) = 2;
      return;
    }
    flags(s, j) = (v < 0 ? -v : v) < radius * reach[j] ? 1 : 0;
  }
};

// reach[j] = max_p |a(p, j)|, with a = frame times the scaled first-layer weights [P, width].
template <class T>
struct ColumnMaxAbs {
  MatrixView<const T> a;
  double* reach;
  DYNASCOPE_HD void operator()(index_t j) const {
    double m = 0;
    for (index_t p = 0; p < a.rows; ++p) {
      const double v = static_cast<double>(a(p, j));
      const double av = v < 0 ? -v : v;
      m = av > m ? av : m;
    }
    reach[j] = m;
  }
};

// counts(first + s, layer) = number of flags equal to 1 in row s, or -1 when any flag is 2.
struct CountFlags {
  MatrixView<const std::int32_t> flags;  // [n, width]
  MatrixView<std::int32_t> counts;       // [N, L]
  index_t first;
  index_t layer;
  DYNASCOPE_HD void operator()(index_t s) const {
    std::int32_t total = 0;
    for (index_t j = 0; j < flags.cols; ++j) {
      const std::int32_t f = flags(s, j);
      if (f == 2) {
        total = -1;
        break;
      }
      total += f;
    }
    counts(first + s, layer) = total;
  }
};

// Narrows a frame of T to double: out[i] = in(i / D, i % D).
template <class T>
struct FrameToDouble {
  MatrixView<const T> in;
  double* out;
  DYNASCOPE_HD void operator()(index_t i) const { out[i] = static_cast<double>(in(i / in.cols, i % in.cols)); }
};

// Bit-packed sign patterns: word w of sample s holds bit b = 1 iff z(s, 64 w + b) > 0, for the
// neurons of one layer; bits past the layer's width are 0. A NaN pre-activation sets *nonfinite
// (every writer stores the same value). Body of parallel_for_2d over (n, words).
template <class T>
struct PackSigns {
  MatrixView<const T> z;               // [n, width]
  MatrixView<std::uint64_t> packed;    // [n, words], the layer's column block
  int* nonfinite;
  DYNASCOPE_HD void operator()(index_t s, index_t w) const {
    std::uint64_t word = 0;
    const index_t first = 64 * w;
    const index_t last = first + 64 < z.cols ? first + 64 : z.cols;
    for (index_t k = first; k < last; ++k) {
      const T v = z(s, k);
      if (v != v) *nonfinite = 1;
      if (v > T(0)) word |= std::uint64_t{1} << (k - first);
    }
    packed(s, w) = word;
  }
};

// Grid samples of the parallelogram A + s (B - A) + t (C - A): row i * R + j at
// s = (j + 1/2) / R, t = (i + 1/2) / R, so rows of the result are image rows of increasing t.
// Body of parallel_for_2d over (R * R, D); the map m is [D, 3] (B - A, C - A, A) in double.
template <class T>
struct PlaneGridPoints {
  const double* m;
  index_t resolution;
  MatrixView<T> out;
  DYNASCOPE_HD void operator()(index_t row, index_t c) const {
    const double s = (static_cast<double>(row % resolution) + 0.5) / static_cast<double>(resolution);
    const double t = (static_cast<double>(row / resolution) + 0.5) / static_cast<double>(resolution);
    out(row, c) = static_cast<T>(m[3 * c] * s + m[3 * c + 1] * t + m[3 * c + 2]);
  }
};

// Points x0 + t (x1 - x0) at t = i / (count - 1) (t = 0 for count 1); ends = [x0, x1 - x0] in
// double. Body of parallel_for_2d over (count, D).
template <class T>
struct SegmentPoints {
  const double* ends;  // [2, D]
  index_t count;
  MatrixView<T> out;
  DYNASCOPE_HD void operator()(index_t i, index_t c) const {
    const double t = count > 1 ? static_cast<double>(i) / static_cast<double>(count - 1) : 0.0;
    out(i, c) = static_cast<T>(ends[c] + t * ends[out.cols + c]);
  }
};

// Uniform points in the ball of radius r around each anchor: row a * count + i. Direction: D
// normals (Philox stream = row, step 2) normalised; radius r u^(1/D) with u uniform (step 3).
// Body of parallel_for over rows (each item writes its whole row).
template <class T>
struct BallPoints {
  MatrixView<const T> anchors;
  index_t count;
  double radius;
  std::uint64_t seed;
  MatrixView<T> out;
  DYNASCOPE_HD void operator()(index_t row) const {
    const index_t a = row / count;
    const index_t d = out.cols;
    double norm2 = 0;
    for (index_t c = 0; c < d; ++c) {
      const double g = philox_normal(seed, static_cast<std::uint32_t>(row), 2u, static_cast<std::uint64_t>(c));
      norm2 += g * g;
    }
    const double u = philox_uniform<double>(seed, static_cast<std::uint32_t>(row), 3u, 0u);
    const double scale = norm2 > 0 ? radius * pow(u, 1.0 / static_cast<double>(d)) / sqrt(norm2) : 0.0;
    for (index_t c = 0; c < d; ++c) {
      const double g = philox_normal(seed, static_cast<std::uint32_t>(row), 2u, static_cast<std::uint64_t>(c));
      out(row, c) = static_cast<T>(static_cast<double>(anchors(a, c)) + scale * g);
    }
  }
};

// Uniform points in the cross-polytope {x_a + r sum_p c_p v_p : sum_p |c_p| <= 1} spanned by the
// P orthonormal rows v_p of a frame [P, D] (double), around each anchor: row a * count + i. The
// weights (|c_1|, ..., |c_P|, slack) are Dirichlet(1, ..., 1) - exponentials over their sum -
// with random signs: uniform in the L1 ball. Draws: exponential of element p from Philox
// (stream = row, step 4), signs from step 5. Body of parallel_for over rows.
template <class T>
struct CrossPolytopePoints {
  MatrixView<const T> anchors;
  const double* frame;
  index_t p;
  index_t count;
  double radius;
  std::uint64_t seed;
  MatrixView<T> out;
  DYNASCOPE_HD double weight(index_t row, index_t q) const {
    const double u = philox_uniform<double>(seed, static_cast<std::uint32_t>(row), 4u, static_cast<std::uint64_t>(q));
    return -log(1.0 - u);  // Exp(1); u < 1 so the log is finite
  }
  DYNASCOPE_HD void operator()(index_t row) const {
    const index_t a = row / count;
    const index_t d = out.cols;
    double total = 0;
    for (index_t q = 0; q <= p; ++q) total += weight(row, q);
    for (index_t c = 0; c < d; ++c) out(row, c) = anchors(a, c);
    for (index_t q = 0; q < p; ++q) {
      const std::uint32_t bits = philox_u32(seed, static_cast<std::uint32_t>(row), 5u, static_cast<std::uint64_t>(q));
      const double cq = ((bits >> 31) ? -1.0 : 1.0) * weight(row, q) / total * radius;
      for (index_t c = 0; c < d; ++c) out(row, c) = static_cast<T>(static_cast<double>(out(row, c)) + cq * frame[q * d + c]);
    }
  }
};
}  // namespace dynascope::kern
