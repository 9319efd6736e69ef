#pragma once
// BatchedMlpEngine: C parameter sets of one architecture pushed through the network together —
// the SGLD chains of the LLC, the one-step probes of local elasticity. Parameters are [C, P]
// (row c = set c's flat vector, model.hpp's layout); inputs are either shared by every set
// ([N, d_0]) or one block of N rows per set ([C*N, d_0], block c = set c's rows); every
// per-sample result is [C*N, width], block c belonging to set c.
//
// Each set's products have the shapes of one MlpEngine call on its N rows, whatever C is. On the
// host backend, when C >= the context's threads, the sets are shared among threads and each set
// runs its whole layer sequence with single-threaded GEMMs and serial elementwise loops; with
// fewer sets than threads, the sets go one after another per layer with threaded GEMMs and
// threaded elementwise passes. Either way set c's arithmetic is the same operations on the same
// shapes, so its results are bit-identical for every C on a one-thread context, and whenever the
// two runs take the same path (C >= threads in both) on any context; across paths they agree to
// rounding (a threaded GEMM may split its sums differently). On cuda, each layer is one
// strided-batched GEMM over the sets (stride 0 for shared inputs) and one elementwise launch.
// Results agree with C separate MlpEngine calls to rounding (the bias gradients are plain
// column sums here, a gemv there).
#include <memory>

#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"

namespace dynascope::model {

template <class T>
class DYNASCOPE_API BatchedMlpEngine {
 public:
  BatchedMlpEngine(const Context& ctx, MlpSpec spec);
  ~BatchedMlpEngine();
  BatchedMlpEngine(BatchedMlpEngine&&) noexcept;
  BatchedMlpEngine& operator=(BatchedMlpEngine&&) noexcept;

  const MlpSpec& spec() const;
  const Context& context() const;

  // Forward pass of params [C, P] (C >= 1, any leading dimension) over per-set inputs x [C*N, d_0]
  // (x.rows divisible by C) or, with forward_shared, one input block x [N, d_0] used by every set.
  // Returns the outputs [C*N, d_L], valid until the next forward; x must stay alive and unchanged
  // until the last differentiation call that follows (activation(0) and param_grads read it).
  // Throws ShapeMismatch naming `params` or `x` for wrong shapes.
  MatrixView<const T> forward(MatrixView<const T> params, MatrixView<const T> x);
  MatrixView<const T> forward_shared(MatrixView<const T> params, MatrixView<const T> x);
  index_t sets() const;   // C of the last forward
  index_t batch() const;  // N (rows per set) of the last forward
  // z_l, a_l of the last forward as [C*N, d_l], l = 1..L (a_L = z_L = the outputs); activation(0)
  // is the input as given ([N, d_0] after forward_shared).
  MatrixView<const T> preactivation(index_t l) const;
  MatrixView<const T> activation(index_t l) const;

  // Reverse mode after forward: cotangents [C*N, d_L] (row c*N + n: the cotangent of set c's
  // sample n); params must be the ones of the forward. Then param_grads writes grads [C, P] (any
  // leading dimension), row c = sum_n J_{c,n}^T g_{c,n}. Throws ShapeMismatch naming `params`,
  // `cotangents` or `grads`, InvalidArgument when called out of order.
  void backprop(MatrixView<const T> params, MatrixView<const T> cotangents);
  MatrixView<const T> delta(index_t l) const;  // dL/dz_l as [C*N, d_l]
  void param_grads(MatrixView<T> grads);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Per-set losses of outputs [C*N, O] (C blocks of N rows) against targets with C*N rows (each
// block its own targets), or N rows shared by every block (targets.rows() == N): losses[c] = the
// loss of block c (losses.hpp's definition: mse the mean over N*O elements, xent the mean over N
// samples), written on ctx's backend without a host round trip; grad, when non-empty, receives
// dLoss_c/df as [C*N, O]. Non-finite outputs give a non-finite loss for that set only, and so
// does a label outside [0, O) under xent (as loss_and_grad). Each loss is summed in float64 in
// tiles laid out by N alone and rounded once: set c's loss has the same bits whatever C is.
// Throws InvalidArgument for sets < 1 or xent without labels, ShapeMismatch naming `outputs`,
// `targets`, `losses` or `grad` for wrong shapes.
template <class T>
DYNASCOPE_API void batched_loss_and_grad(const Context& ctx, Loss loss, index_t sets, MatrixView<const T> outputs,
                                         const Targets<T>& targets, VectorView<T> losses, MatrixView<T> grad = {});

}  // namespace dynascope::model
