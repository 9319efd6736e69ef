#pragma once
// The empirical neural tangent kernel (docs/definitions.md):
//   Theta(x, x')_ab = sum_p df_a(x)/dw_p df_b(x')/dw_p.
//
// Output modes for X1 [N1, D], X2 [N2, D] (X2 absent: X2 = X1, computed on the symmetric path):
//   full     [N1, O, N2, O]  every output pair           (as a matrix: [N1*O, N2*O])
//   diagonal [N1, N2, O]     Theta_aa per output         (as a matrix: [N1, N2*O])
//   trace    [N1, N2]        sum_a Theta_aa              (a sum over outputs, not a mean)
//   sum      [N1, N2]        the kernel of sum_a f_a
// Methods, all giving the same numbers:
//   structured  per dense layer (c_l^2 A A'^T + beta^2) .* (Delta Delta'^T), never a Jacobian;
//               cost ~ 2 N1 N2 sum_l (a_l + O_eff b_l) plus the backward passes. The MLP fast path.
//   jvp         columns Theta e_j = J1 (J2^T e_j), batched; also the matrix-free operator
//               (NtkOperator) for linalg's solvers.
//   jacobian    per-sample Jacobian tiles contracted by GEMM/SYRK: the oracle, and the generic
//               path of gram_from_jacobians.
//   automatic   the cheapest by a flop model among those whose tiles fit the workspace budget.
// Memory: the output plus tiles bounded by ctx.workspace_budget(); large N is tiled over sample
// blocks. The output may live on the host while computing on cuda (tiles are copied out), so a
// kernel larger than device memory works, e.g. into a memory-mapped .npy (io::MappedNpy).
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dynascope/engine.hpp"
#include "dynascope/enum_names.hpp"
#include "dynascope/linalg.hpp"

namespace dynascope::ntk {

enum class Outputs { full, diagonal, trace, sum };
inline constexpr auto outputs_names = enum_names<Outputs>(
    "NTK output mode",
    {{Outputs::full, "full"}, {Outputs::diagonal, "diagonal"}, {Outputs::trace, "trace"}, {Outputs::sum, "sum"}});
static_assert(well_formed(outputs_names));
enum class Method { automatic, structured, jvp, jacobian };
inline constexpr auto method_names = enum_names<Method>(
    "NTK method", {{Method::automatic, "auto"},
                   {Method::automatic, "automatic", Spelling::alias},
                   {Method::structured, "structured"},
                   {Method::jvp, "jvp"},
                   {Method::jacobian, "jacobian"}});
static_assert(well_formed(method_names));
DYNASCOPE_API Outputs parse_outputs(const std::string& text);
DYNASCOPE_API Method parse_method(const std::string& text);
DYNASCOPE_API const char* to_string(Outputs o) noexcept;
DYNASCOPE_API const char* to_string(Method m) noexcept;

// Without x2 the kernel (and each per-layer kernel) is exactly symmetric, bit for bit, whatever
// the method, tiling, thread count or backend; methods and workspace budgets otherwise agree to
// rounding (docs/reproducibility.md).
struct NtkOptions {
  Outputs outputs = Outputs::trace;
  Method method = Method::automatic;
  bool per_layer = false;  // also return Theta_l per layer (structured and jacobian methods)
};

// Shape of the kernel as a tensor and as the matrix it is stored as.
struct KernelShape {
  Shape tensor;                 // e.g. [N1, O, N2, O]
  index_t rows = 0, cols = 0;   // the row-major matrix view
};
DYNASCOPE_API KernelShape kernel_shape(Outputs outputs, index_t n1, index_t n2, index_t o);

struct NtkInfo {
  Method method = Method::structured;  // the method used
  std::string reason;                  // why automatic chose it
  double flops = 0;                    // floating-point operations of the chosen method (model)
  index_t tiles = 0;                   // sample-block tiles computed
  KernelShape shape;
  // structured on host: flops and wall time of the Gram GEMMs alone (A A'^T and Delta Delta'^T),
  // to compare with the machine's GEMM rate; 0 elsewhere.
  double gram_flops = 0, gram_seconds = 0;
};

// Writes the kernel into `out` (rows x cols of kernel_shape; on ctx's backend or, for a cuda
// context, on the host). per_layer, when given, must hold L views of the same shape.
// Throws ShapeMismatch for inconsistent dimensions, InvalidArgument for empty inputs,
// OutOfMemory when the budget cannot hold even one tile.
template <class T>
DYNASCOPE_API NtkInfo empirical_ntk_into(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                         MatrixView<const T> x1, std::optional<MatrixView<const T>> x2,
                                         const NtkOptions& options, MatrixView<T> out,
                                         const std::vector<MatrixView<T>>& per_layer = {});

template <class T>
struct NtkResult {
  NtkInfo info;
  Array<T> kernel;                  // kernel_shape(...).tensor
  std::vector<Array<T>> per_layer;  // when requested: L kernels summing to `kernel`
};

template <class T>
DYNASCOPE_API NtkResult<T> empirical_ntk(const Context& ctx, const model::MlpSpec& spec, const T* params,
                                         MatrixView<const T> x1, std::optional<MatrixView<const T>> x2 = std::nullopt,
                                         const NtkOptions& options = {});

// ---- Generic Gram from caller-supplied Jacobians or per-sample gradients ----
// A source fills rows [row0, row0 + rows) of samples: out is [rows * O, P], row (n * O + a) =
// df_a(x_{row0+n})/dw (O = 1 for per-sample gradients). Memory on ctx's backend.
template <class T>
using JacobianSource = std::function<void(index_t row0, index_t rows, MatrixView<T> out)>;

// The kernel of two Jacobian sources (source2 absent: the symmetric path over source1), tiled
// under the workspace budget, into out as in empirical_ntk_into.
template <class T>
DYNASCOPE_API NtkInfo gram_from_jacobians(const Context& ctx, const JacobianSource<T>& source1, index_t n1,
                                          const JacobianSource<T>* source2, index_t n2, index_t outputs, index_t params,
                                          Outputs mode, MatrixView<T> out);

// ---- The matrix-free NTK operator in function space (for linalg's solvers) ----
// Theta v = J (J^T v) over the N samples of x, v of length N*O (index n*O + a): one batched
// backward and one batched forward-mode pass per block. x and params stay owned by the caller.
template <class T>
class DYNASCOPE_API NtkOperator final : public linalg::LinearOperator<T> {
 public:
  NtkOperator(const Context& ctx, const model::MlpSpec& spec, const T* params, MatrixView<const T> x);
  ~NtkOperator() override;
  NtkOperator(NtkOperator&&) noexcept;
  index_t size() const override;  // N * O
  // Y = Theta V for k vectors at once: V, Y are [k, N*O] (contiguous) on ctx's backend.
  void apply(MatrixView<const T> v, MatrixView<T> y) override;
  const Context& context() const override;
  index_t applications() const;  // vectors applied so far

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- Alignment and kernel motion ----
// The eigenpairs of a kernel matrix come from linalg::eigh (all of them, descending) or
// linalg::eigsh (the top k).

// Cumulative energy E_k(V) = sum_{i<=k} ||u_i^T V||^2 / ||V||_F^2 of the columns of V [M, C]
// (a vector is C = 1) for each k in ks (1-based, clipped to M), from eigenpairs of an M x M
// kernel in descending order with their vectors on the host: all M of them (linalg::eigh), or the
// top ones (linalg::eigsh), when every k is at most their number (InvalidArgument otherwise).
template <class T>
DYNASCOPE_API std::vector<double> cumulative_energy(const linalg::EigenResult<T>& eig, MatrixView<const double> v,
                                                    const std::vector<index_t>& ks);

// The same from the leading eigenvectors only: `vectors` [k, M], row i = unit eigenvector of the
// i-th largest eigenvalue (e.g. from linalg::eigsh); every k in ks must be in [1, rows].
template <class T>
DYNASCOPE_API std::vector<double> cumulative_energy(MatrixView<const T> vectors, MatrixView<const double> v,
                                                    const std::vector<index_t>& ks);

// Kernel-target alignment <K, Y Y^T>_F / (||K||_F ||Y Y^T||_F) for targets Y [M, C] (for one
// column: y^T K y / (||K||_F ||y||^2)). centered: K -> HKH and Y -> HY, H = I - 11^T/M
// (Cortes, Mohri and Rostamizadeh's centred alignment; K must be symmetric). One pass over K,
// no copy of it, sums in float64.
DYNASCOPE_API double kernel_target_alignment(MatrixView<const double> kernel, MatrixView<const double> y,
                                             bool centered);
DYNASCOPE_API double kernel_target_alignment(MatrixView<const float> kernel, MatrixView<const double> y,
                                             bool centered);

// Kernel distance S(K1, K2) = 1 - <K1, K2>_F / (||K1||_F ||K2||_F).
DYNASCOPE_API double kernel_distance(MatrixView<const double> k1, MatrixView<const double> k2);

// The k values at which energies are reported: 1, 2, 5, 10, 20, 50, 100, ... up to m (and m).
DYNASCOPE_API std::vector<index_t> energy_ks(index_t m);

}  // namespace dynascope::ntk
