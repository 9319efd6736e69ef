// The model and data flags of the dynascope executable: PyTorch state dicts (no activation, named
// layers, torch.save files, half precision), labels and targets that do not fit the network, and
// the checked ranges of --samples, --init-scale and --test-fraction. Every refusal is exit code 2
// with a message that names the flag or file; every accepted network is checked against a float64
// reference computed here.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/cli_test_util.hpp"
#include "dynascope/io.hpp"
#include "model/checkpoint_test_util.hpp"
#include "model/model_test_util.hpp"

namespace dynascope::test {
namespace {

std::vector<double> as_float(std::vector<double> v) {
  for (double& x : v) x = double(float(x));
  return v;
}

// nn.Sequential(Linear(3, 5), Tanh(), Linear(5, 2)) saved with save_file(model.state_dict()).
struct StateDict {
  std::vector<double> w0 = as_float(random_vector(15, 1, 0.8)), b0 = as_float(random_vector(5, 2, 0.5)),
                      w2 = as_float(random_vector(10, 3, 0.8)), b2 = as_float(random_vector(2, 4, 0.5));
  std::string path = write_raw("sd.safetensors", raw_safetensors({f32_tensor("0.bias", {5}, b0), f32_tensor("0.weight", {5, 3}, w0),
                                                                  f32_tensor("2.bias", {2}, b2), f32_tensor("2.weight", {2, 5}, w2)}));
  std::vector<double> x = random_vector(18, 5);
  std::string inputs = npy("x.npy", x, {6, 3});
  double trace_ref() const {
    std::vector<double> flat = w0;
    for (const auto* v : {&b0, &w2, &b2}) flat.insert(flat.end(), v->begin(), v->end());
    return fd_ntk_trace(model::MlpSpec::from_arch("3-5-2", model::parse_activation("tanh")), flat, x, 6);
  }
};

TEST(CliModel, StateDictWithoutActivationIsRefusedNamingTheFlag) {
  const StateDict sd;
  // Before: computed as a ReLU network without a word.
  expect_usage_error(run({"ntk", "--model", sd.path, "--inputs", sd.inputs, "--quiet"}),
                     {sd.path, "holds no activation", "--activation tanh", "PyTorch state dict"});
  const CliResult ok = run({"ntk", "--model", sd.path, "--inputs", sd.inputs, "--activation", "tanh", "--dtype", "float64", "--quiet"});
  ASSERT_EQ(ok.exit_code, 0) << ok;
  const double ref = sd.trace_ref();
  EXPECT_NEAR(ok.json()["trace"].get<double>(), ref, 1e-7 * ref);
}

TEST(CliModel, UnnumberedLayerNamesNeedTheLayersFlag) {
  const auto w_in = as_float(random_vector(12, 11)), w_bl = as_float(random_vector(24, 12)), w_hd = as_float(random_vector(12, 13)),
             b_bl = as_float(random_vector(6, 14));
  const std::string path = write_raw("named.safetensors",
                                     raw_safetensors({f32_tensor("block.bias", {6}, b_bl), f32_tensor("block.weight", {6, 4}, w_bl),
                                                      f32_tensor("fc_in.weight", {4, 3}, w_in), f32_tensor("head.weight", {2, 6}, w_hd)}));
  const std::vector<double> x = random_vector(15, 15);
  const std::string inputs = npy("x.npy", x, {5, 3});
  const std::vector<std::string> base = {"ntk", "--model", path, "--inputs", inputs, "--activation", "tanh", "--dtype", "float64", "--quiet"};
  // Before: sorted alphabetically (block, fc_in, head).
  expect_usage_error(run(base), {path, "'block', 'fc_in', 'head'", "do not give their order", "--layers",
                                 "only: --layers fc_in,block,head"});
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a);
  };
  const CliResult ok = with({"--layers", "fc_in,block,head"});
  ASSERT_EQ(ok.exit_code, 0) << ok;
  model::MlpSpec spec = model::MlpSpec::from_arch("3-4-6-2", model::parse_activation("tanh"));
  spec.bias = {false, true, false};
  std::vector<double> flat = w_in;
  for (const auto* v : {&w_bl, &b_bl, &w_hd}) flat.insert(flat.end(), v->begin(), v->end());
  const double ref = fd_ntk_trace(spec, flat, x, 5);
  EXPECT_NEAR(ok.json()["trace"].get<double>(), ref, 1e-7 * ref);
  expect_usage_error(with({"--layers", "block,fc_in,head"}), {"do not chain", "'fc_in.weight' [4, 3]"});
  expect_usage_error(with({"--layers", "fc_in,,head"}), {"--layers 'fc_in,,head'", "separated by commas"});
  expect_usage_error(with({"--layers", "fc_in,body,head"}), {"'body'", "no tensor 'body.weight'"});
  expect_usage_error(run({"ntk", "--arch", "3-2", "--layers", "a,b", "--inputs", inputs}), {"--layers", "--arch"});
}

TEST(CliModel, TorchSaveFilesAreNamedWithHowToConvert) {
  const StateDict sd;
  for (const auto& [name, bytes, what] : {std::tuple{"model.pt", torch_zip_bytes(), "written by torch.save (a zip archive"},
                                          std::tuple{"legacy.pt", torch_legacy_bytes(), "legacy pickle format"}}) {
    const std::string path = write_raw(name, bytes);
    expect_usage_error(run({"ntk", "--model", path, "--inputs", sd.inputs, "--quiet"}),
                       {path, what, "from safetensors.torch import save_file", "save_file(model.state_dict()"});
  }
}

TEST(CliModel, HalfPrecisionWeightsLoadExactlyAndTheJsonSaysWhereEverythingCameFrom) {
  // Needs the commands to print spec_json(net) (the network with its LoadInfo).
  const std::vector<std::uint16_t> w0 = {0x3C00, 0xB800, 0x3555, 0x4000, 0xC100, 0x2E66}, w2 = {0x3F80, 0xBF00, 0x3E80};
  const std::vector<double> w0v = {1, -0.5, 1365.0 / 4096, 2, -2.5, 1638.0 / 16384},
                            w2v = {1, -0.5, 0.25};
  for (const std::string dtype : {"F16", "BF16"}) {
    // Layer 0 in the dtype under test, layer 2 in BF16: "0.weight" [3, 2], "2.weight" [1, 3].
    const std::vector<std::uint16_t> first = dtype == "F16" ? w0 : std::vector<std::uint16_t>{0x3F80, 0xBF00, 0x3EAA, 0x4000, 0xC020, 0x3E00};
    const std::vector<double> firstv = dtype == "F16" ? w0v : std::vector<double>{1, -0.5, 170.0 / 512, 2, -2.5, 0.125};
    const std::string path = write_raw("half.safetensors", raw_safetensors({{"0.weight", dtype, {3, 2}, le_bytes_u16(first)},
                                                                            {"2.weight", "BF16", {1, 3}, le_bytes_u16(w2)}}));
    const std::vector<double> x = random_vector(8, 21);
    const std::string inputs = npy("x.npy", x, {4, 2});
    const CliResult r = run({"ntk", "--model", path, "--inputs", inputs, "--activation", "tanh", "--dtype", "float64", "--quiet"});
    ASSERT_EQ(r.exit_code, 0) << r;
    model::MlpSpec spec = model::MlpSpec::from_arch("2-3-1", model::parse_activation("tanh"));
    spec.bias = {false, false};
    std::vector<double> flat = firstv;
    flat.insert(flat.end(), w2v.begin(), w2v.end());
    const double ref = fd_ntk_trace(spec, flat, x, 4);
    const auto j = r.json();
    EXPECT_NEAR(j["trace"].get<double>(), ref, 1e-7 * ref) << dtype;
    const auto& net = j["network"];
    EXPECT_EQ(net.value("stored_dtype", ""), dtype == "F16" ? "BF16, F16" : "BF16") << net.dump();
    EXPECT_EQ(net.value("converted_to", ""), "float64") << net.dump();
    EXPECT_EQ(net.value("activation_source", ""), "flag") << net.dump();
    EXPECT_EQ(net.value("parameterization_source", ""), "default") << net.dump();
    EXPECT_EQ(net.value("file", ""), path) << net.dump();
  }
  // Activation from the file's metadata.
  const std::string meta = write_raw("meta.safetensors", raw_safetensors({f32_tensor("0.weight", {3, 2}, {1, 2, 3, 4, 5, 6}),
                                                                          f32_tensor("1.weight", {1, 3}, {1, 1, 1})},
                                                                         {{"activation", "tanh"}}));
  const CliResult m = run({"ntk", "--model", meta, "--inputs", npy("x.npy", random_vector(4, 3), {2, 2}), "--dtype", "float32", "--quiet"});
  ASSERT_EQ(m.exit_code, 0) << m;
  EXPECT_EQ(m.json()["network"].value("activation_source", ""), "metadata") << m.out;
  EXPECT_FALSE(m.json()["network"].contains("converted_to")) << m.out;  // F32 computed in float32
}

TEST(CliModel, ClassLabelBeyondTheOutputsNamesTheFileRowAndValue) {
  // Needs the commands to call load_network with the Split.
  const std::string x = npy("x.npy", random_vector(12, 31), {6, 2});
  const std::string y = npy("y.npy", std::vector<std::int64_t>{0, 1, 2, 5, 1, 7}, {6});
  for (const std::string fraction : {"0", "0.5"}) {  // the split reorders rows; the message still names the file's row
    expect_usage_error(run({"ntk", "--arch", "2-4-3", "--inputs", x, "--targets", y, "--test-fraction", fraction, "--quiet"}),
                       {"--targets " + y, "class label 5 at row 3", "gives 3 outputs", "labels must be in [0, 3)",
                        "2 rows are not; the largest label is 7"});
  }
  const std::string out_dir = temp_path("run");
  expect_usage_error(run({"train", "--arch", "2-4-3", "--inputs", x, "--targets", y, "--steps", "1", "--out-dir", out_dir, "--quiet"}),
                     {"--targets " + y, "class label 5 at row 3"});
}

TEST(CliModel, FloatTargetsOfTheWrongWidthNameTheFileAndTheShapeExpected) {
  // Needs the commands to call load_network with the Split.
  const std::string x = npy("x.npy", random_vector(12, 41), {6, 2});
  const std::string labels_as_floats = npy("yf.npy", std::vector<double>{0, 1, 2, 1, 0, 2}, {6});
  expect_usage_error(run({"train", "--arch", "2-4-3", "--inputs", x, "--targets", labels_as_floats, "--steps", "1",
                          "--out-dir", temp_path("run"), "--quiet"}),
                     {"--targets " + labels_as_floats, "1 value per sample", "float64 [6]", "gives 3 outputs", "shape [N, 3]",
                      "whole numbers 0..2", "save them as integers"});
  std::vector<double> onehot(24, 0.0);
  for (int i = 0; i < 6; ++i) onehot[std::size_t(4 * i + i % 4)] = 1.0;
  const std::string y4 = npy("onehot.npy", onehot, {6, 4});
  expect_usage_error(run({"spectrum", "--operator", "hessian", "--arch", "2-4-3", "--inputs", x, "--targets", y4, "--k", "1", "--quiet"}),
                     {"--targets " + y4, "4 values per sample", "gives 3 outputs", "one-hot over 4 classes", "needs 4 outputs"});
  std::vector<double> onehot3(18, 0.0);
  for (int i = 0; i < 6; ++i) onehot3[std::size_t(3 * i + i % 3)] = 1.0;
  const std::string y3 = npy("onehot3.npy", onehot3, {6, 3});
  expect_usage_error(run({"spectrum", "--operator", "hessian", "--arch", "2-4-2", "--inputs", x, "--targets", y3, "--k", "1", "--quiet"}),
                     {"--targets " + y3, "3 values per sample", "gives 2 outputs", "shape [N, 2]", "needs 3 outputs"});
  expect_usage_error(run({"spectrum", "--operator", "hessian", "--arch", "2-4-5", "--inputs", x, "--targets", y3, "--k", "1", "--quiet"}),
                     {"--targets " + y3, "gives 5 outputs", "the rows are one-hot", "np.argmax(Y, 1)"});
}

TEST(CliModel, XentOnFloatTargetsNamesTheFile) {
  // Needs training_run.cpp / cmd_spectra.cpp to call check_loss_targets.
  const std::string x = npy("x.npy", random_vector(12, 51), {6, 2});
  const std::string y = npy("y.npy", std::vector<double>{0, 1, 0, 1, 1, 0}, {6});
  expect_usage_error(run({"train", "--arch", "2-4-1", "--inputs", x, "--targets", y, "--loss", "xent", "--steps", "1",
                          "--out-dir", temp_path("run"), "--quiet"}),
                     {"--loss xent needs integer class labels", "--targets " + y, "float64 [6]", "--loss mse"});
}

TEST(CliModel, SamplesIsCheckedAgainstWhatTheDataHolds) {
  const std::string x = npy("x.npy", random_vector(12, 61), {6, 2});
  expect_usage_error(run({"ntk", "--arch", "2-3-1", "--inputs", x, "--samples", "-1"}), {"--samples: must be an integer >= 0 (0 = all), got '-1'"});
  const CliResult huge = run({"ntk", "--arch", "2-3-1", "--inputs", x, "--samples", "99999999999999999999"});
  EXPECT_EQ(huge.exit_code, 2) << huge;
  EXPECT_NE(huge.err.find("--samples: must be an integer >= 0 (0 = all), got '99999999999999999999'"), std::string::npos) << huge;
  // Before: silently all 6.
  expect_usage_error(run({"ntk", "--arch", "2-3-1", "--inputs", x, "--samples", "50", "--quiet"}),
                     {"--samples 50: --inputs " + x + " holds 6 samples", "--samples 0 takes all"});
  expect_usage_error(run({"ntk", "--arch", "-8-", "--dataset", "modadd", "--samples", "600", "--quiet"}),
                     {"--samples 600: dataset 'modadd' holds 529 samples"});
  // Before: refused with a message about the library's "p^2", not the flag.
  expect_usage_error(run({"ntk", "--arch", "-8-", "--dataset", "modadd", "--samples", "100", "--quiet"}),
                     {"--samples 100: dataset 'modadd' always has all its 529 samples", "--test-fraction"});
  const CliResult all = run({"ntk", "--arch", "2-3-1", "--inputs", x, "--samples", "0", "--quiet"});
  ASSERT_EQ(all.exit_code, 0) << all;
  EXPECT_EQ(all.json()["shape"], nlohmann::json::array({6, 6}));
  const CliResult some = run({"ntk", "--arch", "2-3-1", "--inputs", x, "--samples", "4", "--quiet"});
  ASSERT_EQ(some.exit_code, 0) << some;
  EXPECT_EQ(some.json()["shape"], nlohmann::json::array({4, 4}));
  // Generators make any count.
  const CliResult gen = run({"ntk", "--arch", "-3-", "--dataset", "spirals", "--samples", "600", "--quiet"});
  ASSERT_EQ(gen.exit_code, 0) << gen;
  EXPECT_EQ(gen.json()["shape"], nlohmann::json::array({600, 600}));
}

TEST(CliModel, APresetSampleCountIsACapAndInputsReplaceAPresetDataset) {
  // The demo presets --dataset spirals --samples 512. Before: --inputs was ignored for spirals.
  std::vector<std::int64_t> labels(40);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = std::int64_t(i % 2);
  const std::string x = npy("x.npy", random_vector(80, 71), {40, 2}), y = npy("y.npy", labels, {40});
  const std::string dir = temp_path("demo");
  const CliResult r = run({"demo", "--inputs", x, "--targets", y, "--steps", "1", "--ntk-samples", "8", "--no-region-map", "--out-dir", dir, "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const auto report = nlohmann::json::parse(slurp(dir + "/report.json"), nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << slurp(dir + "/report.json");
  EXPECT_EQ(report["train_samples"].get<int>() + report["test_samples"].get<int>(), 40) << report.dump();
  // A count given on the command line is a demand.
  expect_usage_error(run({"demo", "--inputs", x, "--targets", y, "--samples", "50", "--out-dir", temp_path("demo2"), "--quiet"}),
                     {"--samples 50: --inputs " + x + " holds 40 samples"});
}

TEST(CliModel, NumericModelAndDataFlagsHaveCheckedRanges) {
  const StateDict sd;
  const std::vector<std::string> arch = {"ntk", "--arch", "3-4-1", "--inputs", sd.inputs, "--quiet"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = arch;
    a.insert(a.end(), extra.begin(), extra.end());
    return run(a);
  };
  expect_usage_error(with({"--init-scale", "0"}), {"--init-scale", "must be > 0, got 0"});
  expect_usage_error(with({"--init-scale", "-2"}), {"--init-scale", "must be > 0, got -2"});
  expect_usage_error(with({"--init-scale", "nan"}), {"--init-scale", "must be finite"});
  expect_usage_error(with({"--init-scale", "inf"}), {"--init-scale", "must be finite"});
  expect_usage_error(with({"--test-fraction", "1"}), {"--test-fraction", "must be in [0, 1)"});
  expect_usage_error(with({"--test-fraction", "-0.1"}), {"--test-fraction", "must be in [0, 1)"});
  expect_usage_error(with({"--test-fraction", "nan"}), {"--test-fraction", "must be in [0, 1)"});
  expect_usage_error(with({"--test-fraction", "0.95"}), {"--test-fraction", "holds out all 6 samples", "at least one"});
  expect_usage_error(with({"--parameterization", "mup"}), {"--parameterization", "mup"});
  // Flags of --arch that a --model file would silently ignore.
  expect_usage_error(run({"ntk", "--model", sd.path, "--inputs", sd.inputs, "--activation", "tanh", "--init-scale", "2"}),
                     {"--init-scale", "--model"});
  const CliResult ok = with({"--init-scale", "0.5", "--test-fraction", "0.5"});
  EXPECT_EQ(ok.exit_code, 0) << ok;
}

TEST(CliModel, SaveLogAddsLogSpacedCheckpointsToSaveEvery) {
  // 100 steps, --save-every 40, --save-log 4: round(100^(i/4)) = 3, 10, 32, 100.
  const std::string dir = temp_path("logrun");
  const CliResult r = run({"train", "--arch", "2-4-2", "--dataset", "spirals", "--samples", "32", "--steps", "100",
                           "--save-every", "40", "--save-log", "4", "--out-dir", dir, "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  const std::vector<std::string> expect{"step_0000000.safetensors", "step_0000003.safetensors", "step_0000010.safetensors",
                                        "step_0000032.safetensors", "step_0000040.safetensors", "step_0000080.safetensors",
                                        "step_0000100.safetensors"};
  EXPECT_EQ(files, expect);
  EXPECT_EQ(r.json().at("config").at("schedule").at("save_log"), 4);
  expect_usage_error(run({"train", "--arch", "2-4-2", "--steps", "10", "--save-log", "-1", "--out-dir", temp_path("neg"),
                          "--quiet"}),
                     {"--save-log"});
}

TEST(CliModel, HelpTextsPointAtTheUserDocumentation) {
  for (const std::string cmd : {"ntk", "train", "spectrum", "demo"}) {
    const CliResult r = run({cmd, "--help"});
    ASSERT_EQ(r.exit_code, 0) << r;
    for (const char* internal : {"IO.md", "DIAGNOSTICS.md", "DESIGN.md"})
      EXPECT_EQ(r.out.find(internal), std::string::npos) << cmd << " --help mentions " << internal << "\n" << r.out;
    EXPECT_NE(r.out.find("docs/cli.md"), std::string::npos) << cmd;
    EXPECT_NE(r.out.find("0 = all"), std::string::npos) << cmd << ": --samples 0 is documented";
    EXPECT_NE(r.out.find("--layers"), std::string::npos) << cmd;
  }
}

}  // namespace
}  // namespace dynascope::test
