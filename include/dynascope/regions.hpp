#pragma once
// Linear regions of a network's input space (docs/definitions.md, "Linear regions"): the local
// complexity of Humayun, Balestriero & Baraniuk — how many neurons change their activation sign
// inside a small cross-polytope around each sample — and its exact first-layer form.
//
// The neighbourhood of x is spanned by P orthonormal directions v_1..v_P of input space and a
// radius r; its 2P vertices are x + r v_p and x - r v_p (vertex 2p and 2p + 1, so vertex 0 is
// x + r v_1). Every vertex goes through the network, and layer l counts the neurons whose
// pre-activation sign (z > 0 or not) is not the same at all 2P vertices; deeper layers thus test
// the embedded vertices, the paper's coarse approximation. A neuron changes sign where its
// pre-activation crosses 0 whatever the activation, so the count is defined for every network;
// only for piecewise-linear activations (relu, leaky_relu, abs, identity) do the sign changes
// mark boundaries of linear regions.
#include <array>
#include <cstdint>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/model.hpp"

namespace dynascope::regions {

// Where the P directions come from.
enum class Frame {
  shared,      // one random frame for all samples (the reference code's choice)
  per_sample,  // an independent random frame for every sample
  given,       // the caller's [P, D] frame, used for every sample
};

struct LcOptions {
  index_t dims = 25;          // P, 1 <= P <= D (ignored for Frame::given: the frame's rows)
  double radius = 0;          // r > 0, no default: it depends on the data's scale
  Frame frame = Frame::shared;
  std::uint64_t seed = 0;     // random frames: Gaussian [P, D] per frame, orthonormalized rows
};

struct LcResult {
  // counts(n, l) for sample n and linear layer l = 0..L-1 (the output layer last), on the
  // context's backend.
  Array<std::int32_t> counts;
  std::vector<double> per_layer_mean;  // L: mean over samples of counts(:, l)
  double total_mean = 0;               // mean over samples of the sum over hidden layers
  double all_layers_mean = 0;          // the same, output layer included
  index_t dims = 0;                    // P used
  double radius = 0;
};

// Local complexity of every row of x [N, D] (on ctx's backend, like params). The vertices of a
// tile of samples go through the network as one batch (vertices x samples rows); tiles are sized
// to ctx.workspace_budget(). Results do not depend on tiling or thread count: the counts are
// integers, and a random frame is a function of (seed, sample index) only.
// frame: the caller's [P, D] orthonormal rows, read only for Frame::given (on ctx's backend).
// Throws InvalidArgument for r <= 0, P outside [1, D], a frame of the wrong width or whose rows are
// not orthonormal (max |F F^T - I| above 10 sqrt(eps of T)), and ShapeMismatch for x.
template <class T>
DYNASCOPE_API LcResult local_complexity(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                        MatrixView<const T> x, const LcOptions& options,
                                        MatrixView<const T> frame = {});

// The exact first-layer count for a shared frame [P, D]: neuron j counts at x iff
// |z_j(x)| < r max_p |c w_j . v_p|, with z_j the pre-activation and c the layer's weight scale
// (the vertex test agrees except where a vertex lands exactly on a neuron's hyperplane).
// Returns [N] counts on ctx's backend.
template <class T>
DYNASCOPE_API Array<std::int32_t> first_layer_counts(const Context& ctx, const model::MlpSpec& spec,
                                                     const T* params, MatrixView<const T> x,
                                                     MatrixView<const T> frame, double radius);

// The random orthonormal frame local_complexity uses for `sample` (Frame::per_sample) or for all
// samples (Frame::shared, sample ignored): [P, D] on ctx's backend. For tests and for callers
// who want to see or reuse the directions.
template <class T>
DYNASCOPE_API Array<T> random_frame(const Context& ctx, index_t inputs, index_t dims, std::uint64_t seed,
                                    Frame kind = Frame::shared, index_t sample = 0);

// ---- Activation patterns -----------------------------------------------------------------------
// The pattern of a sample is the sign (z > 0) of every hidden neuron. Samples with the same
// pattern lie in the same linear region (for piecewise-linear activations), so the number of
// distinct patterns among M samples counts the regions they hit. Counting is exact: patterns
// are bit-packed and compared word by word after a sort (primitives::distinct_rows).

struct PatternOptions {
  bool ids = false;  // also return the region id of every sample
};

struct PatternResult {
  index_t samples = 0;
  index_t distinct = 0;                     // distinct patterns of all hidden layers together
  std::vector<index_t> distinct_per_layer;  // distinct patterns of each hidden layer alone
  // [M] region id per sample (options.ids), on ctx's backend: ids number the distinct patterns
  // 0..distinct-1 in order of first appearance (sample 0 is in region 0), on every backend.
  Array<std::int64_t> ids;
};

// Patterns of the rows of samples [M, D] (on ctx's backend), tiled over samples under
// ctx.workspace_budget(). Throws InvalidArgument when a pre-activation is NaN.
template <class T>
DYNASCOPE_API PatternResult count_patterns(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                           MatrixView<const T> samples, const PatternOptions& options = {});

// Samplers, each returning [M, D] on ctx's backend.
// A resolution x resolution grid of cell centres of the parallelogram through points [3, D]
// (host): row i * resolution + j at s = (j + 1/2) / resolution, t = (i + 1/2) / resolution.
template <class T>
DYNASCOPE_API Array<T> plane_grid(const Context& ctx, MatrixView<const double> points, index_t resolution);
// count evenly spaced points from x0 to x1 (both included; host arrays of D values).
template <class T>
DYNASCOPE_API Array<T> segment_points(const Context& ctx, const double* x0, const double* x1, index_t inputs,
                                      index_t count);
// count uniform points in the ball of radius r around every anchor [A, D] (on ctx's backend):
// row a * count + i belongs to anchor a. Seeded (Philox: the same on every backend up to libm's
// last-place differences in pow).
template <class T>
DYNASCOPE_API Array<T> ball_points(const Context& ctx, MatrixView<const T> anchors, double radius, index_t count,
                                   std::uint64_t seed);
// count uniform points in the cross-polytope {x_a + r sum_p c_p v_p : sum |c_p| <= 1} around every
// anchor, spanned by the shared random frame of local_complexity (random_frame(ctx, D, dims,
// seed)): the neighbourhood whose vertices the local complexity tests. Row a * count + i.
template <class T>
DYNASCOPE_API Array<T> cross_polytope_points(const Context& ctx, MatrixView<const T> anchors, double radius,
                                             index_t dims, index_t count, std::uint64_t seed);

// ---- From the caller's pre-activations (any network) -------------------------------------------
// The local complexity and the activation patterns of a network the library does not run (a CNN,
// a ResNet, a model in another framework): the library builds the vertices, the caller pushes
// them through its own network and hands back each chosen layer's pre-activations (one row per
// vertex or sample, the layer's neurons flattened: a convolution's channels x positions), and the
// library does the sign test and the pattern counting. For an Mlp whose layers are all handed
// back this gives exactly local_complexity's and count_patterns' numbers.

// The 2P cross-polytope vertices of the samples x [m, D] into out [m * 2P, D] (both on ctx's
// backend): row s * 2P + 2p is x_s + r v_p and row s * 2P + 2p + 1 is x_s - r v_p, the vertices
// local_complexity pushes through an Mlp, bit for bit. x holds rows first_sample ..
// first_sample + m - 1 of the caller's whole set (the index picks Frame::per_sample frames, so a
// set done tile by tile gets the frames of one whole call). options and frame as for
// local_complexity; P is options.dims, or frame.rows for Frame::given. Throws InvalidArgument for
// r <= 0, P outside [1, D], a bad frame or first_sample < 0, and ShapeMismatch for out.
template <class T>
DYNASCOPE_API void cross_polytope_vertices(const Context& ctx, MatrixView<const T> x, const LcOptions& options,
                                           MatrixView<T> out, index_t first_sample = 0,
                                           MatrixView<const T> frame = {});

// One layer's sign-change counts from its pre-activations z [m * vertices, W] (on ctx's backend):
// counts(first + s, column) = the number of columns j whose sign (z > 0 or not) is not the same
// at all rows s * vertices .. s * vertices + vertices - 1. counts [N, L] is on ctx's backend;
// rows first .. first + m - 1 of the given column are written. Throws InvalidArgument when
// vertices < 2, z.rows is not a multiple of it, the rows or column fall outside counts, or a z
// is NaN or infinite (naming the sample, first + s).
template <class T>
DYNASCOPE_API void sign_change_counts(const Context& ctx, MatrixView<const T> z, index_t vertices,
                                      MatrixView<std::int32_t> counts, index_t first, index_t column);

// Words of one layer of `width` neurons in a packed pattern.
constexpr index_t pattern_words(index_t width) { return (width + 63) / 64; }

// Packs the signs (z > 0) of one layer's pre-activations z [m, W] into
// packed(first + s, word0 .. word0 + pattern_words(W) - 1), count_patterns' layout: bit b of word
// w is neuron 64 w + b; bits past W are 0. packed [M, words] is on ctx's backend. Throws
// InvalidArgument when a z is NaN or the block falls outside packed.
template <class T>
DYNASCOPE_API void pack_signs(const Context& ctx, MatrixView<const T> z, MatrixView<std::uint64_t> packed,
                              index_t first, index_t word0);

// Distinct patterns among the rows of packed [M, words] (on ctx's backend), layer l owning the
// words [layer_words[l], layer_words[l + 1]) (layer_words: L + 1 ascending offsets, 0 first and
// words last): distinct counts the whole rows, distinct_per_layer each layer's block, ids as for
// count_patterns. Throws InvalidArgument for offsets that do not cover the rows.
DYNASCOPE_API PatternResult count_packed_patterns(const Context& ctx, MatrixView<const std::uint64_t> packed,
                                                  const std::vector<index_t>& layer_words,
                                                  const PatternOptions& options = {});

// ---- Exact regions in low dimension (float64; piecewise-linear activations only) ----------------
// On a segment or a plane every layer is affine on each region of the layers before it, so the
// regions can be computed exactly: each region is split by the zero sets of the next layer's
// neurons pulled back through the region's affine map (lines on a plane, points on a segment).
// The regions are the activation regions of the hidden layers (the output layer splits nothing).
// Only relu, leaky_relu, abs and identity activations are piecewise linear; others are refused.
// Parameters may live on either backend (they are copied to the host once).

struct SegmentRegions {
  index_t regions = 0;               // intervals of the segment, one per activation region crossed
  std::vector<double> breakpoints;   // interior interval ends as fractions t in (0, 1), ascending
};

// The segment x(t) = x0 + t (x1 - x0), t in [0, 1]; x0, x1 are host arrays of D values.
// Throws InvalidArgument past max_regions intervals.
template <class T>
DYNASCOPE_API SegmentRegions segment_regions(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                             const double* x0, const double* x1, index_t max_regions = 1000000);

struct PlanePolygon {
  std::vector<std::array<double, 2>> vertices;  // (s, t), counter-clockwise, convex
  bool boundary = false;                        // the decision boundary crosses it
  int label = 0;                                // argmax class at the centroid (0 for one output)
};

struct PlaneRegions {
  std::vector<PlanePolygon> polygons;  // one per linear region of the hidden layers
  index_t boundary_regions = 0;        // polygons the decision boundary crosses
  // Pieces of the decision boundary, each from (s0, t0) to (s1, t1): where the top two logits
  // tie (several outputs) or where the one output is 0.
  std::vector<std::array<double, 4>> boundary_segments;
};

// The parallelogram {A + s(B - A) + t(C - A) : s, t in [0, 1]} of the plane through the rows of
// points [3, D] (host, float64). Throws InvalidArgument when A, B, C are collinear (or equal) and
// past max_regions polygons (naming the cap).
template <class T>
DYNASCOPE_API PlaneRegions plane_regions(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                         MatrixView<const double> points, index_t max_regions = 200000);

}  // namespace dynascope::regions
