// Networks through safetensors: our own checkpoints and torch nn.Sequential state dicts; init.
#include <gtest/gtest.h>

#include <cmath>

#include "dynascope/io.hpp"
#include "dynascope/model.hpp"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

TEST(ModelIO, CheckpointRoundTripKeepsSpecAndParameters) {
  Context ctx = Context::host();
  model::MlpSpec s = model::MlpSpec::from_arch("5-7-3-2", model::parse_activation("leaky_relu:0.2"), model::Parameterization::ntk);
  s.bias[1] = false;
  s.activations[1] = model::parse_activation("tanh");
  Array<double> p = model::init_params<double>(ctx, s, {model::Init::ntk_normal, 1.0, 7});
  const std::string path = test::temp_path("net.safetensors");
  model::save_mlp<double>(ctx, path, s, p, {{"note", "test"}});
  const io::Safetensors file = io::read_safetensors(path);
  EXPECT_EQ(file.metadata.at("activation"), "leaky_relu:0.2,tanh");
  EXPECT_EQ(file.metadata.at("parameterization"), "ntk");
  EXPECT_EQ(file.metadata.at("note"), "test");
  ASSERT_NE(file.find("layers.0.weight"), nullptr);
  EXPECT_EQ(file.find("layers.1.bias"), nullptr);
  const auto net = model::load_mlp<double>(ctx, path);
  EXPECT_EQ(net.spec.widths, s.widths);
  EXPECT_EQ(net.spec.bias, s.bias);
  EXPECT_EQ(net.spec.activations, s.activations);
  EXPECT_EQ(net.spec.parameterization, model::Parameterization::ntk);
  for (index_t i = 0; i < p.size(); ++i) EXPECT_EQ(net.params.data()[i], p.data()[i]);
  // Float file read as float64 keeps the values exactly.
  const auto f32 = model::load_mlp<float>(ctx, path);
  EXPECT_EQ(f32.params.data()[3], float(p.data()[3]));
}

TEST(ModelIO, TorchSequentialNamesLoadInNaturalOrder) {
  // nn.Sequential(Linear(2,3), ReLU(), ..., Linear(3,1)) at indices 0, 2, ..., 10: "10" sorts after "2".
  io::Safetensors file;
  std::vector<float> w0(6, 1.0f), b0(3, 0.5f), w2(9, 2.0f), b2(3, 0.0f), w10(3, 3.0f), b10(1, -1.0f);
  file.tensors.push_back({"10.weight", io::Tensor::from(w10.data(), {1, 3})});
  file.tensors.push_back({"10.bias", io::Tensor::from(b10.data(), {1})});
  file.tensors.push_back({"0.weight", io::Tensor::from(w0.data(), {3, 2})});
  file.tensors.push_back({"0.bias", io::Tensor::from(b0.data(), {3})});
  file.tensors.push_back({"2.weight", io::Tensor::from(w2.data(), {3, 3})});
  file.tensors.push_back({"2.bias", io::Tensor::from(b2.data(), {3})});
  const std::string path = test::temp_path("seq.safetensors");
  io::write_safetensors(path, file);
  Context ctx = Context::host();
  const auto net = model::load_mlp<double>(ctx, path, {"tanh", ""});
  EXPECT_EQ(net.spec.arch_string(), "2-3-3-1");
  EXPECT_EQ(net.spec.activations[0].kind, model::Activation::tanh);
  // parameters_to_vector order: 0.weight, 0.bias, 2.weight, 2.bias, 10.weight, 10.bias
  EXPECT_EQ(net.params.data()[0], 1.0);
  EXPECT_EQ(net.params.data()[6], 0.5);
  EXPECT_EQ(net.params.data()[9], 2.0);
  EXPECT_EQ(net.params.data()[21], 3.0);
  EXPECT_EQ(net.params.data()[24], -1.0);
}

TEST(ModelIO, MismatchedLayersAndBadTensorsAreRejected) {
  Context ctx = Context::host();
  std::vector<float> w0(6), w1(8), b(5);
  {
    io::Safetensors f;
    f.tensors.push_back({"0.weight", io::Tensor::from(w0.data(), {3, 2})});
    f.tensors.push_back({"1.weight", io::Tensor::from(w1.data(), {2, 4})});  // takes 4, previous gives 3
    const std::string path = test::temp_path("bad1.safetensors");
    io::write_safetensors(path, f);
    EXPECT_THROW(model::load_mlp<float>(ctx, path), FileFormatError);
  }
  {
    io::Safetensors f;
    f.tensors.push_back({"0.weight", io::Tensor::from(w0.data(), {3, 2})});
    f.tensors.push_back({"0.bias", io::Tensor::from(b.data(), {5})});
    const std::string path = test::temp_path("bad2.safetensors");
    io::write_safetensors(path, f);
    EXPECT_THROW(model::load_mlp<float>(ctx, path), FileFormatError);
  }
  {
    io::Safetensors f;
    f.tensors.push_back({"0.weight", io::Tensor::from(w0.data(), {3, 2})});
    f.tensors.push_back({"bn.running_mean", io::Tensor::from(b.data(), {5})});
    const std::string path = test::temp_path("bad3.safetensors");
    io::write_safetensors(path, f);
    EXPECT_THROW(model::load_mlp<float>(ctx, path), FileFormatError);
  }
  {
    io::Safetensors f;
    w0[2] = NAN;
    f.tensors.push_back({"0.weight", io::Tensor::from(w0.data(), {3, 2})});
    const std::string path = test::temp_path("bad4.safetensors");
    io::write_safetensors(path, f);
    EXPECT_THROW(model::load_mlp<float>(ctx, path), FileFormatError);
  }
}

TEST(Init, SchemesHaveTheirDocumentedDistributions) {
  Context ctx = Context::host();
  const auto s = model::MlpSpec::from_arch("400-300-1");
  const index_t nw = 400 * 300;
  {
    const auto p = model::init_params<double>(ctx, s, {model::Init::pytorch, 1.0, 1});
    const double bound = 1.0 / std::sqrt(400.0);
    double mx = 0;
    for (index_t i = 0; i < nw + 300; ++i) mx = std::max(mx, std::abs(p.data()[i]));
    EXPECT_LE(mx, bound);
    EXPECT_GT(mx, 0.99 * bound);
  }
  for (auto [scheme, var] : {std::pair{model::Init::kaiming_normal, 2.0 / 400}, std::pair{model::Init::lecun_normal, 1.0 / 400},
                             std::pair{model::Init::ntk_normal, 1.0}}) {
    const double alpha = 3.0;
    const auto p = model::init_params<double>(ctx, s, {scheme, alpha, 2});
    double ss = 0;
    for (index_t i = 0; i < nw; ++i) ss += p.data()[i] * p.data()[i];
    const double want = alpha * alpha * var;
    EXPECT_NEAR(ss / double(nw), want, 5 * want * std::sqrt(2.0 / double(nw))) << model::to_string(scheme);
    if (scheme != model::Init::ntk_normal) {
      EXPECT_EQ(p.data()[nw], 0.0);  // zero bias
    }
  }
  // Same seed, same numbers; different seed, different numbers.
  const auto a = model::init_params<float>(ctx, s, {model::Init::pytorch, 1.0, 5});
  const auto b = model::init_params<float>(ctx, s, {model::Init::pytorch, 1.0, 5});
  const auto c = model::init_params<float>(ctx, s, {model::Init::pytorch, 1.0, 6});
  EXPECT_EQ(a.data()[100], b.data()[100]);
  EXPECT_NE(a.data()[100], c.data()[100]);
}

}  // namespace
}  // namespace dynascope
