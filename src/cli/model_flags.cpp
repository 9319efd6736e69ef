#include "cli/model_flags.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <numeric>

#include "dynascope/error.hpp"

namespace dynascope::cli {

namespace {

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// --layers a,b,c -> {"a", "b", "c"}; an empty entry is an error.
std::vector<std::string> layer_list(const std::string& text) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    std::string name = trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (name.empty())
      throw UsageError("--layers '" + text + "': expected layer prefixes separated by commas, e.g. fc_in,block,head");
    out.push_back(std::move(name));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

// --samples: a decimal integer >= 0. Checked here rather than with at_least(0), whose parser
// saturates a count too large for the type to its maximum instead of refusing it.
CLI::Validator sample_count() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        index_t v = 0;
        const char* end = text.data() + text.size();
        const auto [ptr, ec] = std::from_chars(text.data(), end, v);
        if (text.empty() || ec != std::errc() || ptr != end || v < 0)
          return "must be an integer >= 0 (0 = all), got '" + text + "'";
        text = std::to_string(v);  // what CLI11 then reads: plain decimal (it would take 010 as octal)
        return {};
      },
      "INT >= 0");
}

std::string count_text(index_t n, const char* what) { return std::to_string(n) + " " + what + (n == 1 ? "" : "s"); }

// How the messages name where the data came from.
std::string inputs_name(const data::Dataset& d) {
  if (!d.inputs_file.empty() && d.name == d.inputs_file) return "--inputs " + d.inputs_file;
  return "dataset '" + d.name + "'";
}
std::string targets_name(const data::Dataset& d) {
  if (d.targets_file.empty()) return "dataset '" + d.name + "'";
  if (d.name == d.inputs_file) return "--targets " + d.targets_file;
  return "dataset '" + d.name + "' (" + d.targets_file + ")";
}

std::string network_name(const model::MlpSpec& s, const model::LoadInfo& source) {
  return "the network " + s.arch_string() + (source.path.empty() ? "" : " in " + source.path);
}

// Hints for float targets that look like class labels: whole numbers in one column, or one-hot rows.
std::string label_hint(const data::Dataset& d, index_t network_outputs) {
  if (d.task != data::Task::regression || d.y.empty()) return "";
  index_t classes = 0;
  if (d.outputs == 1) {
    double mx = 0;
    for (double v : d.y) {
      if (v < 0 || v != std::floor(v) || v > 1e9) return "";
      mx = std::max(mx, v);
    }
    classes = static_cast<index_t>(mx) + 1;
    if (classes > network_outputs)
      return "; the values are whole numbers 0.." + std::to_string(classes - 1) + ": as class labels they would need " +
             count_text(classes, "output");
    return "; the values are whole numbers 0.." + std::to_string(classes - 1) +
           ": if they are class labels, save them as integers (e.g. y.astype(np.int64)) to classify";
  }
  for (index_t i = 0; i < d.n; ++i) {
    index_t ones = 0;
    for (index_t j = 0; j < d.outputs; ++j) {
      const double v = d.y[std::size_t(i * d.outputs + j)];
      if (v == 1.0) ++ones;
      else if (v != 0.0) return "";
    }
    if (ones != 1) return "";
  }
  if (d.outputs > network_outputs)
    return "; the rows are one-hot over " + std::to_string(d.outputs) + " classes: a classifier for them needs " +
           count_text(d.outputs, "output");
  return "; the rows are one-hot: if they are classes, save the integer labels instead (np.argmax(Y, 1))";
}

// The network from --model or --arch; `inputs` and `outputs` (> 0) fill the ends of an --arch.
template <class T>
model::Mlp<T> build_network(const Context& ctx, const ModelFlags& f, std::uint64_t seed, index_t inputs, index_t outputs) {
  model::Mlp<T> net;
  if (!f.model.empty()) {
    model::LoadOptions o;
    o.activation = f.activation;
    o.parameterization = f.parameterization;
    o.layers = layer_list(f.layers);
    return model::load_mlp<T>(ctx, f.model, o);
  }
  if (f.arch.empty()) throw UsageError("no network: give --model FILE or --arch WIDTHS");
  if (!f.layers.empty()) throw UsageError("--layers orders the layers of a --model file; --arch has none to order");
  std::string arch = f.arch;
  if (!arch.empty() && arch.front() == '-') {
    if (inputs <= 0) throw UsageError("--arch '" + f.arch + "': the input width is missing");
    arch = std::to_string(inputs) + arch;
  }
  if (!arch.empty() && arch.back() == '-') {
    if (outputs <= 0) throw UsageError("--arch '" + f.arch + "': the output width is missing (the data has no targets to take it from)");
    arch += std::to_string(outputs);
  }
  if (!(f.init_scale > 0) || !std::isfinite(f.init_scale))
    throw UsageError("--init-scale must be a finite number > 0, got " + std::to_string(f.init_scale));
  try {
    const auto act = model::parse_activation(f.activation.empty() ? "relu" : f.activation);
    const auto par = model::parse_parameterization(f.parameterization.empty() ? "standard" : f.parameterization);
    net.spec = model::MlpSpec::from_arch(arch, act, par);
    const model::Init init = model::parse_init(f.init);
    net.params = model::init_params<T>(ctx, net.spec, {init, f.init_scale, seed});
  } catch (const InvalidArgument& e) {
    throw UsageError(e.what());
  }
  net.source.activation = f.activation.empty() ? model::Origin::default_value : model::Origin::option;
  net.source.parameterization = f.parameterization.empty() ? model::Origin::default_value : model::Origin::option;
  return net;
}

// Every class label of the split below the network's outputs, else a UsageError naming the
// file, the first offending row (in the file) and its label.
void check_labels(const model::MlpSpec& s, const model::LoadInfo& source, const data::Split& split) {
  const index_t o = s.outputs();
  index_t bad = 0, first_row = -1;
  std::int64_t first_label = 0, largest = 0;
  for (const data::Dataset* d : {&split.train, &split.test})
    for (index_t i = 0; i < static_cast<index_t>(d->labels.size()); ++i) {
      const std::int64_t label = d->labels[std::size_t(i)];
      largest = std::max(largest, label);
      if (label < o) continue;
      ++bad;
      const index_t row = d->source_row(i);
      if (first_row < 0 || row < first_row) {
        first_row = row;
        first_label = label;
      }
    }
  if (bad == 0) return;
  throw UsageError(targets_name(split.train) + ": class label " + std::to_string(first_label) + " at row " +
                   std::to_string(first_row) + " is out of range for " + network_name(s, source) + ", which gives " +
                   count_text(o, "output") + ": labels must be in [0, " + std::to_string(o) + ")" +
                   (bad > 1 ? " (" + std::to_string(bad) + " rows are not; the largest label is " + std::to_string(largest) + ")"
                            : ""));
}

}  // namespace

void add_model_flags(CLI::App& cmd, ModelFlags& f, bool require_model) {
  auto* m = cmd.add_option("--model", f.model,
                           "network weights: safetensors with layers.{i}.weight/bias or nn.Sequential state-dict names "
                           "(see docs/cli.md); F32, F64, F16 or BF16")
                ->check(CLI::ExistingFile);
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
                 "hidden activation: " + known_names(model::activation_names) +
                     "; one for every hidden layer or one per hidden layer (relu,tanh). Overrides the file's metadata; "
                     "required for a file without it, such as a PyTorch state dict, which does not record activations "
                     "(--arch: default relu)");
  cmd.add_option("--parameterization", f.parameterization,
                 choices(model::parameterization_names) + " (default: the file's metadata, else standard, PyTorch's convention)")
      ->check(one_of(model::parameterization_names));
  cmd.add_option("--layers", f.layers,
                 "the layer order of a --model file whose layer names carry no numbers: its tensor-name prefixes in the "
                 "order the forward pass applies them, e.g. fc_in,block,head (numbered names such as 0, 2, 4 or "
                 "layers.0, layers.1 are ordered automatically)")
      ->excludes(a);
  cmd.add_option("--init", f.init, "initialisation of --arch: " + choices(model::init_names))
      ->capture_default_str()
      ->excludes(m);
  cmd.add_option("--init-scale", f.init_scale,
                 "multiply the initial weights and biases of --arch by this factor (alpha), a finite number > 0")
      ->check(finite_at_least(0, true))
      ->capture_default_str()
      ->excludes(m);
}

void add_data_flags(CLI::App& cmd, DataFlags& f, bool targets) {
  auto* d = cmd.add_option("--dataset", f.dataset, "a built-in dataset (see `dynascope datasets`)");
  auto* x = cmd.add_option("--inputs", f.inputs, "inputs [N, D...] (.npy or IDX)")->check(CLI::ExistingFile);
  d->excludes(x);
  if (targets) {
    auto* y = cmd.add_option("--targets", f.targets,
                             "targets: [N] integer class labels (0..classes-1, fewer than the network's outputs), or "
                             "[N] / [N, O] floats with one column per output (.npy or IDX)")
                  ->check(CLI::ExistingFile);
    y->needs(x);
    d->excludes(y);
  }
  std::string samples_help =
      "samples to use, an integer >= 0: the first N of real data, N generated; 0 = all the data holds (generated "
      "datasets: their default size); more than the data holds is an error";
  if (f.samples > 0)
    samples_help += " (default " + std::to_string(f.samples) + ", or all the data holds when it has fewer)";
  f.samples_flag = cmd.add_option("--samples", f.samples, samples_help)->check(sample_count());
  cmd.add_option("--test-fraction", f.test_fraction,
                 "fraction of the samples held out as a test set (seeded split), in [0, 1); at least one sample must "
                 "stay for training")
      ->check(finite_in_range(0.0, 1.0, true))
      ->capture_default_str();
}

data::Split load_data(const DataFlags& f, std::uint64_t seed) {
  // A count given on the command line (or set in code without the flag) must be met exactly; a
  // command's preset default (the demo's 512) only caps.
  const bool demanded = f.samples_flag == nullptr || f.samples_flag->count() > 0;
  if (f.samples < 0) throw UsageError("--samples must be >= 0 (0 = all), got " + std::to_string(f.samples));
  if (!(f.test_fraction >= 0.0 && f.test_fraction < 1.0))
    throw UsageError("--test-fraction must be in [0, 1), got " + std::to_string(f.test_fraction));
  const std::string asked = "--samples " + std::to_string(f.samples);
  data::Dataset ds;
  // --inputs and --dataset exclude each other on the command line, so with both set the dataset
  // is a command's preset default (the demo's spirals) and the files win.
  if (f.inputs.empty() && !f.dataset.empty()) {
    data::DatasetOptions o;
    o.samples = f.samples;
    o.samples_at_most = true;  // checked here, to name the flag
    o.seed = seed;
    try {
      ds = data::load_dataset(f.dataset, o);
    } catch (const InvalidArgument& e) {
      throw UsageError("--dataset " + f.dataset + ": " + e.what());
    }
    if (demanded && f.samples > 0 && ds.n < f.samples)
      throw UsageError(asked + ": dataset '" + f.dataset + "' holds " + count_text(ds.n, "sample") +
                       " (--samples 0 takes all of them)");
    if (demanded && f.samples > 0 && ds.n > f.samples)
      throw UsageError(asked + ": dataset '" + f.dataset + "' always has all its " + count_text(ds.n, "sample") +
                       "; leave --samples out and hold some out with --test-fraction");
  } else if (!f.inputs.empty()) {
    ds = f.targets.empty() ? data::inputs_from_file(f.inputs) : data::dataset_from_files(f.inputs, f.targets);
    if (demanded && f.samples > ds.n)
      throw UsageError(asked + ": --inputs " + f.inputs + " holds " + count_text(ds.n, "sample") +
                       " (--samples 0 takes all of them)");
    if (f.samples > 0 && f.samples < ds.n) {
      std::vector<index_t> rows(static_cast<std::size_t>(f.samples));
      std::iota(rows.begin(), rows.end(), index_t{0});
      ds = ds.subset(rows);
    }
  } else {
    throw UsageError("no data: give --dataset NAME or --inputs FILE");
  }
  if (f.test_fraction > 0) {
    data::Split split = data::train_test_split(ds, f.test_fraction, seed);
    if (split.train.n == 0)
      throw UsageError("--test-fraction " + std::to_string(f.test_fraction) + " holds out all " +
                       count_text(ds.n, "sample") + "; at least one must stay for training");
    return split;
  }
  return {ds, {}};
}

model::Loss default_loss(const data::Dataset& d) {
  return d.task == data::Task::classification ? model::Loss::xent : model::Loss::mse;
}

void check_loss_targets(model::Loss loss, const data::Dataset& d) {
  if (loss != model::Loss::xent || d.task == data::Task::classification || !d.targets_present()) return;
  throw UsageError("--loss xent needs integer class labels, but " + targets_name(d) + " holds float targets" +
                   (d.targets_stored.empty() ? "" : " (" + d.targets_stored + ")") +
                   ": save the labels as integers (e.g. y.astype(np.int64), or np.argmax(Y, 1) for one-hot rows), or "
                   "use --loss mse to regress on the floats");
}

template <class T>
model::Mlp<T> load_network(const Context& ctx, const ModelFlags& f, std::uint64_t seed, const data::Split& data,
                           TargetUse use) {
  const data::Dataset& d = data.train;
  const bool targets = d.targets_present();
  model::Mlp<T> net = build_network<T>(ctx, f, seed, d.d, targets ? d.outputs : 0);
  const model::MlpSpec& s = net.spec;
  if (d.d > 0 && s.inputs() != d.d)
    throw UsageError(network_name(s, net.source) + " takes " + count_text(s.inputs(), "input") + " but " + inputs_name(d) +
                     " has " + std::to_string(d.d) + " per sample");
  if (!targets) return net;
  if (d.task == data::Task::classification) {
    check_labels(s, net.source, data);
  } else if (use == TargetUse::outputs && d.outputs != s.outputs()) {
    throw UsageError(targets_name(d) + " holds targets with " + std::to_string(d.outputs) + " value" +
                     (d.outputs == 1 ? "" : "s") + " per sample" + (d.targets_stored.empty() ? "" : " (" + d.targets_stored + ")") +
                     ", but " + network_name(s, net.source) + " gives " + count_text(s.outputs(), "output") +
                     ": float targets need one column per output, shape [N, " + std::to_string(s.outputs()) + "]" +
                     label_hint(d, s.outputs()));
  }
  return net;
}

template <class T>
model::Mlp<T> load_network(const Context& ctx, const ModelFlags& f, std::uint64_t seed, index_t inputs, index_t outputs) {
  model::Mlp<T> net = build_network<T>(ctx, f, seed, inputs, outputs);
  if (inputs > 0 && net.spec.inputs() != inputs)
    throw UsageError(network_name(net.spec, net.source) + " takes " + count_text(net.spec.inputs(), "input") +
                     " but the data has " + std::to_string(inputs) + " per sample");
  if (outputs > 0 && net.spec.outputs() < outputs)
    throw UsageError(network_name(net.spec, net.source) + " gives " + count_text(net.spec.outputs(), "output") +
                     " but the data needs " + std::to_string(outputs) + " (its class labels or target columns)");
  return net;
}

template model::Mlp<float> load_network<float>(const Context&, const ModelFlags&, std::uint64_t, const data::Split&, TargetUse);
template model::Mlp<double> load_network<double>(const Context&, const ModelFlags&, std::uint64_t, const data::Split&, TargetUse);
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

json spec_json(const model::MlpSpec& s, const model::LoadInfo& source, DType compute) {
  // The library's "option" is a flag on the command line.
  const auto origin = [](model::Origin o) { return o == model::Origin::option ? "flag" : model::to_string(o); };
  json j;
  j["arch"] = s.arch_string();
  json acts = json::array();
  for (const auto& a : s.activations) acts.push_back(model::to_string(a));
  j["activations"] = acts;
  if (s.layers() > 1) j["activation_source"] = origin(source.activation);
  j["parameterization"] = model::to_string(s.parameterization);
  j["parameterization_source"] = origin(source.parameterization);
  j["parameters"] = s.num_params();
  if (!source.path.empty()) {
    j["file"] = source.path;
    j["layers"] = source.layers;
    j["layer_order"] = source.layers_given ? "--layers" : "numbers in the names";
    j["stored_dtype"] = source.stored_dtype;
    const std::string want = compute == DType::f64 ? "F64" : "F32";
    if (source.stored_dtype != want) j["converted_to"] = to_string(compute);
  }
  return j;
}

}  // namespace dynascope::cli
