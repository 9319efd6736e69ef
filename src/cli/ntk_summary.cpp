#include "cli/ntk_summary.hpp"

#include <algorithm>
#include <type_traits>

#include "dynascope/linalg.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::cli {

KernelTargets kernel_targets(const data::Dataset& d, bool full_kernel, index_t outputs) {
  KernelTargets t;
  if (!d.targets_present()) return t;
  const index_t n = d.n, c = d.outputs;
  if (d.task == data::Task::classification) {
    t.y.assign(std::size_t(n * c), 0.0);
    for (index_t i = 0; i < n; ++i) t.y[std::size_t(i * c + d.labels[std::size_t(i)])] = 1.0;
  } else {
    t.y = d.y;
  }
  if (full_kernel) {
    if (c != outputs)
      throw UsageError("--targets: the full kernel needs one target per network output (" + std::to_string(outputs) +
                       "), the data has " + std::to_string(c));
    t.rows = n * c;  // row-major [N, O] is vec(Y) in the kernel's (n, a) order
    t.cols = 1;
  } else {
    t.rows = n;
    t.cols = c;
  }
  return t;
}

template <class T>
json kernel_summary(const Context& host, MatrixView<const T> k, const KernelTargets& targets,
                    const KernelSummaryRequest& request) {
  json r;
  const index_t m = k.rows;
  const bool with_targets = targets.present();
  if (!request.energy_ks.empty() && !with_targets) throw UsageError("--energy needs targets (--targets or a dataset with labels)");
  if (with_targets && targets.rows != m)
    throw UsageError("the targets have " + std::to_string(targets.rows) + " rows but the kernel " + std::to_string(m));
  const MatrixView<const double> yv{targets.y.data(), targets.rows, targets.cols, targets.cols};
  if (with_targets) {
    r["kta"] = ntk::kernel_target_alignment(k, yv, false);
    r["kta_centered"] = ntk::kernel_target_alignment(k, yv, true);
  }
  index_t want = request.top_k;
  for (index_t q : request.energy_ks) {
    if (q < 1 || q > m)
      throw UsageError("--energy " + std::to_string(q) + ": k must be in [1, " + std::to_string(m) + "] (the kernel's size)");
    want = std::max(want, q);
  }
  if (want == 0) return r;
  if (request.top_k > m)
    throw UsageError("--k " + std::to_string(request.top_k) + " exceeds the kernel's size " + std::to_string(m));
  // Lanczos on the kernel in place; the dense solver when the kernel is small or a large share of
  // its eigenvectors is wanted (then Lanczos would need about as many operator applications).
  linalg::DenseOperator<T> op(host, k);
  linalg::LanczosOptions o;
  o.k = want;
  o.which = linalg::Which::largest;
  o.tol = std::is_same_v<T, float> ? 1e-5 : 1e-10;
  o.seed = request.seed;
  o.method = (m <= o.dense_below || 4 * want > m) ? linalg::EigenMethod::dense : linalg::EigenMethod::lanczos;
  const linalg::EigenResult<T> e = linalg::eigsh<T>(op, o);
  if (request.top_k > 0)
    r["eigenvalues"] = std::vector<double>(e.values.begin(), e.values.begin() + request.top_k);
  if (!request.energy_ks.empty()) {
    std::vector<double> centred;
    MatrixView<const double> target = yv;
    if (request.center_energy) {
      centred = targets.y;
      for (index_t c = 0; c < targets.cols; ++c) {
        double mean = 0;
        for (index_t i = 0; i < m; ++i) mean += centred[std::size_t(i * targets.cols + c)];
        mean /= double(m);
        for (index_t i = 0; i < m; ++i) centred[std::size_t(i * targets.cols + c)] -= mean;
      }
      target = {centred.data(), targets.rows, targets.cols, targets.cols};
    }
    const std::vector<double> energy = ntk::cumulative_energy<T>(e.vectors.matrix(), target, request.energy_ks);
    json ej;
    for (std::size_t i = 0; i < energy.size(); ++i) ej[std::to_string(request.energy_ks[i])] = energy[i];
    r["energy"] = ej;
    r["energy_targets"] = request.center_energy ? "centered" : "raw";
  }
  json ej = eigen_status_json(e);
  ej["k"] = want;
  ej["tol"] = o.tol;
  if (!e.warnings.empty()) ej["warnings"] = e.warnings;
  ej["max_residual"] = e.residuals.empty() ? 0.0 : *std::max_element(e.residuals.begin(), e.residuals.end());
  ej["matvecs"] = e.matvecs;
  r["eigen"] = ej;
  return r;
}

template json kernel_summary<float>(const Context&, MatrixView<const float>, const KernelTargets&, const KernelSummaryRequest&);
template json kernel_summary<double>(const Context&, MatrixView<const double>, const KernelTargets&, const KernelSummaryRequest&);

}  // namespace dynascope::cli
