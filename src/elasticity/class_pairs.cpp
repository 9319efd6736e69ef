// Class-pair matrices of S_rel and the per-class sampling of the pairs that feed them
// (include/dynascope/elasticity.hpp). Small host-side bookkeeping: the S_rel matrix itself comes
// from elasticity::pairwise, which is where the work is.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "core/checks.hpp"
#include "dynascope/elasticity.hpp"
#include "dynascope/error.hpp"
#include "kernels/philox.cuh"

namespace dynascope::elasticity {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The Philox step word of the per-class draws: the stream is the class, so that without a tag a
// class's draw would reuse the bits of other draws made with the same seed on stream c, step 0
// (e.g. model::init's layer weights). "samp".
constexpr std::uint32_t kSampleStep = 0x73616d70u;

void check_classes(const char* call, index_t classes) {
  if (classes < 1) throw InvalidArgument(std::string(call) + ": classes must be >= 1, got " + std::to_string(classes));
}

// Every label in [0, classes): InvalidArgument naming the offending label and its row otherwise.
void check_labels(const char* call, const char* name, VectorView<const std::int64_t> labels, index_t classes) {
  detail::check_vector(Context::host(), labels, call, name);
  for (index_t i = 0; i < labels.size; ++i) {
    const std::int64_t c = labels[i];
    if (c < 0 || c >= classes)
      throw InvalidArgument(std::string(call) + ": " + name + "[" + std::to_string(i) + "] = " + std::to_string(c) +
                            " is not a class in [0, " + std::to_string(classes) + ")");
  }
}

}  // namespace

ClassMatrix class_matrix(MatrixView<const double> s_rel, VectorView<const std::int64_t> labels1,
                         VectorView<const std::int64_t> labels2, index_t classes, bool same_set) {
  constexpr const char* call = "elasticity::class_matrix";
  check_classes(call, classes);
  detail::check_matrix(Context::host(), s_rel, call, "s_rel");
  if (labels1.size != s_rel.rows)
    throw ShapeMismatch(std::string(call) + ": labels1 must hold one label per source (row of s_rel, " +
                        std::to_string(s_rel.rows) + "), got " + std::to_string(labels1.size));
  if (labels2.size != s_rel.cols)
    throw ShapeMismatch(std::string(call) + ": labels2 must hold one label per target (column of s_rel, " +
                        std::to_string(s_rel.cols) + "), got " + std::to_string(labels2.size));
  check_labels(call, "labels1", labels1, classes);
  check_labels(call, "labels2", labels2, classes);
  if (same_set) {
    // The targets are the sources: sample i is row i and column i, with one label.
    if (s_rel.rows != s_rel.cols)
      throw ShapeMismatch(std::string(call) + ": same_set needs a square s_rel (the targets are the sources), got " +
                          detail::dims(s_rel.rows, s_rel.cols));
    for (index_t i = 0; i < labels1.size; ++i)
      if (labels1[i] != labels2[i])
        throw InvalidArgument(std::string(call) + ": same_set, but sample " + std::to_string(i) + " has label " +
                              std::to_string(labels1[i]) + " in labels1 and " + std::to_string(labels2[i]) +
                              " in labels2");
  }

  const Context host = Context::host();
  const auto cc = static_cast<std::size_t>(classes);
  std::vector<double> sum(cc * cc, 0.0);
  std::vector<std::int64_t> count(cc * cc, 0);
  for (index_t i = 0; i < s_rel.rows; ++i) {
    const auto a = static_cast<std::size_t>(labels1[i]);
    for (index_t j = 0; j < s_rel.cols; ++j) {
      if (same_set && i == j) continue;  // S_rel(x, x) = 1 by construction: it says nothing about locality
      const double v = s_rel(i, j);
      if (std::isnan(v)) continue;       // an undefined source's row (or any undefined entry)
      const std::size_t cell = a * cc + static_cast<std::size_t>(labels2[j]);
      sum[cell] += v;
      ++count[cell];
    }
  }

  ClassMatrix out;
  out.classes = classes;
  out.matrix = Array<double>(host, {classes, classes});
  out.pairs = Array<std::int64_t>(host, {classes, classes});
  double within_sum = 0, across_sum = 0;
  index_t within_n = 0, across_n = 0;
  for (std::size_t a = 0; a < cc; ++a) {
    for (std::size_t b = 0; b < cc; ++b) {
      const std::size_t cell = a * cc + b;
      out.pairs.data()[cell] = count[cell];
      if (count[cell] == 0) {
        out.matrix.data()[cell] = kNaN;
        ++out.empty_cells;
        continue;
      }
      const double mean = sum[cell] / static_cast<double>(count[cell]);
      out.matrix.data()[cell] = mean;
      if (a == b) {
        within_sum += mean;
        ++within_n;
      } else {
        across_sum += mean;
        ++across_n;
      }
    }
  }
  // Means of the cell means, so that every class pair weighs the same whatever its sample count;
  // NaN when no cell of the kind has a pair (e.g. across for one class).
  out.within = within_n > 0 ? within_sum / static_cast<double>(within_n) : kNaN;
  out.across = across_n > 0 ? across_sum / static_cast<double>(across_n) : kNaN;
  out.ratio = out.within / out.across;
  return out;
}

std::vector<std::int64_t> sample_per_class(VectorView<const std::int64_t> labels, index_t classes, index_t k,
                                           std::uint64_t seed) {
  constexpr const char* call = "elasticity::sample_per_class";
  check_classes(call, classes);
  if (classes > static_cast<index_t>(std::numeric_limits<std::uint32_t>::max()) + 1)
    throw InvalidArgument(std::string(call) + ": classes must be <= 2^32 (the class is the Philox stream), got " +
                          std::to_string(classes));
  if (k < 1)
    throw InvalidArgument(std::string(call) + ": k (samples per class) must be >= 1, got " + std::to_string(k));
  check_labels(call, "labels", labels, classes);

  // The members of every class, ascending.
  std::vector<std::vector<std::int64_t>> members(static_cast<std::size_t>(classes));
  for (index_t i = 0; i < labels.size; ++i) members[static_cast<std::size_t>(labels[i])].push_back(i);
  for (index_t c = 0; c < classes; ++c) {
    const auto n = static_cast<index_t>(members[static_cast<std::size_t>(c)].size());
    if (n < k)
      throw InvalidArgument(std::string(call) + ": class " + std::to_string(c) + " has " + std::to_string(n) +
                            " samples, fewer than k = " + std::to_string(k) + " samples per class");
  }

  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(classes * k));
  for (index_t c = 0; c < classes; ++c) {
    std::vector<std::int64_t>& idx = members[static_cast<std::size_t>(c)];
    const auto n = static_cast<std::uint64_t>(idx.size());
    // Partial Fisher-Yates: position t takes a uniform pick among the n - t members not yet
    // taken. The picks of draw t use the 64 bits of words 2(t mod 2), 2(t mod 2) + 1 of block
    // t / 2 (as random::fill_integers lays them out), mapped to [0, n - t) by multiplication
    // (bias below 2^-64 (n - t)). They depend on (seed, class, t) only, so a class's sample (as
    // ranks among its members) does not change with the other classes' sizes.
    for (std::uint64_t t = 0; t < static_cast<std::uint64_t>(k); ++t) {
      const kern::PhiloxBlock b = kern::philox_block(seed, static_cast<std::uint32_t>(c), kSampleStep, t >> 1);
      const int w = static_cast<int>(t & 1) * 2;
      const std::uint64_t bits = (static_cast<std::uint64_t>(b.v[w]) << 32) | b.v[w + 1];
      const std::uint64_t j = t + kern::mulhi64(bits, n - t);
      std::swap(idx[t], idx[j]);
    }
    const std::size_t start = out.size();
    out.insert(out.end(), idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k));
    std::sort(out.begin() + static_cast<std::ptrdiff_t>(start), out.end());
  }
  return out;
}

}  // namespace dynascope::elasticity
