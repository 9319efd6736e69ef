#include "dynascope/model.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "dynascope/error.hpp"
#include "dynascope/io.hpp"
#include "dynascope/random.hpp"

namespace dynascope::model {

namespace {
const char* kActivationNames = "identity, relu, leaky_relu[:slope], abs, tanh, gelu, softplus, sigmoid";

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
  if (name == "identity" || name == "linear") a.kind = Activation::identity;
  else if (name == "relu") a.kind = Activation::relu;
  else if (name == "leaky_relu") a.kind = Activation::leaky_relu;
  else if (name == "abs") a.kind = Activation::abs;
  else if (name == "tanh") a.kind = Activation::tanh;
  else if (name == "gelu") a.kind = Activation::gelu;
  else if (name == "softplus") a.kind = Activation::softplus;
  else if (name == "sigmoid") a.kind = Activation::sigmoid;
  else throw InvalidArgument("unknown activation '" + text + "' (known: " + kActivationNames + ")");
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
  switch (a.kind) {
    case Activation::identity: return "identity";
    case Activation::relu: return "relu";
    case Activation::leaky_relu: {
      std::ostringstream s;
      s << "leaky_relu:" << a.slope;
      return s.str();
    }
    case Activation::abs: return "abs";
    case Activation::tanh: return "tanh";
    case Activation::gelu: return "gelu";
    case Activation::softplus: return "softplus";
    case Activation::sigmoid: return "sigmoid";
  }
  return "unknown";
}

Parameterization parse_parameterization(const std::string& text) {
  if (text == "standard") return Parameterization::standard;
  if (text == "ntk") return Parameterization::ntk;
  throw InvalidArgument("unknown parameterization '" + text + "' (known: standard, ntk)");
}

const char* to_string(Parameterization p) noexcept { return p == Parameterization::ntk ? "ntk" : "standard"; }

Init parse_init(const std::string& text) {
  if (text == "pytorch") return Init::pytorch;
  if (text == "kaiming" || text == "kaiming_normal") return Init::kaiming_normal;
  if (text == "lecun" || text == "lecun_normal") return Init::lecun_normal;
  if (text == "ntk" || text == "ntk_normal") return Init::ntk_normal;
  throw InvalidArgument("unknown initialisation '" + text + "' (known: pytorch, kaiming_normal, lecun_normal, ntk_normal)");
}

const char* to_string(Init init) noexcept {
  switch (init) {
    case Init::pytorch: return "pytorch";
    case Init::kaiming_normal: return "kaiming_normal";
    case Init::lecun_normal: return "lecun_normal";
    case Init::ntk_normal: return "ntk_normal";
  }
  return "unknown";
}

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
    VectorView<T> w{p.data() + spec.weight_offset(l), nw, 1, p.backend()};
    VectorView<T> b{spec.bias[std::size_t(l)] ? p.data() + spec.bias_offset(l) : nullptr, nb, 1, p.backend()};
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

namespace {

// Natural order: digit runs compare as numbers ("2" < "10"), the rest as text.
bool natural_less(const std::string& a, const std::string& b) {
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
      std::size_t i2 = i, j2 = j;
      while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
      while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
      std::string na = a.substr(i, i2 - i), nb = b.substr(j, j2 - j);
      na.erase(0, std::min(na.find_first_not_of('0'), na.size()));
      nb.erase(0, std::min(nb.find_first_not_of('0'), nb.size()));
      if (na.size() != nb.size()) return na.size() < nb.size();
      if (na != nb) return na < nb;
      i = i2;
      j = j2;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

}  // namespace

template <class T>
Mlp<T> load_mlp(const Context& ctx, const std::string& path, const LoadOptions& options) {
  const io::Safetensors file = io::read_safetensors(path);
  struct LayerTensors {
    const io::Tensor* weight = nullptr;
    const io::Tensor* bias = nullptr;
  };
  std::map<std::string, LayerTensors> by_prefix;
  for (const auto& t : file.tensors) {
    const auto dot = t.name.rfind('.');
    const std::string suffix = dot == std::string::npos ? "" : t.name.substr(dot + 1);
    if (suffix != "weight" && suffix != "bias")
      throw FileFormatError(path, "tensor '" + t.name + "' is neither <prefix>.weight nor <prefix>.bias (only dense layers are supported)");
    if (t.tensor.dtype != DType::f32 && t.tensor.dtype != DType::f64)
      throw FileFormatError(path, "tensor '" + t.name + "' has dtype " + to_string(t.tensor.dtype) + ", expected F32 or F64");
    LayerTensors& lt = by_prefix[t.name.substr(0, dot)];
    (suffix == "weight" ? lt.weight : lt.bias) = &t.tensor;
  }
  std::vector<std::string> prefixes;
  for (const auto& [k, v] : by_prefix) prefixes.push_back(k);
  std::sort(prefixes.begin(), prefixes.end(), natural_less);
  if (prefixes.empty()) throw FileFormatError(path, "holds no layers");
  MlpSpec spec;
  for (std::size_t i = 0; i < prefixes.size(); ++i) {
    const LayerTensors& lt = by_prefix[prefixes[i]];
    if (!lt.weight) throw FileFormatError(path, "layer '" + prefixes[i] + "' has a bias but no weight");
    if (lt.weight->shape.size() != 2)
      throw FileFormatError(path, "'" + prefixes[i] + ".weight' must be [out, in], got " + shape_string(lt.weight->shape));
    const index_t out = lt.weight->shape[0], in = lt.weight->shape[1];
    if (out <= 0 || in <= 0) throw FileFormatError(path, "'" + prefixes[i] + ".weight' is empty");
    if (i == 0) spec.widths.push_back(in);
    else if (spec.widths.back() != in)
      throw FileFormatError(path, "'" + prefixes[i] + ".weight' takes " + std::to_string(in) + " inputs but the layer before gives " +
                                      std::to_string(spec.widths.back()));
    spec.widths.push_back(out);
    if (lt.bias && (lt.bias->shape.size() != 1 || lt.bias->shape[0] != out))
      throw FileFormatError(path, "'" + prefixes[i] + ".bias' must be [" + std::to_string(out) + "], got " + shape_string(lt.bias->shape));
    spec.bias.push_back(lt.bias != nullptr);
  }
  const auto meta = [&](const char* key) {
    auto it = file.metadata.find(key);
    return it == file.metadata.end() ? std::string() : it->second;
  };
  const std::string act = !options.activation.empty() ? options.activation : meta("activation");
  const std::string par = !options.parameterization.empty() ? options.parameterization : meta("parameterization");
  std::vector<std::string> acts = split(act.empty() ? "relu" : act, ',');
  const index_t hidden = spec.layers() - 1;
  if (acts.size() == 1) acts.assign(std::size_t(hidden), acts[0]);
  if (static_cast<index_t>(acts.size()) != hidden)
    throw InvalidArgument(path + ": " + std::to_string(acts.size()) + " activations given for " + std::to_string(hidden) +
                          " hidden layers");
  for (const auto& a : acts) spec.activations.push_back(parse_activation(a));
  spec.parameterization = parse_parameterization(par.empty() ? "standard" : par);
  if (const std::string bs = meta("bias_scale"); !bs.empty()) spec.bias_scale = std::strtod(bs.c_str(), nullptr);
  spec.validate();

  std::vector<T> flat;
  flat.reserve(static_cast<std::size_t>(spec.num_params()));
  for (const auto& p : prefixes) {
    const LayerTensors& lt = by_prefix[p];
    for (const io::Tensor* t : {lt.weight, lt.bias}) {
      if (!t) continue;
      const std::vector<T> v = t->to_vector<T>();
      for (std::size_t i = 0; i < v.size(); ++i)
        if (!std::isfinite(double(v[i]))) throw FileFormatError(path, "tensor of layer '" + p + "' holds a non-finite value");
      flat.insert(flat.end(), v.begin(), v.end());
    }
  }
  Mlp<T> net{spec, Array<T>(ctx, {spec.num_params()})};
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
