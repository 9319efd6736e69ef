#include "dynascope/model.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <set>
#include <sstream>

#include "dynascope/error.hpp"
#include "dynascope/io.hpp"
#include "dynascope/random.hpp"

namespace dynascope::model {

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) out.push_back(cur);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}
}  // namespace

ActivationSpec parse_activation(const std::string& text) {
  const std::string t = trim(text);
  const auto colon = t.find(':');
  const std::string name = t.substr(0, colon);
  ActivationSpec a;
  const auto kind = find_name(activation_names, name);
  if (!kind) throw InvalidArgument("unknown activation '" + text + "' (known: " + known_names(activation_names) + ")");
  a.kind = *kind;
  if (colon != std::string::npos) {
    if (a.kind != Activation::leaky_relu)
      throw InvalidArgument("activation '" + text + "': only leaky_relu takes a parameter");
    const std::string arg = t.substr(colon + 1);
    char* end = nullptr;
    a.slope = std::strtod(arg.c_str(), &end);
    if (arg.empty() || *end != '\0' || !std::isfinite(a.slope))
      throw InvalidArgument("activation '" + text + "': the slope must be a number, e.g. leaky_relu:0.01");
  }
  return a;
}

std::string to_string(const ActivationSpec& a) {
  if (a.kind != Activation::leaky_relu) return name_of(activation_names, a.kind);
  std::ostringstream s;
  s << name_of(activation_names, a.kind) << ":" << a.slope;
  return s.str();
}

Parameterization parse_parameterization(const std::string& text) { return parse_name(parameterization_names, text); }
const char* to_string(Parameterization p) noexcept { return name_of(parameterization_names, p); }

Init parse_init(const std::string& text) { return parse_name(init_names, text); }
const char* to_string(Init init) noexcept { return name_of(init_names, init); }

MlpSpec MlpSpec::from_arch(const std::string& arch, ActivationSpec activation, Parameterization p) {
  MlpSpec s;
  for (const std::string& part : split(arch, '-')) {
    char* end = nullptr;
    const long long w = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end != '\0' || w <= 0)
      throw InvalidArgument("architecture '" + arch + "': expected positive widths separated by '-', e.g. 784-200-200-10");
    s.widths.push_back(w);
  }
  if (s.widths.size() < 2)
    throw InvalidArgument("architecture '" + arch + "': needs at least an input and an output width, e.g. 2-1");
  s.bias.assign(s.widths.size() - 1, true);
  s.activations.assign(s.widths.size() - 2, activation);
  s.parameterization = p;
  return s;
}

void MlpSpec::validate() const {
  if (widths.size() < 2) throw InvalidArgument("MlpSpec: needs at least two widths (input and output)");
  for (index_t w : widths)
    if (w <= 0) throw InvalidArgument("MlpSpec: widths must be positive, got " + arch_string());
  if (static_cast<index_t>(bias.size()) != layers())
    throw InvalidArgument("MlpSpec: " + std::to_string(layers()) + " layers but " + std::to_string(bias.size()) +
                          " bias flags");
  if (static_cast<index_t>(activations.size()) != layers() - 1)
    throw InvalidArgument("MlpSpec: " + std::to_string(layers() - 1) + " hidden layers but " +
                          std::to_string(activations.size()) + " activations");
  if (!std::isfinite(bias_scale)) throw InvalidArgument("MlpSpec: bias_scale must be finite");
}

index_t MlpSpec::num_params() const {
  index_t p = 0;
  for (index_t l = 0; l < layers(); ++l) p += fan_in(l) * fan_out(l) + (bias[std::size_t(l)] ? fan_out(l) : 0);
  return p;
}

index_t MlpSpec::weight_offset(index_t l) const {
  index_t p = 0;
  for (index_t i = 0; i < l; ++i) p += fan_in(i) * fan_out(i) + (bias[std::size_t(i)] ? fan_out(i) : 0);
  return p;
}

index_t MlpSpec::bias_offset(index_t l) const { return weight_offset(l) + fan_in(l) * fan_out(l); }

double MlpSpec::weight_scale(index_t l) const {
  return parameterization == Parameterization::ntk ? 1.0 / std::sqrt(double(fan_in(l))) : 1.0;
}

std::string MlpSpec::arch_string() const {
  std::string s;
  for (std::size_t i = 0; i < widths.size(); ++i) {
    if (i) s += '-';
    s += std::to_string(widths[i]);
  }
  return s;
}

template <class T>
Array<T> init_params(const Context& ctx, const MlpSpec& spec, const InitOptions& o) {
  spec.validate();
  if (!std::isfinite(o.scale)) throw InvalidArgument("init_params: scale must be finite");
  Array<T> p = Array<T>::zeros(ctx, {spec.num_params()});
  const double a = o.scale;
  for (index_t l = 0; l < spec.layers(); ++l) {
    const double in = double(spec.fan_in(l));
    const index_t nw = spec.fan_in(l) * spec.fan_out(l), nb = spec.fan_out(l);
    VectorView<T> w{p.data() + spec.weight_offset(l), nw, 1, p.backend(), p.device()};
    VectorView<T> b{spec.bias[std::size_t(l)] ? p.data() + spec.bias_offset(l) : nullptr, nb, 1, p.backend(), p.device()};
    // Separate Philox streams for each layer's weights (2l) and bias (2l + 1).
    const random::Stream sw{o.seed, static_cast<std::uint32_t>(2 * l), 0}, sb{o.seed, static_cast<std::uint32_t>(2 * l + 1), 0};
    if (a == 0.0) continue;
    switch (o.scheme) {
      case Init::pytorch: {
        const double bound = std::abs(a) / std::sqrt(in);
        random::fill_uniform<T>(ctx, sw, w, T(-bound), T(bound));
        if (b.data) random::fill_uniform<T>(ctx, sb, b, T(-bound), T(bound));
        break;
      }
      case Init::kaiming_normal: random::fill_normal<T>(ctx, sw, w, T(0), T(std::abs(a) * std::sqrt(2.0 / in))); break;
      case Init::lecun_normal: random::fill_normal<T>(ctx, sw, w, T(0), T(std::abs(a) * std::sqrt(1.0 / in))); break;
      case Init::ntk_normal:
        random::fill_normal<T>(ctx, sw, w, T(0), T(std::abs(a)));
        if (b.data) random::fill_normal<T>(ctx, sb, b, T(0), T(std::abs(a)));
        break;
    }
  }
  return p;
}

const char* to_string(Origin origin) noexcept { return name_of(origin_names, origin); }

namespace {

// ---- layer names ----

// A layer prefix cut into runs of digits and of other characters: "model.layers.12" is
// ("model.layers.", 12). Prefixes that have the same text runs and differ only in their numbers
// are ordered by those numbers, the order nn.Sequential and ModuleList register modules in.
struct NameKey {
  std::vector<std::string> text;     // the non-digit runs, in order
  std::vector<std::string> numbers;  // the digit runs without leading zeros
  std::string shape;                 // 't' or 'n' per run: where the numbers stand
};

NameKey name_key(const std::string& prefix) {
  NameKey k;
  std::size_t i = 0;
  while (i < prefix.size()) {
    const bool digit = std::isdigit(static_cast<unsigned char>(prefix[i])) != 0;
    std::size_t j = i;
    while (j < prefix.size() && (std::isdigit(static_cast<unsigned char>(prefix[j])) != 0) == digit) ++j;
    std::string run = prefix.substr(i, j - i);
    if (digit) {
      run.erase(0, std::min(run.find_first_not_of('0'), run.size() - 1));
      k.numbers.push_back(run);
    } else {
      k.text.push_back(run);
    }
    k.shape += digit ? 'n' : 't';
    i = j;
  }
  return k;
}

// Numbers as digit strings without leading zeros: shorter is smaller, then by text.
int compare_numbers(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (a[i].size() != b[i].size()) return a[i].size() < b[i].size() ? -1 : 1;
    if (const int c = a[i].compare(b[i]); c != 0) return c < 0 ? -1 : 1;
  }
  return 0;
}

// The prefixes in network order when their names alone fix it, else nothing.
std::optional<std::vector<std::string>> numbered_order(std::vector<std::string> prefixes) {
  if (prefixes.size() <= 1) return prefixes;
  const NameKey first = name_key(prefixes.front());
  if (first.numbers.empty()) return std::nullopt;
  std::vector<std::pair<NameKey, std::string>> keyed;
  for (const std::string& p : prefixes) {
    NameKey k = name_key(p);
    if (k.shape != first.shape || k.text != first.text) return std::nullopt;
    keyed.emplace_back(std::move(k), p);
  }
  std::sort(keyed.begin(), keyed.end(),
            [](const auto& a, const auto& b) { return compare_numbers(a.first.numbers, b.first.numbers) < 0; });
  for (std::size_t i = 1; i < keyed.size(); ++i)  // "1" and "01": the names do not fix the order
    if (compare_numbers(keyed[i - 1].first.numbers, keyed[i].first.numbers) == 0) return std::nullopt;
  std::vector<std::string> out;
  for (auto& [k, p] : keyed) out.push_back(std::move(p));
  return out;
}

std::string quoted_list(const std::vector<std::string>& names, std::size_t max_shown = 12) {
  std::string s;
  for (std::size_t i = 0; i < names.size() && i < max_shown; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > max_shown) s += " and " + std::to_string(names.size() - max_shown) + " more";
  return s;
}

std::string joined(const std::vector<std::string>& names, const char* sep = ",") {
  std::string s;
  for (std::size_t i = 0; i < names.size(); ++i) s += (i ? sep : "") + names[i];
  return s;
}

// The orders of the layers in which every layer's inputs are the previous one's outputs; at most
// two are looked for (is there exactly one?), and only for a few layers.
std::vector<std::vector<std::size_t>> chaining_orders(const std::vector<std::pair<index_t, index_t>>& in_out) {
  std::vector<std::vector<std::size_t>> found;
  const std::size_t n = in_out.size();
  if (n > 10) return found;
  std::vector<std::size_t> order;
  std::vector<bool> used(n, false);
  std::function<void()> extend = [&] {
    if (found.size() >= 2) return;
    if (order.size() == n) {
      found.push_back(order);
      return;
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (used[i] || (!order.empty() && in_out[order.back()].second != in_out[i].first)) continue;
      used[i] = true;
      order.push_back(i);
      extend();
      order.pop_back();
      used[i] = false;
    }
  };
  extend();
  return found;
}

// "[1, 2]" for element `flat` of a tensor of this shape.
std::string element_text(const Shape& shape, index_t flat) {
  std::vector<index_t> idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  std::string s = "[";
  for (std::size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}

std::string number_text(double v) {
  std::ostringstream s;
  s.precision(9);
  s << v;
  return s.str();
}

// The safetensors name of a dtype, for tensors built in memory (read ones carry the file's).
std::string stored_name(const io::NamedTensor& t) {
  if (!t.stored_dtype.empty()) return t.stored_dtype;
  switch (t.tensor.dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
  }
  return "unknown";
}

const char* kWhatIsRead =
    "dynascope reads multi-layer perceptrons: <prefix>.weight [out, in] and optional <prefix>.bias [out] of the Linear "
    "layers, nothing else";

}  // namespace

template <class T>
Mlp<T> load_mlp(const Context& ctx, const std::string& path, const LoadOptions& options) {
  const io::Safetensors file = io::read_safetensors(path);
  // The Python package's Tracker saves any torch module's state_dict with this mark: say what it is.
  if (const auto it = file.metadata.find("network"); it != file.metadata.end() && it->second == "torch_module") {
    const auto cls = file.metadata.find("class");
    throw FileFormatError(path, "is the state_dict of a torch module (" +
                                    (cls != file.metadata.end() ? cls->second : std::string("class not recorded")) +
                                    "), not a multi-layer perceptron: the command line reads MLPs only; load it in "
                                    "Python with dynascope.load_state_dict(path, module)");
  }

  // Group the tensors into layers by prefix; anything that cannot be part of a dense layer is
  // collected as unexpected, with the reason.
  struct LayerTensors {
    const io::NamedTensor* weight = nullptr;
    const io::NamedTensor* bias = nullptr;
  };
  std::map<std::string, LayerTensors> by_prefix;
  std::vector<std::string> unexpected;
  std::set<std::string> wanted(options.layers.begin(), options.layers.end());
  for (const std::string& p : options.layers) {
    if (p.empty()) throw InvalidArgument("layer order for " + path + ": an empty layer name (expected prefixes such as fc_in,block,head)");
    if (std::count(options.layers.begin(), options.layers.end(), p) > 1)
      throw InvalidArgument("layer order for " + path + ": names '" + p + "' twice");
  }
  if (!options.layers.empty()) {
    // A name in the order that the file lacks (a typo) is named before anything else.
    std::vector<std::string> have;
    for (const auto& t : file.tensors) {
      const auto dot = t.name.rfind('.');
      if (t.name.substr(dot == std::string::npos ? 0 : dot + 1) == "weight")
        have.push_back(dot == std::string::npos ? "" : t.name.substr(0, dot));
    }
    for (const std::string& p : options.layers)
      if (std::find(have.begin(), have.end(), p) == have.end())
        throw InvalidArgument("layer order for " + path + ": names '" + p + "', but the file has no tensor '" + p +
                              ".weight' (its weights: " + quoted_list(have) + ")");
  }
  for (const auto& t : file.tensors) {
    const auto dot = t.name.rfind('.');
    const std::string suffix = dot == std::string::npos ? t.name : t.name.substr(dot + 1);
    const std::string prefix = dot == std::string::npos ? "" : t.name.substr(0, dot);
    if (suffix != "weight" && suffix != "bias") {
      unexpected.push_back("'" + t.name + "' (not a .weight or .bias)");
      continue;
    }
    if (!options.layers.empty() && !wanted.count(prefix)) {
      unexpected.push_back("'" + t.name + "' (its layer '" + prefix + "' is not in the layer order given)");
      continue;
    }
    LayerTensors& lt = by_prefix[prefix];
    (suffix == "weight" ? lt.weight : lt.bias) = &t;
  }
  // A prefix is a dense layer when it has a 2-D weight; its tensors are unexpected otherwise
  // (a normalisation layer's 1-D weight, a convolution's 4-D one, a lone bias).
  for (auto it = by_prefix.begin(); it != by_prefix.end();) {
    const LayerTensors& lt = it->second;
    std::string why;
    if (!lt.weight) why = "a bias without a weight";
    else if (lt.weight->tensor.shape.size() != 2)
      why = "shape " + shape_string(lt.weight->tensor.shape) + ": a dense layer's weight is [out, in]";
    if (why.empty()) {
      ++it;
      continue;
    }
    for (const io::NamedTensor* t : {lt.weight, lt.bias})
      if (t) unexpected.push_back("'" + t->name + "' (" + why + ")");
    it = by_prefix.erase(it);
  }
  if (!unexpected.empty()) {
    std::string list;
    for (std::size_t i = 0; i < unexpected.size() && i < 6; ++i) list += (i ? "; " : "") + unexpected[i];
    if (unexpected.size() > 6) list += "; and " + std::to_string(unexpected.size() - 6) + " more";
    throw FileFormatError(path, std::string(unexpected.size() == 1 ? "unexpected tensor " : "unexpected tensors ") + list +
                                    ". " + kWhatIsRead);
  }
  if (by_prefix.empty()) throw FileFormatError(path, "holds no layers (" + std::string(kWhatIsRead) + ")");
  for (const auto& [prefix, lt] : by_prefix)
    for (const io::NamedTensor* t : {lt.weight, lt.bias})
      if (t && t->tensor.dtype != DType::f32 && t->tensor.dtype != DType::f64)
        throw FileFormatError(path, "tensor '" + t->name + "' holds " + stored_name(*t) +
                                        " values; weights must be floating point (F32, F64, F16 or BF16)");

  // The order of the layers: given, or fixed by the numbers in the names.
  std::vector<std::string> found;
  for (const auto& [k, v] : by_prefix) found.push_back(k);
  std::vector<std::string> order;
  if (!options.layers.empty()) {
    order = options.layers;  // each has a dense layer: checked above, or reported as unexpected
  } else if (auto numbered = numbered_order(found)) {
    order = std::move(*numbered);
  } else {
    std::vector<std::pair<index_t, index_t>> in_out;
    for (const std::string& p : found)
      in_out.emplace_back(by_prefix[p].weight->tensor.shape[1], by_prefix[p].weight->tensor.shape[0]);
    const auto chains = chaining_orders(in_out);
    std::string hint;
    if (chains.size() == 1) {
      std::vector<std::string> names;
      for (std::size_t i : chains.front()) names.push_back(found[i]);
      hint = " (their widths chain in one order only: --layers " + joined(names) + ")";
    }
    throw InvalidArgument(path + ": the names of its layers, " + quoted_list(found) +
                          ", do not give their order (names are ordered automatically only when they differ in their "
                          "numbers alone, like 0, 2, 4 or layers.0, layers.1, fc1, fc2); give the prefixes in the order "
                          "the forward pass applies them: --layers NAME,NAME,... on the command line, "
                          "LoadOptions::layers in the library" + hint);
  }

  MlpSpec spec;
  std::set<std::string> stored;
  for (std::size_t i = 0; i < order.size(); ++i) {
    const LayerTensors& lt = by_prefix[order[i]];
    const Shape& ws = lt.weight->tensor.shape;
    const index_t out = ws[0], in = ws[1];
    if (out <= 0 || in <= 0) throw FileFormatError(path, "'" + lt.weight->name + "' is empty (shape " + shape_string(ws) + ")");
    if (i == 0) {
      spec.widths.push_back(in);
    } else if (spec.widths.back() != in) {
      const LayerTensors& prev = by_prefix[order[i - 1]];
      throw FileFormatError(path, "the layers' widths do not chain: '" + lt.weight->name + "' " + shape_string(ws) + " takes " +
                                      std::to_string(in) + " inputs, but the layer before it, '" + prev.weight->name + "' " +
                                      shape_string(prev.weight->tensor.shape) + ", gives " + std::to_string(spec.widths.back()) +
                                      " outputs (layer order " + joined(order) +
                                      (options.layers.empty() ? ", from the numbers in the names)" : ", as given)"));
    }
    spec.widths.push_back(out);
    if (lt.bias && (lt.bias->tensor.shape.size() != 1 || lt.bias->tensor.shape[0] != out))
      throw FileFormatError(path, "'" + lt.bias->name + "' must have shape [" + std::to_string(out) + "] to match '" +
                                      lt.weight->name + "' " + shape_string(ws) + ", got " + shape_string(lt.bias->tensor.shape));
    spec.bias.push_back(lt.bias != nullptr);
    for (const io::NamedTensor* t : {lt.weight, lt.bias})
      if (t) stored.insert(stored_name(*t));
  }

  LoadInfo info;
  info.path = path;
  info.layers = order;
  info.layers_given = !options.layers.empty();
  info.stored_dtype = joined(std::vector<std::string>(stored.begin(), stored.end()), ", ");
  const auto meta = [&](const char* key) -> std::optional<std::string> {
    const auto it = file.metadata.find(key);
    if (it == file.metadata.end()) return std::nullopt;
    return it->second;
  };

  // Activations: the option, else the metadata; a network with hidden layers and neither is an
  // error, never a silent ReLU.
  const index_t hidden = spec.layers() - 1;
  std::string act;
  if (!options.activation.empty()) {
    act = options.activation;
    info.activation = Origin::option;
  } else if (const auto m = meta("activation")) {
    act = *m;
    info.activation = Origin::metadata;
  } else if (hidden > 0) {
    throw InvalidArgument(
        path + ": holds no activation (no \"activation\" in its metadata, as in every PyTorch state dict: it records the "
               "Linear layers' tensors, not the activation modules between them), so the network it describes is unknown. "
               "Give the hidden activation: --activation tanh (or relu, gelu, ...; one per hidden layer as relu,tanh) on "
               "the command line, LoadOptions::activation in the library; or save the file with "
               "save_file(model.state_dict(), \"model.safetensors\", metadata={\"activation\": \"tanh\"})");
  }
  if (hidden > 0) {
    const std::string from = info.activation == Origin::option ? "activation '" + act + "'"
                                                               : "metadata \"activation\" '" + act + "' of " + path;
    std::vector<std::string> acts = split(act, ',');
    if (acts.size() == 1) acts.assign(std::size_t(hidden), acts[0]);
    if (static_cast<index_t>(acts.size()) != hidden)
      throw InvalidArgument(from + ": " + std::to_string(acts.size()) + " activations for the " + std::to_string(hidden) +
                            (hidden == 1 ? " hidden layer" : " hidden layers") + " of the " + spec.arch_string() +
                            " network in " + path +
                            " (give one for all, or one per hidden layer)");
    try {
      for (const auto& a : acts) spec.activations.push_back(parse_activation(a));
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(from + ": " + e.what());
    }
  }

  // Parameterization: the option, else the metadata, else standard (torch.nn.Linear's).
  std::string par = "standard";
  if (!options.parameterization.empty()) {
    par = options.parameterization;
    info.parameterization = Origin::option;
  } else if (const auto m = meta("parameterization")) {
    par = *m;
    info.parameterization = Origin::metadata;
  }
  try {
    spec.parameterization = parse_parameterization(par);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument((info.parameterization == Origin::metadata ? path + ": metadata \"parameterization\": " : "") + e.what());
  }
  if (const auto bs = meta("bias_scale")) {
    char* end = nullptr;
    spec.bias_scale = std::strtod(bs->c_str(), &end);
    if (bs->empty() || *end != '\0' || !std::isfinite(spec.bias_scale))
      throw FileFormatError(path, "metadata \"bias_scale\" must be a finite number, got '" + *bs + "'");
  }
  spec.validate();

  // The values, converted to T: NaN, infinity and values T cannot hold are named, never computed.
  std::vector<T> flat;
  flat.reserve(static_cast<std::size_t>(spec.num_params()));
  for (const auto& p : order) {
    const LayerTensors& lt = by_prefix[p];
    for (const io::NamedTensor* t : {lt.weight, lt.bias}) {
      if (!t) continue;
      const std::vector<double> v = t->tensor.to_vector<double>();
      index_t bad = 0, first = -1;
      for (std::size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(v[i]) || std::abs(v[i]) > double(std::numeric_limits<T>::max())) {
          if (bad++ == 0) first = static_cast<index_t>(i);
        }
      if (bad > 0) {
        const double x = v[std::size_t(first)];
        const std::string where = " at " + element_text(t->tensor.shape, first) +
                                  (bad > 1 ? " (" + std::to_string(bad) + " such values in all)" : "");
        if (std::isfinite(x))
          throw FileFormatError(path, "tensor '" + t->name + "' holds " + number_text(x) + where + ", beyond the range of " +
                                          (sizeof(T) == 4 ? "float32 (compute in float64: --dtype float64)" : "float64"));
        throw FileFormatError(path, "tensor '" + t->name + "' holds " + (std::isnan(x) ? "NaN" : x > 0 ? "+infinity" : "-infinity") +
                                        where + " (weights must be finite: a checkpoint of a diverged run?)");
      }
      for (double x : v) flat.push_back(static_cast<T>(x));
    }
  }
  Mlp<T> net{spec, Array<T>(ctx, {spec.num_params()}), std::move(info)};
  detail::copy_bytes(ctx, net.params.data(), net.params.backend(), flat.data(), Backend::host, net.params.bytes());
  return net;
}

template <class T>
void save_mlp(const Context& ctx, const std::string& path, const MlpSpec& spec, const Array<T>& params,
              const std::map<std::string, std::string>& extra_metadata) {
  spec.validate();
  if (params.size() != spec.num_params())
    throw ShapeMismatch("save_mlp: " + std::to_string(params.size()) + " parameters for a " + spec.arch_string() +
                        " network that has " + std::to_string(spec.num_params()));
  std::vector<T> host(static_cast<std::size_t>(params.size()));
  detail::copy_bytes(ctx, host.data(), Backend::host, params.data(), params.backend(), params.bytes());
  io::Safetensors file;
  file.metadata = extra_metadata;
  std::string acts;
  bool uniform = true;
  for (const auto& a : spec.activations) uniform = uniform && a == spec.activations.front();
  for (std::size_t i = 0; i < spec.activations.size(); ++i) {
    if (uniform && i > 0) break;
    if (i) acts += ',';
    acts += to_string(spec.activations[i]);
  }
  file.metadata["activation"] = acts.empty() ? "identity" : acts;
  file.metadata["parameterization"] = to_string(spec.parameterization);
  if (spec.bias_scale != 1.0) file.metadata["bias_scale"] = std::to_string(spec.bias_scale);
  for (index_t l = 0; l < spec.layers(); ++l) {
    const std::string name = "layers." + std::to_string(l);
    file.tensors.push_back({name + ".weight", io::Tensor::from(host.data() + spec.weight_offset(l), {spec.fan_out(l), spec.fan_in(l)})});
    if (spec.bias[std::size_t(l)])
      file.tensors.push_back({name + ".bias", io::Tensor::from(host.data() + spec.bias_offset(l), {spec.fan_out(l)})});
  }
  io::write_safetensors(path, file);
}

template Array<float> init_params<float>(const Context&, const MlpSpec&, const InitOptions&);
template Array<double> init_params<double>(const Context&, const MlpSpec&, const InitOptions&);
template Mlp<float> load_mlp<float>(const Context&, const std::string&, const LoadOptions&);
template Mlp<double> load_mlp<double>(const Context&, const std::string&, const LoadOptions&);
template void save_mlp<float>(const Context&, const std::string&, const MlpSpec&, const Array<float>&,
                              const std::map<std::string, std::string>&);
template void save_mlp<double>(const Context&, const std::string&, const MlpSpec&, const Array<double>&,
                               const std::map<std::string, std::string>&);

}  // namespace dynascope::model
