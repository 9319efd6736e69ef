#pragma once
// Bodies of exact distinct-row counting (primitives::distinct_rows) over rows of W 64-bit words.
// The algorithm, the same on both backends:
//   key[i] = row_key(row i)  (the word itself for W = 1, a 64-bit hash of the words otherwise);
//   order = 0..N-1, stable radix sort of (key, order): equal rows become neighbours unless two
//     different rows share a key;
//   head[i] = [i == 0 or row(order[i]) != row(order[i-1])], comparing keys and then all W words,
//     so equality is decided exactly; a pair of neighbours with one key and different words is a
//     collision. Only then (rarely: a 64-bit hash) are the rows sorted by their words, least
//     significant word first, and by key again, which makes equal rows neighbours for certain;
//   cls = inclusive scan of head: the row at sorted position i is in class cls[i] - 1, K = cls[N-1];
//   classes are renumbered by their first row (a sort of the K first rows), so that the ids do
//     not depend on the key: row 0 is in class 0, the next row not in class 0 opens class 1, ...
#include <cstdint>

#include "dynascope/view.hpp"

namespace dynascope::kern {

// splitmix64's finaliser: a bijection of 64-bit words that spreads every input bit.
DYNASCOPE_HD inline std::uint64_t mix64(std::uint64_t x) {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The sort key of a row: the word itself for W = 1 (exact), 0 for W = 0, else
// h_0 = golden ratio, h_{w+1} = mix64(h_w ^ word_w) — it buckets, the words decide.
DYNASCOPE_HD inline std::uint64_t row_key(const MatrixView<const std::uint64_t>& rows, index_t r) {
  if (rows.cols <= 1) return rows.cols == 1 ? rows(r, 0) : 0;
  std::uint64_t h = 0x9e3779b97f4a7c15ULL;
  for (index_t w = 0; w < rows.cols; ++w) h = mix64(h ^ rows(r, w));
  return h;
}

// order[i] = i
struct Iota {
  index_t* order;
  DYNASCOPE_HD void operator()(index_t i) const { order[i] = i; }
};

// keys[i] = row_key(row order[i]); order == nullptr reads row i.
struct GatherKey {
  MatrixView<const std::uint64_t> rows;
  const index_t* order;
  std::uint64_t* keys;
  DYNASCOPE_HD void operator()(index_t i) const { keys[i] = row_key(rows, order ? order[i] : i); }
};

// keys[i] = rows(order[i], word): the key of one least-significant-word-first pass.
struct GatherWord {
  MatrixView<const std::uint64_t> rows;
  const index_t* order;
  index_t word;
  std::uint64_t* keys;
  DYNASCOPE_HD void operator()(index_t i) const { keys[i] = rows(order[i], word); }
};

// head[i] = 1 when the row at sorted position i differs from the one before it (position 0 opens
// the first class). Neighbours with one key and different words set *collided (when not null).
struct ClassHead {
  MatrixView<const std::uint64_t> rows;
  const index_t* order;
  const std::uint64_t* keys;
  index_t* head;
  index_t* collided;
  DYNASCOPE_HD void operator()(index_t i) const {
    if (i == 0 || keys[i] != keys[i - 1]) {
      head[i] = 1;
      return;
    }
    index_t differs = 0;
    for (index_t w = 0; w < rows.cols && !differs; ++w)
      if (rows(order[i], w) != rows(order[i - 1], w)) differs = 1;
    head[i] = differs;
    if (differs && collided) *collided = 1;  // every writer writes the same value
  }
};

// chunk[i] += *carry: one chunk of a prefix sum taken in chunks, raised by the sum before it
// (carry points just before the chunk, so no item reads what this launch writes).
struct AddCarry {
  index_t* chunk;
  const index_t* carry;
  DYNASCOPE_HD void operator()(index_t i) const { chunk[i] += *carry; }
};

// For the sorted position i that opens class k = cls[i] - 1: start[k] = i and first[k] = order[i],
// the smallest row index of the class (the sorts are stable, so equal rows stay in index order).
struct ClassStart {
  const index_t* order;
  const index_t* cls;
  index_t* start;
  index_t* first;
  DYNASCOPE_HD void operator()(index_t i) const {
    if (i > 0 && cls[i] == cls[i - 1]) return;
    const index_t k = cls[i] - 1;
    start[k] = i;
    first[k] = order[i];
  }
};

// inverse[perm[j]] = j
struct InvertPermutation {
  const index_t* perm;
  index_t* inverse;
  DYNASCOPE_HD void operator()(index_t j) const { inverse[perm[j]] = j; }
};

// ids[order[i]] = relabel[cls[i] - 1]: the class of every row, in the rows' own order.
struct ScatterIds {
  const index_t* order;
  const index_t* cls;
  const index_t* relabel;
  index_t* ids;
  DYNASCOPE_HD void operator()(index_t i) const { ids[order[i]] = relabel[cls[i] - 1]; }
};

// counts[j] = rows in class k = perm[j]: start[k+1] - start[k], with start[K] = N.
struct ClassCount {
  const index_t* perm;
  const index_t* start;
  index_t classes;
  index_t n;
  index_t* counts;
  DYNASCOPE_HD void operator()(index_t j) const {
    const index_t k = perm[j];
    counts[j] = (k + 1 < classes ? start[k + 1] : n) - start[k];
  }
};

}  // namespace dynascope::kern
