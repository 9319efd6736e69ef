// PyTorch checkpoints through load_mlp: a state dict saved with safetensors.torch.save_file holds
// the Linear layers' tensors and nothing else (no activation, no layer order beyond the names,
// often F16/BF16 values), so everything it leaves open must be given or refused, never guessed.
// Every loaded network is checked against a float64 reference built by hand from the same values.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "dynascope/error.hpp"
#include "dynascope/io.hpp"
#include "dynascope/model.hpp"
#include "dynascope/ntk.hpp"
#include "model/checkpoint_test_util.hpp"
#include "model/model_test_util.hpp"

namespace dynascope {
namespace {

using model::LoadOptions;
using model::MlpSpec;
using model::Origin;
using test::f32_tensor;
using test::raw_safetensors;
using test::RawTensor;
using test::write_raw;

using test::expect_error;

// Values rounded to float, as a float32 model holds them.
std::vector<double> as_float(std::vector<double> v) {
  for (double& x : v) x = double(float(x));
  return v;
}

std::vector<double> concat(std::initializer_list<std::vector<double>> parts) {
  std::vector<double> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

double engine_ntk_trace(const Context& ctx, const model::Mlp<double>& net, const std::vector<double>& x, index_t n) {
  const index_t d = net.spec.inputs();
  const auto r = ntk::empirical_ntk<double>(ctx, net.spec, net.params.data(), MatrixView<const double>{x.data(), n, d, d});
  double t = 0;
  for (index_t i = 0; i < n; ++i) t += r.kernel.data()[i * n + i];
  return t;
}

std::vector<double> engine_forward(const Context& ctx, const model::Mlp<double>& net, const std::vector<double>& x, index_t n) {
  model::MlpEngine<double> e(ctx, net.spec);
  const index_t d = net.spec.inputs();
  const auto f = e.forward(net.params.data(), {x.data(), n, d, d});
  return std::vector<double>(f.data, f.data + n * net.spec.outputs());
}

// nn.Sequential(Linear(3, 5), Tanh(), Linear(5, 2)) as save_file(model.state_dict()) writes it:
// F32, no metadata, tensors in alphabetical order in the buffer.
struct TanhStateDict {
  std::vector<double> w0 = as_float(test::random_vector(15, 11, 0.8)), b0 = as_float(test::random_vector(5, 12, 0.5)),
                      w2 = as_float(test::random_vector(10, 13, 0.8)), b2 = as_float(test::random_vector(2, 14, 0.5));
  std::string path = write_raw("tanh_state_dict.safetensors",
                               raw_safetensors({f32_tensor("0.bias", {5}, b0), f32_tensor("0.weight", {5, 3}, w0),
                                                f32_tensor("2.bias", {2}, b2), f32_tensor("2.weight", {2, 5}, w2)}));
  // The same network built by hand: parameters_to_vector order.
  MlpSpec spec = MlpSpec::from_arch("3-5-2", model::parse_activation("tanh"));
  std::vector<double> flat = concat({w0, b0, w2, b2});
};

TEST(TorchStateDict, WithoutActivationIsRefusedNamingTheActivation) {
  const TanhStateDict sd;
  Context ctx = Context::host();
  // Before: silently computed as ReLU.
  expect_error<InvalidArgument>([&] { model::load_mlp<double>(ctx, sd.path); },
                                {sd.path, "holds no activation", "--activation", "LoadOptions::activation",
                                 "metadata={\"activation\": \"tanh\"}"});
  // A network without hidden layers has no activation to ask for.
  const std::string linear = write_raw("linear.safetensors", raw_safetensors({f32_tensor("weight", {2, 3}, std::vector<double>(sd.w2.begin(), sd.w2.begin() + 6))}));
  const auto lin = model::load_mlp<double>(ctx, linear);
  EXPECT_EQ(lin.spec.arch_string(), "3-2");
  EXPECT_EQ(lin.source.activation, Origin::default_value);
}

TEST(TorchStateDict, WithTheActivationGivenForwardAndNtkTraceMatchFloat64References) {
  const TanhStateDict sd;
  Context ctx = Context::host();
  LoadOptions o;
  o.activation = "tanh";
  const auto net = model::load_mlp<double>(ctx, sd.path, o);
  EXPECT_EQ(net.spec.arch_string(), "3-5-2");
  EXPECT_EQ(net.spec.activations, sd.spec.activations);
  EXPECT_EQ(net.source.activation, Origin::option);
  EXPECT_EQ(net.source.parameterization, Origin::default_value);  // standard: nn.Linear's convention
  EXPECT_EQ(net.spec.parameterization, model::Parameterization::standard);
  EXPECT_EQ(net.source.stored_dtype, "F32");
  EXPECT_EQ(net.source.layers, (std::vector<std::string>{"0", "2"}));
  for (std::size_t i = 0; i < sd.flat.size(); ++i) ASSERT_EQ(net.params.data()[i], sd.flat[i]) << i;

  const index_t n = 6;
  const auto x = test::random_vector(std::size_t(n * 3), 15);
  const auto ref = test::naive_forward(sd.spec, sd.flat, x, n);
  const auto f = engine_forward(ctx, net, x, n);
  for (std::size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(f[i], ref[i], 1e-13 * (1 + std::abs(ref[i])));
  const double trace_ref = test::fd_ntk_trace(sd.spec, sd.flat, x, n);
  EXPECT_NEAR(engine_ntk_trace(ctx, net, x, n), trace_ref, 1e-7 * trace_ref);
  // The same file read as ReLU is a different network: the error above is not a formality.
  o.activation = "relu";
  const auto relu = model::load_mlp<double>(ctx, sd.path, o);
  EXPECT_GT(std::abs(engine_ntk_trace(ctx, relu, x, n) - trace_ref), 1e-3 * trace_ref);
}

TEST(TorchStateDict, MetadataActivationIsUsedAndAnOptionOverridesIt) {
  const TanhStateDict sd;
  Context ctx = Context::host();
  const std::string path = write_raw(
      "meta.safetensors", raw_safetensors({f32_tensor("0.weight", {5, 3}, sd.w0), f32_tensor("2.weight", {2, 5}, sd.w2)},
                                          {{"activation", "tanh"}, {"parameterization", "ntk"}}));
  const auto net = model::load_mlp<double>(ctx, path);
  EXPECT_EQ(net.spec.activations[0].kind, model::Activation::tanh);
  EXPECT_EQ(net.source.activation, Origin::metadata);
  EXPECT_EQ(net.spec.parameterization, model::Parameterization::ntk);
  EXPECT_EQ(net.source.parameterization, Origin::metadata);
  LoadOptions o;
  o.activation = "gelu";
  const auto over = model::load_mlp<double>(ctx, path, o);
  EXPECT_EQ(over.spec.activations[0].kind, model::Activation::gelu);
  EXPECT_EQ(over.source.activation, Origin::option);
  // Bad metadata is named as metadata.
  const std::string bad = write_raw("badmeta.safetensors",
                                    raw_safetensors({f32_tensor("0.weight", {5, 3}, sd.w0), f32_tensor("2.weight", {2, 5}, sd.w2)},
                                                    {{"activation", "swish"}}));
  expect_error<InvalidArgument>([&] { model::load_mlp<double>(ctx, bad); }, {"metadata \"activation\"", "swish", bad});
  const std::string two = write_raw("twoacts.safetensors",
                                    raw_safetensors({f32_tensor("0.weight", {5, 3}, sd.w0), f32_tensor("2.weight", {2, 5}, sd.w2)},
                                                    {{"activation", "relu,tanh"}}));
  expect_error<InvalidArgument>([&] { model::load_mlp<double>(ctx, two); }, {"2 activations for the 1 hidden layer of the 3-5-2 network"});
  const std::string scale = write_raw("badscale.safetensors",
                                      raw_safetensors({f32_tensor("0.weight", {5, 3}, sd.w0)}, {{"bias_scale", "abc"}}));
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, scale); }, {"bias_scale", "abc"});
}

// ---- layer order ----

// A model with named submodules fc_in, block, head (1 -> 1 -> 1 -> 1), identity activation, so
// that the output can be worked out by hand: x = 1 -> 2 -> 3 * 2 + 1 = 7 -> -7.
std::string named_modules_file() {
  return write_raw("named.safetensors",
                   raw_safetensors({f32_tensor("block.bias", {1}, {1.0}), f32_tensor("block.weight", {1, 1}, {3.0}),
                                    f32_tensor("fc_in.weight", {1, 1}, {2.0}), f32_tensor("head.weight", {1, 1}, {-1.0})}));
}

TEST(TorchStateDict, UnnumberedLayerNamesNeedAnExplicitOrder) {
  Context ctx = Context::host();
  const std::string path = named_modules_file();
  LoadOptions o;
  o.activation = "identity";
  // Before: sorted alphabetically (block, fc_in, head) and computed as -(2 * (3 * 1 + 1)) = -8.
  expect_error<InvalidArgument>([&] { model::load_mlp<double>(ctx, path, o); },
                                {path, "'block', 'fc_in', 'head'", "do not give their order", "--layers", "LoadOptions::layers"});
  o.layers = {"fc_in", "block", "head"};
  const auto net = model::load_mlp<double>(ctx, path, o);
  EXPECT_EQ(net.source.layers, o.layers);
  EXPECT_TRUE(net.source.layers_given);
  const std::vector<double> x{1.0, -0.5};
  const auto f = engine_forward(ctx, net, x, 2);
  EXPECT_EQ(f[0], -7.0);                   // by hand
  EXPECT_EQ(f[1], -(3.0 * (2.0 * -0.5) + 1.0));  // -(3 * -1 + 1) = 2
  // The order given is the order used, whatever the alphabet says.
  o.layers = {"block", "fc_in", "head"};
  EXPECT_EQ(engine_forward(ctx, model::load_mlp<double>(ctx, path, o), x, 2)[0], -8.0);
}

TEST(TorchStateDict, ExplicitOrderMatchesAFloat64ReferenceAndSuggestsTheOnlyChainingOrder) {
  Context ctx = Context::host();
  const auto w_in = as_float(test::random_vector(12, 21)), b_in = as_float(test::random_vector(4, 22)),
             w_bl = as_float(test::random_vector(24, 23)), b_bl = as_float(test::random_vector(6, 24)),
             w_hd = as_float(test::random_vector(12, 25)), b_hd = as_float(test::random_vector(2, 26));
  const std::string path = write_raw(
      "named_widths.safetensors",
      raw_safetensors({f32_tensor("block.bias", {6}, b_bl), f32_tensor("block.weight", {6, 4}, w_bl),
                       f32_tensor("fc_in.bias", {4}, b_in), f32_tensor("fc_in.weight", {4, 3}, w_in),
                       f32_tensor("head.bias", {2}, b_hd), f32_tensor("head.weight", {2, 6}, w_hd)}));
  LoadOptions o;
  o.activation = "tanh";
  // Widths 3 -> 4 -> 6 -> 2 chain in one order only: the message says which, but nothing loads.
  expect_error<InvalidArgument>([&] { model::load_mlp<double>(ctx, path, o); },
                                {"only: --layers fc_in,block,head"});
  o.layers = {"fc_in", "block", "head"};
  const auto net = model::load_mlp<double>(ctx, path, o);
  const MlpSpec ref_spec = MlpSpec::from_arch("3-4-6-2", model::parse_activation("tanh"));
  const auto flat = concat({w_in, b_in, w_bl, b_bl, w_hd, b_hd});
  const index_t n = 5;
  const auto x = test::random_vector(std::size_t(n * 3), 27);
  const auto ref = test::naive_forward(ref_spec, flat, x, n);
  const auto f = engine_forward(ctx, net, x, n);
  for (std::size_t i = 0; i < ref.size(); ++i) EXPECT_NEAR(f[i], ref[i], 1e-13 * (1 + std::abs(ref[i])));
  // A wrong order breaks the width chain, named with both tensors.
  o.layers = {"block", "fc_in", "head"};
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, path, o); },
                                {"do not chain", "'fc_in.weight' [4, 3] takes 3 inputs", "'block.weight' [6, 4]", "gives 6"});
  // Names in the order that the file lacks, or twice.
  o.layers = {"fc_in", "body", "head"};
  expect_error<InvalidArgument>([&] { model::load_mlp<double>(ctx, path, o); }, {"'body'", "no tensor 'body.weight'"});
  o.layers = {"fc_in", "fc_in"};
  expect_error<InvalidArgument>([&] { model::load_mlp<double>(ctx, path, o); }, {"'fc_in' twice"});
  // A layer left out of the order is an unexpected tensor, not a silent omission.
  o.layers = {"fc_in", "block"};
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, path, o); },
                                {"unexpected tensors 'head.bias'", "'head.weight'", "not in the layer order given"});
}

TEST(TorchStateDict, NamesThatDifferOnlyInNumbersAreOrderedByThem) {
  Context ctx = Context::host();
  LoadOptions o;
  o.activation = "relu";
  // Each case: prefixes listed out of order; widths 2 -> 3 -> 4 -> 5 only chain in numeric order.
  const std::vector<std::vector<std::string>> cases = {
      {"10", "2", "0"},                                        // nn.Sequential: "10" after "2"
      {"net.10", "net.2", "net.0"},                            // nested in a module
      {"model.layers.10", "model.layers.2", "model.layers.0"}, // ModuleList in a module
      {"fc10", "fc2", "fc1"},                                  // numbered attributes
      {"blocks.1.lin.0", "blocks.0.lin.1", "blocks.0.lin.0"},  // two numbers: by the first, then the second
  };
  for (const auto& names : cases) {
    // names[2] is the first layer, names[1] the second, names[0] the last.
    const std::string path = write_raw(
        "numbered.safetensors",
        raw_safetensors({f32_tensor(names[0] + ".weight", {5, 4}, std::vector<double>(20, 0.1)),
                         f32_tensor(names[1] + ".weight", {4, 3}, std::vector<double>(12, 0.2)),
                         f32_tensor(names[2] + ".weight", {3, 2}, std::vector<double>(6, 0.3))}));
    const auto net = model::load_mlp<double>(ctx, path, o);
    EXPECT_EQ(net.spec.arch_string(), "2-3-4-5") << names[0];
    EXPECT_EQ(net.source.layers, (std::vector<std::string>{names[2], names[1], names[0]}));
    EXPECT_FALSE(net.source.layers_given);
  }
  // Different text around the numbers, or one number written twice ("1", "01"): no automatic order.
  for (const auto& names : std::vector<std::vector<std::string>>{{"layers.1", "0"}, {"01", "1"}, {"fc1", "out"}}) {
    const std::string path = write_raw("ambiguous.safetensors",
                                       raw_safetensors({f32_tensor(names[0] + ".weight", {2, 2}, std::vector<double>(4, 0.1)),
                                                        f32_tensor(names[1] + ".weight", {2, 2}, std::vector<double>(4, 0.2))}));
    expect_error<InvalidArgument>([&] { model::load_mlp<double>(ctx, path, o); },
                                  {"'" + std::min(names[0], names[1]) + "'", "--layers"});
  }
}

// ---- tensors that are not dense layers ----

TEST(TorchStateDict, TensorsOutsideDenseLayersAreUnexpectedNotWidthErrors) {
  Context ctx = Context::host();
  LoadOptions o;
  o.activation = "relu";
  const auto w = [](Shape s) {
    return std::vector<double>(static_cast<std::size_t>(shape_numel(s)), 0.5);
  };
  // nn.Sequential(Linear(2, 3), BatchNorm1d(3), ReLU(), Linear(3, 1)).
  const std::string bn = write_raw(
      "batchnorm.safetensors",
      raw_safetensors({f32_tensor("0.weight", {3, 2}, w({3, 2})), f32_tensor("0.bias", {3}, w({3})),
                       f32_tensor("1.weight", {3}, w({3})), f32_tensor("1.bias", {3}, w({3})),
                       f32_tensor("1.running_mean", {3}, w({3})), f32_tensor("1.running_var", {3}, w({3})),
                       {"1.num_batches_tracked", "I64", {}, test::le_bytes(std::vector<std::int64_t>{7})},
                       f32_tensor("3.weight", {1, 3}, w({1, 3})), f32_tensor("3.bias", {1}, w({1}))}));
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, bn, o); },
                                {bn, "unexpected tensors", "'1.running_mean' (not a .weight or .bias)",
                                 "'1.num_batches_tracked'", "'1.weight' (shape [3]: a dense layer's weight is [out, in])",
                                 "Linear"});
  const std::string lone = write_raw("lonebias.safetensors",
                                     raw_safetensors({f32_tensor("0.weight", {3, 2}, w({3, 2})), f32_tensor("5.bias", {3}, w({3}))}));
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, lone, o); },
                                {"unexpected tensor '5.bias' (a bias without a weight)"});
  const std::string conv = write_raw("conv.safetensors",
                                     raw_safetensors({f32_tensor("conv.weight", {2, 1, 3, 3}, w({2, 1, 3, 3})),
                                                      f32_tensor("fc.weight", {1, 2}, w({1, 2}))}));
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, conv, o); }, {"'conv.weight' (shape [2, 1, 3, 3]"});
  const std::string extra = write_raw("extra.safetensors",
                                      raw_safetensors({f32_tensor("0.weight", {3, 2}, w({3, 2})),
                                                       {"step", "I64", {}, test::le_bytes(std::vector<std::int64_t>{100})}}));
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, extra, o); }, {"unexpected tensor 'step'"});
  // A bias that does not fit its weight is a shape error naming both.
  const std::string bias = write_raw("bias.safetensors",
                                     raw_safetensors({f32_tensor("0.weight", {3, 2}, w({3, 2})), f32_tensor("0.bias", {5}, w({5}))}));
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, bias, o); }, {"'0.bias' must have shape [3]", "'0.weight' [3, 2]"});
  // Integer weights are refused by dtype.
  const std::string ints = write_raw("ints.safetensors",
                                     raw_safetensors({{"0.weight", "I32", {1, 2}, test::le_bytes(std::vector<std::int32_t>{1, 2})}}));
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, ints, o); }, {"'0.weight' holds I32", "F16 or BF16"});
}

// ---- dtypes and values ----

TEST(TorchStateDict, HalfAndBfloat16WeightsConvertExactly) {
  Context ctx = Context::host();
  // Bit patterns and their values worked out from the formats' definitions.
  const std::vector<std::uint16_t> h = {0x3C00, 0xC000, 0x3555, 0x7BFF, 0x0001, 0x83FF};
  const std::vector<double> hv = {1.0, -2.0, 1365.0 / 4096, 65504.0, std::ldexp(1.0, -24), -std::ldexp(1023.0, -24)};
  const std::vector<std::uint16_t> b = {0x3F80, 0xC040, 0x4049};
  const std::vector<double> bv = {1.0, -3.0, 3.140625};
  // A half model: nn.Sequential(Linear(2, 3), Tanh(), Linear(3, 1)).half(), with a BF16 last layer.
  const std::string path = write_raw("half.safetensors",
                                     raw_safetensors({{"0.weight", "F16", {3, 2}, test::le_bytes_u16(h)},
                                                      {"2.weight", "BF16", {1, 3}, test::le_bytes_u16(b)}},
                                                     {{"activation", "tanh"}}));
  for (int pass = 0; pass < 2; ++pass) {
    const auto check = [&](const auto& net) {
      EXPECT_EQ(net.spec.arch_string(), "2-3-1");
      EXPECT_EQ(net.source.stored_dtype, "BF16, F16");
      for (std::size_t i = 0; i < hv.size(); ++i) EXPECT_EQ(double(net.params.data()[i]), hv[i]) << i;
      for (std::size_t i = 0; i < bv.size(); ++i) EXPECT_EQ(double(net.params.data()[6 + i]), bv[i]) << i;
    };
    if (pass == 0) check(model::load_mlp<float>(ctx, path));
    else check(model::load_mlp<double>(ctx, path));
  }
}

TEST(TorchStateDict, NonFiniteWeightsAreRejectedNamingTheTensorAndElement) {
  Context ctx = Context::host();
  LoadOptions o;
  o.activation = "relu";
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  const std::string f32 = write_raw("nan.safetensors",
                                    raw_safetensors({f32_tensor("0.weight", {2, 3}, {0, 0, 0, 0, nan, 0}),
                                                     f32_tensor("1.weight", {1, 2}, {1, 1})}));
  expect_error<FileFormatError>([&] { model::load_mlp<float>(ctx, f32, o); }, {f32, "'0.weight' holds NaN at [1, 1]"});
  const std::string many = write_raw("infs.safetensors",
                                     raw_safetensors({f32_tensor("0.weight", {2, 2}, {1, -inf, inf, 1}),
                                                      f32_tensor("1.weight", {1, 2}, {1, 1})}));
  expect_error<FileFormatError>([&] { model::load_mlp<double>(ctx, many, o); },
                                {"'0.weight' holds -infinity at [0, 1] (2 such values in all)"});
  // Half infinity and NaN (0x7C00, 0x7E00) stay what they are after widening, and are refused.
  const std::string half = write_raw("halfinf.safetensors",
                                     raw_safetensors({{"0.weight", "F16", {1, 2}, test::le_bytes_u16({0x3C00, 0x7C00})},
                                                      {"0.bias", "F16", {1}, test::le_bytes_u16({0x7E00})}}));
  expect_error<FileFormatError>([&] { model::load_mlp<float>(ctx, half, o); }, {"'0.weight' holds +infinity at [0, 1]"});
  // A float64 value beyond float32's range fits float64 only.
  const std::string big = write_raw("big.safetensors",
                                    raw_safetensors({{"0.weight", "F64", {1, 2}, test::le_bytes(std::vector<double>{1.0, 1e39})}}));
  expect_error<FileFormatError>([&] { model::load_mlp<float>(ctx, big, o); },
                                {"'0.weight' holds 1e+39 at [0, 1]", "float32", "--dtype float64"});
  EXPECT_EQ(model::load_mlp<double>(ctx, big, o).params.data()[1], 1e39);
}

TEST(TorchStateDict, TorchSaveFilesAreNamedWithHowToConvert) {
  Context ctx = Context::host();
  const std::string zip = write_raw("model.pt", test::torch_zip_bytes());
  expect_error<FileFormatError>([&] { model::load_mlp<float>(ctx, zip); },
                                {zip, "written by torch.save", "from safetensors.torch import save_file",
                                 "save_file(model.state_dict(), \"model.safetensors\"", "metadata={\"activation\": \"tanh\"}"});
  const std::string legacy = write_raw("legacy.pt", test::torch_legacy_bytes());
  expect_error<FileFormatError>([&] { model::load_mlp<float>(ctx, legacy); },
                                {legacy, "torch.save in its legacy pickle format", "save_file("});
}

TEST(TorchStateDict, OurCheckpointsNeedNoOptions) {
  // save_mlp records what a state dict lacks, so its files load alone, with the sources saying so.
  Context ctx = Context::host();
  const MlpSpec s = MlpSpec::from_arch("3-4-2", model::parse_activation("tanh"));
  const auto p = model::init_params<double>(ctx, s, {model::Init::pytorch, 1.0, 3});
  const std::string path = test::temp_path("ours.safetensors");
  model::save_mlp<double>(ctx, path, s, p);
  const auto net = model::load_mlp<double>(ctx, path);
  EXPECT_EQ(net.source.activation, Origin::metadata);
  EXPECT_EQ(net.source.parameterization, Origin::metadata);
  EXPECT_EQ(net.source.stored_dtype, "F64");
  EXPECT_EQ(net.source.path, path);
  EXPECT_EQ(net.spec.activations, s.activations);
}

}  // namespace
}  // namespace dynascope
