// MlpEngine: forward, reverse and forward mode through an MLP. GEMMs go to blas::, the
// elementwise work of each layer is one fused kernel (kernels/activation.cuh bodies).
#include "dynascope/engine.hpp"

#include <algorithm>
#include <string>

#include "core/buffer.hpp"
#include "core/checks.hpp"
#include "dynascope/blas.hpp"
#include "kernels/activation.cuh"
#include "kernels/launch.cuh"
#include "model/kernel_activation.hpp"

namespace dynascope::model {

using blas::Op;
using detail::Buffer;
using detail::check_matrix;
using internal::act_params;
using internal::kernel_activation;

template <class T>
struct MlpEngine<T>::Impl {
  Context ctx;
  MlpSpec spec;
  index_t L = 0;
  index_t n = 0;  // batch of the last forward
  index_t k = 0;  // cotangent blocks of the last backprop
  MatrixView<const T> x;
  std::vector<Buffer<T>> z, a, delta;  // index 1..L (0 unused)
  Buffer<T> tangent[2];                // ping-pong for jvp
  std::vector<Buffer<T>> zdot, adot;   // hvp: per-layer tangents, index 1..L
  Buffer<T> ddelta[2];                 // hvp: tangent of delta (ping-pong)
  std::vector<Buffer<T>> gdelta, curv; // hvp_prepare: deltas of g, c (delta_l W_l) sigma''(z_{l-1})
  index_t hvp_k = 0;
  bool have_hvp = false, have_prep = false;
  Buffer<T> ones, zero_bias;
  bool have_forward = false, have_backprop = false;

  Impl(const Context& c, MlpSpec s) : ctx(c), spec(std::move(s)) {
    spec.validate();
    L = spec.layers();
    z.resize(std::size_t(L + 1));
    a.resize(std::size_t(L + 1));
    delta.resize(std::size_t(L + 1));
    zdot.resize(std::size_t(L + 1));
    adot.resize(std::size_t(L + 1));
    gdelta.resize(std::size_t(L + 1));
    curv.resize(std::size_t(L + 1));
  }

  T scale(index_t l) const { return static_cast<T>(spec.weight_scale(l - 1)); }
  T beta() const { return static_cast<T>(spec.bias_scale); }
  index_t width(index_t l) const { return spec.widths[std::size_t(l)]; }
  bool has_bias(index_t l) const { return spec.bias[std::size_t(l - 1)]; }
  // W_l as [out, in] and b_l inside the flat parameter vector.
  MatrixView<const T> weight(const T* p, index_t l) const {
    return {p + spec.weight_offset(l - 1), width(l), width(l - 1), width(l - 1), ctx.backend(), ctx.device()};
  }
  const T* bias_ptr(const T* p, index_t l) const { return p + spec.bias_offset(l - 1); }
  // A zero bias vector for layers without bias, so the forward kernel has no branch.
  const T* zeros(index_t width) {
    MatrixView<T> zv = zero_bias.reserve(ctx, 1, width);
    detail::fill_zero_bytes(ctx, zv.data, zv.backend, std::size_t(width) * sizeof(T));
    return zv.data;
  }
  kern::ActParams act(index_t l) const {
    return l < L ? act_params(spec.activations[std::size_t(l - 1)]) : kern::ActParams{kern::Act::identity, 0};
  }
  MatrixView<const T> act_in(index_t l) const {  // a_{l-1}
    return l == 1 ? x : MatrixView<const T>(a[std::size_t(l - 1)].view(n, width(l - 1)));
  }

  void require_forward(const char* call) const {
    if (!have_forward) throw InvalidArgument(std::string(call) + ": call forward first");
  }
  void require_backprop(const char* call) const {
    if (!have_backprop) throw InvalidArgument(std::string(call) + ": call backprop first");
  }
};

template <class T>
MlpEngine<T>::MlpEngine(const Context& ctx, MlpSpec spec) : impl_(std::make_unique<Impl>(ctx, std::move(spec))) {}
template <class T>
MlpEngine<T>::~MlpEngine() = default;
template <class T>
MlpEngine<T>::MlpEngine(MlpEngine&&) noexcept = default;
template <class T>
MlpEngine<T>& MlpEngine<T>::operator=(MlpEngine&&) noexcept = default;
template <class T>
const MlpSpec& MlpEngine<T>::spec() const { return impl_->spec; }
template <class T>
const Context& MlpEngine<T>::context() const { return impl_->ctx; }
template <class T>
index_t MlpEngine<T>::batch() const { return impl_->n; }
template <class T>
index_t MlpEngine<T>::blocks() const { return impl_->k; }

template <class T>
MatrixView<const T> MlpEngine<T>::preactivation(index_t l) const {
  Impl& s = *impl_;
  s.require_forward("MlpEngine::preactivation");
  if (l < 1 || l > s.L) throw InvalidArgument("MlpEngine::preactivation: layer must be in 1.." + std::to_string(s.L));
  return s.z[std::size_t(l)].view(s.n, s.width(l));
}

template <class T>
MatrixView<const T> MlpEngine<T>::activation(index_t l) const {
  Impl& s = *impl_;
  s.require_forward("MlpEngine::activation");
  if (l < 0 || l > s.L) throw InvalidArgument("MlpEngine::activation: layer must be in 0.." + std::to_string(s.L));
  if (l == 0) return s.x;
  if (l == s.L) return s.z[std::size_t(l)].view(s.n, s.width(l));
  return s.a[std::size_t(l)].view(s.n, s.width(l));
}

template <class T>
MatrixView<const T> MlpEngine<T>::delta(index_t l) const {
  Impl& s = *impl_;
  s.require_backprop("MlpEngine::delta");
  if (l < 1 || l > s.L) throw InvalidArgument("MlpEngine::delta: layer must be in 1.." + std::to_string(s.L));
  return s.delta[std::size_t(l)].view(s.k * s.n, s.width(l));
}

namespace {

bool piecewise_linear(kern::Act a) {
  return a == kern::Act::identity || a == kern::Act::relu || a == kern::Act::leaky_relu || a == kern::Act::abs;
}

// The R-operator's elementwise passes over k blocks of n samples ([k*n, cols], sample r % n of
// the forward pass), each with operator()(r, j) for the cuda launch and row(r) for the host: the
// same arithmetic on one row through restrict pointers, so that the host loop vectorizes (the
// per-element lambda, with its r / n and r % n, did not). Vectorizing an elementwise loop changes
// no result.

// v = zd + beta bdot_{block} ;  zd = v (keep) ;  ad = sigma'(z) v (ad may be zd: in place)
template <class T, kern::Act A>
struct TangentActivation {
  T* zd;
  T* ad;
  const T* z;
  const T* bdot;  // null: no bias
  index_t tld, n, cols;
  T beta;
  bool keep;
  double slope;
  DYNASCOPE_HD void operator()(index_t r, index_t j) const {
    const index_t idx = r * cols + j;
    T v = zd[idx];
    if (bdot) v += beta * bdot[(r / n) * tld + j];
    if (keep) zd[idx] = v;
    ad[idx] = kern::act_deriv(kern::ActParams{A, slope}, z[(r % n) * cols + j]) * v;
  }
  void row(index_t r) const {
    const kern::ActParams p{A, slope};
    const T* __restrict sr = z + (r % n) * cols;
    if (ad == zd) {  // in place (jvp): ad is zd
      T* __restrict ar = ad + r * cols;
      const T* __restrict br = bdot ? bdot + (r / n) * tld : nullptr;
      if (br)
        for (index_t j = 0; j < cols; ++j) ar[j] = kern::act_deriv(p, sr[j]) * (ar[j] + beta * br[j]);
      else
        for (index_t j = 0; j < cols; ++j) ar[j] *= kern::act_deriv(p, sr[j]);
      return;
    }
    T* __restrict zr = zd + r * cols;
    T* __restrict ar = ad + r * cols;
    if (bdot) {
      const T* __restrict br = bdot + (r / n) * tld;
      if (keep)
        for (index_t j = 0; j < cols; ++j) {
          const T v = zr[j] + beta * br[j];
          zr[j] = v;
          ar[j] = kern::act_deriv(p, sr[j]) * v;
        }
      else
        for (index_t j = 0; j < cols; ++j) ar[j] = kern::act_deriv(p, sr[j]) * (zr[j] + beta * br[j]);
    } else {
      for (index_t j = 0; j < cols; ++j) ar[j] = kern::act_deriv(p, sr[j]) * zr[j];
    }
  }
};

// d = d sigma'(z) [+ curv zd]: the tangent of delta below a layer (curv null: sigma'' = 0).
template <class T, kern::Act A>
struct TangentDelta {
  T* d;
  const T* z;
  const T* curv;
  const T* zd;
  index_t n, cols;
  double slope;
  DYNASCOPE_HD void operator()(index_t r, index_t j) const {
    const index_t idx = r * cols + j, zi = (r % n) * cols + j;
    T v = d[idx] * kern::act_deriv(kern::ActParams{A, slope}, z[zi]);
    if (curv) v += curv[zi] * zd[idx];
    d[idx] = v;
  }
  void row(index_t r) const {
    const kern::ActParams p{A, slope};
    T* __restrict dr = d + r * cols;
    const T* __restrict sr = z + (r % n) * cols;
    if (curv) {
      const T* __restrict cr = curv + (r % n) * cols;
      const T* __restrict tr = zd + r * cols;
      for (index_t j = 0; j < cols; ++j) dr[j] = dr[j] * kern::act_deriv(p, sr[j]) + cr[j] * tr[j];
    } else {
      for (index_t j = 0; j < cols; ++j) dr[j] *= kern::act_deriv(p, sr[j]);
    }
  }
};

}  // namespace

// z_l = c_l a_{l-1} W_l^T + beta b_l ;  a_l = sigma_l(z_l)
template <class T>
MatrixView<const T> MlpEngine<T>::forward(const T* params, MatrixView<const T> x) {
  Impl& s = *impl_;
  check_matrix(s.ctx, x, x.rows, s.width(0), "MlpEngine::forward", "x");
  s.n = x.rows;
  s.x = x;
  s.have_backprop = false;
  s.have_hvp = false;
  s.have_prep = false;
  const index_t n = s.n;
  for (index_t l = 1; l <= s.L; ++l) {
    const index_t out = s.width(l);
    MatrixView<T> z = s.z[std::size_t(l)].reserve(s.ctx, n, out);
    blas::gemm<T>(s.ctx, Op::none, Op::trans, s.scale(l), s.act_in(l), s.weight(params, l), T(0), z);
    const bool hidden = l < s.L;
    const bool bias = s.has_bias(l);
    if (!hidden && !bias) continue;
    MatrixView<T> av = hidden ? s.a[std::size_t(l)].reserve(s.ctx, n, out) : z;
    const T* b = bias ? s.bias_ptr(params, l) : s.zeros(out);
    const T beta = s.beta();
    const kern::ActParams act = s.act(l);
    const double slope = act.slope;
    DYNASCOPE_WITH_ACT(act.kind, A, kern::parallel_for_2d(s.ctx, n, out, [=] DYNASCOPE_HD(index_t i, index_t j) {
      const index_t idx = i * out + j;
      const T zv = z.data[idx] + beta * b[j];
      z.data[idx] = zv;
      av.data[idx] = kern::act_value(kern::ActParams{A, slope}, zv);
    }));
  }
  s.have_forward = true;
  return s.z[std::size_t(s.L)].view(n, s.width(s.L));
}

// delta_L = g ;  delta_{l-1} = c_l (delta_l W_l) * sigma'_{l-1}(z_{l-1})
template <class T>
void MlpEngine<T>::backprop(const T* params, MatrixView<const T> cotangents, index_t blocks) {
  Impl& s = *impl_;
  s.require_forward("MlpEngine::backprop");
  if (blocks < 1) throw InvalidArgument("MlpEngine::backprop: blocks must be >= 1");
  const index_t n = s.n, rows = blocks * n;
  check_matrix(s.ctx, cotangents, rows, s.width(s.L), "MlpEngine::backprop", "cotangents");
  s.k = blocks;
  MatrixView<T> top = s.delta[std::size_t(s.L)].reserve(s.ctx, rows, s.width(s.L));
  copy(s.ctx, cotangents, top);
  for (index_t l = s.L; l >= 2; --l) {
    const index_t in = s.width(l - 1);
    MatrixView<T> below = s.delta[std::size_t(l - 1)].reserve(s.ctx, rows, in);
    blas::gemm<T>(s.ctx, Op::none, Op::none, s.scale(l), s.delta[std::size_t(l)].view(rows, s.width(l)),
                  s.weight(params, l), T(0), below);
    const T* zp = s.z[std::size_t(l - 1)].data();
    const kern::ActParams act = s.act(l - 1);
    // the same sample in every block
    DYNASCOPE_WITH_ACT(act.kind, A,
                       kern::all_rows(s.ctx, rows, in, TangentDelta<T, A>{below.data, zp, nullptr, nullptr, n, in, act.slope}));
  }
  s.have_backprop = true;
}

// dW_{l,k} = c_l delta_{l,k}^T a_{l-1} ;  db_{l,k} = beta sum_n delta_{l,k}
template <class T>
void MlpEngine<T>::param_grads(MatrixView<T> grads) {
  Impl& s = *impl_;
  s.require_backprop("MlpEngine::param_grads");
  const index_t n = s.n, P = s.spec.num_params();
  check_matrix(s.ctx, grads, s.k, P, "MlpEngine::param_grads", "grads");
  MatrixView<T> ones = s.ones.reserve(s.ctx, 1, n);
  kern::parallel_for(s.ctx, n, [=] DYNASCOPE_HD(index_t i) { ones.data[i] = T(1); });
  for (index_t l = 1; l <= s.L; ++l) {
    const index_t out = s.width(l), in = s.width(l - 1);
    MatrixView<const T> d = s.delta[std::size_t(l)].view(s.k * n, out);
    MatrixView<T> gw{grads.data + s.spec.weight_offset(l - 1), out, in, in, grads.backend, grads.device};
    MatrixView<const T> d0{d.data, n, out, out, d.backend, d.device};
    if (s.k == 1)
      blas::gemm<T>(s.ctx, Op::trans, Op::none, s.scale(l), d0, s.act_in(l), T(0), gw);
    else
      blas::gemm_strided_batched<T>(s.ctx, Op::trans, Op::none, s.scale(l), d0, n * out, s.act_in(l), 0, T(0), gw,
                                    grads.ld, s.k);
    if (!s.has_bias(l)) continue;
    for (index_t b = 0; b < s.k; ++b) {
      MatrixView<const T> db{d.data + b * n * out, n, out, out, d.backend, d.device};
      VectorView<T> gb{grads.data + b * grads.ld + s.spec.bias_offset(l - 1), out, 1, grads.backend, grads.device};
      blas::gemv<T>(s.ctx, Op::trans, s.beta(), db, VectorView<const T>{ones.data, n, 1, ones.backend, ones.device}, T(0), gb);
    }
  }
}

// dx = c_1 delta_1 W_1
template <class T>
void MlpEngine<T>::input_grads(const T* params, MatrixView<T> out) {
  Impl& s = *impl_;
  s.require_backprop("MlpEngine::input_grads");
  check_matrix(s.ctx, out, s.k * s.n, s.width(0), "MlpEngine::input_grads", "out");
  blas::gemm<T>(s.ctx, Op::none, Op::none, s.scale(1), s.delta[1].view(s.k * s.n, s.width(1)), s.weight(params, 1),
                T(0), out);
}

// Row n: dW_l = c_l delta_{l,n} a_{l-1,n}^T, db_l = beta delta_{l,n}
template <class T>
void MlpEngine<T>::per_sample_grads(MatrixView<T> out) {
  Impl& s = *impl_;
  s.require_backprop("MlpEngine::per_sample_grads");
  if (s.k != 1) throw InvalidArgument("MlpEngine::per_sample_grads: needs a backprop with one block");
  const index_t n = s.n, P = s.spec.num_params();
  check_matrix(s.ctx, out, n, P, "MlpEngine::per_sample_grads", "out");
  for (index_t l = 1; l <= s.L; ++l) {
    const index_t o = s.width(l), in = s.width(l - 1);
    const T c = s.scale(l), beta = s.beta();
    MatrixView<const T> d = s.delta[std::size_t(l)].view(n, o);
    MatrixView<const T> av = s.act_in(l);
    T* base = out.data + s.spec.weight_offset(l - 1);
    const index_t ld = out.ld;
    kern::parallel_for(s.ctx, n * o * in, [=] DYNASCOPE_HD(index_t idx) {
      const index_t j = idx % in, i = (idx / in) % o, r = idx / (in * o);
      base[r * ld + i * in + j] = c * d(r, i) * av(r, j);
    });
    if (!s.has_bias(l)) continue;
    T* bbase = out.data + s.spec.bias_offset(l - 1);
    kern::parallel_for(s.ctx, n * o, [=] DYNASCOPE_HD(index_t idx) {
      const index_t i = idx % o, r = idx / o;
      bbase[r * ld + i] = beta * d(r, i);
    });
  }
}

namespace {

// zdot_l = c_l (a_{l-1} Wdot_t^T + adot_{l-1} W_l^T) + beta bdot_t ; adot_l = sigma'(z_l) zdot_l
template <class T, class Impl>
void tangent_sweep(Impl& s, const T* params, MatrixView<const T> tangents, MatrixView<const T> input_tangents,
                   index_t t, MatrixView<T> out) {
  const index_t n = s.n, rows = t * n;
  MatrixView<const T> prev = input_tangents;  // adot_{l-1}; empty for parameter tangents at l = 1
  const bool param_mode = tangents.data != nullptr;
  for (index_t l = 1; l <= s.L; ++l) {
    const index_t o = s.width(l);
    const bool last = l == s.L;
    MatrixView<T> zdot = last ? out : s.tangent[l % 2].reserve(s.ctx, rows, o);
    T beta_acc = T(0);
    if (param_mode) {
      MatrixView<const T> wdot{tangents.data + s.spec.weight_offset(l - 1), o, s.width(l - 1), s.width(l - 1),
                               tangents.backend, tangents.device};
      MatrixView<T> z0{zdot.data, n, o, zdot.ld, zdot.backend, zdot.device};
      blas::gemm_strided_batched<T>(s.ctx, Op::none, Op::trans, s.scale(l), s.act_in(l), 0, wdot, tangents.ld, T(0),
                                    z0, n * zdot.ld, t);
      beta_acc = T(1);
    }
    if (prev.data) blas::gemm<T>(s.ctx, Op::none, Op::trans, s.scale(l), prev, s.weight(params, l), beta_acc, zdot);
    else if (!param_mode) throw InvalidArgument("jvp: no tangents");
    const T* bdot = (param_mode && s.has_bias(l)) ? tangents.data + s.spec.bias_offset(l - 1) : nullptr;
    const index_t tld = tangents.ld;
    const T beta = s.beta();
    const T* zp = s.z[std::size_t(l)].data();
    const kern::ActParams act = s.act(l);
    const index_t zld = zdot.ld;
    if (last) {
      if (bdot)
        kern::parallel_for(s.ctx, rows * o, [=] DYNASCOPE_HD(index_t idx) {
          const index_t j = idx % o, r = idx / o;
          zdot.data[r * zld + j] += beta * bdot[(r / n) * tld + j];
        });
      return;
    }
    // zdot of a hidden layer is a contiguous buffer (zld = o)
    DYNASCOPE_WITH_ACT(act.kind, A,
                       kern::all_rows(s.ctx, rows, o,
                                TangentActivation<T, A>{zdot.data, zdot.data, zp, bdot, tld, n, o, beta, false, act.slope}));
    prev = zdot;
  }
}

}  // namespace

template <class T>
void MlpEngine<T>::jvp(const T* params, MatrixView<const T> tangents, MatrixView<T> out) {
  Impl& s = *impl_;
  s.require_forward("MlpEngine::jvp");
  const index_t t = tangents.rows;
  check_matrix(s.ctx, tangents, t, s.spec.num_params(), "MlpEngine::jvp", "tangents");
  check_matrix(s.ctx, out, t * s.n, s.width(s.L), "MlpEngine::jvp", "out");
  if (t == 0 || s.n == 0) return;
  tangent_sweep<T>(s, params, tangents, MatrixView<const T>{}, t, out);
}

template <class T>
void MlpEngine<T>::jvp_inputs(const T* params, MatrixView<const T> tangents, index_t t, MatrixView<T> out) {
  Impl& s = *impl_;
  s.require_forward("MlpEngine::jvp_inputs");
  check_matrix(s.ctx, tangents, t * s.n, s.width(0), "MlpEngine::jvp_inputs", "tangents");
  check_matrix(s.ctx, out, t * s.n, s.width(s.L), "MlpEngine::jvp_inputs", "out");
  if (t == 0 || s.n == 0) return;
  tangent_sweep<T>(s, params, MatrixView<const T>{}, tangents, t, out);
}

// ---- Hessian-vector products (the R-operator) ----
//
// Cost model, per tangent vector, for layers l = 1..L with m_l = 2 N d_{l-1} d_l (N samples):
//   R-forward    zdot_l = c (a_{l-1} Wdot_l^T + adot_{l-1} W_l^T)    m_1 + 2 m_l for l >= 2
//   R-backward   HW_l = c (ddelta_l^T a_{l-1} + delta_l^T adot_{l-1}) m_1 + 2 m_l for l >= 2
//                ddelta_{l-1} = c (ddelta_l W_l + delta_l Wdot_l) ...  2 m_l for l >= 2
// so 2 m_1 + 6 sum_{l>=2} m_l in all (784-128-128-10, N = 1024: 628 MFLOP, two thirds of it the
// first layer's two products, which no product can avoid: the input has no tangent, and nothing
// is propagated below the first layer). What depends only on the parameters and the loss
// gradient g is computed once by hvp_prepare and shared by every product until the next forward:
// the deltas of g (m_l for l >= 2) and, for activations with a second derivative, the term
// c (delta_l W_l) sigma''(z_{l-1}) (another m_l); a piecewise-linear activation (identity, relu,
// leaky_relu, abs) has sigma'' = 0 almost everywhere, so it has no such term and the R-backward
// skips its multiply-add. Before hvp_prepare existed every product redid both (2 sum_{l>=2} m_l
// more, +11% here). The elementwise work (bias tangent, sigma', the sigma'' term) is one pass per
// layer and direction, fused after the GEMMs.

// delta_L = g ;  u = c_l delta_l W_l ;  delta_{l-1} = u sigma'(z_{l-1}) ;  curv_{l-1} = u sigma''(z_{l-1})
template <class T>
void MlpEngine<T>::hvp_prepare(const T* params, MatrixView<const T> g) {
  Impl& s = *impl_;
  s.require_forward("MlpEngine::hvp_prepare");
  const index_t n = s.n;
  check_matrix(s.ctx, g, n, s.width(s.L), "MlpEngine::hvp_prepare", "g");
  copy(s.ctx, g, s.gdelta[std::size_t(s.L)].reserve(s.ctx, n, s.width(s.L)));
  for (index_t l = s.L; l >= 2; --l) {
    const index_t in = s.width(l - 1);
    MatrixView<T> below = s.gdelta[std::size_t(l - 1)].reserve(s.ctx, n, in);
    blas::gemm<T>(s.ctx, Op::none, Op::none, s.scale(l), s.gdelta[std::size_t(l)].view(n, s.width(l)),
                  s.weight(params, l), T(0), below);
    const T* zp = s.z[std::size_t(l - 1)].data();
    const kern::ActParams act = s.act(l - 1);
    const double slope = act.slope;
    if (piecewise_linear(act.kind)) {
      DYNASCOPE_WITH_ACT(act.kind, A, kern::parallel_for_2d(s.ctx, n, in, [=] DYNASCOPE_HD(index_t r, index_t j) {
        below.data[r * in + j] *= kern::act_deriv(kern::ActParams{A, slope}, zp[r * in + j]);
      }));
      continue;
    }
    MatrixView<T> curv = s.curv[std::size_t(l - 1)].reserve(s.ctx, n, in);
    DYNASCOPE_WITH_ACT(act.kind, A, kern::parallel_for_2d(s.ctx, n, in, [=] DYNASCOPE_HD(index_t r, index_t j) {
      const index_t idx = r * in + j;
      const kern::ActParams p{A, slope};
      const T u = below.data[idx], z = zp[idx];
      curv.data[idx] = u * kern::act_deriv2(p, z);
      below.data[idx] = u * kern::act_deriv(p, z);
    }));
  }
  s.have_prep = true;
}

// zdot_l = c_l (a_{l-1} Wdot^T + adot_{l-1} W_l^T) + beta bdot ;  adot_l = sigma'(z_l) zdot_l
template <class T>
MatrixView<const T> MlpEngine<T>::hvp_forward(const T* params, MatrixView<const T> tangents) {
  Impl& s = *impl_;
  s.require_forward("MlpEngine::hvp_forward");
  const index_t k = tangents.rows, n = s.n, rows = k * n;
  check_matrix(s.ctx, tangents, k, s.spec.num_params(), "MlpEngine::hvp_forward", "tangents");
  if (k < 1) throw InvalidArgument("MlpEngine::hvp_forward: needs at least one tangent");
  for (index_t l = 1; l <= s.L; ++l) {
    const index_t o = s.width(l), in = s.width(l - 1);
    MatrixView<T> zd = s.zdot[std::size_t(l)].reserve(s.ctx, rows, o);
    MatrixView<const T> wdot{tangents.data + s.spec.weight_offset(l - 1), o, in, in, tangents.backend, tangents.device};
    blas::gemm_strided_batched<T>(s.ctx, Op::none, Op::trans, s.scale(l), s.act_in(l), 0, wdot, tangents.ld, T(0),
                                  zd.block(0, 0, n, o), n * o, k);
    if (l > 1)
      blas::gemm<T>(s.ctx, Op::none, Op::trans, s.scale(l), s.adot[std::size_t(l - 1)].view(rows, in), s.weight(params, l),
                    T(1), zd);
    const T* bdot = s.has_bias(l) ? tangents.data + s.spec.bias_offset(l - 1) : nullptr;
    const index_t tld = tangents.ld;
    const T beta = s.beta();
    if (l == s.L) {
      if (bdot)
        kern::parallel_for_2d(s.ctx, rows, o, [=] DYNASCOPE_HD(index_t r, index_t j) {
          zd.data[r * o + j] += beta * bdot[(r / n) * tld + j];
        });
      continue;
    }
    // The bias tangent and sigma' in one pass; zdot itself is kept (with its bias) only where
    // the R-backward reads it, for activations with a second derivative.
    MatrixView<T> ad = s.adot[std::size_t(l)].reserve(s.ctx, rows, o);
    const T* zp = s.z[std::size_t(l)].data();
    const kern::ActParams act = s.act(l);
    const bool keep = !piecewise_linear(act.kind);
    DYNASCOPE_WITH_ACT(act.kind, A,
                       kern::all_rows(s.ctx, rows, o,
                                TangentActivation<T, A>{zd.data, ad.data, zp, bdot, tld, n, o, beta, keep, act.slope}));
  }
  s.hvp_k = k;
  s.have_hvp = true;
  return s.zdot[std::size_t(s.L)].view(rows, s.width(s.L));
}

template <class T>
void MlpEngine<T>::hvp_backward(const T* params, MatrixView<const T> g, MatrixView<const T> gdot,
                                MatrixView<const T> tangents, MatrixView<T> out) {
  hvp_prepare(params, g);
  hvp_backward(params, gdot, tangents, out);
}

// With delta_l from g and ddelta_l its tangent (ddelta_L = gdot):
//   HW_l = c (ddelta_l^T a_{l-1} + delta_l^T adot_{l-1}) ;  Hb_l = beta sum_n ddelta_l
//   ddelta_{l-1} = c (ddelta_l W_l + delta_l Wdot_l) * sigma'(z_{l-1}) + curv_{l-1} * zdot_{l-1}
// The first layer sends nothing further down: the inputs have no tangent.
template <class T>
void MlpEngine<T>::hvp_backward(const T* params, MatrixView<const T> gdot, MatrixView<const T> tangents,
                                MatrixView<T> out) {
  Impl& s = *impl_;
  if (!s.have_hvp) throw InvalidArgument("MlpEngine::hvp_backward: call hvp_forward first");
  if (!s.have_prep) throw InvalidArgument("MlpEngine::hvp_backward: call hvp_prepare (or pass g) first");
  const index_t k = s.hvp_k, n = s.n, rows = k * n, P = s.spec.num_params();
  check_matrix(s.ctx, gdot, rows, s.width(s.L), "MlpEngine::hvp_backward", "gdot");
  check_matrix(s.ctx, tangents, k, P, "MlpEngine::hvp_backward", "tangents");
  check_matrix(s.ctx, out, k, P, "MlpEngine::hvp_backward", "out");
  MatrixView<T> ones = s.ones.reserve(s.ctx, 1, n);
  kern::parallel_for(s.ctx, n, [=] DYNASCOPE_HD(index_t i) { ones.data[i] = T(1); });
  MatrixView<const T> dd = gdot;
  for (index_t l = s.L; l >= 1; --l) {
    const index_t o = s.width(l), in = s.width(l - 1);
    const T c = s.scale(l);
    MatrixView<const T> d = s.gdelta[std::size_t(l)].view(n, o);
    MatrixView<T> gw{out.data + s.spec.weight_offset(l - 1), o, in, in, out.backend, out.device};
    blas::gemm_strided_batched<T>(s.ctx, Op::trans, Op::none, c, MatrixView<const T>{dd.data, n, o, dd.ld, dd.backend, dd.device},
                                  n * dd.ld, s.act_in(l), 0, T(0), gw, out.ld, k);
    if (l > 1)
      blas::gemm_strided_batched<T>(s.ctx, Op::trans, Op::none, c, d, 0, s.adot[std::size_t(l - 1)].view(n, in), n * in,
                                    T(1), gw, out.ld, k);
    if (s.has_bias(l))
      for (index_t b = 0; b < k; ++b)
        blas::gemv<T>(s.ctx, Op::trans, s.beta(), MatrixView<const T>{dd.data + b * n * dd.ld, n, o, dd.ld, dd.backend, dd.device},
                      VectorView<const T>{ones.data, n, 1, ones.backend, ones.device}, T(0),
                      VectorView<T>{out.data + b * out.ld + s.spec.bias_offset(l - 1), o, 1, out.backend, out.device});
    if (l == 1) break;
    MatrixView<T> below = s.ddelta[(l - 1) % 2].reserve(s.ctx, rows, in);
    blas::gemm<T>(s.ctx, Op::none, Op::none, c, dd, s.weight(params, l), T(0), below);
    MatrixView<const T> wdot{tangents.data + s.spec.weight_offset(l - 1), o, in, in, tangents.backend, tangents.device};
    blas::gemm_strided_batched<T>(s.ctx, Op::none, Op::none, c, d, 0, wdot, tangents.ld, T(1), below.block(0, 0, n, in),
                                  n * in, k);
    const T* zp = s.z[std::size_t(l - 1)].data();
    const kern::ActParams act = s.act(l - 1);
    const bool smooth = !piecewise_linear(act.kind);
    const T* cv = smooth ? s.curv[std::size_t(l - 1)].data() : nullptr;
    const T* zd = smooth ? s.zdot[std::size_t(l - 1)].data() : nullptr;
    DYNASCOPE_WITH_ACT(act.kind, A,
                       kern::all_rows(s.ctx, rows, in, TangentDelta<T, A>{below.data, zp, cv, zd, n, in, act.slope}));
    dd = below;
  }
}

template <class T>
void per_sample_gradients(const Context& ctx, const MlpSpec& spec, const T* params, MatrixView<const T> x,
                          MatrixView<const T> cotangents, MatrixView<T> out) {
  spec.validate();
  const index_t n = x.rows;
  check_matrix(ctx, x, n, spec.inputs(), "per_sample_gradients", "x");
  check_matrix(ctx, cotangents, n, spec.outputs(), "per_sample_gradients", "cotangents");
  check_matrix(ctx, out, n, spec.num_params(), "per_sample_gradients", "out");
  // Engine buffers per sample: z, a and delta of every layer.
  index_t per_sample = 0;
  for (index_t l = 1; l <= spec.layers(); ++l) per_sample += 3 * spec.widths[std::size_t(l)];
  const index_t budget_rows = static_cast<index_t>(ctx.workspace_budget() / (sizeof(T) * std::size_t(per_sample)));
  if (budget_rows < 1)
    throw OutOfMemory("per_sample_gradients: the workspace budget of " + std::to_string(ctx.workspace_budget()) +
                      " bytes cannot hold the buffers of one sample (" + std::to_string(per_sample * index_t(sizeof(T))) +
                      " bytes)");
  const index_t tile = std::min(n, budget_rows);
  MlpEngine<T> engine(ctx, spec);
  for (index_t r0 = 0; r0 < n; r0 += tile) {
    const index_t m = std::min(tile, n - r0);
    engine.forward(params, x.block(r0, 0, m, x.cols));
    engine.backprop(params, cotangents.block(r0, 0, m, cotangents.cols));
    engine.per_sample_grads(out.block(r0, 0, m, out.cols));
    ctx.progress("per-sample gradients", r0 + m, n);
  }
}

template class MlpEngine<float>;
template class MlpEngine<double>;
template void per_sample_gradients<float>(const Context&, const MlpSpec&, const float*, MatrixView<const float>,
                                          MatrixView<const float>, MatrixView<float>);
template void per_sample_gradients<double>(const Context&, const MlpSpec&, const double*, MatrixView<const double>,
                                           MatrixView<const double>, MatrixView<double>);

}  // namespace dynascope::model
