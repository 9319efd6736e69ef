#include <gtest/gtest.h>

#include <cstdint>
#include <memory>

#include <string>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/config.hpp"
#include "dynascope/context.hpp"

namespace dynascope {
namespace {

TEST(Context, HostContextHasNoStreamAndDefaultBudget) {
  Context ctx = Context::host(3);
  EXPECT_TRUE(ctx.is_host());
  EXPECT_EQ(ctx.threads(), 3);
  EXPECT_EQ(ctx.stream(), nullptr);
  EXPECT_GT(ctx.workspace_budget(), 0u);
  ctx.set_workspace_budget(1234);
  EXPECT_EQ(ctx.workspace_budget(), 1234u);
  EXPECT_THROW(Context::host(-1), InvalidArgument);
  EXPECT_THROW(ctx.cublas(), InvalidArgument);
}

TEST(Context, CudaWithoutUsableDeviceSaysWhy) {
  const CudaStatus st = cuda_status();
  EXPECT_EQ(st.built, DYNASCOPE_WITH_CUDA == 1);
  if (st.device_count > 0) GTEST_SKIP() << "a CUDA device is usable here";
  EXPECT_FALSE(cuda_available());
  EXPECT_FALSE(st.reason.empty());
  try {
    Context::cuda(0);
    FAIL() << "Context::cuda succeeded without a device";
  } catch (const Error& e) {
    EXPECT_EQ(e.category(), st.built ? ErrorCategory::no_device : ErrorCategory::not_built_with_cuda) << e.what();
  }
  EXPECT_TRUE(Context::automatic().is_host());
}

TEST(Context, AllocatorHookSeesEveryAllocation) {
  Context ctx = Context::host();
  int allocs = 0, frees = 0;
  std::size_t live = 0;
  ctx.set_allocator({[&](std::size_t bytes, void*) {
                       ++allocs;
                       live += bytes;
                       return ::operator new(bytes);
                     },
                     [&](void* p, std::size_t bytes, void*) {
                       ++frees;
                       live -= bytes;
                       ::operator delete(p);
                     }});
  {
    Array<double> a(ctx, {10, 3});
    Array<float> b = Array<float>::zeros(ctx, {7});
    EXPECT_EQ(allocs, 2);
    EXPECT_EQ(live, 10 * 3 * sizeof(double) + 7 * sizeof(float));
    for (index_t i = 0; i < 7; ++i) EXPECT_EQ(b.data()[i], 0.0f);
  }
  EXPECT_EQ(frees, 2);
  EXPECT_EQ(live, 0u);
  EXPECT_THROW(ctx.set_allocator({[](std::size_t, void*) { return nullptr; }, nullptr}), InvalidArgument);
}

TEST(Context, BlocksAreFreedByTheHookThatAllocatedThemAfterTheHookChanges) {
  // Swapping hooks between allocations: each block goes back to its own allocator, and blocks
  // from the default allocator are freed by the default (std::free), never by a later hook.
  Context ctx = Context::host();
  std::vector<void*> from_a, freed_by_a, from_b, freed_by_b;
  const auto hook = [](std::vector<void*>& got, std::vector<void*>& freed) {
    return Allocator{[&got](std::size_t bytes, void*) {
                       void* p = ::operator new(bytes);
                       got.push_back(p);
                       return p;
                     },
                     [&freed](void* p, std::size_t, void*) {
                       freed.push_back(p);
                       ::operator delete(p);
                     }};
  };
  auto plain = std::make_unique<Array<double>>(ctx, Shape{16});  // default allocator
  ctx.set_allocator(hook(from_a, freed_by_a));
  auto a = std::make_unique<Array<double>>(ctx, Shape{8});
  ctx.set_allocator(hook(from_b, freed_by_b));
  auto b = std::make_unique<Array<float>>(ctx, Shape{4});
  ASSERT_EQ(from_a.size(), 1u);
  ASSERT_EQ(from_b.size(), 1u);
  a.reset();
  EXPECT_EQ(freed_by_a, from_a);
  EXPECT_TRUE(freed_by_b.empty());
  plain.reset();  // aligned_alloc'd: freeing it through hook B would be undefined behaviour
  EXPECT_TRUE(freed_by_b.empty());
  EXPECT_EQ(freed_by_a.size(), 1u);
  b.reset();
  EXPECT_EQ(freed_by_b, from_b);
}

TEST(Context, FailedAllocationIsOutOfMemory) {
  Context ctx = Context::host();
  ctx.set_allocator({[](std::size_t, void*) -> void* { return nullptr; }, [](void*, std::size_t, void*) {}});
  try {
    Array<float> a(ctx, {1000});
    FAIL();
  } catch (const OutOfMemory& e) {
    EXPECT_NE(std::string(e.what()).find("4000 bytes"), std::string::npos) << e.what();
  }
}

TEST(Context, SinksReceiveMessagesAndProgress) {
  Context ctx = Context::host();
  ctx.log(LogLevel::info, "dropped: no sink yet");
  std::vector<std::string> logs;
  std::vector<index_t> done;
  ctx.set_log_sink([&](LogLevel, std::string_view m) { logs.emplace_back(m); });
  ctx.set_progress_sink([&](std::string_view, index_t d, index_t) { done.push_back(d); });
  ctx.log(LogLevel::warning, "hello");
  ctx.progress("task", 3, 10);
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_EQ(logs[0], "hello");
  EXPECT_EQ(done, std::vector<index_t>{3});
}

TEST(Array, ShapesViewsAndMoves) {
  Context ctx = Context::host();
  Array<float> a(ctx, {4, 3, 2});
  EXPECT_EQ(a.size(), 24);
  EXPECT_EQ(a.rank(), 3);
  auto m = a.matrix();
  EXPECT_EQ(m.rows, 4);
  EXPECT_EQ(m.cols, 6);
  for (index_t i = 0; i < 24; ++i) a.data()[i] = float(i);
  Array<float> b = std::move(a);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.data()[5], 5.0f);
  b.reshape({6, 4});
  EXPECT_EQ(b.matrix()(1, 1), 5.0f);
  EXPECT_THROW(b.reshape({5, 5}), ShapeMismatch);
  EXPECT_THROW(Array<float>(ctx, {-1, 2}), InvalidArgument);
  EXPECT_THROW(Array<float>(ctx, {1LL << 40, 1LL << 40}), InvalidArgument);
  Array<float> c = b.clone(ctx);
  EXPECT_NE(c.data(), b.data());
  EXPECT_EQ(c.data()[23], 23.0f);
}

TEST(Array, FromHostAndToVectorRoundTrip) {
  Context ctx = Context::host();
  const std::vector<double> values{1.5, -2.0, 3.25, 0.0, 7.0, -0.5};
  Array<double> a = Array<double>::from_host(ctx, {2, 3}, values);
  EXPECT_EQ(a.shape(), (Shape{2, 3}));
  EXPECT_NE(a.data(), values.data());  // a copy, not an alias
  EXPECT_EQ(a.matrix()(1, 2), -0.5);
  EXPECT_EQ(a.to_vector(ctx), values);
  // The pointer overload reads exactly numel values.
  const std::int32_t raw[4] = {4, 3, 2, 1};
  Array<std::int32_t> b = Array<std::int32_t>::from_host(ctx, {4}, raw);
  EXPECT_EQ(b.to_vector(ctx), (std::vector<std::int32_t>{4, 3, 2, 1}));
  // Empty shapes round-trip to an empty vector; a null pointer is fine there.
  EXPECT_TRUE(Array<float>::from_host(ctx, {0, 5}, static_cast<const float*>(nullptr)).to_vector(ctx).empty());
  // Too few or too many values name both counts.
  try {
    (void)Array<double>::from_host(ctx, {4, 2}, values);
    ADD_FAILURE() << "expected ShapeMismatch";
  } catch (const ShapeMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 2] holds 8 elements but 6 values"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)Array<double>::from_host(ctx, {2, 2}, values), ShapeMismatch);
}

TEST(Array, StridedCopyBetweenViews) {
  Context ctx = Context::host();
  std::vector<double> src(5 * 7), dst(5 * 4, -1);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = double(i);
  MatrixView<const double> s{src.data() + 2, 5, 3, 7};
  MatrixView<double> d{dst.data(), 5, 3, 4};
  copy(ctx, s, d);
  for (index_t i = 0; i < 5; ++i) {
    for (index_t j = 0; j < 3; ++j) EXPECT_EQ(d(i, j), src[std::size_t(i * 7 + j + 2)]);
    EXPECT_EQ(dst[std::size_t(i * 4 + 3)], -1);
  }
  MatrixView<double> wrong{dst.data(), 4, 3, 4};
  EXPECT_THROW(copy(ctx, s, wrong), ShapeMismatch);
}

TEST(Errors, CategoriesAndMessages) {
  FileFormatError f("x.npy", "truncated");
  EXPECT_EQ(f.category(), ErrorCategory::file_format);
  EXPECT_STREQ(f.what(), "x.npy: truncated");
  DeviceError d(ErrorCategory::cublas, "cublasSgemm(...)", 13, "CUBLAS_STATUS_EXECUTION_FAILED", "blas.cpp", 42);
  EXPECT_EQ(d.code(), 13);
  EXPECT_NE(std::string(d.what()).find("cublasSgemm(...) at blas.cpp:42"), std::string::npos) << d.what();
}

}  // namespace
}  // namespace dynascope
