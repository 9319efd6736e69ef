// A separate project using the installed dynascope with no language standard of its own: every
// public header must compile with what dynascope::dynascope brings (C++20, DLPack), and one GEMM
// is checked against a hand sum.
#include <dynascope/array.hpp>
#include <dynascope/blas.hpp>
#include <dynascope/config.hpp>
#include <dynascope/context.hpp>
#include <dynascope/curvature.hpp>
#include <dynascope/datasets.hpp>
#include <dynascope/dispatch.hpp>
#include <dynascope/dlpack.hpp>
#include <dynascope/engine.hpp>
#include <dynascope/enum_names.hpp>
#include <dynascope/error.hpp>
#include <dynascope/export.h>
#include <dynascope/io.hpp>
#include <dynascope/linalg.hpp>
#include <dynascope/losses.hpp>
#include <dynascope/model.hpp>
#include <dynascope/ntk.hpp>
#include <dynascope/primitives.hpp>
#include <dynascope/random.hpp>
#include <dynascope/spectra.hpp>
#include <dynascope/train.hpp>
#include <dynascope/types.hpp>
#include <dynascope/view.hpp>

#include <cstdio>
#include <vector>

static_assert(__cplusplus >= 202002L, "dynascope::dynascope must require C++20 of its consumers");

int main() {
  using namespace dynascope;
  Context ctx = Context::host();
  std::vector<double> a{1, 2, 3, 4, 5, 6}, b{1, 0, 0, 1, 1, 1}, c(4, 0.0);
  blas::gemm<double>(ctx, blas::Op::none, blas::Op::none, 1.0, MatrixView<const double>{a.data(), 2, 3, 3},
                     MatrixView<const double>{b.data(), 3, 2, 2}, 0.0, MatrixView<double>{c.data(), 2, 2, 2});
  // [1 2 3; 4 5 6] [1 0; 0 1; 1 1] = [4 5; 10 11]
  if (c != std::vector<double>{4, 5, 10, 11}) {
    std::printf("wrong product\n");
    return 1;
  }
  // A model type from model.hpp (C++20: defaulted comparisons) in use.
  const model::MlpSpec spec = model::MlpSpec::from_arch("3-4-2");
  if (spec.num_params() != 3 * 4 + 4 + 4 * 2 + 2) {
    std::printf("wrong parameter count %lld\n", static_cast<long long>(spec.num_params()));
    return 1;
  }
  Array<float> x(ctx, {2, 2});
  DLManagedTensor* t = to_dlpack(std::move(x));
  t->deleter(t);
  std::printf("consumer ok (dynascope %s, cuda %d)\n", DYNASCOPE_VERSION_STRING, DYNASCOPE_WITH_CUDA);
  return 0;
}
