#pragma once
// The public activation enum mapped onto the kernels' enum (kernels/activation.cuh), for every
// file that launches the activation kernels (engine.cpp, batched_engine.cpp).
#include <string>

#include "dynascope/error.hpp"
#include "dynascope/model.hpp"
#include "kernels/activation.cuh"

namespace dynascope::model::internal {

// The public enum and the kernels' enum are separate types (the kernels include no public
// header); the mapping is spelled out so that reordering either one cannot silently change the
// activation a network computes.
inline kern::Act kernel_activation(Activation a) {
  switch (a) {
    case Activation::identity: return kern::Act::identity;
    case Activation::relu: return kern::Act::relu;
    case Activation::leaky_relu: return kern::Act::leaky_relu;
    case Activation::abs: return kern::Act::abs;
    case Activation::tanh: return kern::Act::tanh;
    case Activation::gelu: return kern::Act::gelu;
    case Activation::softplus: return kern::Act::softplus;
    case Activation::sigmoid: return kern::Act::sigmoid;
  }
  throw InvalidArgument("unknown activation value " + std::to_string(static_cast<int>(a)));
}

inline kern::ActParams act_params(const ActivationSpec& a) { return {kernel_activation(a.kind), a.slope}; }

}  // namespace dynascope::model::internal
