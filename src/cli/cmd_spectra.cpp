// dynascope eigen (a dense symmetric matrix from .npy) and dynascope spectrum (matrix-free NTK,
// Gauss-Newton or Hessian of a network): top-k eigenpairs by Lanczos, or the spectral density by
// stochastic Lanczos quadrature.
#include <cmath>

#include "cli/model_flags.hpp"
#include "cli/ntk_summary.hpp"
#include "dynascope/curvature.hpp"
#include "dynascope/io.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/losses.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::cli {

namespace {

struct EigenFlags {
  index_t k = 6;
  std::string which = "largest";
  double tol = 1e-8;
  std::string method = "auto";
  index_t block = 1;
  index_t subspace = 0;
  index_t max_restarts = 500;
  std::string out_vectors;
};

const std::vector<std::string> kTopKFlags{"--k",     "--which",        "--tol",        "--method",
                                           "--block", "--subspace",     "--max-restarts", "--out-vectors"};

void add_eigen_flags(CLI::App& cmd, EigenFlags& f) {
  cmd.add_option("--k,--top-k", f.k, "number of eigenpairs, >= 1")->check(at_least(1))->capture_default_str();
  cmd.add_option("--which", f.which, choices(linalg::which_names))
      ->check(one_of(linalg::which_names))
      ->capture_default_str();
  cmd.add_option("--tol", f.tol,
                 "relative residual tolerance, > 0: converged when |A u - l u| <= tol max(eps^(2/3), |l|), never below "
                 "the working precision 16 eps |A|")
      ->check(finite_at_least(0, /*open=*/true))
      ->capture_default_str();
  cmd.add_option("--method", f.method, choices(linalg::eigen_method_names) + " (auto: dense for n <= 400)")
      ->check(one_of(linalg::eigen_method_names))
      ->capture_default_str();
  cmd.add_option("--block", f.block, "vectors per operator application (block Lanczos), >= 1")
      ->check(at_least(1))
      ->capture_default_str();
  cmd.add_option("--subspace", f.subspace, "Lanczos basis size before a restart (0: max(2k+1, 20) + block)")
      ->check(at_least(0));
  cmd.add_option("--max-restarts", f.max_restarts, "Lanczos restarts before giving up (reported as converged=false), >= 0")
      ->check(at_least(0))
      ->capture_default_str();
  cmd.add_option("--out-vectors", f.out_vectors, "write the eigenvectors [k, n] to this .npy");
}

linalg::LanczosOptions lanczos_options(const EigenFlags& f, std::uint64_t seed, index_t n) {
  if (f.k > n) throw UsageError("--k " + std::to_string(f.k) + " exceeds the operator's size " + std::to_string(n));
  linalg::LanczosOptions o;
  o.k = f.k;
  o.which = linalg::parse_which(f.which);
  o.tol = f.tol;
  o.method = linalg::parse_eigen_method(f.method);
  o.block = f.block;
  o.subspace = f.subspace;
  o.max_restarts = f.max_restarts;
  o.seed = seed;
  return o;
}

template <class T>
json eigen_json(const Context& ctx, const linalg::EigenResult<T>& r, const std::string& out_vectors) {
  json j = eigen_status_json(r);
  j["eigenvalues"] = r.values;
  j["residuals"] = r.residuals;
  j["converged"] = r.converged;
  if (!r.warnings.empty()) j["eigen_warnings"] = r.warnings;
  j["iterations"] = r.iterations;
  j["matvecs"] = r.matvecs;
  if (!out_vectors.empty()) {
    std::vector<T> h(static_cast<std::size_t>(r.vectors.size()));
    detail::copy_bytes(ctx, h.data(), Backend::host, r.vectors.data(), r.vectors.backend(), r.vectors.bytes());
    io::write_npy(out_vectors, io::Tensor::from(h.data(), r.vectors.shape()));
    j["vectors_file"] = out_vectors;
  }
  return j;
}

// ---- eigen ----
struct EigenCommand {
  CommonOptions common;
  std::string matrix;
  EigenFlags eig;
  CLI::App* app = nullptr;
};

template <class T>
int run_eigen(const EigenCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  refuse_ignored(*c.app, "--max-memory", "eigen works on the whole matrix in memory and does not tile");
  check_output("--out", c.common.out);
  check_output("--out-vectors", c.eig.out_vectors);
  const Context ctx = make_context(c.common);
  const io::Tensor t = io::read_array(c.matrix);
  if (t.shape.size() != 2 || t.shape[0] != t.shape[1])
    throw UsageError("--matrix " + c.matrix + ": expected a square [n, n] matrix, got shape " + shape_string(t.shape));
  const index_t n = t.shape[0];
  if (n == 0) throw UsageError("--matrix " + c.matrix + ": the matrix is empty");
  std::vector<T> host = t.to_vector<T>();
  try {
    linalg::check_symmetric<T>({host.data(), n, n, n}, std::is_same_v<T, float> ? 1e-5 : 1e-10);
  } catch (const InvalidArgument& e) {
    throw UsageError("--matrix " + c.matrix + ": " + e.what());
  }
  Array<T> a(ctx, {n, n});
  detail::copy_bytes(ctx, a.data(), a.backend(), host.data(), Backend::host, a.bytes());
  linalg::DenseOperator<T> op(ctx, a.matrix());
  const auto r = linalg::eigsh<T>(op, lanczos_options(c.eig, c.common.seed, n));
  json j = eigen_json<T>(ctx, r, c.eig.out_vectors);
  j["n"] = n;
  j["which"] = c.eig.which;
  emit_result("eigen", c.common, ctx, j, start);
  return 0;
}

// ---- spectrum ----
struct SpectrumCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string op = "hessian";
  std::string loss;
  EigenFlags eig;
  bool density = false;
  index_t steps = 90, probes = 10, grid = 1000;
  std::string trace;
  CLI::App* app = nullptr;
};

// Every flag combination is checked before any work starts: a flag that the chosen mode would
// ignore is an error that names it.
void validate(const SpectrumCommand& c) {
  const CLI::App& cmd = *c.app;
  refuse_together(cmd, "--density", "--trace", "choose the spectral density (SLQ) or a trace estimate");
  for (const std::string& f : kTopKFlags) {
    refuse_together(cmd, "--density", f, f + " is a top-k eigenpair option; --density estimates the whole spectrum");
    refuse_together(cmd, "--trace", f, f + " is a top-k eigenpair option; --trace estimates the trace");
  }
  if (!c.density) {
    refuse_ignored(cmd, "--steps", "it sets the Lanczos steps of --density");
    refuse_ignored(cmd, "--grid", "it sets the density grid of --density");
    if (c.trace.empty()) refuse_ignored(cmd, "--probes", "it sets the probes of --density or --trace");
  }
  if (c.trace == "hutchpp" && c.probes < 2)
    throw UsageError("--trace hutchpp needs --probes >= 2 (half sketch, half residual probes), got " +
                     std::to_string(c.probes));
  if (c.op == "ntk") {
    refuse_together(cmd, "--operator", "--loss", "the NTK operator J J^T does not involve a loss (--loss is for ggn and hessian)");
    refuse_together(cmd, "--operator", "--targets", "the NTK operator J J^T does not use targets (they are for ggn and hessian)");
  }
  refuse_ignored(cmd, "--max-memory", "spectrum's operators keep all samples' activations in memory and do not tile");
  check_output("--out", c.common.out);
  check_output("--out-vectors", c.eig.out_vectors);
}

template <class T>
int run_spectrum(const SpectrumCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  validate(c);
  const Context ctx = make_context(c.common);
  const data::Split split = load_data(c.data, c.common.seed);
  const data::Dataset& d = split.train;
  const bool curvature = c.op != "ntk";
  if (curvature && !d.targets_present())
    throw UsageError("--operator " + c.op + " needs targets: give --targets or a dataset with labels");
  model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, split);
  const model::DeviceData<T> dev = model::to_device<T>(ctx, d);
  const model::Loss loss = c.loss.empty() ? default_loss(d) : model::parse_loss(c.loss);
  if (curvature) check_loss_targets(loss, d);
  std::unique_ptr<linalg::LinearOperator<T>> op;
  json r;
  if (c.op == "ntk") {
    op = std::make_unique<ntk::NtkOperator<T>>(ctx, net.spec, net.params.data(), dev.x.matrix());
  } else {
    const linalg::Curvature kind = linalg::parse_curvature(c.op);
    auto cop = std::make_unique<linalg::CurvatureOperator<T>>(ctx, kind, net.spec, net.params.data(), dev.x.matrix(),
                                                              dev.targets(), loss);
    r["loss"] = model::to_string(loss);
    r["loss_value"] = cop->loss_value();
    op = std::move(cop);
  }
  r["operator"] = c.op;
  r["size"] = op->size();
  r["network"] = spec_json(net);
  r["samples"] = d.n;
  if (c.density) {
    linalg::SlqOptions o;
    o.steps = c.steps;
    o.probes = c.probes;
    o.grid = c.grid;
    o.seed = c.common.seed;
    const auto s = linalg::slq<T>(*op, o);
    r["nodes"] = s.nodes;
    r["weights"] = s.weights;
    r["grid"] = s.grid;
    r["density"] = s.density;
    r["sigma2"] = s.sigma2;
    r["trace_estimate"] = s.trace_estimate;
    r["trace_stderr"] = s.trace_stderr;
    r["matvecs"] = s.matvecs;
  } else if (!c.trace.empty()) {
    const auto t = c.trace == "hutchpp" ? linalg::hutchpp_probes<T>(*op, c.probes, c.common.seed)
                                        : linalg::hutchinson<T>(*op, c.probes, c.common.seed);
    r["trace_method"] = c.trace;
    r["probes"] = c.probes;
    r["trace_estimate"] = t.trace;
    r["trace_stderr"] = t.std_error;
    r["matvecs"] = t.matvecs;
  } else {
    const auto e = linalg::eigsh<T>(*op, lanczos_options(c.eig, c.common.seed, op->size()));
    const json ej = eigen_json<T>(ctx, e, c.eig.out_vectors);
    for (auto it = ej.begin(); it != ej.end(); ++it) r[it.key()] = it.value();
    r["which"] = c.eig.which;
  }
  emit_result("spectrum", c.common, ctx, r, start);
  return 0;
}

}  // namespace

Command register_eigen(CLI::App& app) {
  auto* cmd = app.add_subcommand("eigen", "Top-k eigenpairs of a dense symmetric matrix (.npy) by Lanczos or the dense solver");
  auto c = std::make_shared<EigenCommand>();
  c->app = cmd;
  add_common_flags(*cmd, c->common);
  cmd->add_option("--matrix", c->matrix, "symmetric matrix [n, n] (.npy); its dtype sets the default --dtype")
      ->required()
      ->check(CLI::ExistingFile);
  add_eigen_flags(*cmd, c->eig);
  return {cmd, [c] {
            resolve_dtype(c->common, {c->matrix});
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run_eigen<typename decltype(precision)::type>(*c); });
          }};
}

Command register_spectrum(CLI::App& app) {
  auto* cmd = app.add_subcommand("spectrum", "Matrix-free spectra of a network: the NTK, the Gauss-Newton matrix or the "
                                             "loss Hessian; top-k eigenpairs, spectral density (SLQ) or trace");
  auto c = std::make_shared<SpectrumCommand>();
  c->app = cmd;
  add_common_flags(*cmd, c->common);
  add_model_flags(*cmd, c->model, true);
  add_data_flags(*cmd, c->data, true);
  std::vector<std::string> operators{"ntk"};
  for (const std::string& name : canonical_names(linalg::curvature_names)) operators.push_back(name);
  cmd->add_option("--operator", c->op,
                  "ntk | " + choices(linalg::curvature_names) +
                      ": the NTK J J^T in function space (size N*O), the Gauss-Newton matrix J^T H_loss J or the exact "
                      "loss Hessian (parameter space)")
      ->check(CLI::IsMember(operators))
      ->capture_default_str();
  cmd->add_option("--loss", c->loss,
                  choices(model::loss_names) + " for ggn/hessian (default: xent for labels, mse for float targets)")
      ->check(one_of(model::loss_names));
  add_eigen_flags(*cmd, c->eig);
  cmd->add_flag("--density", c->density, "spectral density by stochastic Lanczos quadrature instead of top-k");
  cmd->add_option("--steps", c->steps, "SLQ: Lanczos steps per probe, >= 1")->check(at_least(1))->capture_default_str();
  cmd->add_option("--probes", c->probes,
                  "random probe vectors for --density and --trace, >= 1 (SLQ: one Lanczos run each; Hutchinson: one "
                  "operator application each; Hutch++: half sketch, half residual probes)")
      ->check(at_least(1))
      ->capture_default_str();
  cmd->add_option("--grid", c->grid, "SLQ: density grid points")->check(in_range(2, 1000000))->capture_default_str();
  cmd->add_option("--trace", c->trace, "estimate the trace instead: hutchinson | hutchpp (with --probes probes)")
      ->check(CLI::IsMember({"hutchinson", "hutchpp"}));
  return {cmd, [c] {
            resolve_dtype(c->common, {c->model.model, c->data.inputs});
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run_spectrum<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
