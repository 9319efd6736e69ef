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
  std::string activation;       // empty: the file's or relu
  std::string parameterization; // empty: the file's or standard
  std::string init = "pytorch";
  double init_scale = 1.0;
};
void add_model_flags(CLI::App& cmd, ModelFlags& f, bool require_model);

struct DataFlags {
  std::string dataset;
  std::string inputs, targets;
  index_t samples = 0;
  double test_fraction = 0.0;
};
void add_data_flags(CLI::App& cmd, DataFlags& f, bool targets);

// The dataset the flags name (built-in or files), split into train and test.
data::Split load_data(const DataFlags& f, std::uint64_t seed);

// The network from --model, or a fresh --arch network initialised with --seed. `inputs` and
// `outputs` (when > 0) are checked against the network, and fill the ends of an --arch like
// "-64-64-" (empty first or last width).
template <class T>
model::Mlp<T> load_network(const Context& ctx, const ModelFlags& f, std::uint64_t seed, index_t inputs, index_t outputs);

// Default loss for a dataset: xent for classification, mse for regression.
model::Loss default_loss(const data::Dataset& d);

// JSON of a spec.
json spec_json(const model::MlpSpec& s);

}  // namespace dynascope::cli
