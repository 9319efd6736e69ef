#pragma once
// The step form's first-layer shortcut (elasticity.cpp, step_form): the outputs f(x; w+_c) of G
// SGD-stepped parameter sets without the first layer's [G, d1, d0] products.
//
// An SGD step on source x_c changes the first layer by a rank-one matrix (model.hpp's
// z_1 = c_1 W_1 x + beta b_1):
//   W1+_c = W1 - eta c_1 s_c delta_c x_c^T,   b1+_c = b1 - eta beta s_c delta_c
// with delta_c = dl_c/dz_1 at x_c (the backprop of the scaled cotangent, as step_form runs it) and
// s_c its scale, so for every input x
//   z_1(x; w+_c) = z_1(x; w) - eta s_c (c_1^2 <x_c, x> + beta^2 [layer 1 has a bias]) delta_c.
// One GEMM gives z_1(x; w) for the M inputs, one [G, M] GEMM the inner products, an elementwise
// pass a_1 = sigma_1(z_1) for every (set, input), and layers 2..L run as their own network (the
// tail: widths d_1..d_L, the same activations, biases and parameterization, so the same c_l) on
// the stepped rows of w+ from layer 2 on. For 784-512-512-10 that drops the first layer's
// 2 * 784 * 512 flops per (set, input), 60% of a forward.
//
// Only the sgd update is rank one (adam's g / (|g| + eps) is elementwise), and a one-layer network
// has no tail: first_layer_step_applies says when the shortcut holds.
//
// The results equal BatchedMlpEngine::forward_shared / forward on the explicitly updated w+ to
// rounding, not bit for bit: the first layer's change is applied to z_1 instead of to W_1 (in
// float32 that is the more accurate of the two, the update is never rounded into W_1).
#include <memory>

#include "dynascope/elasticity.hpp"
#include "dynascope/export.h"
#include "dynascope/model.hpp"

// internal, not detail: an elasticity::detail would hide dynascope::detail (check_matrix, Buffer)
// from the code of namespace elasticity that includes this header.
namespace dynascope::elasticity::internal {

// The shortcut holds for `update` on `spec`: sgd, and at least two layers.
DYNASCOPE_API bool first_layer_step_applies(const model::MlpSpec& spec, Update update);

template <class T>
class DYNASCOPE_API FirstLayerStep {
 public:
  // InvalidArgument for a spec the shortcut does not apply to (one layer) or an invalid spec.
  FirstLayerStep(const Context& ctx, model::MlpSpec spec);
  ~FirstLayerStep();
  FirstLayerStep(FirstLayerStep&&) noexcept;
  FirstLayerStep& operator=(FirstLayerStep&&) noexcept;

  const model::MlpSpec& spec() const;

  // f(x_j; w+_c) for G = wplus.rows parameter sets and the inputs x [M, d_0] shared by every set,
  // as [G*M, d_L] (row c*M + j), the layout of BatchedMlpEngine::forward_shared; valid until the
  // next call.
  //   params  w, the flat parameters (spec().num_params() values) the step starts from
  //   wplus   [G, P] (any leading dimension): the stepped parameters; only layers 2..L are read
  //           (the first layer's entries may be left unwritten)
  //   delta1  [G, d_1] (any leading dimension): the first-layer deltas of the G sources
  //   scale   [G] float64 factors s_c the deltas are multiplied by (the cotangent scales of
  //           step_form's update), or empty (data null) for s_c = 1
  //   xs      [G, d_0]: the sources x_c the step was taken on
  //   eta     the step size (finite)
  // Every view lives on ctx's backend. Throws ShapeMismatch naming `wplus`, `delta1`, `scale`, `xs`
  // or `x` for wrong shapes, InvalidArgument for a null params, views on another backend or a
  // non-finite eta.
  MatrixView<const T> forward_shared(const T* params, MatrixView<const T> wplus, MatrixView<const T> delta1,
                                     VectorView<const double> scale, MatrixView<const T> xs, MatrixView<const T> x,
                                     double eta);
  // The same for per-set inputs x [G*N, d_0] (block c = set c's N rows), as BatchedMlpEngine::
  // forward: [G*N, d_L]. With x = xs (N = 1) it gives each set's own source, f(x_c; w+_c).
  MatrixView<const T> forward(const T* params, MatrixView<const T> wplus, MatrixView<const T> delta1,
                              VectorView<const double> scale, MatrixView<const T> xs, MatrixView<const T> x,
                              double eta);

  // The multiply-adds x 2 of the products of one call over G sets and M rows (shared: M inputs
  // for every set; otherwise M rows per set): the first layer's GEMM, the inner products and the
  // tail's forward; elementwise work is not counted.
  static double flops(const model::MlpSpec& spec, index_t sets, index_t rows, bool shared);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dynascope::elasticity::internal
