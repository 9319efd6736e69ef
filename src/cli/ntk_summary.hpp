#pragma once
// What `ntk` and `demo` report about a kernel matrix, computed one way for both: the kernel-target
// alignments, the top eigenvalues and the cumulative energies E_k(y) of the targets in the top
// eigenvectors. Eigen-quantities are computed only when asked for, by Lanczos on the kernel in
// place (dense when the kernel is small or many eigenvectors are wanted).
#include <vector>

#include "cli/common.hpp"
#include "dynascope/datasets.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/view.hpp"

namespace dynascope::cli {

struct KernelSummaryRequest {
  index_t top_k = 0;                // eigenvalues to report (0: none)
  std::vector<index_t> energy_ks;   // E_k(y) at these k (needs targets)
  bool center_energy = true;        // E_k of the centred targets (column means removed)
  std::uint64_t seed = 0;
};

// One-hot labels or target values [N, C] as float64; for the full kernel ([N*O] rows) the single
// column vec(Y).
struct KernelTargets {
  std::vector<double> y;
  index_t rows = 0, cols = 0;
  bool present() const { return rows > 0; }
};

// The targets of `d` laid out for the kernel's rows: [N, C] (one-hot for labels), or for the full
// kernel (N*O rows) vec(Y), which needs one target column per network output (UsageError).
KernelTargets kernel_targets(const data::Dataset& d, bool full_kernel, index_t outputs);

// The eigensolver's verdict as every command reports it: method, status per eigenvalue,
// all_converged, multiplicity_checked, and missed_recovered when the check found copies.
template <class T>
json eigen_status_json(const linalg::EigenResult<T>& r) {
  json j;
  j["method"] = linalg::to_string(r.method);
  json status = json::array();
  for (const auto st : r.status) status.push_back(linalg::to_string(st));
  j["status"] = status;
  j["all_converged"] = r.all_converged;
  j["multiplicity_checked"] = r.multiplicity_checked;
  if (r.missed_recovered > 0) j["missed_recovered"] = r.missed_recovered;
  return j;
}

// Adds kta, kta_centered (with targets), eigenvalues (top_k), energy {k: E_k} with energy_targets
// ("centered" | "raw") and the eigen solver's report under "eigen". k: the square symmetric kernel
// in host memory; host: a host context (threads, progress).
template <class T>
json kernel_summary(const Context& host, MatrixView<const T> k, const KernelTargets& targets,
                    const KernelSummaryRequest& request);

}  // namespace dynascope::cli
