#pragma once
// Multi-layer perceptrons: the network every diagnostic differentiates.
//
// Layer l (1..L) computes z_l = c_l W_l a_{l-1} + beta b_l and a_l = sigma_l(z_l), with a_0 = x and
// the output layer linear (a_L = z_L). W_l is [out, in] (torch.nn.Linear's layout). Standard
// parameterization: c_l = 1, beta = 1. NTK parameterization (Jacot et al.): c_l = 1/sqrt(in_l),
// beta = bias_scale (default 1).
// The flat parameter vector is W_1, b_1, W_2, b_2, ... (row-major), exactly
// torch.nn.utils.parameters_to_vector of the matching nn.Sequential.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/context.hpp"

namespace dynascope::model {

enum class Activation { identity, relu, leaky_relu, abs, tanh, gelu, softplus, sigmoid };

struct ActivationSpec {
  Activation kind = Activation::relu;
  double slope = 0.01;  // leaky_relu's negative slope
  bool operator==(const ActivationSpec&) const = default;
};
// "relu", "leaky_relu" (slope 0.01), "leaky_relu:0.2", "abs", "tanh", "gelu" (erf form),
// "softplus" (beta 1, threshold 20 as in PyTorch), "sigmoid", "identity" / "linear".
// Throws InvalidArgument naming the text and the known activations.
DYNASCOPE_API ActivationSpec parse_activation(const std::string& text);
DYNASCOPE_API std::string to_string(const ActivationSpec& activation);

enum class Parameterization { standard, ntk };
DYNASCOPE_API Parameterization parse_parameterization(const std::string& text);
DYNASCOPE_API const char* to_string(Parameterization p) noexcept;

struct MlpSpec {
  std::vector<index_t> widths;               // d_0 (input), d_1, ..., d_L (outputs)
  std::vector<bool> bias;                    // per layer (L entries)
  std::vector<ActivationSpec> activations;   // per hidden layer (L - 1 entries)
  Parameterization parameterization = Parameterization::standard;
  double bias_scale = 1.0;                   // beta of the NTK parameterization

  // "784-200-200-10" with one activation for every hidden layer, biases everywhere.
  DYNASCOPE_API static MlpSpec from_arch(const std::string& arch, ActivationSpec activation = {},
                                         Parameterization p = Parameterization::standard);

  index_t layers() const { return static_cast<index_t>(widths.size()) - 1; }
  index_t inputs() const { return widths.front(); }
  index_t outputs() const { return widths.back(); }
  index_t fan_in(index_t l) const { return widths[std::size_t(l)]; }       // layer l = 0..L-1
  index_t fan_out(index_t l) const { return widths[std::size_t(l) + 1]; }
  DYNASCOPE_API index_t num_params() const;
  DYNASCOPE_API index_t weight_offset(index_t l) const;  // into the flat vector
  DYNASCOPE_API index_t bias_offset(index_t l) const;    // valid when bias[l]
  // c_l of the parameterization.
  DYNASCOPE_API double weight_scale(index_t l) const;
  // Throws InvalidArgument when widths, bias and activations do not fit together.
  DYNASCOPE_API void validate() const;
  DYNASCOPE_API std::string arch_string() const;  // "784-200-200-10"
};

enum class Init { pytorch, kaiming_normal, lecun_normal, ntk_normal };
DYNASCOPE_API Init parse_init(const std::string& text);
DYNASCOPE_API const char* to_string(Init init) noexcept;

struct InitOptions {
  Init scheme = Init::pytorch;
  double scale = 1.0;  // alpha: every weight and bias is multiplied by it (large alpha provokes grokking)
  std::uint64_t seed = 0;
};

// Parameters for `spec` drawn on ctx's backend (Philox: the same on host and cuda):
//  pytorch: W, b ~ U(-1/sqrt(in), 1/sqrt(in))         (torch.nn.Linear's default)
//  kaiming_normal: W ~ N(0, 2/in), b = 0;  lecun_normal: W ~ N(0, 1/in), b = 0
//  ntk_normal: W, b ~ N(0, 1)                         (the NTK parameterization's init)
template <class T>
DYNASCOPE_API Array<T> init_params(const Context& ctx, const MlpSpec& spec, const InitOptions& options = {});

// A network: its spec and flat parameters on some backend.
template <class T>
struct Mlp {
  MlpSpec spec;
  Array<T> params;
};

// safetensors I/O (IO.md): layers.{i}.weight / layers.{i}.bias, or any <prefix>.weight /
// <prefix>.bias pairs ordered by the natural sort of the prefix (a torch nn.Sequential state
// dict loads as is). Metadata "activation" and "parameterization" fill the spec unless
// overridden (empty string = take the file's, default relu / standard).
struct LoadOptions {
  std::string activation;        // overrides the file's metadata when set
  std::string parameterization;  // overrides the file's metadata when set
};
template <class T>
DYNASCOPE_API Mlp<T> load_mlp(const Context& ctx, const std::string& path, const LoadOptions& options = {});
template <class T>
DYNASCOPE_API void save_mlp(const Context& ctx, const std::string& path, const MlpSpec& spec, const Array<T>& params,
                            const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace dynascope::model
