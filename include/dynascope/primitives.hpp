#pragma once
// Building blocks of the diagnostics that run many small problems at once: per-row reductions
// (one value per chain, per sample, per probe) and exact counting of distinct bit-packed rows
// (activation patterns). Views live on the context's backend; nothing here synchronises the
// stream except where a count has to come back to the host.
#include <cstdint>

#include "dynascope/array.hpp"
#include "dynascope/context.hpp"
#include "dynascope/view.hpp"

namespace dynascope::primitives {

// Row reductions of A [R, C] (any leading dimension) into out [R] (any stride). Every row is
// summed in float64, in tiles laid out by C alone, and rounded once into out's type: row r gets
// the same bits whatever R is (chain c's norm does not depend on how many chains run) and, on
// host, whatever the thread count; host and cuda agree to rounding. A NaN in row r makes out[r]
// NaN and leaves the other rows alone; a row of C = 0 columns sums to 0. On cuda: one or two
// kernel launches on the context's stream, no host synchronisation.
// Throws InvalidArgument for a view on another backend or a bad shape, ShapeMismatch when out
// does not have R elements.

// out[r] = sum_j A(r, j)
DYNASCOPE_API void row_sums(const Context& ctx, MatrixView<const float> a, VectorView<float> out);
DYNASCOPE_API void row_sums(const Context& ctx, MatrixView<const float> a, VectorView<double> out);
DYNASCOPE_API void row_sums(const Context& ctx, MatrixView<const double> a, VectorView<double> out);

// out[r] = sum_j A(r, j)^2, e.g. the squared norm of every chain's parameters [C, P].
DYNASCOPE_API void row_squared_norms(const Context& ctx, MatrixView<const float> a, VectorView<float> out);
DYNASCOPE_API void row_squared_norms(const Context& ctx, MatrixView<const float> a, VectorView<double> out);
DYNASCOPE_API void row_squared_norms(const Context& ctx, MatrixView<const double> a, VectorView<double> out);

// out[r] = sum_j (A(r, j) - x_j)^2, e.g. ||w_c - w*||^2 of every chain; x has C elements.
DYNASCOPE_API void row_squared_distances(const Context& ctx, MatrixView<const float> a, VectorView<const float> x,
                                         VectorView<float> out);
DYNASCOPE_API void row_squared_distances(const Context& ctx, MatrixView<const float> a, VectorView<const float> x,
                                         VectorView<double> out);
DYNASCOPE_API void row_squared_distances(const Context& ctx, MatrixView<const double> a, VectorView<const double> x,
                                         VectorView<double> out);

// Gathers: out row i = src row rows[i] (e.g. every chain's minibatch [C*m, d] from the dataset
// [n, d]), and out[i] = src[idx[i]] (their labels). Any leading dimension and stride; out must not
// overlap src. Indices may repeat. One launch on ctx's stream, no host synchronisation.
// Indices outside [0, n): on host the call throws InvalidArgument naming the first one (its
// position and value) before writing anything; on cuda they are not checked (that would wait for
// the stream) and an out-of-range index never reads outside src: its output row is NaN, and its
// gathered int64 is -1 (an invalid class label, so that a cross-entropy loss of it is NaN).
// Throws ShapeMismatch when out is not [k, d] / [k] for k indices.
template <class T>
DYNASCOPE_API void gather_rows(const Context& ctx, MatrixView<const T> src, VectorView<const std::int64_t> rows,
                               MatrixView<T> out);
DYNASCOPE_API void gather(const Context& ctx, VectorView<const std::int64_t> src, VectorView<const std::int64_t> idx,
                          VectorView<std::int64_t> out);

// Distinct rows of a matrix of 64-bit words [N, W] (any leading dimension): each row is one
// bit-packed pattern, e.g. the activation pattern of a sample. Two rows are in one class when all
// W words are equal: the count is exact (a hash orders the rows, the words decide equality).
// Classes are numbered 0..K-1 in order of first appearance: row 0 is in class 0, the first row
// not in class 0 opens class 1, and so on — the same numbering on every backend and for every
// thread count. A column block of the matrix (rows.block(0, w0, N, w)) counts the patterns of the
// neurons packed in those words alone.
//
// Cost: one stable radix sort of N (key, index) pairs and a few passes over the rows, plus a sort
// of the K first rows when ids or counts are asked for (Thrust on both backends: its OpenMP
// system on host, CUDA on device); W more sorts in the rare case that two different rows share a
// 64-bit hash. Scratch: 24 N bytes on ctx and the sort's own (about 16 N bytes). On cuda the
// call waits for the stream once to learn K, and once more when the hash collision check fires.
struct DistinctRowsOptions {
  bool ids = false;     // return the class of every row
  bool counts = false;  // return the number of rows of every class and its first row
};

struct DistinctRows {
  index_t count = 0;           // K, the number of distinct rows (0 for N = 0, 1 for W = 0 < N)
  Array<std::int64_t> ids;     // [N] class of row i, on ctx's backend (options.ids)
  Array<std::int64_t> counts;  // [K] rows in class k, on ctx's backend (options.counts)
  Array<std::int64_t> first;   // [K] first row of class k (ascending), on ctx's backend (options.counts)
};

// Throws InvalidArgument for a view on another backend or a bad shape.
DYNASCOPE_API DistinctRows distinct_rows(const Context& ctx, MatrixView<const std::uint64_t> rows,
                                         const DistinctRowsOptions& options = {});

}  // namespace dynascope::primitives
