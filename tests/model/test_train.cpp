// Training reduces the loss on each built-in dataset; modular addition is memorised. What is
// bit-reproducible: a rerun with the same options and thread count, and losses for any thread count.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "dynascope/train.hpp"
#include "model/model_test_util.hpp"

namespace dynascope {
namespace {

struct TrainRun {
  double first = 0, last = 0;
  model::TrainResult result;
};

TrainRun train_on(const std::string& dataset, const std::string& arch, model::Loss loss, model::OptimizerOptions opt,
             index_t steps, index_t batch, data::DatasetOptions dopt = {}) {
  Context ctx = Context::host();
  const data::Dataset ds = data::load_dataset(dataset, dopt);
  model::Mlp<float> net{model::MlpSpec::from_arch(arch, model::parse_activation("relu")), {}};
  net.params = model::init_params<float>(ctx, net.spec, {model::Init::pytorch, 1.0, 3});
  model::TrainOptions<float> to;
  to.loss = loss;
  to.optimizer = opt;
  to.steps = steps;
  to.batch = batch;
  to.seed = 4;
  TrainRun r;
  Context host = Context::host();
  model::MlpEngine<float> engine(host, net.spec);
  const auto dev = model::to_device<float>(host, ds);
  r.first = model::evaluate<float>(host, engine, net.params.data(), dev, loss).loss;
  r.result = model::train<float>(ctx, net, ds, to);
  r.last = r.result.final_loss;
  return r;
}

TEST(Train, TeacherStudentRegressionLossDrops) {
  model::OptimizerOptions o{model::OptimizerKind::adam};
  const TrainRun r = train_on("teacher", "16-64-1", model::Loss::mse, o, 300, 64);
  EXPECT_FALSE(r.result.diverged);
  EXPECT_LT(r.last, 0.3 * r.first);
}

TEST(Train, GaussianMixtureIsClassified) {
  model::OptimizerOptions o{model::OptimizerKind::momentum};
  const TrainRun r = train_on("gaussians", "8-32-4", model::Loss::xent, o, 200, 128);
  EXPECT_LT(r.last, 0.5 * r.first);
  EXPECT_GT(r.result.final_accuracy, 0.9);
}

TEST(Train, SpiralsAreSeparated) {
  model::OptimizerOptions o{model::OptimizerKind::adam};
  o.lr = 1e-2;
  const TrainRun r = train_on("spirals", "2-64-64-2", model::Loss::xent, o, 600, 0);
  EXPECT_LT(r.last, 0.3 * r.first);
  EXPECT_GT(r.result.final_accuracy, 0.95);
}

TEST(Train, ModularAdditionReachesFullTrainAccuracy) {
  model::OptimizerOptions o{model::OptimizerKind::adamw};
  o.lr = 3e-3;
  o.weight_decay = 0.0;
  data::DatasetOptions d;
  d.modulus = 11;
  const TrainRun r = train_on("modadd", "22-128-11", model::Loss::xent, o, 400, 0, d);
  EXPECT_EQ(r.result.final_accuracy, 1.0);
}

TEST(Train, SgdStepsAreRecordedAndCheckpointed) {
  Context ctx = Context::host();
  const data::Dataset ds = data::load_dataset("teacher", {.samples = 64, .seed = 1});
  model::Mlp<double> net{model::MlpSpec::from_arch("16-8-1", model::parse_activation("tanh")), {}};
  net.params = model::init_params<double>(ctx, net.spec, {});
  model::TrainOptions<double> to;
  to.steps = 10;
  to.batch = 16;
  to.checkpoint_every = 4;
  std::vector<index_t> records, checkpoints;
  to.on_record = [&](const model::TrainRecord& r) { records.push_back(r.step); };
  to.on_checkpoint = [&](index_t step, const Array<double>&) { checkpoints.push_back(step); };
  const auto res = model::train<double>(ctx, net, ds, to);
  EXPECT_EQ(res.steps, 10);
  EXPECT_EQ(records.size(), 10u);
  EXPECT_EQ(checkpoints, (std::vector<index_t>{0, 4, 8, 10}));
}

TEST(Train, ExtraCheckpointStepsJoinTheIntervalOnceEachInOrder) {
  Context ctx = Context::host();
  const data::Dataset ds = data::load_dataset("teacher", {.samples = 32, .seed = 1});
  model::Mlp<double> net{model::MlpSpec::from_arch("16-4-1", model::parse_activation("tanh")), {}};
  net.params = model::init_params<double>(ctx, net.spec, {});
  model::TrainOptions<double> to;
  to.steps = 10;
  to.checkpoint_every = 4;
  to.checkpoint_steps = {3, 8, 1, 3, 10};  // 8 is an interval step as well, 10 the end
  std::vector<index_t> checkpoints;
  to.on_checkpoint = [&](index_t step, const Array<double>&) { checkpoints.push_back(step); };
  model::train<double>(ctx, net, ds, to);
  EXPECT_EQ(checkpoints, (std::vector<index_t>{0, 1, 3, 4, 8, 10}));
  for (index_t bad : {index_t(0), index_t(11), index_t(-2)}) {
    to.checkpoint_steps = {bad};
    EXPECT_THROW(model::train<double>(ctx, net, ds, to), InvalidArgument) << bad;
  }
}

TEST(Train, LogSpacedStepsAreRoundedPowersOfTheLastStep) {
  // round(10000^(i/4)) = 10, 100, 1000, 10000: exact powers.
  EXPECT_EQ(model::log_spaced_steps(10000, 4), (std::vector<index_t>{10, 100, 1000, 10000}));
  // Against the formula in double precision, repeats dropped.
  for (index_t steps : {index_t(1), index_t(7), index_t(600), index_t(10000)})
    for (index_t count : {index_t(1), index_t(5), index_t(16), index_t(40)}) {
      std::vector<index_t> expect;
      for (index_t i = 1; i <= count; ++i) {
        const auto s = static_cast<index_t>(std::llround(std::pow(double(steps), double(i) / double(count))));
        if (expect.empty() || s > expect.back()) expect.push_back(s);
      }
      EXPECT_EQ(model::log_spaced_steps(steps, count), expect) << steps << " " << count;
    }
  EXPECT_TRUE(model::log_spaced_steps(0, 5).empty());
  EXPECT_TRUE(model::log_spaced_steps(100, 0).empty());
  EXPECT_THROW(model::log_spaced_steps(-1, 3), InvalidArgument);
}

TEST(Train, DivergenceIsReportedNotThrown) {
  Context ctx = Context::host();
  const data::Dataset ds = data::load_dataset("teacher", {.samples = 64, .seed = 1});
  model::Mlp<double> net{model::MlpSpec::from_arch("16-32-1", model::parse_activation("relu")), {}};
  net.params = model::init_params<double>(ctx, net.spec, {model::Init::pytorch, 30.0, 1});
  model::TrainOptions<double> to;
  to.steps = 200;
  to.optimizer.lr = 10.0;
  const auto res = model::train<double>(ctx, net, ds, to);
  EXPECT_TRUE(res.diverged);
  EXPECT_GE(res.diverged_at, 0);
}

TEST(Train, MismatchedDatasetAndNetworkAreClearErrors) {
  Context ctx = Context::host();
  const data::Dataset ds = data::load_dataset("gaussians");
  model::Mlp<float> net{model::MlpSpec::from_arch("5-4"), {}};
  net.params = model::init_params<float>(ctx, net.spec, {});
  EXPECT_THROW(model::train<float>(ctx, net, ds, {}), ShapeMismatch);
  model::Mlp<float> reg{model::MlpSpec::from_arch("16-1"), {}};
  reg.params = model::init_params<float>(ctx, reg.spec, {});
  model::TrainOptions<float> to;
  to.loss = model::Loss::xent;
  EXPECT_THROW(model::train<float>(ctx, reg, data::load_dataset("teacher"), to), InvalidArgument);
}

// The same options, data and thread count give the same bits: Philox minibatches, static OpenMP
// schedules, OpenBLAS's fixed partitions of each product and ordered reductions leave nothing to
// chance. (Other thread counts or BLAS kernels agree only to rounding.)
TEST(Train, ARerunReproducesEveryBit) {
  const data::Dataset ds = data::load_dataset("spirals", {.samples = 256, .seed = 2});
  std::vector<std::vector<float>> params;
  std::vector<double> losses;
  for (int run = 0; run < 2; ++run) {
    Context ctx = Context::host(2);
    model::Mlp<float> net{model::MlpSpec::from_arch("2-64-64-2", model::parse_activation("tanh")), {}};
    net.params = model::init_params<float>(ctx, net.spec, {model::Init::pytorch, 1.0, 3});
    model::TrainOptions<float> to;
    to.loss = model::Loss::xent;
    to.optimizer.kind = model::OptimizerKind::adam;
    to.steps = 25;
    to.batch = 64;
    to.seed = 5;
    losses.push_back(model::train<float>(ctx, net, ds, to).final_loss);
    params.emplace_back(net.params.data(), net.params.data() + net.params.size());
  }
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(params[0], params[1]);
}

// A loss is one per-sample kernel and the ordered blocked sum of reduce_sum: value, accuracy and
// gradient are the same bits for every thread count (several reduction blocks here).
TEST(Loss, ValueAccuracyAndGradientDoNotDependOnThreadCount) {
  const index_t n = 3 * 4096 + 5, o = 7;
  const auto f = test::random_vector(std::size_t(n * o), 31, 3.0), y = test::random_vector(std::size_t(n * o), 32);
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) labels[std::size_t(i)] = (i * 5 + i / 7) % o;
  for (model::Loss loss : {model::Loss::mse, model::Loss::xent}) {
    model::Targets<double> t;
    if (loss == model::Loss::xent) t.labels = {labels.data(), n, 1};
    else t.values = {y.data(), n, o, o};
    std::vector<model::LossValue> values;
    std::vector<std::vector<double>> grads;
    for (int threads : {1, 2, 3}) {
      grads.emplace_back(std::size_t(n * o));
      values.push_back(model::loss_and_grad<double>(Context::host(threads), loss, {f.data(), n, o, o}, t,
                                                    {grads.back().data(), n, o, o}));
    }
    for (std::size_t k = 1; k < values.size(); ++k) {
      EXPECT_EQ(values[k].loss, values[0].loss) << model::to_string(loss);
      EXPECT_EQ(values[k].accuracy, values[0].accuracy) << model::to_string(loss);
      EXPECT_EQ(grads[k], grads[0]) << model::to_string(loss);
    }
  }
}

}  // namespace
}  // namespace dynascope
