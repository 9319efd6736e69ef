// A separate project using the installed dynascope: one GEMM checked against a hand sum.
#include <dynascope/blas.hpp>
#include <dynascope/config.hpp>
#include <dynascope/dlpack.hpp>

#include <cstdio>
#include <vector>

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
  Array<float> x(ctx, {2, 2});
  DLManagedTensor* t = to_dlpack(std::move(x));
  t->deleter(t);
  std::printf("consumer ok (dynascope %s, cuda %d)\n", DYNASCOPE_VERSION_STRING, DYNASCOPE_WITH_CUDA);
  return 0;
}
