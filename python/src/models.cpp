// dynascope.MlpSpec: a multilayer perceptron's architecture (the Python Mlp holds one).
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <vector>

#include "common.hpp"
#include "dynascope/model.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

model::MlpSpec make_spec(const std::vector<index_t>& widths, const std::vector<bool>& bias,
                         const std::vector<std::string>& activations, const std::string& parameterization,
                         double bias_scale) {
  model::MlpSpec spec;
  spec.widths = widths;
  spec.bias = bias;
  for (const auto& a : activations) spec.activations.push_back(model::parse_activation(a));
  spec.parameterization = model::parse_parameterization(parameterization);
  spec.bias_scale = bias_scale;
  spec.validate();
  return spec;
}

}  // namespace

void register_models(nb::module_& m) {
  nb::class_<model::MlpSpec>(m, "MlpSpec", "The architecture of a multilayer perceptron (no parameters).")
      .def_static(
          "from_arch",
          [](const std::string& arch, const std::string& activation, const std::string& parameterization) {
            return model::MlpSpec::from_arch(arch, model::parse_activation(activation),
                                             model::parse_parameterization(parameterization));
          },
          "arch"_a, "activation"_a = "relu", "parameterization"_a = "standard",
          "From an architecture string such as \"784-512-10\", one activation for every hidden layer.")
      .def(nb::new_(&make_spec), "widths"_a, "bias"_a, "activations"_a, "parameterization"_a = "standard",
           "bias_scale"_a = 1.0, "From per-layer widths, biases and activations.")
      .def_prop_ro("widths", [](const model::MlpSpec& s) { return s.widths; })
      .def_prop_ro("bias", [](const model::MlpSpec& s) { return s.bias; })
      .def_prop_ro("activations",
                   [](const model::MlpSpec& s) {
                     std::vector<std::string> names;
                     for (const auto& a : s.activations) names.push_back(model::to_string(a));
                     return names;
                   })
      .def_prop_ro("parameterization",
                   [](const model::MlpSpec& s) { return std::string(model::to_string(s.parameterization)); })
      .def_prop_ro("bias_scale", [](const model::MlpSpec& s) { return s.bias_scale; })
      .def_prop_ro("num_params", &model::MlpSpec::num_params)
      .def_prop_ro("arch", &model::MlpSpec::arch_string)
      .def("set_bias",
           [](model::MlpSpec& s, const std::vector<bool>& bias) {
             model::MlpSpec t = s;
             t.bias = bias;
             t.validate();
             s = t;
           },
           "bias"_a, "Biases per layer.");

}

}  // namespace dynascope::python
