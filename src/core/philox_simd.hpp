#pragma once
// Philox Box-Muller normals for many consecutive blocks at once on the host, with the same bits as
// kern::philox_normal (kernels/philox.cuh), which defines them. On CPUs with AVX2 and FMA the
// blocks go through Philox4x32-10 eight at a time and through log, sqrt and sin/cos four at a
// time, every fma of the scalar definition an FMA instruction and every other operation the same
// IEEE operation (exactly rounded, so the same bits); elsewhere a scalar loop over the kern::
// functions runs. Not a public header: the SGLD host update and the tests call it.
#include <cstdint>

#include "dynascope/export.h"
#include "dynascope/types.hpp"

namespace dynascope::detail {

// out[2 i] and out[2 i + 1] = kern::philox_normal(seed, stream, step, e) for e = 2 (first_block + i)
// and e + 1 (the cosine and the sine branch of Philox block first_block + i), i < blocks; the block
// counter wraps at 2^64 as philox_block's does. out holds 2 * blocks doubles. Throws
// InvalidArgument when blocks < 0.
DYNASCOPE_API void philox_normal_pairs(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                       std::uint64_t first_block, index_t blocks, double* out);

// The scalar loop philox_normal_pairs falls back to (callable here so that tests reach it on any CPU).
DYNASCOPE_API void philox_normal_pairs_scalar(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                              std::uint64_t first_block, index_t blocks, double* out);

// Whether this CPU runs the AVX2+FMA functions below (and philox_normal_pairs uses them).
DYNASCOPE_API bool philox_simd_supported();

// The AVX2+FMA path and its pieces, exposed so that tests can reach inputs that random counters
// almost never produce (u1 = 1 or 2^-53, quadrant boundaries). Each throws InvalidArgument when
// !philox_simd_supported() or a count is negative.
DYNASCOPE_API void philox_normal_pairs_avx2(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                            std::uint64_t first_block, index_t blocks, double* out);
// words[4 i + j] = kern::philox_block(seed, stream, step, first_block + i).v[j].
DYNASCOPE_API void philox_blocks_avx2(std::uint64_t seed, std::uint32_t stream, std::uint32_t step,
                                      std::uint64_t first_block, index_t blocks, std::uint32_t* words);
// The Box-Muller pair of each block of Philox output words (laid out as philox_blocks_avx2 writes
// them): out[2 i], out[2 i + 1] as philox_normal_pairs computes them from those words.
DYNASCOPE_API void normal_pairs_from_words_avx2(const std::uint32_t* words, index_t blocks, double* out);
// out[i] = kern::portable_log(x[i]).
DYNASCOPE_API void portable_log_avx2(const double* x, index_t n, double* out);
// kern::portable_sincospi(x[i], &sin_out[i], &cos_out[i]).
DYNASCOPE_API void portable_sincospi_avx2(const double* x, index_t n, double* sin_out, double* cos_out);

}  // namespace dynascope::detail
