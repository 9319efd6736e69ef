#pragma once
// Flags shared by the commands that build a network and load data.
#include "cli/common.hpp"
#include "dynascope/datasets.hpp"
#include "dynascope/model.hpp"
#include "dynascope/train.hpp"

namespace dynascope::cli {

struct ModelFlags {
  std::string model;            // safetensors file
  std::string arch;             // e.g. 784-200-200-10
  std::string activation;       // empty: the file's metadata (a file without one is refused), relu for --arch
  std::string parameterization; // empty: the file's or standard
  std::string layers;           // --layers fc_in,block,head: layer order of a file with unnumbered names
  std::string init = "pytorch";
  double init_scale = 1.0;
};
void add_model_flags(CLI::App& cmd, ModelFlags& f, bool require_model);

struct DataFlags {
  std::string dataset;
  std::string inputs, targets;
  index_t samples = 0;          // 0: all (generators: their default size); a command may preset a default cap
  double test_fraction = 0.0;
  const CLI::Option* samples_flag = nullptr;  // set by add_data_flags: tells a given --samples from a default
};
void add_data_flags(CLI::App& cmd, DataFlags& f, bool targets);

// The dataset the flags name (built-in or files), split into train and test. --samples N takes N
// samples (the first N of real data) and refuses more than the data holds; --samples 0 takes all;
// a command's preset default is a cap. --test-fraction must leave a training sample.
data::Split load_data(const DataFlags& f, std::uint64_t seed);

// What the targets are for: `outputs` (train, demo, spectrum's loss) needs regression targets of
// one column per network output; `alignment` (ntk) compares them with a kernel, any width.
enum class TargetUse { outputs, alignment };

// The network from --model, or a fresh --arch network initialised with --seed, checked against
// the data (every sample of the split): the input width, class labels below the network's outputs
// (a label out of range names the labels file, its row and value), float targets as wide as the
// outputs (`TargetUse::outputs`; one-hot rows and whole-number [N] floats get a hint). The data
// fills the ends of an --arch like "-64-64-" (empty first or last width). UsageError otherwise.
template <class T>
model::Mlp<T> load_network(const Context& ctx, const ModelFlags& f, std::uint64_t seed, const data::Split& data,
                           TargetUse use = TargetUse::outputs);
// The same with only the widths: `inputs` and `outputs` (when > 0) fill the ends of an --arch
// and are checked against the network (outputs: at least). Prefer the Split overload, whose
// messages name the data's files and rows.
template <class T>
model::Mlp<T> load_network(const Context& ctx, const ModelFlags& f, std::uint64_t seed, index_t inputs, index_t outputs);

// UsageError naming the targets file when `loss` cannot use the data's targets: xent needs integer
// class labels, not floats.
void check_loss_targets(model::Loss loss, const data::Dataset& d);

// Default loss for a dataset: xent for classification, mse for regression.
model::Loss default_loss(const data::Dataset& d);

// JSON of a spec: arch, activations, parameterization, parameters.
json spec_json(const model::MlpSpec& s);
// The same, plus where the activation and parameterization came from ("activation_source",
// "parameterization_source": metadata | flag | default) and, for a network read from a file, the
// file, its layer prefixes and order, and "stored_dtype" with "converted_to" when the file's dtype
// (e.g. BF16) is not the compute precision.
json spec_json(const model::MlpSpec& s, const model::LoadInfo& source, DType compute);
template <class T>
json spec_json(const model::Mlp<T>& net) {
  return spec_json(net.spec, net.source, dtype_v<T>);
}

}  // namespace dynascope::cli
