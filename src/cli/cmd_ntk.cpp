// dynascope ntk: the empirical NTK of a network on inputs (and a second set), its trace and norm,
// and with targets the kernel-target alignment and the cumulative energies E_k(y).
#include <cmath>
#include <type_traits>

#include "cli/model_flags.hpp"
#include "cli/ntk_summary.hpp"
#include "dynascope/io.hpp"
#include "dynascope/ntk.hpp"

namespace dynascope::cli {

namespace {

struct NtkCommand {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string inputs2;
  std::string outputs = "trace";
  std::string method = "auto";
  std::string out_matrix;
  index_t top_k = 0;
  std::vector<index_t> energy;
  std::string energy_targets = "centered";
  bool per_layer = false;
  CLI::App* app = nullptr;
};

// Every flag combination is checked before any work starts.
void validate(const NtkCommand& c) {
  const CLI::App& cmd = *c.app;
  if (!c.inputs2.empty() && c.data.inputs.empty()) throw UsageError("--inputs2 needs --inputs");
  const std::string why_square = "alignment and eigenvalues need the square kernel of one input set";
  refuse_together(cmd, "--inputs2", "--targets", why_square);
  refuse_together(cmd, "--inputs2", "--k", why_square);
  refuse_together(cmd, "--inputs2", "--energy", why_square);
  if (c.outputs == "diagonal") {
    const std::string why = "the diagonal kernel [N1, N2, O] is a stack of per-output kernels, not one matrix";
    refuse_together(cmd, "--outputs", "--k", why);
    refuse_together(cmd, "--outputs", "--energy", why);
    refuse_together(cmd, "--outputs", "--targets", why + " (alignment is defined for trace, sum and full)");
  }
  if (given(cmd, "--energy-targets") && c.energy.empty())
    throw UsageError("--energy-targets has no effect without --energy K1,K2,...");
  check_output("--out", c.common.out);
  check_output("--out-matrix", c.out_matrix);
}

template <class T>
int run(const NtkCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  validate(c);
  const Context ctx = make_context(c.common);
  const data::Split split = load_data(c.data, c.common.seed);
  const data::Dataset& d1 = split.train;
  data::Dataset d2;
  if (!c.inputs2.empty()) d2 = data::inputs_from_file(c.inputs2);
  const bool symmetric = c.inputs2.empty();
  model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, split, TargetUse::alignment);
  const ntk::Outputs mode = ntk::parse_outputs(c.outputs);
  const ntk::Method method = ntk::parse_method(c.method);
  const index_t o = net.spec.outputs(), n1 = d1.n, n2 = symmetric ? d1.n : d2.n;
  if (!symmetric && d2.d != d1.d)
    throw UsageError("--inputs2 has " + std::to_string(d2.d) + " columns but --inputs has " + std::to_string(d1.d));
  const ntk::KernelShape shape = ntk::kernel_shape(mode, n1, n2, o);
  const bool square = symmetric && mode != ntk::Outputs::diagonal;
  // Targets are laid out (and checked) before the kernel is computed.
  KernelTargets targets;
  if (square) targets = kernel_targets(d1, mode == ntk::Outputs::full, o);
  if ((c.top_k > 0 || !c.energy.empty()) && c.top_k > shape.rows)
    throw UsageError("--k " + std::to_string(c.top_k) + " exceeds the kernel's size " + std::to_string(shape.rows));
  for (index_t q : c.energy)
    if (q > shape.rows)
      throw UsageError("--energy " + std::to_string(q) + " exceeds the kernel's size " + std::to_string(shape.rows));

  const Array<T> x1 = model::to_device<T>(ctx, d1).x;
  Array<T> x2;
  if (!symmetric) x2 = model::to_device<T>(ctx, d2).x;
  std::optional<MatrixView<const T>> second;
  if (!symmetric) second = MatrixView<const T>(x2.matrix());

  // The kernel lands in host memory: a memory-mapped .npy when asked for, else a plain buffer.
  std::unique_ptr<io::MappedNpy> mapped;
  std::vector<T> buffer;
  T* kdata = nullptr;
  if (!c.out_matrix.empty()) {
    mapped = std::make_unique<io::MappedNpy>(c.out_matrix, dtype_v<T>, shape.tensor);
    kdata = mapped->data_as<T>();
  } else {
    buffer.resize(std::size_t(shape.rows * shape.cols));
    kdata = buffer.data();
  }
  std::vector<Array<T>> layers;
  std::vector<MatrixView<T>> layer_views;
  if (c.per_layer)
    for (index_t l = 0; l < net.spec.layers(); ++l) {
      layers.emplace_back(Context::host(), Shape{shape.rows, shape.cols});
      layer_views.push_back({layers.back().data(), shape.rows, shape.cols, shape.cols, Backend::host});
    }
  const ntk::NtkInfo info = ntk::empirical_ntk_into<T>(ctx, net.spec, net.params.data(), x1.matrix(), second,
                                                       {mode, method, c.per_layer},
                                                       {kdata, shape.rows, shape.cols, shape.cols, Backend::host}, layer_views);

  auto trace_of = [&](const T* p) {
    double t = 0;
    if (mode == ntk::Outputs::diagonal)
      for (index_t i = 0; i < n1; ++i)
        for (index_t a = 0; a < o; ++a) t += double(p[i * shape.cols + i * o + a]);
    else
      for (index_t i = 0; i < shape.rows; ++i) t += double(p[i * shape.cols + i]);
    return t;
  };
  double fro = 0;
  for (index_t i = 0; i < shape.rows * shape.cols; ++i) fro += double(kdata[i]) * double(kdata[i]);
  json r;
  r["network"] = spec_json(net);
  r["method"] = ntk::to_string(info.method);
  r["method_reason"] = info.reason;
  r["outputs"] = ntk::to_string(mode);
  r["shape"] = shape.tensor;
  r["tiles"] = info.tiles;
  r["gflop"] = info.flops * 1e-9;
  r["trace"] = symmetric ? json(trace_of(kdata)) : json(nullptr);
  r["frobenius"] = std::sqrt(fro);
  if (c.per_layer) {
    json pl = json::array();
    for (const auto& a : layers) pl.push_back(symmetric ? json(trace_of(a.data())) : json(nullptr));
    r["per_layer_trace"] = pl;
  }
  if (square) {
    KernelSummaryRequest req;
    req.top_k = c.top_k;
    req.energy_ks = c.energy;
    req.center_energy = c.energy_targets == "centered";
    req.seed = c.common.seed;
    const Context host = ctx.is_host() ? ctx : make_host_context(c.common);
    const json summary =
        kernel_summary<T>(host, MatrixView<const T>{kdata, shape.rows, shape.cols, shape.cols, Backend::host}, targets, req);
    for (auto it = summary.begin(); it != summary.end(); ++it) r[it.key()] = it.value();
  } else if (d1.targets_present()) {
    r["alignment"] = "not computed: alignment is defined for the square kernel of one input set with --outputs "
                     "trace, sum or full";
  }
  if (mapped) {
    mapped->commit();
    r["matrix_file"] = c.out_matrix;
  }
  emit_result("ntk", c.common, ctx, r, start);
  return 0;
}

}  // namespace

Command register_ntk(CLI::App& app) {
  auto* cmd = app.add_subcommand("ntk", "The empirical neural tangent kernel: trace, norm, alignment with targets, top eigenvalues");
  auto c = std::make_shared<NtkCommand>();
  c->app = cmd;
  add_common_flags(*cmd, c->common);
  add_model_flags(*cmd, c->model, true);
  add_data_flags(*cmd, c->data, true);
  cmd->add_option("--inputs2", c->inputs2, "a second input set X2 (kernel X1 x X2; omitted: the symmetric kernel of X1)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--outputs", c->outputs,
                  choices(ntk::outputs_names) +
                      ": full [N1,O,N2,O], diagonal [N1,N2,O], trace [N1,N2] (the sum over outputs), sum [N1,N2] (the "
                      "kernel of sum_a f_a)")
      ->check(one_of(ntk::outputs_names))
      ->capture_default_str();
  cmd->add_option("--method", c->method, choices(ntk::method_names) + " (all give the same numbers)")
      ->check(one_of(ntk::method_names))
      ->capture_default_str();
  cmd->add_option("--out-matrix", c->out_matrix, "write the kernel to this .npy (memory-mapped, written tile by tile)");
  cmd->add_option("--k,--top-k", c->top_k, "report the K largest eigenvalues of the kernel (Lanczos; 0 = none)")
      ->check(at_least(0));
  cmd->add_option("--energy", c->energy,
                  "report E_k(y), the share of the targets' energy in the top-k eigenvectors, at these k (e.g. 1,2,5,10; "
                  "needs targets)")
      ->delimiter(',')
      ->check(at_least(1));
  cmd->add_option("--energy-targets", c->energy_targets,
                  "centered: E_k of the targets with their column means removed (the constant mode says nothing about "
                  "what is learned) | raw: as given")
      ->check(CLI::IsMember({"centered", "raw"}))
      ->capture_default_str();
  cmd->add_flag("--per-layer", c->per_layer, "also report the trace of each layer's kernel");
  return {cmd, [c] {
            resolve_dtype(c->common, {c->model.model, c->data.inputs, c->inputs2});
            return dispatch_float(parse_dtype(c->common.dtype),
                                  [&](auto precision) { return run<typename decltype(precision)::type>(*c); });
          }};
}

}  // namespace dynascope::cli
