// dynascope.train: the library's trainer (include/dynascope/train.hpp) on the caller's arrays.
// The parameters are trained in place in `out` (a copy of the model's parameters the Python layer
// allocated in the caller's framework), so the trained vector is never copied back; the data is
// copied once into the trainer's float64 dataset (data::Dataset), as the command-line tool does.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "dynascope/datasets.hpp"
#include "dynascope/model.hpp"
#include "dynascope/train.hpp"

namespace dynascope::python {

using namespace nb::literals;

namespace {

using LabelsIn = nb::ndarray<const std::int64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

template <class V>
nb::ndarray<nb::numpy, V> numpy_of(std::vector<V>&& v, std::initializer_list<std::size_t> shape) {
  auto* owner = new std::vector<V>(std::move(v));
  nb::capsule keep(owner, [](void* p) noexcept { delete static_cast<std::vector<V>*>(p); });
  return nb::ndarray<nb::numpy, V>(owner->data(), shape, keep);
}

// The trainer's dataset from the caller's arrays: inputs [N, D] and float targets [N, O] or
// integer labels [N] (classes = the network's outputs; the Python layer checks the range).
template <class T>
data::Dataset dataset_of(const In2<T>& x, const std::optional<In2<T>>& values, const std::optional<LabelsIn>& labels,
                         index_t outputs) {
  if (values.has_value() == labels.has_value())
    throw InvalidArgument("targets: give either float values [N, O] or integer class labels [N]");
  data::Dataset d;
  d.name = "x";
  d.n = static_cast<index_t>(x.shape(0));
  d.d = static_cast<index_t>(x.shape(1));
  d.x.assign(x.data(), x.data() + x.size());
  if (labels) {
    if (static_cast<index_t>(labels->shape(0)) != d.n)
      throw ShapeMismatch("targets: expected " + std::to_string(d.n) + " labels (one per row of x), got " +
                          std::to_string(labels->shape(0)));
    d.task = data::Task::classification;
    d.outputs = outputs;
    d.labels.assign(labels->data(), labels->data() + labels->size());
  } else {
    if (static_cast<index_t>(values->shape(0)) != d.n)
      throw ShapeMismatch("targets: expected " + std::to_string(d.n) + " rows (one per row of x), got " +
                          std::to_string(values->shape(0)));
    d.task = data::Task::regression;
    d.outputs = static_cast<index_t>(values->shape(1));
    d.y.assign(values->data(), values->data() + values->size());
  }
  return d;
}

template <class T>
nb::dict train(const model::MlpSpec& spec, In1<T> params, In2<T> x, std::optional<In2<T>> values,
               std::optional<LabelsIn> labels, const std::string& loss, const std::string& optimizer, double lr,
               double momentum, double beta1, double beta2, double eps, double weight_decay, index_t steps,
               index_t batch, std::uint64_t seed, index_t save_every, index_t save_log, int threads, nb::handle progress, Out1<T> out) {
  const index_t p = spec.num_params();
  if (static_cast<index_t>(params.shape(0)) != p || static_cast<index_t>(out.shape(0)) != p)
    throw ShapeMismatch("params: the network " + spec.arch_string() + " has " + std::to_string(p) +
                        " parameters, got " + std::to_string(params.shape(0)));
  if (steps < 0) throw InvalidArgument("steps: expected an integer >= 0, got " + std::to_string(steps));
  if (batch < 0) throw InvalidArgument("batch: expected an integer >= 0 (0 = full batch), got " + std::to_string(batch));
  if (save_every < 0)
    throw InvalidArgument("save_every: expected an integer >= 0 (0 = the first and last step only), got " +
                          std::to_string(save_every));
  if (save_log < 0)
    throw InvalidArgument("save_log: expected an integer >= 0 (0 = no log-spaced checkpoints), got " + std::to_string(save_log));
  const data::Dataset data = dataset_of<T>(x, values, labels, spec.outputs());
  if (batch > data.n)
    throw InvalidArgument("batch: " + std::to_string(batch) + " is larger than the " + std::to_string(data.n) +
                          " training samples");
  model::TrainOptions<T> options;
  options.loss = model::parse_loss(loss);
  options.optimizer.kind = model::parse_optimizer(optimizer);
  options.optimizer.lr = lr;
  options.optimizer.momentum = momentum;
  options.optimizer.beta1 = beta1;
  options.optimizer.beta2 = beta2;
  options.optimizer.eps = eps;
  options.optimizer.weight_decay = weight_decay;
  options.optimizer = options.optimizer.resolved();  // PyTorch's checks, with the message naming the value
  options.steps = steps;
  options.batch = batch;
  options.seed = seed;
  options.checkpoint_every = save_every;
  options.checkpoint_steps = model::log_spaced_steps(steps, save_log);

  // The network trains in the caller's output buffer (host memory the library does not own).
  if (out.data() != params.data()) std::memcpy(out.data(), params.data(), std::size_t(p) * sizeof(T));
  model::Mlp<T> net{spec, Array<T>(out.data(), {p}, Backend::host, nullptr), {}};

  std::vector<std::int64_t> record_step;
  std::vector<double> record_loss, record_accuracy;
  std::vector<std::int64_t> checkpoint_step;
  std::vector<T> checkpoint_params;
  std::vector<double> checkpoint_loss, checkpoint_accuracy;
  model::TrainResult result;
  Runner run(threads, progress);
  run([&](const Context& ctx) {
    const model::DeviceData<T> device_data = model::to_device<T>(ctx, data);
    model::MlpEngine<T> engine(ctx, spec);
    options.on_record = [&](const model::TrainRecord& r) {
      record_step.push_back(r.step);
      record_loss.push_back(r.loss);
      record_accuracy.push_back(r.accuracy);
    };
    options.on_checkpoint = [&](index_t step, const Array<T>& w) {
      checkpoint_step.push_back(step);
      checkpoint_params.insert(checkpoint_params.end(), w.data(), w.data() + p);
      const model::LossValue v = model::evaluate<T>(ctx, engine, w.data(), device_data, options.loss);
      checkpoint_loss.push_back(v.loss);
      checkpoint_accuracy.push_back(v.accuracy);
    };
    result = model::train<T>(ctx, net, data, options);
  });

  nb::dict r;
  const bool classify = data.task == data::Task::classification;
  const std::size_t records = record_step.size(), checkpoints = checkpoint_step.size();
  r["steps_done"] = result.steps;
  r["final_loss"] = result.final_loss;
  r["final_accuracy"] = classify ? nb::cast(result.final_accuracy) : nb::none();
  r["diverged"] = result.diverged;
  r["diverged_at_step"] = result.diverged ? nb::cast(result.diverged_at) : nb::none();
  r["step"] = numpy_of(std::move(record_step), {records});
  r["loss"] = numpy_of(std::move(record_loss), {records});
  r["accuracy"] = classify ? nb::cast(numpy_of(std::move(record_accuracy), {records})) : nb::none();
  r["checkpoint_step"] = numpy_of(std::move(checkpoint_step), {checkpoints});
  r["checkpoint_params"] = numpy_of(std::move(checkpoint_params), {checkpoints, std::size_t(p)});
  r["checkpoint_loss"] = numpy_of(std::move(checkpoint_loss), {checkpoints});
  r["checkpoint_accuracy"] =
      classify ? nb::cast(numpy_of(std::move(checkpoint_accuracy), {checkpoints})) : nb::none();
  nb::dict o;  // the optimizer with its defaults filled in, as the command-line tool records it
  o["kind"] = model::to_string(options.optimizer.kind);
  o["lr"] = options.optimizer.lr;
  o["momentum"] = options.optimizer.momentum;
  o["betas"] = nb::make_tuple(options.optimizer.beta1, options.optimizer.beta2);
  o["eps"] = options.optimizer.eps;
  o["weight_decay"] = options.optimizer.weight_decay;
  r["optimizer"] = o;
  return r;
}

}  // namespace

void register_train(nb::module_& m) {
  // float32 first, then float64: with noconvert, nanobind picks the overload matching the dtype.
  m.def("train", &train<float>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert(), "values"_a.noconvert().none(),
        "labels"_a.noconvert().none(), "loss"_a, "optimizer"_a, "lr"_a, "momentum"_a, "beta1"_a, "beta2"_a, "eps"_a,
        "weight_decay"_a, "steps"_a, "batch"_a, "seed"_a, "save_every"_a, "save_log"_a, "threads"_a, "progress"_a.none(),
        "out"_a.noconvert(),
        "Trains a copy of `params` in `out`; returns the history and the checkpoints as a dict.");
  m.def("train", &train<double>, "spec"_a, "params"_a.noconvert(), "x"_a.noconvert(), "values"_a.noconvert().none(),
        "labels"_a.noconvert().none(), "loss"_a, "optimizer"_a, "lr"_a, "momentum"_a, "beta1"_a, "beta2"_a, "eps"_a,
        "weight_decay"_a, "steps"_a, "batch"_a, "seed"_a, "save_every"_a, "save_log"_a, "threads"_a, "progress"_a.none(),
        "out"_a.noconvert());
}

}  // namespace dynascope::python
