#pragma once
// Losses with PyTorch's semantics on a network's outputs: values, gradients with respect to the
// outputs, and products with the loss Hessian (what the Gauss-Newton and Hessian operators need).
// Independent of the trainer and the datasets, so that every diagnostic that takes a loss
// (curvature, SGLD, training response) includes only this.
#include <cstdint>
#include <string>

#include "dynascope/context.hpp"
#include "dynascope/enum_names.hpp"
#include "dynascope/view.hpp"

namespace dynascope::model {

// mse  = mean over all N*O elements of (f - y)^2            (torch.nn.MSELoss())
// xent = mean over samples of -log softmax(f)_label          (torch.nn.CrossEntropyLoss())
// mse with integer labels uses one-hot targets.
enum class Loss { mse, xent };
inline constexpr auto loss_names = enum_names<Loss>(
    "loss", {{Loss::mse, "mse"}, {Loss::xent, "xent"}, {Loss::xent, "cross_entropy", Spelling::alias}});
static_assert(well_formed(loss_names));
DYNASCOPE_API Loss parse_loss(const std::string& text);
DYNASCOPE_API const char* to_string(Loss loss) noexcept;

// Targets on the context's backend: float values [N, O] or integer labels [N] (one of the two).
template <class T>
struct Targets {
  MatrixView<const T> values;
  VectorView<const std::int64_t> labels;
  bool has_labels() const { return labels.data != nullptr; }
  index_t rows() const { return has_labels() ? labels.size : values.rows; }
};

struct LossValue {
  double loss = 0;
  double accuracy = -1;  // fraction of argmax(f) == label; -1 without labels
};

// Loss of outputs [N, O] against targets; when grad is non-empty it receives dLoss/df [N, O].
// Non-finite outputs give a non-finite loss (never an exception): callers decide.
template <class T>
DYNASCOPE_API LossValue loss_and_grad(const Context& ctx, Loss loss, MatrixView<const T> outputs,
                                      const Targets<T>& targets, MatrixView<T> grad = {});

// out = H_loss fdot for k blocks of output tangents fdot [k*N, O], where H_loss is the Hessian of
// the loss with respect to the outputs f [N, O] (mse: 2 I / (N O); xent: (diag p - p p^T) / N per
// sample, p = softmax f). Used by the Gauss-Newton and Hessian operators.
template <class T>
DYNASCOPE_API void loss_hessian_apply(const Context& ctx, Loss loss, MatrixView<const T> outputs,
                                      const Targets<T>& targets, MatrixView<const T> fdot, MatrixView<T> out);

}  // namespace dynascope::model
