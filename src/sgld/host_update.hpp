#pragma once
// The host side of the fused SGLD update over every (chain, slice) item (src/sgld/host_update.cpp).
#include "dynascope/types.hpp"

namespace dynascope::kern {
template <class T>
struct SgldUpdate;
}

namespace dynascope::sgld::detail {

// partials [chains * slices * kSgldSums]; items spread over `threads` OpenMP threads.
template <class T>
void host_update(const kern::SgldUpdate<T>& u, index_t chains, index_t slices, double* partials, int threads);

}  // namespace dynascope::sgld::detail
