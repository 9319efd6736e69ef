// dynascope ntk: the empirical NTK of a network on inputs (and a second set), its trace and norm,
// and with targets the kernel-target alignment and the cumulative energies E_k(y).
#include <cmath>
#include <type_traits>

#include "cli/model_flags.hpp"
#include "dynascope/io.hpp"
#include "dynascope/ntk.hpp"
#include "dynascope/spectra.hpp"

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
  bool per_layer = false;
};

// Targets as a float64 matrix in the layout of the kernel's rows: one-hot labels or values
// [N, C]; for the full kernel the single column vec(Y) of length N*O.
std::vector<double> target_matrix(const data::Dataset& d, ntk::Outputs mode, index_t outputs, index_t& cols) {
  const index_t n = d.n;
  std::vector<double> y;
  index_t c = d.outputs;
  if (d.task == data::Task::classification) {
    y.assign(std::size_t(n * c), 0.0);
    for (index_t i = 0; i < n; ++i) y[std::size_t(i * c + d.labels[std::size_t(i)])] = 1.0;
  } else {
    y = d.y;
  }
  if (mode == ntk::Outputs::full) {
    if (c != outputs)
      throw UsageError("--targets: the full kernel needs one target per network output (" + std::to_string(outputs) +
                       "), the data has " + std::to_string(c));
    cols = 1;
    return y;  // row-major [N, O] is vec(Y) in the kernel's (n, a) order
  }
  cols = c;
  return y;
}

template <class T>
int run(const NtkCommand& c) {
  const auto start = std::chrono::steady_clock::now();
  const Context ctx = make_context(c.common);
  if (!c.inputs2.empty() && c.data.inputs.empty()) throw UsageError("--inputs2 needs --inputs");
  const data::Split split = load_data(c.data, c.common.seed);
  const data::Dataset& d1 = split.train;
  data::Dataset d2;
  if (!c.inputs2.empty()) d2 = data::inputs_from_file(c.inputs2);
  const bool symmetric = c.inputs2.empty();
  model::Mlp<T> net = load_network<T>(ctx, c.model, c.common.seed, d1.d, d1.targets_present() ? d1.outputs : 0);
  const ntk::Outputs mode = ntk::parse_outputs(c.outputs);
  const ntk::Method method = ntk::parse_method(c.method);
  const index_t o = net.spec.outputs(), n1 = d1.n, n2 = symmetric ? d1.n : d2.n;
  if (!symmetric && d2.d != d1.d)
    throw UsageError("--inputs2 has " + std::to_string(d2.d) + " columns but --inputs has " + std::to_string(d1.d));
  const ntk::KernelShape shape = ntk::kernel_shape(mode, n1, n2, o);

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

  const bool square = shape.rows == shape.cols && symmetric;
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
  r["network"] = spec_json(net.spec);
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
  const bool targets = d1.targets_present();
  if ((targets || c.top_k > 0) && !square)
    throw UsageError("alignment and eigenvalues need a square kernel: omit --inputs2 and use --outputs trace, sum or full");
  // Alignment and eigenvalues work in float64: a copy only when the kernel is float32 and needed.
  std::vector<double> k64;
  const double* k = nullptr;
  if (targets || c.top_k > 0) {
    if constexpr (std::is_same_v<T, double>) {
      k = kdata;
    } else {
      k64.assign(kdata, kdata + shape.rows * shape.cols);
      k = k64.data();
    }
  }
  const MatrixView<const double> kv{k, shape.rows, shape.cols, shape.cols};
  if (targets) {
    // E_k needs every eigenvector: the dense solver.
    const ntk::Eigen<double> eig = ntk::eigen_descending<double>(Context::host(), kv);
    if (c.top_k > 0) {
      const index_t kk = std::min<index_t>(c.top_k, shape.rows);
      r["eigenvalues"] = std::vector<double>(eig.values.begin(), eig.values.begin() + kk);
    }
    index_t cols = 0;
    const std::vector<double> y = target_matrix(d1, mode, o, cols);
    const MatrixView<const double> yv{y.data(), shape.rows, cols, cols};
    r["kta"] = ntk::kernel_target_alignment(kv, yv, false);
    r["kta_centered"] = ntk::kernel_target_alignment(kv, yv, true);
    const auto ks = ntk::energy_ks(shape.rows);
    const auto e = ntk::cumulative_energy<double>(eig, yv, ks);
    json energy;
    for (std::size_t i = 0; i < ks.size(); ++i) energy[std::to_string(ks[i])] = e[i];
    r["energy"] = energy;
  } else if (c.top_k > 0) {
    // Only the top of the spectrum: Lanczos (dense for small kernels) on the computed kernel.
    linalg::DenseOperator<double> op(Context::host(), kv);
    linalg::LanczosOptions lo;
    lo.k = std::min<index_t>(c.top_k, shape.rows);
    lo.tol = 1e-10;
    lo.seed = c.common.seed;
    const auto eig = linalg::eigsh<double>(op, lo);
    r["eigenvalues"] = eig.values;
    r["eigen_method"] = eig.method;
    r["eigen_converged"] = eig.all_converged;
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
  add_common_flags(*cmd, c->common);
  add_model_flags(*cmd, c->model, true);
  add_data_flags(*cmd, c->data, true);
  cmd->add_option("--inputs2", c->inputs2, "a second input set X2 (kernel X1 x X2; omitted: the symmetric kernel of X1)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--outputs", c->outputs,
                  "full [N1,O,N2,O] | diagonal [N1,N2,O] | trace [N1,N2] (sum over outputs) | sum [N1,N2] (kernel of sum_a f_a)")
      ->check(CLI::IsMember({"full", "diagonal", "trace", "sum"}))
      ->capture_default_str();
  cmd->add_option("--method", c->method, "auto | structured | jvp | jacobian (all give the same numbers)")
      ->check(CLI::IsMember({"auto", "structured", "jvp", "jacobian"}))
      ->capture_default_str();
  cmd->add_option("--out-matrix", c->out_matrix, "write the kernel to this .npy (memory-mapped, written tile by tile)");
  cmd->add_option("--top-k", c->top_k, "report the K largest eigenvalues")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--per-layer", c->per_layer, "also report the trace of each layer's kernel");
  return {cmd, [c] { return parse_dtype(c->common.dtype) == DType::f64 ? run<double>(*c) : run<float>(*c); }};
}

}  // namespace dynascope::cli
