// dynascope lc and dynascope regions on a network whose regions are known in closed form: the
// first layer holds the lines x = k and y = k (k = -2..2), so the square [-3, 3]^2 is cut into a
// 6 x 6 grid of cells, the segment y = 0.5 crosses 6 of them, and at x = 0 a cross-polytope of
// radius 1.5 along the axes crosses 3 lines per axis.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cli/cli_test_util.hpp"
#include "dynascope/io.hpp"
#include "model/checkpoint_test_util.hpp"

namespace dynascope::test {
namespace {

// nn.Sequential(Linear(2, 10), ReLU(), Linear(10, 2)) as a PyTorch state dict: neurons x - k and
// y - k; the two outputs are the sums of the x and the y neurons.
std::string grid_network() {
  std::vector<double> w0(20, 0.0), b0(10, 0.0), w2(20, 0.0), b2{0.0, 0.1};
  for (int k = -2; k <= 2; ++k) {
    w0[std::size_t(2 * (k + 2))] = 1;
    w0[std::size_t(2 * (k + 7) + 1)] = 1;
    b0[std::size_t(k + 2)] = -k;
    b0[std::size_t(k + 7)] = -k;
  }
  for (int j = 0; j < 5; ++j) {
    w2[std::size_t(j)] = 1;
    w2[std::size_t(10 + 5 + j)] = 1;
  }
  return write_raw("grid.safetensors", raw_safetensors({f32_tensor("0.weight", {10, 2}, w0), f32_tensor("0.bias", {10}, b0),
                                                        f32_tensor("2.weight", {2, 10}, w2), f32_tensor("2.bias", {2}, b2)}));
}

TEST(CliRegions, LocalComplexityOfTheKnownArrangement) {
  const std::string net = grid_network();
  const std::string x = npy<double>("x0.npy", {0.0, 0.0, 10.0, 10.0}, {2, 2});
  const std::string frame = npy<double>("eye.npy", {1, 0, 0, 1}, {2, 2});
  const std::string counts = temp_path("counts.npy");
  const CliResult r = run({"lc", "--model", net, "--activation", "relu", "--inputs", x, "--radius", "1.5", "--frame", frame,
                           "--out-counts", counts, "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const auto j = r.json();
  // Sample 0 (the origin) crosses 6 lines, sample 1 (far away) none.
  EXPECT_DOUBLE_EQ(j["per_layer_mean"][0].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(j["total_mean"].get<double>(), 3.0);
  const io::Tensor t = io::read_npy(counts);
  ASSERT_EQ(t.shape, (Shape{2, 2}));
  const auto c = t.to_vector<std::int32_t>();
  EXPECT_EQ(c[0], 6);
  EXPECT_EQ(c[2], 0);
}

TEST(CliRegions, LocalComplexityAlongTraining) {
  const std::string dir = temp_path("run");
  const CliResult train = run({"train", "--dataset", "spirals", "--samples", "120", "--arch", "2-16-16-2", "--steps", "60",
                               "--save-every", "20", "--test-fraction", "0.25", "--out-dir", dir, "--quiet"});
  ASSERT_EQ(train.exit_code, 0) << train;
  const std::string csv = temp_path("lc.csv");
  const CliResult r = run({"lc", "--checkpoints", dir, "--dataset", "spirals", "--samples", "120", "--test-fraction", "0.25",
                           "--radius", "0.1", "--dims", "2", "--random-points", "50", "--out-csv", csv, "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_EQ(r.json()["checkpoints"].get<int>(), 4);  // steps 0, 20, 40, 60
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "step,points,samples,total_mean,all_layers_mean,layer1,layer2,layer3");
  std::vector<std::string> rows;
  while (std::getline(in, line)) rows.push_back(line);
  ASSERT_EQ(rows.size(), 12u);
  EXPECT_EQ(rows[0].rfind("0,train,90,", 0), 0u) << rows[0];
  EXPECT_EQ(rows[1].rfind("0,test,30,", 0), 0u) << rows[1];
  EXPECT_EQ(rows[2].rfind("0,random,50,", 0), 0u) << rows[2];
  EXPECT_EQ(rows[11].rfind("60,random,50,", 0), 0u) << rows[11];
}

TEST(CliRegions, DistinctPatternsExactRegionsAndTheMap) {
  const std::string net = grid_network();
  const std::string plane = npy<double>("plane.npy", {-3, -3, 3, -3, -3, 3}, {3, 2});
  const std::string image = temp_path("map.png");
  const std::string ids = temp_path("ids.npy");
  const std::string x = npy<double>("pts.npy", {0.5, 0.5, -1.2, 2.5, 9, 9}, {3, 2});
  const CliResult r = run({"regions", "--model", net, "--activation", "relu", "--plane", plane, "--resolution", "120",
                           "--exact-2d", "--image", image, "--inputs", x, "--out-ids", ids, "--quiet"});
  ASSERT_EQ(r.exit_code, 0) << r;
  const auto j = r.json();
  EXPECT_EQ(j["regions"].get<int>(), 36);
  EXPECT_EQ(j["distinct"].get<int>(), 36);  // every cell holds grid points at this resolution
  EXPECT_EQ(j["samples"].get<int>(), 120 * 120);
  EXPECT_EQ(j["points_drawn"].get<int>(), 2);  // (9, 9) lies outside the square
  // Output 1 (sum of the y neurons + 0.1) beats output 0 where relu-sums differ: the boundary
  // x = y crosses the cells of the diagonal and their neighbours' corners only.
  EXPECT_GT(j["boundary_regions"].get<int>(), 0);
  const io::Tensor t = io::read_npy(ids);
  EXPECT_EQ(t.shape, (Shape{120 * 120}));
  const std::string png = slurp(image);
  ASSERT_GT(png.size(), 33u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  const auto be32 = [&](std::size_t at) {
    return (unsigned(std::uint8_t(png[at])) << 24) | (unsigned(std::uint8_t(png[at + 1])) << 16) |
           (unsigned(std::uint8_t(png[at + 2])) << 8) | unsigned(std::uint8_t(png[at + 3]));
  };
  EXPECT_EQ(be32(16), 120u);  // IHDR width
  EXPECT_EQ(be32(20), 120u);  // IHDR height

  const std::string seg = npy<double>("seg.npy", {-3, 0.5, 3, 0.5}, {2, 2});
  const CliResult s = run({"regions", "--model", net, "--activation", "relu", "--segment", seg, "--exact", "--quiet"});
  ASSERT_EQ(s.exit_code, 0) << s;
  const auto sj = s.json();
  EXPECT_EQ(sj["regions"].get<int>(), 6);
  ASSERT_EQ(sj["breakpoints"].size(), 5u);
  for (int k = 0; k < 5; ++k) EXPECT_NEAR(sj["breakpoints"][std::size_t(k)].get<double>(), (k + 1) / 6.0, 1e-12);
  EXPECT_EQ(sj["distinct"].get<int>(), 6);  // 10000 evenly spaced points hit every interval

  const std::string anchors = npy<double>("anchors.npy", {0.5, 0.5, 0, 0}, {2, 2});
  const CliResult b = run({"regions", "--model", net, "--activation", "relu", "--around", anchors, "--radius", "0.4",
                           "--count", "2000", "--quiet"});
  ASSERT_EQ(b.exit_code, 0) << b;
  // Around (0.5, 0.5) the ball stays in one cell; around the origin it meets 4 cells.
  EXPECT_EQ(b.json()["distinct"].get<int>(), 4);
  // The cross-polytope (a rotated diamond inside the same balls) meets the same cells.
  const CliResult cp = run({"regions", "--model", net, "--activation", "relu", "--around", anchors, "--radius", "0.4",
                            "--count", "2000", "--shape", "cross-polytope", "--dims", "2", "--quiet"});
  ASSERT_EQ(cp.exit_code, 0) << cp;
  EXPECT_EQ(cp.json()["distinct"].get<int>(), 4);
  EXPECT_EQ(cp.json()["sampler"].get<std::string>(), "cross-polytope");
}

TEST(CliRegions, BadUsageIsRefusedBeforeAnyWork) {
  const std::string net = grid_network();
  const std::string plane = npy<double>("plane2.npy", {-3, -3, 3, -3, -3, 3}, {3, 2});
  const std::string seg = npy<double>("seg2.npy", {-3, 0.5, 3, 0.5}, {2, 2});
  const std::string x = npy<double>("x2.npy", {0.0, 0.0}, {1, 2});
  const std::string frame = npy<double>("f2.npy", {1, 0}, {1, 2});
  const std::vector<std::string> m{"--model", net, "--activation", "relu", "--quiet"};
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), m.begin(), m.end());
    return run(a);
  };
  expect_usage_error(with({"regions", "--plane", plane, "--segment", seg}), {"exactly one of"});
  expect_usage_error(with({"regions", "--plane", plane, "--exact"}), {"--exact", "--segment"});
  expect_usage_error(with({"regions", "--segment", seg, "--image", temp_path("m.png")}), {"--image", "--plane"});
  expect_usage_error(with({"regions", "--segment", seg, "--resolution", "64"}), {"--resolution"});
  expect_usage_error(with({"regions", "--segment", seg, "--shape", "ball"}), {"--shape"});
  expect_usage_error(with({"regions", "--around", x, "--radius", "1", "--count", "5", "--dims", "2"}), {"--dims"});
  expect_usage_error(with({"regions", "--around", x, "--radius", "1", "--count", "5", "--shape", "cube"}), {"--shape"});
  expect_usage_error(with({"regions", "--plane", npy<double>("bad.npy", {0, 0, 1, 1}, {2, 2})}), {"--plane", "[3, 2]"});
  expect_usage_error(with({"regions", "--plane", npy<double>("col.npy", {0, 0, 1, 1, 2, 2}, {3, 2}), "--exact-2d"}),
                     {"collinear"});
  expect_usage_error(with({"regions", "--plane", plane, "--exact-2d", "--max-regions", "10"}), {"more than 10 regions"});
  expect_usage_error(with({"lc", "--inputs", x, "--radius", "1", "--frame", frame, "--frame-per-sample"}),
                     {"--frame", "--frame-per-sample"});
  expect_usage_error(with({"lc", "--inputs", x, "--radius", "1", "--dims", "3"}), {"--dims 3", "input width 2"});
  expect_usage_error(with({"lc", "--inputs", x, "--radius", "0"}), {"--radius"});
  expect_usage_error(with({"lc", "--inputs", x}), {"--radius"});
  expect_usage_error(run({"lc", "--checkpoints", temp_path(""), "--inputs", x, "--radius", "1", "--quiet"}), {"--out-csv"});
  const std::string empty_run = temp_path("empty-run");
  std::filesystem::create_directories(empty_run);
  expect_usage_error(run({"lc", "--checkpoints", empty_run, "--inputs", x, "--radius", "1", "--out-csv", temp_path("a.csv"),
                          "--quiet"}),
                     {"no step_*.safetensors"});
  const CliResult tanh = run({"regions", "--model", net, "--activation", "tanh", "--segment", seg, "--exact", "--quiet"});
  expect_usage_error(tanh, {"piecewise-linear"});
}

}  // namespace
}  // namespace dynascope::test
