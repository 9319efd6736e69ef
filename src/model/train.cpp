// Optimizers and the trainer (the losses are in losses.cpp).
#include "dynascope/train.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/checks.hpp"
#include "dynascope/random.hpp"
#include "kernels/launch.cuh"
#include "kernels/math.cuh"

namespace dynascope::model {

OptimizerKind parse_optimizer(const std::string& text) { return parse_name(optimizer_names, text); }
const char* to_string(OptimizerKind k) noexcept { return name_of(optimizer_names, k); }

OptimizerOptions OptimizerOptions::resolved() const {
  OptimizerOptions o = *this;
  const bool adam_like = kind == OptimizerKind::adam || kind == OptimizerKind::adamw;
  if (std::isnan(o.lr)) o.lr = adam_like ? 1e-3 : 1e-2;
  if (std::isnan(o.momentum)) o.momentum = kind == OptimizerKind::momentum ? 0.9 : 0.0;
  if (std::isnan(o.weight_decay)) o.weight_decay = kind == OptimizerKind::adamw ? 1e-2 : 0.0;
  // PyTorch's checks (torch.optim.SGD / Adam / AdamW), plus finiteness.
  const auto value = [](double v) { return std::to_string(v); };
  if (!(o.lr >= 0) || !std::isfinite(o.lr))
    throw InvalidArgument("--lr: the learning rate must be >= 0 and finite, got " + value(o.lr));
  if (!(o.momentum >= 0) || !std::isfinite(o.momentum))
    throw InvalidArgument("--momentum: must be >= 0 and finite, got " + value(o.momentum));
  if (!(o.beta1 >= 0 && o.beta1 < 1)) throw InvalidArgument("--betas: beta1 must be in [0, 1), got " + value(o.beta1));
  if (!(o.beta2 >= 0 && o.beta2 < 1)) throw InvalidArgument("--betas: beta2 must be in [0, 1), got " + value(o.beta2));
  if (!(o.eps >= 0) || !std::isfinite(o.eps)) throw InvalidArgument("--eps: must be >= 0 and finite, got " + value(o.eps));
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay))
    throw InvalidArgument("--weight-decay: must be >= 0 and finite, got " + value(o.weight_decay));
  return o;
}

template <class T>
Optimizer<T>::Optimizer(const Context& ctx, const OptimizerOptions& options, index_t params)
    : ctx_(ctx), opts_(options.resolved()), n_(params) {
  if (params <= 0) throw InvalidArgument("Optimizer: needs at least one parameter");
  if (opts_.kind == OptimizerKind::momentum) m_ = Array<T>::zeros(ctx, {params});
  if (opts_.kind == OptimizerKind::adam || opts_.kind == OptimizerKind::adamw) {
    m_ = Array<T>::zeros(ctx, {params});
    v_ = Array<T>::zeros(ctx, {params});
  }
}

template <class T>
void Optimizer<T>::step(T* p, const T* grad) {
  ++t_;
  const OptimizerOptions& o = opts_;
  const T lr = T(o.lr), wd = T(o.weight_decay), mu = T(o.momentum);
  switch (o.kind) {
    case OptimizerKind::sgd:
      kern::parallel_for(ctx_, n_, [=] DYNASCOPE_HD(index_t i) { p[i] -= lr * (grad[i] + wd * p[i]); });
      break;
    case OptimizerKind::momentum: {
      T* buf = m_.data();
      kern::parallel_for(ctx_, n_, [=] DYNASCOPE_HD(index_t i) {
        const T g = grad[i] + wd * p[i];
        buf[i] = mu * buf[i] + g;
        p[i] -= lr * buf[i];
      });
      break;
    }
    case OptimizerKind::adam:
    case OptimizerKind::adamw: {
      const bool decoupled = o.kind == OptimizerKind::adamw;
      const T b1 = T(o.beta1), b2 = T(o.beta2), eps = T(o.eps);
      const double td = double(t_);
      const T step_size = T(o.lr / (1.0 - std::pow(o.beta1, td)));
      const T bc2_sqrt = T(std::sqrt(1.0 - std::pow(o.beta2, td)));
      T* m = m_.data();
      T* v = v_.data();
      kern::parallel_for(ctx_, n_, [=] DYNASCOPE_HD(index_t i) {
        T pi = p[i];
        T g = grad[i];
        if (decoupled) pi *= T(1) - lr * wd;
        else g += wd * pi;
        m[i] = b1 * m[i] + (T(1) - b1) * g;
        v[i] = b2 * v[i] + (T(1) - b2) * g * g;
        p[i] = pi - step_size * m[i] / (kern::sqrt(v[i]) / bc2_sqrt + eps);
      });
      break;
    }
  }
}

template <class T>
Targets<T> DeviceData<T>::targets() const {
  return targets(0, n);
}

template <class T>
Targets<T> DeviceData<T>::targets(index_t row0, index_t rows) const {
  Targets<T> t;
  if (!labels.empty()) t.labels = {labels.data() + row0, rows, 1, labels.backend(), labels.device()};
  else {
    const index_t o = y.empty() ? 0 : y.size() / n;
    t.values = {y.data() + row0 * o, rows, o, o, y.backend(), y.device()};
  }
  return t;
}

template <class T>
DeviceData<T> to_device(const Context& ctx, const data::Dataset& ds) {
  if (ds.n <= 0 || ds.d <= 0) throw InvalidArgument("dataset '" + ds.name + "' is empty");
  DeviceData<T> out;
  out.n = ds.n;
  std::vector<T> x(ds.x.begin(), ds.x.end());
  out.x = Array<T>(ctx, {ds.n, ds.d});
  detail::copy_bytes(ctx, out.x.data(), out.x.backend(), x.data(), Backend::host, out.x.bytes());
  if (!ds.targets_present()) return out;
  if (ds.task == data::Task::classification) {
    out.labels = Array<std::int64_t>(ctx, {ds.n});
    detail::copy_bytes(ctx, out.labels.data(), out.labels.backend(), ds.labels.data(), Backend::host, out.labels.bytes());
  } else {
    std::vector<T> y(ds.y.begin(), ds.y.end());
    out.y = Array<T>(ctx, {ds.n, ds.outputs});
    detail::copy_bytes(ctx, out.y.data(), out.y.backend(), y.data(), Backend::host, out.y.bytes());
  }
  return out;
}

template <class T>
LossValue evaluate(const Context& ctx, MlpEngine<T>& engine, const T* params, const DeviceData<T>& data, Loss loss) {
  const MlpSpec& spec = engine.spec();
  index_t per_sample = 0;
  for (index_t w : spec.widths) per_sample += 2 * w;
  const index_t tile = std::max<index_t>(1, std::min<index_t>(data.n, index_t(ctx.workspace_budget() / (sizeof(T) * std::size_t(per_sample)))));
  double loss_sum = 0, correct = 0;
  bool labels = false;
  for (index_t r0 = 0; r0 < data.n; r0 += tile) {
    const index_t m = std::min(tile, data.n - r0);
    MatrixView<const T> x{data.x.data() + r0 * spec.inputs(), m, spec.inputs(), spec.inputs(), data.x.backend(), data.x.device()};
    MatrixView<const T> f = engine.forward(params, x);
    const LossValue v = loss_and_grad<T>(ctx, loss, f, data.targets(r0, m));
    loss_sum += v.loss * double(m);
    if (v.accuracy >= 0) {
      labels = true;
      correct += v.accuracy * double(m);
    }
  }
  return {loss_sum / double(data.n), labels ? correct / double(data.n) : -1.0};
}

template <class T>
TrainResult train(const Context& ctx, Mlp<T>& net, const data::Dataset& ds, const TrainOptions<T>& options) {
  const MlpSpec& spec = net.spec;
  spec.validate();
  if (ds.d != spec.inputs())
    throw ShapeMismatch("train: dataset '" + ds.name + "' has " + std::to_string(ds.d) + " inputs, the network " + spec.arch_string() +
                        " takes " + std::to_string(spec.inputs()));
  if (ds.task == data::Task::regression && ds.outputs != spec.outputs())
    throw ShapeMismatch("train: dataset '" + ds.name + "' has " + std::to_string(ds.outputs) + " targets per sample, the network gives " +
                        std::to_string(spec.outputs()));
  if (ds.task == data::Task::classification && ds.outputs > spec.outputs())
    throw ShapeMismatch("train: dataset '" + ds.name + "' has " + std::to_string(ds.outputs) + " classes, the network gives " +
                        std::to_string(spec.outputs()) + " outputs");
  if (options.loss == Loss::xent && ds.task != data::Task::classification)
    throw InvalidArgument("train: loss xent needs a classification dataset ('" + ds.name + "' is regression)");
  if (net.params.size() != spec.num_params()) throw ShapeMismatch("train: parameter vector does not fit the spec");
  detail::require_on_context(ctx, net.params.vector(), "train", "the parameter vector");
  if (options.steps < 0 || options.batch < 0 || options.checkpoint_every < 0)
    throw InvalidArgument("train: steps, batch and checkpoint interval must be >= 0");
  // One flag per step: a checkpoint after this many updates (the end is always one).
  std::vector<char> checkpoint_at(static_cast<std::size_t>(options.steps) + 1, 0);
  if (options.checkpoint_every > 0)
    for (index_t s = options.checkpoint_every; s <= options.steps; s += options.checkpoint_every) checkpoint_at[s] = 1;
  for (index_t s : options.checkpoint_steps) {
    if (s < 1 || s > options.steps)
      throw InvalidArgument("train: checkpoint step " + std::to_string(s) + " is outside 1.." + std::to_string(options.steps));
    checkpoint_at[s] = 1;
  }

  const DeviceData<T> full = to_device<T>(ctx, ds);
  const index_t n = ds.n, d = ds.d, o = spec.outputs();
  const index_t batch = options.batch == 0 ? n : std::min(options.batch, n);
  const bool full_batch = batch == n;
  MlpEngine<T> engine(ctx, spec);
  Optimizer<T> opt(ctx, options.optimizer, spec.num_params());
  Array<T> grad(ctx, {1, spec.num_params()});
  Array<T> cot(ctx, {batch, o});
  Array<T> xb, yb;
  Array<std::int64_t> lb, perm;
  if (!full_batch) {
    xb = Array<T>(ctx, {batch, d});
    if (!full.labels.empty()) lb = Array<std::int64_t>(ctx, {batch});
    else yb = Array<T>(ctx, {batch, o});
    perm = Array<std::int64_t>(ctx, {n});
  }
  const index_t batches_per_epoch = (n + batch - 1) / batch;
  std::vector<double> keys(static_cast<std::size_t>(n));
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));

  TrainResult result;
  if (options.on_checkpoint) options.on_checkpoint(0, net.params);
  for (index_t step = 0; step < options.steps; ++step) {
    index_t rows = batch;
    MatrixView<const T> x = full.x.matrix();
    Targets<T> tg = full.targets();
    if (!full_batch) {
      const index_t epoch = step / batches_per_epoch, pos = step % batches_per_epoch;
      if (pos == 0) {
        // A fresh permutation each epoch: sort Philox keys (seed, epoch).
        random::fill_uniform<double>(Context::host(), {options.seed, 0x7261696eu, static_cast<std::uint32_t>(epoch)},
                                     vector_view(keys.data(), n));
        std::iota(order.begin(), order.end(), std::int64_t{0});
        std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return keys[std::size_t(a)] < keys[std::size_t(b)]; });
        detail::copy_bytes(ctx, perm.data(), perm.backend(), order.data(), Backend::host, perm.bytes());
      }
      const index_t r0 = pos * batch;
      rows = std::min(batch, n - r0);
      const std::int64_t* idx = perm.data() + r0;
      const T* src = full.x.data();
      T* dst = xb.data();
      kern::parallel_for(ctx, rows * d, [=] DYNASCOPE_HD(index_t e) { dst[e] = src[idx[e / d] * d + e % d]; });
      x = {xb.data(), rows, d, d, xb.backend(), xb.device()};
      if (!full.labels.empty()) {
        const std::int64_t* ls = full.labels.data();
        std::int64_t* ld = lb.data();
        kern::parallel_for(ctx, rows, [=] DYNASCOPE_HD(index_t e) { ld[e] = ls[idx[e]]; });
        tg = Targets<T>{};
        tg.labels = {lb.data(), rows, 1, lb.backend(), lb.device()};
      } else {
        const T* ys = full.y.data();
        T* ydst = yb.data();
        kern::parallel_for(ctx, rows * o, [=] DYNASCOPE_HD(index_t e) { ydst[e] = ys[idx[e / o] * o + e % o]; });
        tg = Targets<T>{};
        tg.values = {yb.data(), rows, o, o, yb.backend(), yb.device()};
      }
    }
    MatrixView<const T> f = engine.forward(net.params.data(), x);
    MatrixView<T> g{cot.data(), rows, o, o, cot.backend(), cot.device()};
    const LossValue lv = loss_and_grad<T>(ctx, options.loss, f, tg, g);
    if (options.on_record) options.on_record({step, lv.loss, lv.accuracy});
    if (!std::isfinite(lv.loss)) {
      result.diverged = true;
      result.diverged_at = step;
      break;
    }
    engine.backprop(net.params.data(), g);
    engine.param_grads(grad.matrix());
    opt.step(net.params.data(), grad.data());
    result.steps = step + 1;
    ctx.progress("train", step + 1, options.steps);
    if (options.on_checkpoint && checkpoint_at[step + 1] && step + 1 != options.steps)
      options.on_checkpoint(step + 1, net.params);
  }
  const LossValue final_value = evaluate<T>(ctx, engine, net.params.data(), full, options.loss);
  result.final_loss = final_value.loss;
  result.final_accuracy = final_value.accuracy;
  if (!std::isfinite(result.final_loss) && !result.diverged) {
    result.diverged = true;
    result.diverged_at = result.steps;
  }
  if (options.on_checkpoint && result.steps > 0) options.on_checkpoint(result.steps, net.params);
  return result;
}

std::vector<index_t> log_spaced_steps(index_t steps, index_t count) {
  if (steps < 0 || count < 0) throw InvalidArgument("log_spaced_steps: steps and count must be >= 0");
  std::vector<index_t> out;
  if (steps == 0 || count == 0) return out;
  const double log_steps = std::log(static_cast<double>(steps));
  for (index_t i = 1; i <= count; ++i) {
    // The last one is exactly `steps` (no rounding of exp(log(steps))).
    const index_t s = i == count ? steps
                                 : std::clamp<index_t>(static_cast<index_t>(std::llround(std::exp(log_steps * static_cast<double>(i) / static_cast<double>(count)))), 1, steps);
    if (out.empty() || s > out.back()) out.push_back(s);
  }
  return out;
}

#define DS_INSTANTIATE(T)                                                                                          \
  template class Optimizer<T>;                                                                                     \
  template struct DeviceData<T>;                                                                                   \
  template DeviceData<T> to_device<T>(const Context&, const data::Dataset&);                                       \
  template LossValue evaluate<T>(const Context&, MlpEngine<T>&, const T*, const DeviceData<T>&, Loss);             \
  template TrainResult train<T>(const Context&, Mlp<T>&, const data::Dataset&, const TrainOptions<T>&);
DS_INSTANTIATE(float)
DS_INSTANTIATE(double)
#undef DS_INSTANTIATE

}  // namespace dynascope::model
