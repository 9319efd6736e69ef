#include "dynascope/random.hpp"

#include "core/checks.hpp"
#include "kernels/launch.cuh"
#include "kernels/math.cuh"
#include "kernels/philox.cuh"

namespace dynascope::random {
template <class T>
void fill_uniform(const Context& ctx, Stream s, VectorView<T> x, T lo, T hi) {
  detail::check_vector(ctx, x, "random::fill_uniform", "x");
  if (!(lo < hi)) throw InvalidArgument("random::fill_uniform: need lo < hi");
  const T width = hi - lo;
  kern::parallel_for(ctx, x.size, [=] DYNASCOPE_HD(index_t i) {
    const T u = kern::philox_uniform<T>(s.seed, s.stream, s.step, static_cast<std::uint64_t>(i));
    x[i] = kern::fmadd(width, u, lo);
  });
}

template <class T>
void fill_normal(const Context& ctx, Stream s, VectorView<T> x, T mean, T stddev) {
  detail::check_vector(ctx, x, "random::fill_normal", "x");
  if (!(stddev >= T(0))) throw InvalidArgument("random::fill_normal: stddev must be >= 0");
  kern::parallel_for(ctx, x.size, [=] DYNASCOPE_HD(index_t i) {
    const double z = kern::philox_normal(s.seed, s.stream, s.step, static_cast<std::uint64_t>(i));
    x[i] = static_cast<T>(fma(static_cast<double>(stddev), z, static_cast<double>(mean)));
  });
}

template <class T>
void fill_rademacher(const Context& ctx, Stream s, VectorView<T> x, std::uint64_t first) {
  detail::check_vector(ctx, x, "random::fill_rademacher", "x");
  // Element e of the sequence takes word e % 4 of Philox block e / 4 (as kern::philox_u32): one
  // block per four elements, the same values as drawing them one by one. x[i] is element
  // first + i, so consecutive calls with first advanced by the sizes give one call's values.
  const index_t n = x.size;
  if (n == 0) return;
  const std::uint64_t b0 = first / 4, b1 = (first + static_cast<std::uint64_t>(n) - 1) / 4;
  kern::parallel_for(ctx, static_cast<index_t>(b1 - b0 + 1), [=] DYNASCOPE_HD(index_t k) {
    const std::uint64_t b = b0 + static_cast<std::uint64_t>(k);
    const kern::PhiloxBlock r = kern::philox_block(s.seed, s.stream, s.step, b);
    for (int j = 0; j < 4; ++j) {
      const std::uint64_t e = 4 * b + static_cast<std::uint64_t>(j);
      if (e >= first && e - first < static_cast<std::uint64_t>(n))
        x[static_cast<index_t>(e - first)] = (r.v[j] >> 31) ? T(1) : T(-1);
    }
  });
}

void fill_integers(const Context& ctx, Stream s, VectorView<std::int64_t> x, std::int64_t n) {
  detail::check_vector(ctx, x, "random::fill_integers", "x");
  if (n <= 0) throw InvalidArgument("random::fill_integers: range size must be positive");
  const std::uint64_t range = static_cast<std::uint64_t>(n);
  kern::parallel_for(ctx, x.size, [=] DYNASCOPE_HD(index_t i) {
    const kern::PhiloxBlock b = kern::philox_block(s.seed, s.stream, s.step, static_cast<std::uint64_t>(i) >> 1);
    const int w = static_cast<int>(i & 1) * 2;
    const std::uint64_t bits = (static_cast<std::uint64_t>(b.v[w]) << 32) | b.v[w + 1];
    x[i] = static_cast<std::int64_t>(kern::mulhi64(bits, range));
  });
}

template void fill_uniform<float>(const Context&, Stream, VectorView<float>, float, float);
template void fill_uniform<double>(const Context&, Stream, VectorView<double>, double, double);
template void fill_normal<float>(const Context&, Stream, VectorView<float>, float, float);
template void fill_normal<double>(const Context&, Stream, VectorView<double>, double, double);
template void fill_rademacher<float>(const Context&, Stream, VectorView<float>, std::uint64_t);
template void fill_rademacher<double>(const Context&, Stream, VectorView<double>, std::uint64_t);

}  // namespace dynascope::random
