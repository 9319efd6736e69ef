// The activation bodies against finite differences and closed forms.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/activation.cuh"

namespace dynascope {
namespace {

using kern::Act;

TEST(Activation, DerivativesMatchCentralDifferences) {
  const Act all[] = {Act::identity, Act::relu, Act::leaky_relu, Act::abs, Act::tanh, Act::gelu, Act::softplus, Act::sigmoid};
  for (Act a : all) {
    const kern::ActParams p{a, 0.13};
    for (double z = -6.05; z <= 6.05; z += 0.1) {  // never exactly at the kink 0
      const double h = 1e-5;
      const double d1 = (kern::act_value(p, z + h) - kern::act_value(p, z - h)) / (2 * h);
      const double d2 = (kern::act_deriv(p, z + h) - kern::act_deriv(p, z - h)) / (2 * h);
      EXPECT_NEAR(kern::act_deriv(p, z), d1, 1e-8) << int(a) << " z=" << z;
      EXPECT_NEAR(kern::act_deriv2(p, z), d2, 1e-7) << int(a) << " z=" << z;
    }
  }
}

TEST(Activation, ValuesFollowPyTorchDefinitions) {
  const double z = 0.7;
  EXPECT_DOUBLE_EQ(kern::act_value<double>({Act::gelu, 0}, z), 0.5 * z * (1 + std::erf(z / std::sqrt(2.0))));
  EXPECT_DOUBLE_EQ(kern::act_value<double>({Act::softplus, 0}, z), std::log1p(std::exp(z)));
  EXPECT_DOUBLE_EQ(kern::act_value<double>({Act::softplus, 0}, 25.0), 25.0);  // threshold 20
  EXPECT_DOUBLE_EQ(kern::act_value<double>({Act::sigmoid, 0}, -800.0), 0.0);
  EXPECT_DOUBLE_EQ(kern::act_value<double>({Act::sigmoid, 0}, 800.0), 1.0);
  EXPECT_DOUBLE_EQ(kern::act_value<double>({Act::leaky_relu, 0.2}, -2.0), -0.4);
  EXPECT_DOUBLE_EQ(kern::act_value<double>({Act::abs, 0}, -2.0), 2.0);
  EXPECT_DOUBLE_EQ(kern::act_deriv<double>({Act::abs, 0}, 0.0), 0.0);
  EXPECT_DOUBLE_EQ(kern::act_deriv<double>({Act::relu, 0}, 0.0), 0.0);  // PyTorch: relu'(0) = 0
  EXPECT_FLOAT_EQ(kern::act_value<float>({Act::tanh, 0}, 0.5f), std::tanh(0.5f));
}

}  // namespace
}  // namespace dynascope
