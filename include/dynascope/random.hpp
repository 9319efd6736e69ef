#pragma once
// Counter-based random numbers (Philox4x32-10 from Random123). A draw is a pure function of
// (seed, stream id, step, element index): the host and cuda backends produce the same bits, and
// the numbers never depend on launch shape, thread count or how many streams run at once.
//
// Convention: key = seed (64 bits); counter = (element block low, element block high, step,
// stream). Uniform draws of element e use word e mod 4 of block e / 4 (single precision) or
// words 2(e mod 2), 2(e mod 2)+1 of block e / 2 (double precision); normals use one whole block
// per pair of elements (Box-Muller on two 53-bit uniforms, computed with dynascope's own
// log/sin/cos so that both backends round identically).
#include <cstdint>

#include "dynascope/context.hpp"
#include "dynascope/view.hpp"

namespace dynascope::random {

struct Stream {
  std::uint64_t seed = 0;
  std::uint32_t stream = 0;  // e.g. chain id, dataset id, probe block
  std::uint32_t step = 0;    // e.g. iteration number
};

// Fills x with U[lo, hi) (uniform), N(mean, stddev^2) (normal), +-1 with equal probability
// (rademacher), or integers uniform in [0, n) (integers; bias below 2^-32 * n). Rademacher's
// `first`: x[i] is element first + i of the stream's sequence, so a long sequence can be drawn in
// pieces (element i of a call with first = 0 equals element i - f of one with first = f).
template <class T>
DYNASCOPE_API void fill_uniform(const Context& ctx, Stream s, VectorView<T> x, T lo = T(0),
                                T hi = T(1));
template <class T>
DYNASCOPE_API void fill_normal(const Context& ctx, Stream s, VectorView<T> x, T mean = T(0),
                               T stddev = T(1));
template <class T>
DYNASCOPE_API void fill_rademacher(const Context& ctx, Stream s, VectorView<T> x, std::uint64_t first = 0);
DYNASCOPE_API void fill_integers(const Context& ctx, Stream s, VectorView<std::int64_t> x,
                                 std::int64_t n);

}  // namespace dynascope::random
