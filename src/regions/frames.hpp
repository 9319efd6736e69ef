#pragma once
// The frames of the cross-polytopes (internal to src/regions): the random draws and the checks of
// a caller's frame, shared by local_complexity (an Mlp's forward pass) and the pre-activation
// entry points of from_preactivations.cpp, so that both build the same vertices.
#include <cstdint>

#include "dynascope/array.hpp"
#include "dynascope/context.hpp"
#include "dynascope/regions.hpp"
#include "dynascope/types.hpp"
#include "dynascope/view.hpp"

namespace dynascope::regions::framing {

// InvalidArgument from `call` unless the radius is a positive finite number.
void check_radius(double radius, const char* call);

// Random frames for samples [first, first + count) (per-sample) or the one shared frame, packed
// [count * P, D] in double on ctx's backend: DrawFrameEntries keyed by (seed, sample), then
// OrthonormalizeFrame. A rank-deficient draw sets *deficient (device memory of ctx), which the
// caller reads with check_deficient when it suits it (once after all its tiles: no host round
// trip per tile).
Array<double> draw(const Context& ctx, index_t inputs, index_t p, std::uint64_t seed, bool per_sample, index_t first,
                   index_t count, int* deficient);

// InvalidArgument from `call` when a draw set the flag: "... choose another <seed_name>" (the
// name the caller's users give the seed: "--seed" on the CLI, "seed" in the library's API).
void check_deficient(const Context& ctx, const Array<int>& deficient, std::uint64_t seed, const char* call,
                     const char* seed_name);

// What an error compares a frame's width to: the network's inputs or the samples' width.
enum class Width { network, samples };

// The caller's frame [P, D], checked for its width (`inputs`), its number of rows and the
// orthonormality of its rows, as double [P, D] on ctx's backend.
template <class T>
Array<double> given(const Context& ctx, MatrixView<const T> frame, index_t inputs, const char* call, Width width);

// The number of directions P of options, checked against the input width `inputs`: the caller's
// frame's rows for Frame::given (stored, converted, in *given_frame), options.dims otherwise (when
// no frame was given).
template <class T>
index_t directions(const Context& ctx, const LcOptions& options, MatrixView<const T> frame, index_t inputs,
                   const char* call, Width width, Array<double>* given_frame);

}  // namespace dynascope::regions::framing
