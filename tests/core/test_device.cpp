// Device identity on the cuda backend: arrays and views record the device of their memory, every
// launch, reduction, copy and cuBLAS/cuSOLVER call runs on its context's device, and the calling
// thread's current device is left as it was. Skips in the fixture when no device (or, for the
// cases that need another device than the default, fewer than two) is usable.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cuda/cuda_api.hpp"
#include "dynascope/array.hpp"
#include "dynascope/blas.hpp"
#include "dynascope/context.hpp"
#include "kernels/launch.cuh"
#include "support/test_support.hpp"

namespace dynascope {
namespace {

using test::expect_error;

class DeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device: " << cuda_status().reason;
    devices = cuda_status().device_count;
  }
  int devices = 0;
};

// Cases about a device other than the default one.
class OtherDeviceTest : public DeviceTest {
 protected:
  void SetUp() override {
    DeviceTest::SetUp();
    if (IsSkipped()) return;
    if (devices < 2) GTEST_SKIP() << "needs two CUDA devices, " << devices << " usable";
  }
};

struct Affine {  // y[i] = 0.5 * x[i] + i
  double* y;
  const double* x;
  DYNASCOPE_HD void operator()(index_t i) const { y[i] = 0.5 * x[i] + double(i); }
};

struct Square {  // x[i]^2
  const double* x;
  DYNASCOPE_HD double operator()(index_t i) const { return x[i] * x[i]; }
};

std::vector<double> values(index_t n, double scale) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) v[std::size_t(i)] = scale * std::sin(0.37 * double(i) + 0.1);
  return v;
}

// Allocation, copies, parallel_for, reduce_sum, gemm and syevd through a context on `device`
// while device 0 is current; results against float64 host references.
void run_on(int device) {
  cuda_api::set_device(0);
  Context dev = Context::cuda(device);
  ASSERT_EQ(cuda_api::current_device(), 0) << "creating the context changed the current device";

  const index_t m = 37, k = 23, n = 29;
  const std::vector<double> ha = values(m * k, 1.0), hb = values(k * n, 0.75);
  Array<double> a = Array<double>::from_host(dev, {m, k}, ha);
  Array<double> b = Array<double>::from_host(dev, {k, n}, hb);
  Array<double> c = Array<double>::zeros(dev, {m, n});
  for (const Array<double>* x : {&a, &b, &c}) {
    EXPECT_EQ(x->backend(), Backend::cuda);
    EXPECT_EQ(x->device(), device);
    EXPECT_EQ(x->matrix().device, device);
    EXPECT_EQ(x->vector().device, device);
    EXPECT_EQ(x->matrix().row(0).device, device);
  }
  EXPECT_EQ(c.to_vector(dev), std::vector<double>(std::size_t(m * n), 0.0));  // the memset
  Array<double> a2 = a.to(dev);                                                 // device to device
  EXPECT_EQ(a2.device(), device);
  EXPECT_EQ(a2.to_vector(dev), ha);

  // parallel_for and reduce_sum.
  Array<double> y(dev, {m * k});
  kern::parallel_for(dev, m * k, Affine{y.data(), a.data()});
  const std::vector<double> hy = y.to_vector(dev);
  double ref_sum = 0;
  for (index_t i = 0; i < m * k; ++i) {
    EXPECT_EQ(hy[std::size_t(i)], 0.5 * ha[std::size_t(i)] + double(i)) << i;
    ref_sum += ha[std::size_t(i)] * ha[std::size_t(i)];
  }
  EXPECT_NEAR(kern::reduce_sum(dev, m * k, Square{a.data()}), ref_sum, 1e-12 * ref_sum);

  // gemm against naive float64 loops.
  blas::gemm<double>(dev, blas::Op::none, blas::Op::none, 1.0, a.matrix(), b.matrix(), 0.0, c.matrix());
  const std::vector<double> hc = c.to_vector(dev);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j) {
      double s = 0;
      for (index_t p = 0; p < k; ++p) s += ha[std::size_t(i * k + p)] * hb[std::size_t(p * n + j)];
      EXPECT_NEAR(hc[std::size_t(i * n + j)], s, 1e-12 * (1 + std::abs(s))) << i << "," << j;
    }

  // syevd of S = A A^T + m I (symmetric positive definite) against host LAPACK, with the
  // residual |S v - lambda v| of the device eigenvectors.
  std::vector<double> hs(std::size_t(m * m));
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < m; ++j) {
      double s = i == j ? double(m) : 0.0;
      for (index_t p = 0; p < k; ++p) s += ha[std::size_t(i * k + p)] * ha[std::size_t(j * k + p)];
      hs[std::size_t(i * m + j)] = s;
    }
  Array<double> s = Array<double>::from_host(dev, {m, m}, hs);
  Array<double> w(dev, {m});
  lapack::syevd<double>(dev, s.matrix(), w.vector());
  const std::vector<double> dw = w.to_vector(dev), dv = s.to_vector(dev);
  const Context host = Context::host();
  Array<double> hs_copy = Array<double>::from_host(host, {m, m}, hs);
  Array<double> hw(host, {m});
  lapack::syevd<double>(host, hs_copy.matrix(), hw.vector());
  const double scale = hw.data()[m - 1];
  for (index_t e = 0; e < m; ++e) {
    EXPECT_NEAR(dw[std::size_t(e)], hw.data()[e], 1e-11 * scale) << e;
    double r2 = 0;  // row e of the row-major result is the eigenvector of w[e]
    for (index_t i = 0; i < m; ++i) {
      double sv = 0;
      for (index_t j = 0; j < m; ++j) sv += hs[std::size_t(i * m + j)] * dv[std::size_t(e * m + j)];
      const double r = sv - dw[std::size_t(e)] * dv[std::size_t(e * m + i)];
      r2 += r * r;
    }
    EXPECT_LT(std::sqrt(r2), 1e-10 * scale) << e;
  }

  dev.synchronize();
  EXPECT_EQ(cuda_api::current_device(), 0) << "the library left another device current";
}

TEST_F(DeviceTest, WorkOnTheDefaultDeviceRecordsItAndMatchesHost) { run_on(0); }

TEST_F(OtherDeviceTest, WorkOnTheLastDeviceRunsThereAndLeavesTheCurrentDeviceAlone) { run_on(devices - 1); }

TEST_F(OtherDeviceTest, ViewOnAnotherDeviceThanTheContextIsRefused) {
  const int last = devices - 1;
  Context d0 = Context::cuda(0), dl = Context::cuda(last);
  Array<double> x = Array<double>::from_host(dl, {4}, std::vector<double>{1, 2, 3, 4});
  Array<double> y = Array<double>::zeros(d0, {4});
  expect_error<InvalidArgument>([&] { (void)blas::nrm2<double>(d0, x.vector()); },
                                {"blas::nrm2: x lives on cuda device " + std::to_string(last),
                                 "the context computes on cuda device 0"});
  expect_error<InvalidArgument>([&] { blas::axpy<double>(dl, 1.0, x.vector(), y.vector()); },
                                {"blas::axpy: y lives on cuda device 0", "cuda device " + std::to_string(last)});
  // Copies between devices are allowed (peer to peer through the context's stream). The upload
  // ran on dl's stream, which d0's stream does not wait for: the caller orders the two.
  dl.synchronize();
  Array<double> moved = x.to(d0);
  EXPECT_EQ(moved.device(), 0);
  EXPECT_EQ(moved.to_vector(d0), (std::vector<double>{1, 2, 3, 4}));
  EXPECT_NEAR(blas::nrm2<double>(d0, moved.vector()), std::sqrt(30.0), 1e-14);
}

}  // namespace
}  // namespace dynascope
