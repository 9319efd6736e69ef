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
#include "dynascope/enum_names.hpp"

namespace dynascope::model {

enum class Activation { identity, relu, leaky_relu, abs, tanh, gelu, softplus, sigmoid };
inline constexpr auto activation_names = enum_names<Activation>(
    "activation", {{Activation::identity, "identity"},
                   {Activation::identity, "linear", Spelling::alias},
                   {Activation::relu, "relu"},
                   {Activation::leaky_relu, "leaky_relu", Spelling::canonical, "[:slope]"},
                   {Activation::abs, "abs"},
                   {Activation::tanh, "tanh"},
                   {Activation::gelu, "gelu"},
                   {Activation::softplus, "softplus"},
                   {Activation::sigmoid, "sigmoid"}});
static_assert(well_formed(activation_names));

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
inline constexpr auto parameterization_names = enum_names<Parameterization>(
    "parameterization", {{Parameterization::standard, "standard"}, {Parameterization::ntk, "ntk"}});
static_assert(well_formed(parameterization_names));
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
inline constexpr auto init_names = enum_names<Init>(
    "initialisation", {{Init::pytorch, "pytorch"},
                       {Init::kaiming_normal, "kaiming_normal"},
                       {Init::kaiming_normal, "kaiming", Spelling::alias},
                       {Init::lecun_normal, "lecun_normal"},
                       {Init::lecun_normal, "lecun", Spelling::alias},
                       {Init::ntk_normal, "ntk_normal"},
                       {Init::ntk_normal, "ntk", Spelling::alias}});
static_assert(well_formed(init_names));
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

// Where load_mlp took a property of the network from: the file's metadata, the LoadOptions (on
// the command line: a flag), or a default.
enum class Origin { metadata, option, default_value };
inline constexpr auto origin_names = enum_names<Origin>(
    "origin", {{Origin::metadata, "metadata"}, {Origin::option, "option"}, {Origin::default_value, "default"}});
static_assert(well_formed(origin_names));
DYNASCOPE_API const char* to_string(Origin origin) noexcept;  // "metadata", "option", "default"

// How load_mlp read a file: what it took from where, so that results can say so.
struct LoadInfo {
  std::string path;                                 // empty: the network was not loaded from a file
  Origin activation = Origin::default_value;        // default_value only when there is no hidden layer
  Origin parameterization = Origin::default_value;  // default: standard (torch.nn.Linear's)
  std::vector<std::string> layers;                  // each layer's tensor-name prefix, in network order
  bool layers_given = false;                        // order from LoadOptions::layers (else from the names' numbers)
  std::string stored_dtype;                         // the weights' dtype in the file: "F32", "BF16", ... ("F16, F32" when mixed)
};

// A network: its spec and flat parameters on some backend, and how it was loaded.
template <class T>
struct Mlp {
  MlpSpec spec;
  Array<T> params;
  LoadInfo source{};  // filled by load_mlp; empty path for a network built in memory
};

// safetensors I/O. A layer is a pair <prefix>.weight [out, in] / <prefix>.bias [out] (the bias is
// optional; F32, F64, F16 or BF16, converted to T; NaN or infinity is rejected naming the tensor).
// The layer order comes from the names when they differ only in their numbers: layers.{i}.*
// (our checkpoints), a torch nn.Sequential state dict (0.weight, 2.weight, ...), net.0.*, fc1.*,
// fc2.*, ... are ordered by those numbers. Any other names (fc_in, block, head) need the order
// in LoadOptions::layers; without it load_mlp throws InvalidArgument listing the prefixes. Each
// layer's inputs must be the previous layer's outputs. A tensor that is not part of a dense
// layer (running_mean, a 1-D or 4-D weight, one not in LoadOptions::layers) is rejected as
// unexpected. Metadata "activation" ("tanh", or one per hidden layer: "relu,tanh") and
// "parameterization" fill the spec unless LoadOptions override them. A file with hidden layers
// and no activation anywhere (every plain PyTorch state dict: it records tensors, not the
// activation modules) is an InvalidArgument naming `activation`; the parameterization defaults to
// standard, PyTorch's convention. A torch.save file given instead is named as such.
struct LoadOptions {
  std::string activation;           // overrides the file's metadata when set
  std::string parameterization;     // overrides the file's metadata when set
  std::vector<std::string> layers{};  // the layers' prefixes in network order (needed for unnumbered names)
};
template <class T>
DYNASCOPE_API Mlp<T> load_mlp(const Context& ctx, const std::string& path, const LoadOptions& options = {});
// Writes layers.{i}.weight / layers.{i}.bias in the parameters' dtype, with the activation(s),
// parameterization (and bias_scale when not 1) in the metadata, so that load_mlp needs no options.
template <class T>
DYNASCOPE_API void save_mlp(const Context& ctx, const std::string& path, const MlpSpec& spec, const Array<T>& params,
                            const std::map<std::string, std::string>& extra_metadata = {});

}  // namespace dynascope::model
