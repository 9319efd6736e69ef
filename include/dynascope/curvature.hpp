#pragma once
// Curvature of a network's loss in parameter space as linear operators (docs/definitions.md): the
// Gauss-Newton matrix G = J^T H_loss J and the exact loss Hessian, for the solvers of linalg.hpp
// (eigsh, slq, hutchinson, hutchpp).
#include <memory>
#include <string>

#include "dynascope/enum_names.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"

namespace dynascope::linalg {

// Curvature of L(w) = loss(f(X; w), Y) in parameter space (size P): the Gauss-Newton matrix
// G = J^T H_loss J, or the exact Hessian (forward-over-reverse, no finite differences).
enum class Curvature { gauss_newton, hessian };
inline constexpr auto curvature_names = enum_names<Curvature>(
    "curvature operator", {{Curvature::gauss_newton, "ggn"},
                           {Curvature::gauss_newton, "gauss_newton", Spelling::alias},
                           {Curvature::hessian, "hessian"}});
static_assert(well_formed(curvature_names));
DYNASCOPE_API Curvature parse_curvature(const std::string& text);  // "ggn" (or "gauss_newton"), "hessian"
DYNASCOPE_API const char* to_string(Curvature c) noexcept;         // "ggn", "hessian"

struct CurvatureOptions {
  // On host contexts the samples are split into this many contiguous chunks of rows, each with
  // its own engine; a product runs the chunks on the context's threads at once, each chunk's
  // GEMMs on one thread, and sums the chunks' products in chunk order. One parallel region per
  // product instead of a threaded BLAS call and an elementwise loop per layer. 0: one chunk per
  // host thread, each of at least 256 samples. The chunk count changes only rounding (the sum
  // over samples is split); cuda contexts always use one chunk.
  index_t sample_chunks = 0;
};

template <class T>
class DYNASCOPE_API CurvatureOperator final : public LinearOperator<T> {
 public:
  // x [N, D] and the targets stay owned by the caller. The forward pass, the loss gradient and
  // what the products share (hvp_prepare, the softmax) are computed here, once.
  CurvatureOperator(const Context& ctx, Curvature kind, const model::MlpSpec& spec, const T* params,
                    MatrixView<const T> x, const model::Targets<T>& targets, model::Loss loss,
                    const CurvatureOptions& options = {});
  ~CurvatureOperator() override;
  index_t size() const override;
  void apply(MatrixView<const T> v, MatrixView<T> y) override;
  const Context& context() const override { return ctx_; }
  // Blocks of at most this many vectors per apply (solvers split larger ones): each vector of a
  // block holds per-sample tangents of every layer and a product share per chunk, so a block of a
  // hundred probes would page-fault hundreds of MB for no speed; the block's buffers stay within
  // min(64 MiB, a quarter of the context's workspace budget), at least one vector.
  index_t max_block() const override;
  double loss_value() const;  // L(w) at the parameters
  index_t sample_chunks() const;  // the chunks the samples were split into (CurvatureOptions)

 private:
  Context ctx_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dynascope::linalg
