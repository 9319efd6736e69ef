#include "regions/frames.hpp"

#include <cmath>
#include <limits>
#include <string>

#include "core/checks.hpp"
#include "dynascope/error.hpp"
#include "kernels/launch.cuh"
#include "kernels/regions.cuh"

namespace dynascope::regions::framing {

void check_radius(double radius, const char* call) {
  if (!(radius > 0) || !std::isfinite(radius))
    throw InvalidArgument(std::string(call) + ": the radius must be a positive finite number, got " +
                          std::to_string(radius));
}

Array<double> draw(const Context& ctx, index_t inputs, index_t p, std::uint64_t seed, bool per_sample, index_t first,
                   index_t count, int* deficient) {
  Array<double> frames(ctx, {count * p, inputs});
  kern::parallel_for(ctx, count * p * inputs,
                     kern::DrawFrameEntries{frames.data(), p * inputs, seed, first, per_sample});
  kern::parallel_for(ctx, count, kern::OrthonormalizeFrame{frames.data(), p, inputs, deficient}, 2);
  return frames;
}

void check_deficient(const Context& ctx, const Array<int>& deficient, std::uint64_t seed, const char* call,
                     const char* seed_name) {
  int flag = 0;
  detail::copy_bytes(ctx, &flag, Backend::host, deficient.data(), deficient.backend(), sizeof(int));
  if (flag)
    throw InvalidArgument(std::string(call) + ": a random frame came out rank deficient (seed " + std::to_string(seed) +
                          "); choose another " + seed_name);
}

template <class T>
Array<double> given(const Context& ctx, MatrixView<const T> frame, index_t inputs, const char* call, Width width) {
  detail::check_matrix(ctx, frame, call, "frame");
  if (frame.cols != inputs)
    throw InvalidArgument(std::string(call) + ": the frame has " + std::to_string(frame.cols) + " columns but " +
                          (width == Width::network ? "the network takes " + std::to_string(inputs) + " inputs"
                                                   : "the samples have " + std::to_string(inputs)));
  if (frame.rows < 1 || frame.rows > inputs)
    throw InvalidArgument(std::string(call) + ": the frame must have between 1 and " + std::to_string(inputs) +
                          " rows (directions), got " + std::to_string(frame.rows));
  const index_t p = frame.rows;
  Array<double> out(ctx, {p, inputs});
  kern::parallel_for(ctx, p * inputs, kern::FrameToDouble<T>{frame, out.data()});
  const Array<double> host = out.to_host(ctx);
  const double* f = host.data();
  const double tol = 10 * std::sqrt(static_cast<double>(std::numeric_limits<T>::epsilon()));
  for (index_t i = 0; i < p; ++i)
    for (index_t k = 0; k <= i; ++k) {
      double dot = 0;
      for (index_t c = 0; c < inputs; ++c) dot += f[i * inputs + c] * f[k * inputs + c];
      const double want = i == k ? 1.0 : 0.0;
      if (!(std::abs(dot - want) <= tol))
        throw InvalidArgument(std::string(call) + ": the frame's rows must be orthonormal: row " + std::to_string(i) +
                              (i == k ? " has squared norm " : " . row " + std::to_string(k) + " = ") +
                              std::to_string(dot) + " (tolerance " + std::to_string(tol) + ")");
    }
  return out;
}

template <class T>
index_t directions(const Context& ctx, const LcOptions& options, MatrixView<const T> frame, index_t inputs,
                   const char* call, Width width, Array<double>* given_frame) {
  if (options.frame == Frame::given) {
    *given_frame = given(ctx, frame, inputs, call, width);
    return frame.rows;
  }
  const index_t p = options.dims;
  if (p < 1 || p > inputs)
    throw InvalidArgument(std::string(call) + ": the number of directions P must be between 1 and the input width " +
                          std::to_string(inputs) + ", got " + std::to_string(p));
  if (frame.data)
    throw InvalidArgument(std::string(call) + ": a frame was given but the frame option is not Frame::given");
  return p;
}

#define DYNASCOPE_INSTANTIATE(T)                                                                                     \
  template Array<double> given<T>(const Context&, MatrixView<const T>, index_t, const char*, Width);                 \
  template index_t directions<T>(const Context&, const LcOptions&, MatrixView<const T>, index_t, const char*, Width, \
                                 Array<double>*);
DYNASCOPE_INSTANTIATE(float)
DYNASCOPE_INSTANTIATE(double)
#undef DYNASCOPE_INSTANTIATE

}  // namespace dynascope::regions::framing
