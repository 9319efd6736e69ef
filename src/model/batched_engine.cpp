// BatchedMlpEngine: C parameter sets through one architecture, and the per-set losses.
//
// Two schedules, one arithmetic. Per set (host, C >= threads): one OpenMP region over the sets,
// each set running its whole layer sequence with single-threaded cblas calls and serial
// elementwise loops, so that a set's products have the shapes of one MlpEngine call whatever C is
// and no fork/join happens per layer. Per layer (host with fewer sets than threads, and cuda):
// each layer is one blas::gemm_strided_batched over the sets (on host a loop of threaded GEMMs, on
// cuda one cuBLAS call) and one elementwise pass over all C*N rows. The elementwise bodies are
// the same functors in both schedules (kernels/activation.cuh), so a set's values do not depend
// on the schedule beyond what a threaded GEMM changes.
#include "dynascope/batched_engine.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "core/buffer.hpp"
#include "core/checks.hpp"
#include "core/omp_threads.hpp"
#include "dynascope/blas.hpp"
#include "kernels/activation.cuh"
#include "kernels/launch.cuh"
#include "model/kernel_activation.hpp"
#include "kernels/math.cuh"
#include "kernels/segmented.cuh"

namespace dynascope::model {

using blas::Op;
using detail::Buffer;
using detail::check_matrix;
using internal::act_params;
using internal::kernel_activation;
using detail::check_vector;
using detail::dims;

namespace {


// ---- host BLAS of the per-set schedule: one thread, row-major ----
void set_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, index_t m, index_t n, index_t k, float alpha, const float* a,
              index_t lda, const float* b, index_t ldb, float* c, index_t ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), 0.0f, c, int(ldc));
}
void set_gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, index_t m, index_t n, index_t k, double alpha, const double* a,
              index_t lda, const double* b, index_t ldb, double* c, index_t ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb), 0.0, c, int(ldc));
}

using detail::OneBlasThread;

// body(c) for every set c, the sets handed out one at a time to the context's threads, each body
// on one thread with one-thread BLAS (a thread that loses its core to another process delays only
// the sets it holds; which thread runs a set changes none of its bits). The bodies must not throw.
// Below kSetParallelFlops of work in one call (about a millisecond on one core) the sets run one
// after another on the calling thread: a parallel region costs a fork/join, and far more when
// another process holds a core — the barrier then waits for a descheduled thread, up to a
// scheduler time slice of several milliseconds per region. An SGLD run of 16 small chains with
// 4000 steps and 5 regions per step took 75 s instead of 10 s next to one other busy process
// at a 4 MFLOP threshold. Which thread runs a set changes none of its bits.
inline constexpr double kSetParallelFlops = double(1 << 25);

template <class F>
void for_each_set(const Context& ctx, index_t sets, double flops, const F& body) {
  const int threads = kern::host_threads(ctx);
  if (threads <= 1 || sets <= 1 || flops < kSetParallelFlops) {
    OneBlasThread one;
    for (index_t c = 0; c < sets; ++c) body(c);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    OneBlasThread one;
#pragma omp for schedule(dynamic, 1)
    for (index_t c = 0; c < sets; ++c) body(c);
  }
}

// ---- elementwise bodies, shared by both schedules ----
// Each has operator()(r, j) for the cuda launch and row(r) for the host: the same arithmetic on
// one row, through restrict pointers so that the loop vectorizes (the buffers never overlap,
// except a = z at the output layer, which has its own loop). Vectorizing an elementwise loop
// changes no result.

// z += beta b_c (set c = r / n, its bias row at bias + c * pld) ;  a = sigma(z)
template <class T, kern::Act A>
struct BiasActivation {
  T* z;
  T* a;  // z at the output layer (identity)
  const T* bias;  // null: no bias
  index_t pld, n, cols;
  T beta;
  double slope;
  DYNASCOPE_HD void operator()(index_t r, index_t j) const {
    const index_t idx = r * cols + j;
    T zv = z[idx];
    if (bias) zv = zv + beta * bias[(r / n) * pld + j];
    z[idx] = zv;
    a[idx] = kern::act_value(kern::ActParams{A, slope}, zv);
  }
  void row(index_t r) const {
    const kern::ActParams p{A, slope};
    T* __restrict zr = z + r * cols;
    const T* __restrict br = bias ? bias + (r / n) * pld : nullptr;
    if (a == z) {  // the output layer: identity, z only
      if (br)
        for (index_t j = 0; j < cols; ++j) zr[j] = kern::act_value(p, zr[j] + beta * br[j]);
      return;
    }
    T* __restrict ar = a + r * cols;
    if (br) {
      for (index_t j = 0; j < cols; ++j) {
        const T zv = zr[j] + beta * br[j];
        zr[j] = zv;
        ar[j] = kern::act_value(p, zv);
      }
    } else {
      for (index_t j = 0; j < cols; ++j) ar[j] = kern::act_value(p, zr[j]);
    }
  }
};

// d *= sigma'(z), both [rows, cols] contiguous.
template <class T, kern::Act A>
struct TimesDerivative {
  T* d;
  const T* z;
  index_t cols;
  double slope;
  DYNASCOPE_HD void operator()(index_t r, index_t j) const {
    const index_t idx = r * cols + j;
    d[idx] *= kern::act_deriv(kern::ActParams{A, slope}, z[idx]);
  }
  void row(index_t r) const {
    const kern::ActParams p{A, slope};
    T* __restrict dr = d + r * cols;
    const T* __restrict zr = z + r * cols;
    for (index_t j = 0; j < cols; ++j) dr[j] *= kern::act_deriv(p, zr[j]);
  }
};

// Rows [r0, r1) of f serially (the per-set schedule).
template <class F>
void serial_rows(index_t r0, index_t r1, const F& f) {
  for (index_t r = r0; r < r1; ++r) f.row(r);
}

template <class T>
struct FillOne {
  T* p;
  DYNASCOPE_HD void operator()(index_t i) const { p[i] = T(1); }
};

// out[j] = scale * sum_r d(r, j) for d [rows, cols] contiguous, rows summed in order: the bias
// gradient of one set, the same bits in both host schedules.
template <class T>
void column_sums(const T* __restrict d, index_t rows, index_t cols, T scale, T* __restrict out) {
  for (index_t j = 0; j < cols; ++j) out[j] = T(0);
  for (index_t r = 0; r < rows; ++r)
    for (index_t j = 0; j < cols; ++j) out[j] += d[r * cols + j];
  for (index_t j = 0; j < cols; ++j) out[j] *= scale;
}

void require_int(index_t v, const char* call, const char* what) {
  if (v > INT_MAX)
    throw InvalidArgument(std::string(call) + ": " + what + " (" + std::to_string(v) +
                          ") exceeds the 32-bit BLAS interface");
}

}  // namespace

template <class T>
struct BatchedMlpEngine<T>::Impl {
  Context ctx;
  MlpSpec spec;
  index_t L = 0, P = 0;
  index_t c = 0;  // sets of the last forward
  index_t n = 0;  // rows per set of the last forward
  bool shared = false;
  MatrixView<const T> x;
  std::vector<Buffer<T>> z, a, delta;  // index 1..L (0 unused); [C*N, d_l]
  Buffer<T> ones;
  bool have_forward = false, have_backprop = false;

  Impl(const Context& context, MlpSpec s) : ctx(context), spec(std::move(s)) {
    spec.validate();
    L = spec.layers();
    P = spec.num_params();
    for (index_t w : spec.widths) require_int(w, "BatchedMlpEngine", "a layer width");
    z.resize(std::size_t(L + 1));
    a.resize(std::size_t(L + 1));
    delta.resize(std::size_t(L + 1));
  }

  T scale(index_t l) const { return static_cast<T>(spec.weight_scale(l - 1)); }
  T beta() const { return static_cast<T>(spec.bias_scale); }
  index_t width(index_t l) const { return spec.widths[std::size_t(l)]; }
  bool has_bias(index_t l) const { return spec.bias[std::size_t(l - 1)]; }
  kern::ActParams act(index_t l) const {
    if (l == L) return {kern::Act::identity, 0};
    const ActivationSpec& s = spec.activations[std::size_t(l - 1)];
    return {kernel_activation(s.kind), s.slope};
  }
  // The per-set schedule: host, and at least as many sets as threads.
  bool per_set() const { return ctx.is_host() && c >= kern::host_threads(ctx); }
  // The GEMM flops of one forward over all sets (backprop and gradients are of the same order).
  double call_flops() const {
    double per_row = 0;
    for (index_t l = 1; l <= L; ++l) per_row += double(width(l - 1)) * double(width(l));
    return 2.0 * double(c) * double(n) * per_row;
  }

  // a_{l-1} of set `set`: its first element and leading dimension.
  const T* input_of(index_t set, index_t l, index_t& ld) const {
    if (l == 1) {
      ld = x.ld;
      return x.data + (shared ? 0 : set * n * x.ld);
    }
    ld = width(l - 1);
    return a[std::size_t(l - 1)].data() + set * n * ld;
  }
  // a_{l-1} of set 0 as an [N, d_{l-1}] view and the stride between sets (per-layer schedule).
  MatrixView<const T> input_block(index_t l, index_t& stride) const {
    index_t ld = 0;
    const T* p = input_of(0, l, ld);
    stride = (l == 1 && shared) ? 0 : n * ld;
    return {p, n, width(l - 1), ld, ctx.backend(), ctx.device()};
  }
  // W_l of set 0 as [out, in]; set c's is params.ld further on.
  MatrixView<const T> weight_block(MatrixView<const T> params, index_t l) const {
    return {params.data + spec.weight_offset(l - 1), width(l), width(l - 1), width(l - 1), params.backend,
            params.device};
  }

  MatrixView<const T> forward(MatrixView<const T> params, MatrixView<const T> input, bool shared_input,
                              const char* call);
  void check_params(MatrixView<const T> params, const char* call) const {
    if (params.rows < 1)
      throw ShapeMismatch(std::string(call) + ": params must have one row per parameter set (at least one), got " +
                          dims(params.rows, params.cols));
    check_matrix(ctx, params, params.rows, P, call, "params");
  }
  void require_forward(const char* call) const {
    if (!have_forward) throw InvalidArgument(std::string(call) + ": call forward first");
  }
  void require_backprop(const char* call) const {
    if (!have_backprop) throw InvalidArgument(std::string(call) + ": call backprop first");
  }
};

template <class T>
MatrixView<const T> BatchedMlpEngine<T>::Impl::forward(MatrixView<const T> params, MatrixView<const T> input,
                                                       bool shared_input, const char* call) {
  check_params(params, call);
  const index_t sets = params.rows;
  if (input.cols != width(0))
    throw ShapeMismatch(std::string(call) + ": x must have " + std::to_string(width(0)) + " columns (the inputs), got " +
                        dims(input.rows, input.cols));
  if (!shared_input && input.rows % sets != 0)
    throw ShapeMismatch(std::string(call) + ": x must have C*N rows for C = " + std::to_string(sets) +
                        " parameter sets, got " + std::to_string(input.rows) + " rows");
  check_matrix(ctx, input, call, "x");
  const index_t rows_per_set = shared_input ? input.rows : input.rows / sets;
  require_int(rows_per_set, call, "the rows per set");
  require_int(input.ld, call, "the leading dimension of x");
  c = sets;
  n = rows_per_set;
  shared = shared_input;
  x = input;
  have_forward = false;
  have_backprop = false;
  const index_t rows = c * n;
  for (index_t l = 1; l <= L; ++l) {
    z[std::size_t(l)].reserve(ctx, rows, width(l));
    if (l < L) a[std::size_t(l)].reserve(ctx, rows, width(l));
  }
  have_forward = true;
  MatrixView<const T> out = z[std::size_t(L)].view(rows, width(L));
  if (n == 0) return out;
  const T bscale = beta();
  const index_t pld = params.ld;

  if (per_set()) {
    for_each_set(ctx, c, call_flops(), [&](index_t set) {
      const T* p = params.data + set * pld;
      for (index_t l = 1; l <= L; ++l) {
        const index_t in = width(l - 1), o = width(l);
        index_t ld = 0;
        const T* av = input_of(set, l, ld);
        T* zl = z[std::size_t(l)].data();
        set_gemm(CblasNoTrans, CblasTrans, n, o, in, scale(l), av, ld, p + spec.weight_offset(l - 1), in,
                 zl + set * n * o, o);
        const bool hidden = l < L, bias = has_bias(l);
        if (!hidden && !bias) continue;
        T* al = hidden ? a[std::size_t(l)].data() : zl;
        const kern::ActParams ap = act(l);
        const T* b = bias ? params.data + spec.bias_offset(l - 1) : nullptr;
        DYNASCOPE_WITH_ACT(ap.kind, A,
                           serial_rows(set * n, (set + 1) * n, BiasActivation<T, A>{zl, al, b, pld, n, o, bscale, ap.slope}));
      }
    });
    return out;
  }

  for (index_t l = 1; l <= L; ++l) {
    const index_t o = width(l);
    index_t stride_in = 0;
    MatrixView<const T> av = input_block(l, stride_in);
    T* zl = z[std::size_t(l)].data();
    blas::gemm_strided_batched<T>(ctx, Op::none, Op::trans, scale(l), av, stride_in, weight_block(params, l), pld,
                                  T(0), MatrixView<T>{zl, n, o, o, ctx.backend(), ctx.device()}, n * o, c);
    const bool hidden = l < L, bias = has_bias(l);
    if (!hidden && !bias) continue;
    T* al = hidden ? a[std::size_t(l)].data() : zl;
    const kern::ActParams ap = act(l);
    const T* b = bias ? params.data + spec.bias_offset(l - 1) : nullptr;
    DYNASCOPE_WITH_ACT(ap.kind, A, kern::all_rows(ctx, rows, o, BiasActivation<T, A>{zl, al, b, pld, n, o, bscale, ap.slope}));
  }
  return out;
}

template <class T>
BatchedMlpEngine<T>::BatchedMlpEngine(const Context& ctx, MlpSpec spec)
    : impl_(std::make_unique<Impl>(ctx, std::move(spec))) {}
template <class T>
BatchedMlpEngine<T>::~BatchedMlpEngine() = default;
template <class T>
BatchedMlpEngine<T>::BatchedMlpEngine(BatchedMlpEngine&&) noexcept = default;
template <class T>
BatchedMlpEngine<T>& BatchedMlpEngine<T>::operator=(BatchedMlpEngine&&) noexcept = default;
template <class T>
const MlpSpec& BatchedMlpEngine<T>::spec() const { return impl_->spec; }
template <class T>
const Context& BatchedMlpEngine<T>::context() const { return impl_->ctx; }
template <class T>
index_t BatchedMlpEngine<T>::sets() const { return impl_->c; }
template <class T>
index_t BatchedMlpEngine<T>::batch() const { return impl_->n; }

template <class T>
MatrixView<const T> BatchedMlpEngine<T>::forward(MatrixView<const T> params, MatrixView<const T> x) {
  return impl_->forward(params, x, false, "BatchedMlpEngine::forward");
}

template <class T>
MatrixView<const T> BatchedMlpEngine<T>::forward_shared(MatrixView<const T> params, MatrixView<const T> x) {
  return impl_->forward(params, x, true, "BatchedMlpEngine::forward_shared");
}

template <class T>
MatrixView<const T> BatchedMlpEngine<T>::preactivation(index_t l) const {
  const Impl& s = *impl_;
  s.require_forward("BatchedMlpEngine::preactivation");
  if (l < 1 || l > s.L)
    throw InvalidArgument("BatchedMlpEngine::preactivation: layer must be in 1.." + std::to_string(s.L));
  return s.z[std::size_t(l)].view(s.c * s.n, s.width(l));
}

template <class T>
MatrixView<const T> BatchedMlpEngine<T>::activation(index_t l) const {
  const Impl& s = *impl_;
  s.require_forward("BatchedMlpEngine::activation");
  if (l < 0 || l > s.L)
    throw InvalidArgument("BatchedMlpEngine::activation: layer must be in 0.." + std::to_string(s.L));
  if (l == 0) return s.x;
  if (l == s.L) return s.z[std::size_t(l)].view(s.c * s.n, s.width(l));
  return s.a[std::size_t(l)].view(s.c * s.n, s.width(l));
}

template <class T>
MatrixView<const T> BatchedMlpEngine<T>::delta(index_t l) const {
  const Impl& s = *impl_;
  s.require_backprop("BatchedMlpEngine::delta");
  if (l < 1 || l > s.L) throw InvalidArgument("BatchedMlpEngine::delta: layer must be in 1.." + std::to_string(s.L));
  return s.delta[std::size_t(l)].view(s.c * s.n, s.width(l));
}

// delta_L = g ;  delta_{l-1} = c_l (delta_l W_l) * sigma'_{l-1}(z_{l-1}), per set.
template <class T>
void BatchedMlpEngine<T>::backprop(MatrixView<const T> params, MatrixView<const T> cotangents) {
  Impl& s = *impl_;
  constexpr const char* call = "BatchedMlpEngine::backprop";
  s.require_forward(call);
  s.check_params(params, call);
  if (params.rows != s.c)
    throw ShapeMismatch(std::string(call) + ": params must be the forward's " + std::to_string(s.c) +
                        " parameter sets, got " + dims(params.rows, params.cols));
  const index_t n = s.n, sets = s.c, rows = sets * n, out = s.width(s.L);
  check_matrix(s.ctx, cotangents, rows, out, call, "cotangents");
  s.have_backprop = false;
  for (index_t l = 1; l <= s.L; ++l) s.delta[std::size_t(l)].reserve(s.ctx, rows, s.width(l));
  s.have_backprop = true;
  if (n == 0) return;
  const index_t pld = params.ld;

  if (s.per_set()) {
    for_each_set(s.ctx, sets, s.call_flops(), [&](index_t set) {
      T* top = s.delta[std::size_t(s.L)].data();
      for (index_t r = set * n; r < (set + 1) * n; ++r)
        std::copy(cotangents.data + r * cotangents.ld, cotangents.data + r * cotangents.ld + out, top + r * out);
      const T* p = params.data + set * pld;
      for (index_t l = s.L; l >= 2; --l) {
        const index_t in = s.width(l - 1), o = s.width(l);
        T* below = s.delta[std::size_t(l - 1)].data();
        set_gemm(CblasNoTrans, CblasNoTrans, n, in, o, s.scale(l), s.delta[std::size_t(l)].data() + set * n * o, o,
                 p + s.spec.weight_offset(l - 1), in, below + set * n * in, in);
        const kern::ActParams ap = s.act(l - 1);
        const T* zp = s.z[std::size_t(l - 1)].data();
        DYNASCOPE_WITH_ACT(ap.kind, A, serial_rows(set * n, (set + 1) * n, TimesDerivative<T, A>{below, zp, in, ap.slope}));
      }
    });
    return;
  }

  copy(s.ctx, cotangents, s.delta[std::size_t(s.L)].view(rows, out));
  for (index_t l = s.L; l >= 2; --l) {
    const index_t in = s.width(l - 1), o = s.width(l);
    T* below = s.delta[std::size_t(l - 1)].data();
    blas::gemm_strided_batched<T>(s.ctx, Op::none, Op::none, s.scale(l),
                                  MatrixView<const T>{s.delta[std::size_t(l)].data(), n, o, o, s.ctx.backend(),
                                                      s.ctx.device()},
                                  n * o, s.weight_block(params, l), pld, T(0),
                                  MatrixView<T>{below, n, in, in, s.ctx.backend(), s.ctx.device()}, n * in, sets);
    const kern::ActParams ap = s.act(l - 1);
    const T* zp = s.z[std::size_t(l - 1)].data();
    DYNASCOPE_WITH_ACT(ap.kind, A, kern::all_rows(s.ctx, rows, in, TimesDerivative<T, A>{below, zp, in, ap.slope}));
  }
}

// dW_{l,c} = c_l delta_{l,c}^T a_{l-1,c} ;  db_{l,c} = beta sum_n delta_{l,c}
template <class T>
void BatchedMlpEngine<T>::param_grads(MatrixView<T> grads) {
  Impl& s = *impl_;
  constexpr const char* call = "BatchedMlpEngine::param_grads";
  s.require_backprop(call);
  const index_t n = s.n, sets = s.c, P = s.P;
  check_matrix(s.ctx, grads, sets, P, call, "grads");
  const index_t gld = grads.ld;
  if (n == 0) {  // no samples: every gradient is zero
    for (index_t set = 0; set < sets; ++set)
      detail::fill_zero_bytes(s.ctx, grads.data + set * gld, grads.backend, std::size_t(P) * sizeof(T));
    return;
  }
  const T bscale = s.beta();

  if (s.per_set()) {
    for_each_set(s.ctx, sets, s.call_flops(), [&](index_t set) {
      T* g = grads.data + set * gld;
      for (index_t l = 1; l <= s.L; ++l) {
        const index_t in = s.width(l - 1), o = s.width(l);
        const T* d = s.delta[std::size_t(l)].data() + set * n * o;
        index_t ld = 0;
        const T* av = s.input_of(set, l, ld);
        set_gemm(CblasTrans, CblasNoTrans, o, in, n, s.scale(l), d, o, av, ld, g + s.spec.weight_offset(l - 1), in);
        if (s.has_bias(l)) column_sums(d, n, o, bscale, g + s.spec.bias_offset(l - 1));
      }
    });
    return;
  }

  for (index_t l = 1; l <= s.L; ++l) {
    const index_t in = s.width(l - 1), o = s.width(l);
    MatrixView<const T> d0{s.delta[std::size_t(l)].data(), n, o, o, s.ctx.backend(), s.ctx.device()};
    index_t stride_in = 0;
    MatrixView<const T> av = s.input_block(l, stride_in);
    blas::gemm_strided_batched<T>(s.ctx, Op::trans, Op::none, s.scale(l), d0, n * o, av, stride_in, T(0),
                                  MatrixView<T>{grads.data + s.spec.weight_offset(l - 1), o, in, in, grads.backend,
                                                grads.device},
                                  gld, sets);
    if (!s.has_bias(l)) continue;
    if (s.ctx.is_host()) {
      // Serial column sums per set: the per-set schedule's bits, and cheap beside the GEMMs.
      for (index_t set = 0; set < sets; ++set)
        column_sums(d0.data + set * n * o, n, o, bscale, grads.data + set * gld + s.spec.bias_offset(l - 1));
      continue;
    }
    // cuda: db_c = beta 1^T delta_c, one strided-batched GEMM with a shared row of ones.
    MatrixView<T> ones = s.ones.reserve(s.ctx, 1, n);
    kern::parallel_for(s.ctx, n, FillOne<T>{ones.data});
    blas::gemm_strided_batched<T>(s.ctx, Op::none, Op::none, bscale, MatrixView<const T>(ones), 0, d0, n * o, T(0),
                                  MatrixView<T>{grads.data + s.spec.bias_offset(l - 1), 1, o, o, grads.backend,
                                                grads.device},
                                  gld, sets);
  }
}

// ---- per-set losses ----

namespace {

// Sample i of set s: its loss / (N O) (so the segment sum is the mean), its gradient row written.
template <class T>
struct MseTerm {
  MatrixView<const T> f, y;  // y: values [C*N or N, O] (unused with labels)
  const std::int64_t* lab;   // null: values
  index_t lab_stride;
  T* g;
  index_t gld, n, o;
  bool shared;
  T gscale;
  double inv_count;
  DYNASCOPE_HD double operator()(index_t s, index_t i) const {
    const index_t r = s * n + i, t = shared ? i : r;
    double acc = 0;
    for (index_t j = 0; j < o; ++j) {
      const T target = lab ? (lab[t * lab_stride] == j ? T(1) : T(0)) : y(t, j);
      const T d = f(r, j) - target;
      acc += double(d) * double(d);
      if (g) g[r * gld + j] = gscale * d;
    }
    return acc * inv_count;
  }
};

// -log softmax(f)_label / N; NaN for a label outside [0, O).
template <class T>
struct XentTerm {
  MatrixView<const T> f;
  const std::int64_t* lab;
  index_t lab_stride;
  T* g;
  index_t gld, n, o;
  bool shared;
  T inv_n;
  DYNASCOPE_HD double operator()(index_t s, index_t i) const {
    const index_t r = s * n + i, t = shared ? i : r;
    T mx = f(r, 0);
    for (index_t j = 1; j < o; ++j) mx = f(r, j) > mx ? f(r, j) : mx;
    double se = 0;
    for (index_t j = 0; j < o; ++j) se += kern::exp(double(f(r, j) - mx));
    const std::int64_t cls = lab[t * lab_stride];
    const bool valid = cls >= 0 && cls < o;
    if (g)
      for (index_t j = 0; j < o; ++j)
        g[r * gld + j] = inv_n * static_cast<T>(kern::exp(double(f(r, j) - mx)) / se - (j == cls ? 1.0 : 0.0));
    return valid ? (double(mx) + kern::log(se) - double(f(r, valid ? cls : 0))) / double(n) : NAN;
  }
};

}  // namespace

template <class T>
void batched_loss_and_grad(const Context& ctx, Loss loss, index_t sets, MatrixView<const T> outputs,
                           const Targets<T>& targets, VectorView<T> losses, MatrixView<T> grad) {
  constexpr const char* call = "batched_loss_and_grad";
  if (sets < 1) throw InvalidArgument(std::string(call) + ": sets must be >= 1, got " + std::to_string(sets));
  check_matrix(ctx, outputs, call, "outputs");
  if (outputs.rows % sets != 0)
    throw ShapeMismatch(std::string(call) + ": outputs must have C*N rows for C = " + std::to_string(sets) +
                        " sets, got " + dims(outputs.rows, outputs.cols));
  const index_t n = outputs.rows / sets, o = outputs.cols;
  const bool labels = targets.has_labels();
  const index_t trows = targets.rows();
  if (trows != n && trows != sets * n)
    throw ShapeMismatch(std::string(call) + ": targets must have C*N = " + std::to_string(sets * n) +
                        " rows (one block per set) or N = " + std::to_string(n) + " (shared), got " +
                        std::to_string(trows));
  if (labels) {
    check_vector(ctx, targets.labels, call, "targets (labels)");
  } else {
    if (targets.values.cols != o)
      throw ShapeMismatch(std::string(call) + ": targets must have " + std::to_string(o) +
                          " columns (the outputs'), got " + dims(targets.values.rows, targets.values.cols));
    check_matrix(ctx, targets.values, call, "targets");
  }
  check_vector(ctx, losses, call, "losses");
  if (losses.size != sets)
    throw ShapeMismatch(std::string(call) + ": losses must have one element per set (" + std::to_string(sets) +
                        "), got " + std::to_string(losses.size));
  if (grad.data) check_matrix(ctx, grad, outputs.rows, o, call, "grad");
  if (loss == Loss::xent && !labels)
    throw InvalidArgument(std::string(call) + ": loss xent needs integer class labels as targets");
  if (loss == Loss::xent && o < 1 && n > 0)
    throw ShapeMismatch(std::string(call) + ": loss xent needs at least one output column");
  // Shared targets only when they cannot be per set (C = 1 reads the same rows either way).
  const bool shared = trows != sets * n;
  const std::int64_t* lab = targets.labels.data;
  const index_t lab_stride = targets.labels.stride;
  if (loss == Loss::mse) {
    const T gscale = T(2) / static_cast<T>(double(n) * double(o));
    const double inv_count = 1.0 / (double(n) * double(o));
    kern::segmented_sum(ctx, sets, n,
                        MseTerm<T>{outputs, targets.values, labels ? lab : nullptr, lab_stride, grad.data, grad.ld, n,
                                   o, shared, gscale, inv_count},
                        losses);
    return;
  }
  kern::segmented_sum(ctx, sets, n,
                      XentTerm<T>{outputs, lab, lab_stride, grad.data, grad.ld, n, o, shared,
                                  T(1) / static_cast<T>(std::max<index_t>(n, 1))},
                      losses);
}

template class BatchedMlpEngine<float>;
template class BatchedMlpEngine<double>;
template void batched_loss_and_grad<float>(const Context&, Loss, index_t, MatrixView<const float>,
                                           const Targets<float>&, VectorView<float>, MatrixView<float>);
template void batched_loss_and_grad<double>(const Context&, Loss, index_t, MatrixView<const double>,
                                            const Targets<double>&, VectorView<double>, MatrixView<double>);

}  // namespace dynascope::model
