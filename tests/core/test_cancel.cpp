// Context::set_cancel_check: long computations ask it between small units of work (every operator
// application of an eigensolver, every SGLD step) and stop with Cancelled when it says so, far more
// often than they report progress (the Python package's Ctrl-C relies on it).
#include <gtest/gtest.h>

#include <vector>

#include "dynascope/context.hpp"
#include "dynascope/error.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/sgld.hpp"

namespace {

using namespace dynascope;

TEST(CancelCheck, EigshStopsAtTheNextOperatorApplication) {
  Context ctx = Context::host(1);
  const index_t n = 600;  // above dense_below: Lanczos
  index_t applications = 0, checks = 0;
  linalg::CallbackOperator<double> op(ctx, n, [&](MatrixView<const double> x, MatrixView<double> y) {
    ++applications;
    for (index_t r = 0; r < x.rows; ++r)
      for (index_t i = 0; i < n; ++i) y(r, i) = double(i + 1) * x(r, i);  // diag(1..n)
  });
  ctx.set_cancel_check([&] { return ++checks > 7; });
  linalg::LanczosOptions o;
  o.k = 5;
  o.tol = 1e-12;
  EXPECT_THROW(linalg::eigsh<double>(op, o), Cancelled);
  EXPECT_EQ(checks, 8);
  EXPECT_EQ(applications, 7);  // asked before each application; the eighth never ran

  // Without a check (or one that says no) the same problem runs to the end and is right.
  ctx.set_cancel_check({});
  const auto r = linalg::eigsh<double>(op, o);
  ASSERT_EQ(r.values.size(), 5u);
  EXPECT_NEAR(r.values[0], double(n), 1e-8 * n);
}

TEST(CancelCheck, SgldStopsAtTheNextStepWhateverTheProgressInterval) {
  Context ctx = Context::host(1);
  const index_t P = 4;
  std::vector<double> w(P, 0.0);
  index_t calls = 0, checks = 0, progress_calls = 0;
  const sgld::BatchedLossGrad<double> fn = [&](const sgld::LossGradRequest<double>& q) {
    ++calls;
    for (index_t c = 0; c < q.params.rows; ++c) {
      double l = 0;
      for (index_t i = 0; i < P; ++i) {
        l += 0.5 * q.params(c, i) * q.params(c, i);
        q.grads(c, i) = q.params(c, i);
      }
      q.losses[c] = l;
    }
  };
  sgld::LlcOptions o;
  o.chains = 2;
  o.draws = 1000;
  o.burnin = 0;
  o.progress_every = 500;   // progress far apart: the check still stops at the next step
  o.on_progress = [&](const sgld::LlcProgress&) { ++progress_calls; return true; };
  ctx.set_cancel_check([&] { return ++checks > 30; });
  EXPECT_THROW(sgld::estimate_llc<double>(ctx, fn, {w.data(), P, 1}, 100, o), Cancelled);
  EXPECT_EQ(checks, 31);
  EXPECT_LE(calls, 32);          // the loss at w* and one per step taken
  EXPECT_EQ(progress_calls, 0);  // stopped long before the first progress report
}

TEST(CancelCheck, AHookMayThrowItsOwnException) {
  Context ctx = Context::host(1);
  ctx.set_cancel_check([]() -> bool { throw InvalidArgument("the caller's reason"); });
  EXPECT_THROW(ctx.check_cancelled(), InvalidArgument);
  ctx.set_cancel_check([] { return false; });
  EXPECT_NO_THROW(ctx.check_cancelled());
}

}  // namespace
