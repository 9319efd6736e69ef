#pragma once
// MlpEngine: forward, reverse and forward mode through an MLP, batched over samples, on either
// backend. An engine binds a context and a spec and keeps reusable buffers, so repeated calls
// (training steps, checkpoints, Lanczos iterations) allocate nothing once sizes are stable.
//
// Usage: forward(params, x) first; it keeps the pre-activations, which every differentiation
// call that follows uses. Parameters, inputs and outputs live on the context's backend.
//
// Cost per call for a layer with fan-in a, fan-out b and N samples: forward 2Nab flops; backprop
// 2KNab (K cotangent blocks); param_grads 2KNab; jvp with T tangents 4TNab. GEMM-shaped work goes
// to BLAS, the elementwise work (bias, activation and its derivatives) is fused into one pass.
#include <memory>

#include "dynascope/model.hpp"

namespace dynascope::model {

template <class T>
class DYNASCOPE_API MlpEngine {
 public:
  MlpEngine(const Context& ctx, MlpSpec spec);
  ~MlpEngine();
  MlpEngine(MlpEngine&&) noexcept;
  MlpEngine& operator=(MlpEngine&&) noexcept;

  const MlpSpec& spec() const;
  const Context& context() const;

  // Forward pass over x [N, d_0]; returns the outputs [N, d_L] (valid until the next forward).
  // Throws ShapeMismatch when x does not have d_0 columns.
  MatrixView<const T> forward(const T* params, MatrixView<const T> x);
  index_t batch() const;  // N of the last forward
  // z_l [N, d_l] and a_l [N, d_l] of the last forward, layer l = 1..L (a_L = z_L = outputs);
  // activation(0) is the input x.
  MatrixView<const T> preactivation(index_t l) const;
  MatrixView<const T> activation(index_t l) const;

  // Reverse mode. cotangents [K*N, d_L]: K blocks of N rows, row k*N + n is the cotangent of
  // sample n in block k. Afterwards delta(l) = dL_k/dz_l for each layer l = 1..L as [K*N, d_l].
  void backprop(const T* params, MatrixView<const T> cotangents, index_t blocks = 1);
  MatrixView<const T> delta(index_t l) const;
  index_t blocks() const;  // K of the last backprop
  // After backprop: grads [K, P], row k = sum_n J_n^T g_{k,n} (vector-Jacobian products).
  void param_grads(MatrixView<T> grads);
  // After backprop: the input cotangents [K*N, d_0].
  void input_grads(const T* params, MatrixView<T> out);
  // After backprop with one block: per-sample gradients [N, P], row n = J_n^T g_n.
  void per_sample_grads(MatrixView<T> out);

  // Forward mode after forward. Parameter tangents [T, P] -> output tangents [T*N, d_L]
  // (row t*N + n = J_n v_t), one pass of GEMMs with the tangent dimension batched.
  void jvp(const T* params, MatrixView<const T> tangents, MatrixView<T> out);
  // Input tangents [T*N, d_0] (row t*N + n perturbs sample n) -> output tangents [T*N, d_L].
  void jvp_inputs(const T* params, MatrixView<const T> tangents, index_t t, MatrixView<T> out);

  // Forward-over-reverse (the R-operator) for exact Hessian-vector products of a loss
  // L(w) = loss(f(X; w)), after forward. hvp_forward pushes parameter tangents V [k, P] through
  // the network, keeping every layer's tangents, and returns fdot = J V as [k*N, d_L].
  // hvp_prepare takes g = dL/df [N, d_L] and keeps what every product at these parameters shares
  // (the deltas of g, and the sigma'' term of activations that have one) until the next forward;
  // hvp_backward then takes gdot = (d/dt) g along V [k*N, d_L] (for a loss, H_loss fdot) and
  // writes H V [k, P], with H the full Hessian of L in parameter space. The overload with g is
  // hvp_prepare followed by the other. Cost per vector: 2 m_1 + 6 sum_{l>=2} m_l flops with
  // m_l = 2 N d_{l-1} d_l (hvp_prepare adds sum_{l>=2} m_l once, twice for smooth activations).
  void hvp_prepare(const T* params, MatrixView<const T> g);
  MatrixView<const T> hvp_forward(const T* params, MatrixView<const T> tangents);
  void hvp_backward(const T* params, MatrixView<const T> gdot, MatrixView<const T> tangents, MatrixView<T> out);
  void hvp_backward(const T* params, MatrixView<const T> g, MatrixView<const T> gdot, MatrixView<const T> tangents,
                    MatrixView<T> out);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The gradient of L = sum_n <g_n, f(x_n)> for arbitrary cotangents, and the per-sample
// gradients of the same, over any number of samples: the samples are tiled so that the engine's
// buffers stay within ctx.workspace_budget() (the output itself is the caller's). Tiling changes
// only rounding: each tile's GEMMs have the tile's row count, and BLAS may sum a row's dot
// products in another order for another row count.
template <class T>
DYNASCOPE_API void per_sample_gradients(const Context& ctx, const MlpSpec& spec, const T* params,
                                        MatrixView<const T> x, MatrixView<const T> cotangents, MatrixView<T> out);

}  // namespace dynascope::model
