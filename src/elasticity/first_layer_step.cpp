// The step form's first-layer shortcut (first_layer_step.hpp): z_1 of the stepped networks from
// z_1 of the network and a rank-one correction per set, then the tail's batched forward.
//
// A kernel source: the corrections and the first activation are one elementwise pass on the
// context's backend (the activation functors of kernels/activation.cuh, as the engines use).
#include "elasticity/first_layer_step.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/buffer.hpp"
#include "core/checks.hpp"
#include "dynascope/batched_engine.hpp"
#include "dynascope/blas.hpp"
#include "kernels/activation.cuh"
#include "kernels/launch.cuh"
#include "model/kernel_activation.hpp"

namespace dynascope::elasticity::internal {

using dynascope::detail::Buffer;
using dynascope::detail::check_matrix;
using dynascope::detail::check_vector;
using dynascope::detail::dims;
using model::MlpSpec;

bool first_layer_step_applies(const MlpSpec& spec, Update update) {
  return update == Update::sgd && spec.layers() >= 2;
}

namespace {

// Layers 2..L as a network of their own. Its flat vector is the full one's from weight_offset(1)
// on (same order, same layout), and its c_l are the full network's: ntk's 1/sqrt(fan-in) sees the
// same fan-ins, standard's are 1.
MlpSpec tail_of(const MlpSpec& s) {
  MlpSpec t;
  t.widths.assign(s.widths.begin() + 1, s.widths.end());
  t.bias.assign(s.bias.begin() + 1, s.bias.end());
  t.activations.assign(s.activations.begin() + 1, s.activations.end());
  t.parameterization = s.parameterization;
  t.bias_scale = s.bias_scale;
  t.validate();
  return t;
}

// base[j, :] += beta b_1: z_1(x_j; w) = c_1 W_1 x_j (the GEMM) + beta b_1, rounded as the engines'
// bias pass rounds it.
template <class T>
struct AddBias {
  T* z;
  const T* bias;
  index_t cols;
  T beta;
  DYNASCOPE_HD void operator()(index_t r, index_t k) const { z[r * cols + k] = z[r * cols + k] + beta * bias[k]; }
};

// coef[r] = eta s_c (k[r] + beta^2 [bias]), r = c * n + j: the factor of delta_c in the change of
// z_1(x_j). k[r] = c_1^2 <x_c, x_j> from the GEMM; the product is taken in float64 and rounded
// once, so that a tiny cotangent scale s_c does not underflow before it meets eta.
template <class T>
struct Coefficient {
  T* k;
  const double* scale;  // [G] stride scale_stride, or null: 1
  index_t scale_stride, n;
  double eta, beta2;
  DYNASCOPE_HD void operator()(index_t r) const {
    const double s = scale ? scale[(r / n) * scale_stride] : 1.0;
    k[r] = static_cast<T>(eta * s * (static_cast<double>(k[r]) + beta2));
  }
};

// a_1[r, :] = sigma_1(base[j, :] - coef[r] delta_c), r = c * n + j (j = r % n for shared inputs,
// base row r otherwise).
template <class T, kern::Act A>
struct StepActivation {
  T* a;
  const T* base;
  const T* coef;
  const T* delta;
  index_t dld, n, cols;
  bool shared;
  double slope;
  DYNASCOPE_HD void operator()(index_t r, index_t k) const {
    const index_t c = r / n, j = shared ? r - c * n : r;
    const T z = base[j * cols + k] - coef[r] * delta[c * dld + k];
    a[r * cols + k] = kern::act_value(kern::ActParams{A, slope}, z);
  }
  // The host row: restrict pointers, so that the loop vectorizes (no result changes).
  void row(index_t r) const {
    const kern::ActParams p{A, slope};
    const index_t c = r / n, j = shared ? r - c * n : r;
    T* __restrict ar = a + r * cols;
    const T* __restrict br = base + j * cols;
    const T* __restrict dr = delta + c * dld;
    const T f = coef[r];
    for (index_t k = 0; k < cols; ++k) ar[k] = kern::act_value(p, br[k] - f * dr[k]);
  }
};

}  // namespace

template <class T>
struct FirstLayerStep<T>::Impl {
  Context ctx;
  MlpSpec spec;
  index_t P = 0, d0 = 0, d1 = 0, tail_offset = 0;
  model::BatchedMlpEngine<T> tail;
  Buffer<T> base, coef, a1;

  Impl(const Context& c, MlpSpec s) : ctx(c), spec(std::move(s)), tail(c, checked_tail(spec)) {
    P = spec.num_params();
    d0 = spec.widths[0];
    d1 = spec.widths[1];
    tail_offset = spec.weight_offset(1);
  }

  static MlpSpec checked_tail(const MlpSpec& s) {
    s.validate();
    if (s.layers() < 2)
      throw InvalidArgument("FirstLayerStep: the network " + s.arch_string() +
                            " has one layer; the shortcut needs a hidden layer (use the batched forward)");
    return tail_of(s);
  }

  MatrixView<const T> run(const T* params, MatrixView<const T> wplus, MatrixView<const T> delta1,
                          VectorView<const double> scale, MatrixView<const T> xs, MatrixView<const T> x, double eta,
                          bool shared, const char* call);
};

template <class T>
MatrixView<const T> FirstLayerStep<T>::Impl::run(const T* params, MatrixView<const T> wplus,
                                                 MatrixView<const T> delta1, VectorView<const double> scale,
                                                 MatrixView<const T> xs, MatrixView<const T> x, double eta,
                                                 bool shared, const char* call) {
  const std::string name = call;
  if (params == nullptr) throw InvalidArgument(name + ": params is null");
  if (!std::isfinite(eta)) throw InvalidArgument(name + ": eta must be finite");
  if (wplus.rows < 1)
    throw ShapeMismatch(name + ": wplus must have one row per parameter set (at least one), got " +
                        dims(wplus.rows, wplus.cols));
  const index_t G = wplus.rows;
  check_matrix(ctx, wplus, G, P, call, "wplus");
  check_matrix(ctx, delta1, G, d1, call, "delta1");
  check_matrix(ctx, xs, G, d0, call, "xs");
  if (scale.data) {
    check_vector(ctx, scale, call, "scale");
    if (scale.size != G)
      throw ShapeMismatch(name + ": scale must have one value per parameter set (" + std::to_string(G) + "), got " +
                          std::to_string(scale.size));
  }
  check_matrix(ctx, x, call, "x");
  if (x.cols != d0)
    throw ShapeMismatch(name + ": x must have " + std::to_string(d0) + " columns (the inputs), got " +
                        dims(x.rows, x.cols));
  if (!shared && x.rows % G != 0)
    throw ShapeMismatch(name + ": x must have G*N rows for G = " + std::to_string(G) + " parameter sets, got " +
                        std::to_string(x.rows) + " rows");
  const index_t n = shared ? x.rows : x.rows / G, rows = G * n;
  const MatrixView<const T> tail_params{wplus.data + tail_offset, G, P - tail_offset, wplus.ld, wplus.backend,
                                        wplus.device};
  const MatrixView<T> a = a1.reserve(ctx, rows, d1);
  if (rows == 0) return tail.forward(tail_params, MatrixView<const T>(a));

  // z_1(x; w) for the base rows: [M, d1] shared, [G*N, d1] per set.
  const double c1 = spec.weight_scale(0);
  const bool bias = spec.bias[0];
  const T beta = static_cast<T>(spec.bias_scale);
  const index_t base_rows = shared ? n : rows;
  const MatrixView<T> z = base.reserve(ctx, base_rows, d1);
  const MatrixView<const T> w1{params + spec.weight_offset(0), d1, d0, d0, ctx.backend(), ctx.device()};
  blas::gemm<T>(ctx, blas::Op::none, blas::Op::trans, static_cast<T>(c1), x, w1, T(0), z);
  if (bias) kern::parallel_for_2d(ctx, base_rows, d1, AddBias<T>{z.data, params + spec.bias_offset(0), d1, beta});

  // c_1^2 <x_c, x_j>, then the coefficients: [G, M] shared, [G*N] per set.
  const MatrixView<T> k = coef.reserve(ctx, G, n);
  const T c1sq = static_cast<T>(c1 * c1);
  if (shared) {
    blas::gemm<T>(ctx, blas::Op::none, blas::Op::trans, c1sq, xs, x, T(0), k);
  } else {
    // Set c: its N rows [N, d0] times its source [1, d0]^T.
    blas::gemm_strided_batched<T>(ctx, blas::Op::none, blas::Op::trans, c1sq, x.block(0, 0, n, d0), n * x.ld,
                                  xs.block(0, 0, 1, d0), xs.ld, T(0),
                                  MatrixView<T>{k.data, n, 1, 1, k.backend, k.device}, n, G);
  }
  const double beta2 = bias ? spec.bias_scale * spec.bias_scale : 0.0;
  kern::parallel_for(ctx, rows, Coefficient<T>{k.data, scale.data, scale.stride, n, eta, beta2});

  // a_1 of every (set, row).
  const model::ActivationSpec& as = spec.activations[0];
  const kern::ActParams ap{model::internal::kernel_activation(as.kind), as.slope};
  DYNASCOPE_WITH_ACT(ap.kind, A, {
    const StepActivation<T, A> body{a.data, z.data, k.data, delta1.data, delta1.ld, n, d1, shared, ap.slope};
    if (ctx.is_cuda()) {
      kern::parallel_for_2d(ctx, rows, d1, body);
    } else {
      kern::host_parallel_for(
          ctx, rows, [&body](index_t r) { body.row(r); },
          (kern::kSerialBelow + d1 - 1) / std::max<index_t>(d1, 1));
    }
  });

  // Layers 2..L on each set's stepped rows.
  return tail.forward(tail_params, MatrixView<const T>(a));
}

template <class T>
FirstLayerStep<T>::FirstLayerStep(const Context& ctx, MlpSpec spec)
    : impl_(std::make_unique<Impl>(ctx, std::move(spec))) {}
template <class T>
FirstLayerStep<T>::~FirstLayerStep() = default;
template <class T>
FirstLayerStep<T>::FirstLayerStep(FirstLayerStep&&) noexcept = default;
template <class T>
FirstLayerStep<T>& FirstLayerStep<T>::operator=(FirstLayerStep&&) noexcept = default;
template <class T>
const MlpSpec& FirstLayerStep<T>::spec() const {
  return impl_->spec;
}

template <class T>
MatrixView<const T> FirstLayerStep<T>::forward_shared(const T* params, MatrixView<const T> wplus,
                                                      MatrixView<const T> delta1, VectorView<const double> scale,
                                                      MatrixView<const T> xs, MatrixView<const T> x, double eta) {
  return impl_->run(params, wplus, delta1, scale, xs, x, eta, true, "FirstLayerStep::forward_shared");
}

template <class T>
MatrixView<const T> FirstLayerStep<T>::forward(const T* params, MatrixView<const T> wplus, MatrixView<const T> delta1,
                                               VectorView<const double> scale, MatrixView<const T> xs,
                                               MatrixView<const T> x, double eta) {
  return impl_->run(params, wplus, delta1, scale, xs, x, eta, false, "FirstLayerStep::forward");
}

template <class T>
double FirstLayerStep<T>::flops(const MlpSpec& spec, index_t sets, index_t rows, bool shared) {
  const double G = double(sets), M = double(rows), d0 = double(spec.widths[0]), d1 = double(spec.widths[1]);
  double tail = 0;
  for (index_t l = 1; l < spec.layers(); ++l) tail += double(spec.fan_in(l)) * double(spec.fan_out(l));
  const double base = 2.0 * (shared ? M : G * M) * d0 * d1;
  return base + 2.0 * G * M * d0 + 2.0 * G * M * tail;
}

template class FirstLayerStep<float>;
template class FirstLayerStep<double>;

}  // namespace dynascope::elasticity::internal
