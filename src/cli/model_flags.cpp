#include "cli/model_flags.hpp"

#include "dynascope/error.hpp"

namespace dynascope::cli {

void add_model_flags(CLI::App& cmd, ModelFlags& f, bool require_model) {
  auto* m = cmd.add_option("--model", f.model, "network weights (safetensors; IO.md naming)")->check(CLI::ExistingFile);
  auto* a = cmd.add_option("--arch", f.arch,
                           "a freshly initialised network instead, widths joined by '-', e.g. 784-200-200-10 "
                           "(the first and last width may be left empty to take the data's)");
  m->excludes(a);
  if (require_model) {
    auto* group = cmd.add_option_group("network", "the network: --model FILE or --arch WIDTHS");
    group->add_option(m);
    group->add_option(a);
    group->require_option(1);
  }
  cmd.add_option("--activation", f.activation,
                 "hidden activation: relu, leaky_relu[:slope], abs, tanh, gelu, softplus, sigmoid, identity "
                 "(default: the file's metadata, else relu)");
  cmd.add_option("--parameterization", f.parameterization, "standard | ntk (default: the file's metadata, else standard)");
  cmd.add_option("--init", f.init, "initialisation of --arch: pytorch | kaiming_normal | lecun_normal | ntk_normal")
      ->capture_default_str();
  cmd.add_option("--init-scale", f.init_scale, "multiply the initial weights and biases by this factor (alpha)")
      ->capture_default_str();
}

void add_data_flags(CLI::App& cmd, DataFlags& f, bool targets) {
  auto* d = cmd.add_option("--dataset", f.dataset, "a built-in dataset (see `dynascope datasets`)");
  auto* x = cmd.add_option("--inputs", f.inputs, "inputs [N, D...] (.npy or IDX)")->check(CLI::ExistingFile);
  d->excludes(x);
  if (targets) {
    auto* y = cmd.add_option("--targets", f.targets, "targets: [N] integer labels or [N] / [N, O] floats (.npy or IDX)")
                  ->check(CLI::ExistingFile);
    y->needs(x);
    d->excludes(y);
  }
  cmd.add_option("--samples", f.samples, "number of samples (built-in generators; real data: the first N)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--test-fraction", f.test_fraction, "fraction held out as a test set (seeded split)")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
}

data::Split load_data(const DataFlags& f, std::uint64_t seed) {
  data::Dataset ds;
  if (!f.dataset.empty()) {
    data::DatasetOptions o;
    o.samples = f.samples;
    o.seed = seed;
    try {
      ds = data::load_dataset(f.dataset, o);
    } catch (const InvalidArgument& e) {
      throw UsageError(std::string("--dataset: ") + e.what());
    }
  } else if (!f.inputs.empty()) {
    ds = f.targets.empty() ? data::inputs_from_file(f.inputs) : data::dataset_from_files(f.inputs, f.targets);
    if (f.samples > 0 && f.samples < ds.n) {
      std::vector<index_t> rows(static_cast<std::size_t>(f.samples));
      for (index_t i = 0; i < f.samples; ++i) rows[std::size_t(i)] = i;
      ds = ds.subset(rows);
    }
  } else {
    throw UsageError("no data: give --dataset NAME or --inputs FILE");
  }
  if (f.test_fraction > 0) return data::train_test_split(ds, f.test_fraction, seed);
  return {ds, {}};
}

model::Loss default_loss(const data::Dataset& d) {
  return d.task == data::Task::classification ? model::Loss::xent : model::Loss::mse;
}

template <class T>
model::Mlp<T> load_network(const Context& ctx, const ModelFlags& f, std::uint64_t seed, index_t inputs, index_t outputs) {
  model::Mlp<T> net;
  if (!f.model.empty()) {
    net = model::load_mlp<T>(ctx, f.model, {f.activation, f.parameterization});
  } else {
    if (f.arch.empty()) throw UsageError("no network: give --model FILE or --arch WIDTHS");
    std::string arch = f.arch;
    if (!arch.empty() && arch.front() == '-') {
      if (inputs <= 0) throw UsageError("--arch '" + f.arch + "': the input width is missing");
      arch = std::to_string(inputs) + arch;
    }
    if (!arch.empty() && arch.back() == '-') {
      if (outputs <= 0) throw UsageError("--arch '" + f.arch + "': the output width is missing");
      arch += std::to_string(outputs);
    }
    try {
      const auto act = model::parse_activation(f.activation.empty() ? "relu" : f.activation);
      const auto par = model::parse_parameterization(f.parameterization.empty() ? "standard" : f.parameterization);
      net.spec = model::MlpSpec::from_arch(arch, act, par);
      const model::Init init = model::parse_init(f.init);
      net.params = model::init_params<T>(ctx, net.spec, {init, f.init_scale, seed});
    } catch (const InvalidArgument& e) {
      throw UsageError(e.what());
    }
  }
  if (inputs > 0 && net.spec.inputs() != inputs)
    throw UsageError("the network " + net.spec.arch_string() + " takes " + std::to_string(net.spec.inputs()) +
                     " inputs but the data has " + std::to_string(inputs));
  if (outputs > 0 && net.spec.outputs() < outputs)
    throw UsageError("the network " + net.spec.arch_string() + " gives " + std::to_string(net.spec.outputs()) +
                     " outputs but the data needs " + std::to_string(outputs));
  return net;
}

template model::Mlp<float> load_network<float>(const Context&, const ModelFlags&, std::uint64_t, index_t, index_t);
template model::Mlp<double> load_network<double>(const Context&, const ModelFlags&, std::uint64_t, index_t, index_t);

json spec_json(const model::MlpSpec& s) {
  json j;
  j["arch"] = s.arch_string();
  json acts = json::array();
  for (const auto& a : s.activations) acts.push_back(model::to_string(a));
  j["activations"] = acts;
  j["parameterization"] = model::to_string(s.parameterization);
  j["parameters"] = s.num_params();
  return j;
}

}  // namespace dynascope::cli
