#include <gtest/gtest.h>

#include <utility>

#include "dynascope/dlpack.hpp"

namespace dynascope {
namespace {

TEST(DLPack, RoundTripKeepsDataWithoutCopy) {
  Context ctx = Context::host();
  Array<float> a(ctx, {3, 4});
  for (index_t i = 0; i < 12; ++i) a.data()[i] = float(i);
  float* p = a.data();
  DLManagedTensor* t = to_dlpack(std::move(a));
  EXPECT_EQ(t->dl_tensor.data, p);
  EXPECT_EQ(t->dl_tensor.ndim, 2);
  EXPECT_EQ(t->dl_tensor.shape[1], 4);
  EXPECT_EQ(t->dl_tensor.dtype.code, kDLFloat);
  EXPECT_EQ(t->dl_tensor.dtype.bits, 32);
  EXPECT_EQ(t->dl_tensor.device.device_type, kDLCPU);
  Array<float> b = from_dlpack<float>(t);
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.shape(), (Shape{3, 4}));
  EXPECT_EQ(b.data()[7], 7.0f);
}

TEST(DLPack, ForeignDeleterRunsWhenArrayDies) {
  static int deleted = 0;
  static double storage[6] = {1, 2, 3, 4, 5, 6};
  static int64_t shape[2] = {2, 3};
  static int64_t strides[2] = {3, 1};
  auto* t = new DLManagedTensor{};
  t->dl_tensor = {storage, {kDLCPU, 0}, 2, {kDLFloat, 64, 1}, shape, strides, 0};
  t->deleter = [](DLManagedTensor* self) { ++deleted; delete self; };
  {
    Array<double> a = from_dlpack<double>(t);
    EXPECT_EQ(a.matrix()(1, 2), 6.0);
  }
  EXPECT_EQ(deleted, 1);
}

TEST(DLPack, WrongDtypeOrNonContiguousIsRejected) {
  double storage[6] = {};
  int64_t shape[2] = {2, 3};
  int64_t col_major[2] = {1, 2};
  DLManagedTensor t{};
  t.dl_tensor = {storage, {kDLCPU, 0}, 2, {kDLFloat, 64, 1}, shape, col_major, 0};
  EXPECT_THROW(from_dlpack<double>(&t), InvalidArgument);
  EXPECT_THROW(from_dlpack<float>(&t), InvalidArgument);
  t.dl_tensor.device.device_type = kDLVulkan;
  t.dl_tensor.strides = nullptr;
  EXPECT_THROW(from_dlpack<double>(&t), InvalidArgument);
}

// Views made from an array carry its device, and the device survives a DLPack round trip. The
// "cuda" memory here is a host buffer that is never dereferenced: only the bookkeeping is under
// test, so it runs without a GPU.
TEST(DLPack, DeviceOfCudaTensorsSurvivesArraysViewsAndRoundTrips) {
  static float storage[12] = {};
  static int64_t shape[2] = {3, 4};
  static int deleted = 0;
  auto* t = new DLManagedTensor{};
  t->dl_tensor = {storage, {kDLCUDA, 3}, 2, {kDLFloat, 32, 1}, shape, nullptr, 0};
  t->deleter = [](DLManagedTensor* self) { ++deleted; delete self; };
  {
    Array<float> a = from_dlpack<float>(t);
    EXPECT_EQ(a.backend(), Backend::cuda);
    EXPECT_EQ(a.device(), 3);
    const MatrixView<float> m = a.matrix();
    EXPECT_EQ(m.device, 3);
    EXPECT_EQ(m.row(1).device, 3);
    EXPECT_EQ(m.col(2).device, 3);
    EXPECT_EQ(m.block(1, 1, 2, 2).device, 3);
    EXPECT_EQ(MatrixView<const float>(m).device, 3);
    EXPECT_EQ(a.vector().device, 3);
    EXPECT_EQ(VectorView<const float>(a.vector()).device, 3);
    EXPECT_EQ(std::as_const(a).matrix().device, 3);

    Array<float> moved = std::move(a);
    EXPECT_EQ(moved.device(), 3);
    DLManagedTensor* out = to_dlpack(std::move(moved));
    EXPECT_EQ(out->dl_tensor.device.device_type, kDLCUDA);
    EXPECT_EQ(out->dl_tensor.device.device_id, 3);
    EXPECT_EQ(out->dl_tensor.data, storage);
    Array<float> back = from_dlpack<float>(out);
    EXPECT_EQ(back.device(), 3);
    EXPECT_EQ(view_dlpack<float>(t->dl_tensor).device, 3);
  }
  EXPECT_EQ(deleted, 1);

  // Host memory is device 0 whatever the id says (kDLCUDAHost is pinned host memory).
  DLTensor pinned{storage, {kDLCUDAHost, 2}, 2, {kDLFloat, 32, 1}, shape, nullptr, 0};
  EXPECT_EQ(view_dlpack<float>(pinned).backend, Backend::host);
  EXPECT_EQ(view_dlpack<float>(pinned).device, 0);
}

TEST(DLPack, HostArraysAndTheirViewsSayDeviceZero) {
  Context ctx = Context::host();
  Array<double> a(ctx, {2, 3});
  EXPECT_EQ(a.device(), 0);
  EXPECT_EQ(a.matrix().device, 0);
  EXPECT_EQ(a.vector().device, 0);
  DLManagedTensor* t = to_dlpack(std::move(a));
  EXPECT_EQ(t->dl_tensor.device.device_type, kDLCPU);
  EXPECT_EQ(t->dl_tensor.device.device_id, 0);
  t->deleter(t);
  // An adopting constructor ignores a device for host memory.
  Array<double> adopted(nullptr, {0}, Backend::host, nullptr, 5);
  EXPECT_EQ(adopted.device(), 0);
}

TEST(DLPack, StridedViewOfRowSlice) {
  double storage[12];
  for (int i = 0; i < 12; ++i) storage[i] = i;
  int64_t shape[2] = {3, 2};
  int64_t strides[2] = {4, 1};
  DLTensor t{storage, {kDLCPU, 0}, 2, {kDLFloat, 64, 1}, shape, strides, 8};
  MatrixView<double> v = view_dlpack<double>(t);
  EXPECT_EQ(v.rows, 3);
  EXPECT_EQ(v.ld, 4);
  EXPECT_EQ(v(2, 1), 9.0 + 1.0);
}

}  // namespace
}  // namespace dynascope
