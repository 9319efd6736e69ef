// Files: safetensors checkpoints, .npy arrays and text through the library's readers and writers,
// so that a run folder written from Python (dynascope.Tracker) is byte for byte what the
// command-line tool writes and reads: the same tensor names and metadata, the same atomic writes
// (a temporary file renamed into place, never a partial file).
#include <nanobind/stl/map.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "dynascope/io.hpp"
#include "dynascope/model.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

// Any C-contiguous host array, read only; its dtype is checked against the writers' set below.
using AnyIn = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;
using Metadata = std::map<std::string, std::string>;

// The library's dtype of an array: the writers take f4, f8, i4, i8 and u1.
DType dtype_of_array(const AnyIn& a, const std::string& name) {
  const nb::dlpack::dtype t = a.dtype();
  if (t == nb::dtype<float>()) return DType::f32;
  if (t == nb::dtype<double>()) return DType::f64;
  if (t == nb::dtype<std::int32_t>()) return DType::i32;
  if (t == nb::dtype<std::int64_t>()) return DType::i64;
  if (t == nb::dtype<std::uint8_t>()) return DType::u8;
  throw InvalidArgument(name + ": expected float32, float64, int32, int64 or uint8 elements (what .npy and "
                        "safetensors files hold here); convert it first, e.g. .astype(numpy.float64)");
}

io::Tensor tensor_of(const AnyIn& a, const std::string& name) {
  io::Tensor t;
  t.dtype = dtype_of_array(a, name);
  for (std::size_t i = 0; i < a.ndim(); ++i) t.shape.push_back(static_cast<index_t>(a.shape(i)));
  const std::size_t bytes = static_cast<std::size_t>(t.numel()) * size_of(t.dtype);
  t.bytes.resize(bytes);
  if (bytes) std::memcpy(t.bytes.data(), a.data(), bytes);
  return t;
}

// A NumPy array that owns a copy of the tensor's bytes (files are read whole into memory anyway).
template <class T>
nb::object numpy_of_typed(io::Tensor&& t) {
  auto* owned = new std::vector<std::byte>(std::move(t.bytes));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<std::byte>*>(p); });
  std::vector<std::size_t> shape(t.shape.begin(), t.shape.end());
  return nb::cast(nb::ndarray<nb::numpy, T>(reinterpret_cast<T*>(owned->data()), shape.size(), shape.data(), owner));
}

nb::object numpy_of(io::Tensor&& t) {
  switch (t.dtype) {
    case DType::f32: return numpy_of_typed<float>(std::move(t));
    case DType::f64: return numpy_of_typed<double>(std::move(t));
    case DType::i32: return numpy_of_typed<std::int32_t>(std::move(t));
    case DType::i64: return numpy_of_typed<std::int64_t>(std::move(t));
    case DType::u8: return numpy_of_typed<std::uint8_t>(std::move(t));
  }
  throw InvalidArgument("read: unsupported dtype");
}

template <class T>
void save_mlp(const std::string& path, const model::MlpSpec& spec, In1<T> params, const Metadata& metadata) {
  check_params(spec, params.shape(0));
  // The caller's memory, adopted without a copy (save_mlp only reads it); no owner: it lives as
  // long as this call.
  const Array<T> view(const_cast<T*>(params.data()), {spec.num_params()}, Backend::host, nullptr);
  nb::gil_scoped_release nogil;
  model::save_mlp<T>(Context::host(1), path, spec, view, metadata);
}

template <class T>
std::pair<model::MlpSpec, nb::object> load_mlp_as(const std::string& path, const model::LoadOptions& options) {
  model::Mlp<T> net = [&] {
    nb::gil_scoped_release nogil;
    return model::load_mlp<T>(Context::host(1), path, options);
  }();
  io::Tensor t = io::Tensor::from(net.params.data(), {net.spec.num_params()});
  return {net.spec, numpy_of(std::move(t))};
}

}  // namespace

void register_io(nb::module_& m) {
  m.def("save_mlp", &save_mlp<float>, "path"_a, "spec"_a, "params"_a.noconvert(), "metadata"_a,
        "Writes a checkpoint as the command-line tool does (layers.{i}.weight / .bias, the activations and "
        "parameterization in the metadata, plus `metadata`), atomically.");
  m.def("save_mlp", &save_mlp<double>, "path"_a, "spec"_a, "params"_a.noconvert(), "metadata"_a);

  m.def(
      "load_mlp",
      [](const std::string& path, const std::string& dtype, const std::string& activation,
         const std::string& parameterization) {
        model::LoadOptions o;
        o.activation = activation;
        o.parameterization = parameterization;
        std::string d = dtype;
        if (d.empty()) {  // the file's: float64 when its weights are F64, else float32
          const io::Safetensors f = io::read_safetensors(path);
          d = "float32";
          for (const auto& t : f.tensors)
            if (t.tensor.dtype == DType::f64) d = "float64";
        }
        if (d == "float32") return load_mlp_as<float>(path, o);
        if (d == "float64") return load_mlp_as<double>(path, o);
        throw InvalidArgument("dtype: expected None, 'float32' or 'float64', got '" + dtype + "'");
      },
      "path"_a, "dtype"_a = "", "activation"_a = "", "parameterization"_a = "",
      "Reads a network from a safetensors file as the command-line tool's --model does: (spec, params).");

  m.def(
      "write_safetensors",
      [](const std::string& path, const std::vector<std::pair<std::string, AnyIn>>& tensors, const Metadata& metadata) {
        io::Safetensors f;
        f.metadata = metadata;
        for (const auto& [name, a] : tensors) f.tensors.push_back({name, tensor_of(a, "tensors['" + name + "']")});
        nb::gil_scoped_release nogil;
        io::write_safetensors(path, f);
      },
      "path"_a, "tensors"_a, "metadata"_a, "Writes (name, array) pairs and string metadata, atomically.");
  m.def(
      "read_safetensors",
      [](const std::string& path) {
        io::Safetensors f = io::read_safetensors(path);
        std::vector<std::pair<std::string, nb::object>> tensors;
        for (auto& t : f.tensors) tensors.emplace_back(t.name, numpy_of(std::move(t.tensor)));
        return std::make_pair(f.metadata, tensors);
      },
      "path"_a, "(metadata, [(name, array)]) of a safetensors file (F16/BF16 widened to float32).");

  m.def(
      "write_npy",
      [](const std::string& path, AnyIn a) {
        io::Tensor t = tensor_of(a, "array");
        nb::gil_scoped_release nogil;
        io::write_npy(path, t);
      },
      "path"_a, "array"_a.noconvert(), "Writes a .npy file, atomically.");
  m.def("read_npy", [](const std::string& path) { return numpy_of(io::read_npy(path)); }, "path"_a,
        "Reads a .npy file.");
  m.def(
      "write_text_atomic",
      [](const std::string& path, const std::string& text) {
        nb::gil_scoped_release nogil;
        io::write_text_atomic(path, text);
      },
      "path"_a, "text"_a, "Replaces a text file atomically (temporary file and rename).");
  m.def("check_writable", &io::check_writable, "path"_a,
        "Raises unless `path` could be written (its folder exists and takes files).");
}

}  // namespace dynascope::python
