// One table per enum: parse_*, to_string and the command line read the same spellings. Every
// spelling round-trips, aliases parse to their value but are never produced, the messages name
// the text and list the canonical names, and dtype dispatch picks the precision or names the dtype.
#include <gtest/gtest.h>

#include <string>
#include <type_traits>

#include "dynascope/curvature.hpp"
#include "dynascope/datasets.hpp"
#include "dynascope/dispatch.hpp"
#include "dynascope/enum_names.hpp"
#include "dynascope/linalg.hpp"
#include "dynascope/losses.hpp"
#include "dynascope/model.hpp"
#include "dynascope/ntk.hpp"
#include "dynascope/train.hpp"

namespace dynascope {
namespace {

// Every entry parses to its value; every value's name is its canonical entry and parses back.
template <class E, std::size_t N, class Parse, class Name>
void expect_round_trip(const EnumNames<E, N>& t, Parse parse, Name name) {
  for (const auto& e : t.entries) {
    SCOPED_TRACE(e.name);
    EXPECT_EQ(parse_name(t, e.name), e.value);
    EXPECT_EQ(parse(e.name), e.value);  // the public parse_* reads the table
    const std::string canonical = name(e.value);
    EXPECT_EQ(canonical, name_of(t, e.value));
    if (e.spelling == Spelling::canonical) EXPECT_EQ(canonical, e.name);
    else EXPECT_NE(canonical, e.name) << "an alias is never produced";
    EXPECT_EQ(parse(canonical), e.value);
  }
}

// parse(text) throws InvalidArgument with exactly `message`.
template <class Parse>
void expect_message(Parse parse, const std::string& text, const std::string& message) {
  try {
    parse(text);
    ADD_FAILURE() << "'" << text << "' parsed";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

TEST(EnumNames, EveryTableRoundTripsThroughItsParseAndToString) {
  using namespace model;
  expect_round_trip(loss_names, parse_loss, [](Loss v) { return to_string(v); });
  expect_round_trip(optimizer_names, parse_optimizer, [](OptimizerKind v) { return to_string(v); });
  expect_round_trip(parameterization_names, parse_parameterization, [](Parameterization v) { return to_string(v); });
  expect_round_trip(init_names, parse_init, [](Init v) { return to_string(v); });
  expect_round_trip(
      activation_names, [](const std::string& s) { return parse_activation(s).kind; },
      [](Activation v) { return to_string(ActivationSpec{v}).substr(0, v == Activation::leaky_relu ? 10 : std::string::npos); });
  expect_round_trip(ntk::outputs_names, ntk::parse_outputs, [](ntk::Outputs v) { return ntk::to_string(v); });
  expect_round_trip(ntk::method_names, ntk::parse_method, [](ntk::Method v) { return ntk::to_string(v); });
  expect_round_trip(linalg::which_names, linalg::parse_which, [](linalg::Which v) { return linalg::to_string(v); });
  expect_round_trip(linalg::eigen_method_names, linalg::parse_eigen_method,
                    [](linalg::EigenMethod v) { return linalg::to_string(v); });
  expect_round_trip(linalg::curvature_names, linalg::parse_curvature, [](linalg::Curvature v) { return linalg::to_string(v); });
  // Tables behind a to_string only.
  for (const auto& e : linalg::eigen_status_names.entries) EXPECT_STREQ(linalg::to_string(e.value), e.name);
  for (const auto& e : origin_names.entries) EXPECT_STREQ(to_string(e.value), e.name);
  for (const auto& e : data::task_names.entries) EXPECT_STREQ(data::to_string(e.value), e.name);
}

TEST(EnumNames, SpellingsAndNamesAreThoseTheLibraryAlwaysUsed) {
  using namespace model;
  EXPECT_EQ(parse_loss("cross_entropy"), Loss::xent);
  EXPECT_EQ(parse_init("kaiming"), Init::kaiming_normal);
  EXPECT_EQ(parse_init("lecun"), Init::lecun_normal);
  EXPECT_EQ(parse_init("ntk"), Init::ntk_normal);
  EXPECT_EQ(parse_activation("linear").kind, Activation::identity);
  EXPECT_EQ(to_string(parse_activation(" leaky_relu:0.2 ")), "leaky_relu:0.2");
  EXPECT_EQ(ntk::parse_method("automatic"), ntk::Method::automatic);
  EXPECT_STREQ(ntk::to_string(ntk::Method::automatic), "auto");
  // The eigensolver's method reads like the NTK's: "auto", with "automatic" accepted.
  EXPECT_EQ(linalg::parse_eigen_method("automatic"), linalg::EigenMethod::automatic);
  EXPECT_STREQ(linalg::to_string(linalg::EigenMethod::automatic), "auto");
  EXPECT_EQ(linalg::parse_curvature("gauss_newton"), linalg::Curvature::gauss_newton);
  EXPECT_STREQ(linalg::to_string(linalg::Curvature::gauss_newton), "ggn");
  EXPECT_STREQ(to_string(Origin::default_value), "default");
  // The lists the command line offers, in table order.
  EXPECT_EQ(canonical_names(ntk::method_names), (std::vector<std::string>{"auto", "structured", "jvp", "jacobian"}));
  EXPECT_EQ(canonical_names(init_names),
            (std::vector<std::string>{"pytorch", "kaiming_normal", "lecun_normal", "ntk_normal"}));
  EXPECT_EQ(known_names(activation_names), "identity, relu, leaky_relu[:slope], abs, tanh, gelu, softplus, sigmoid");
  EXPECT_EQ(known_names(linalg::which_names, " | "), "largest | smallest | magnitude");
}

TEST(EnumNames, UnknownTextNamesItAndListsTheCanonicalNames) {
  using namespace model;
  expect_message(parse_loss, "l1", "unknown loss 'l1' (known: mse, xent)");
  expect_message(parse_optimizer, "rmsprop", "unknown optimizer 'rmsprop' (known: sgd, momentum, adam, adamw)");
  expect_message(parse_parameterization, "mup", "unknown parameterization 'mup' (known: standard, ntk)");
  expect_message(parse_init, "xavier",
                 "unknown initialisation 'xavier' (known: pytorch, kaiming_normal, lecun_normal, ntk_normal)");
  expect_message(parse_activation, "swish",
                 "unknown activation 'swish' (known: identity, relu, leaky_relu[:slope], abs, tanh, gelu, softplus, sigmoid)");
  expect_message(ntk::parse_outputs, "half", "unknown NTK output mode 'half' (known: full, diagonal, trace, sum)");
  expect_message(ntk::parse_method, "exact", "unknown NTK method 'exact' (known: auto, structured, jvp, jacobian)");
  expect_message(linalg::parse_which, "biggest",
                 "unknown eigenvalue selection 'biggest' (known: largest, smallest, magnitude)");
  expect_message(linalg::parse_eigen_method, "arpack", "unknown eigen method 'arpack' (known: auto, lanczos, dense)");
  expect_message(linalg::parse_curvature, "fisher", "unknown curvature operator 'fisher' (known: ggn, hessian)");
  // Matching is exact: no case folding, no trimming (parse_activation trims, as it always did).
  EXPECT_THROW(parse_loss("MSE"), InvalidArgument);
  EXPECT_THROW(parse_loss(" mse"), InvalidArgument);
  EXPECT_THROW(parse_loss(""), InvalidArgument);
}

TEST(EnumNames, ValuesOutsideTheTableAndBadTables) {
  EXPECT_STREQ(model::to_string(static_cast<model::Loss>(7)), "unknown");
  EXPECT_STREQ(linalg::to_string(static_cast<linalg::EigenStatus>(-1)), "unknown");
  enum class Color { red, green };
  // A value without a canonical name, a name used twice, two canonical names for one value.
  static_assert(well_formed(enum_names<Color>("color", {{Color::red, "red"}, {Color::green, "green"}})));
  static_assert(!well_formed(enum_names<Color>("color", {{Color::red, "red"}, {Color::green, "g", Spelling::alias}})));
  static_assert(!well_formed(enum_names<Color>("color", {{Color::red, "red"}, {Color::green, "red"}})));
  static_assert(!well_formed(enum_names<Color>("color", {{Color::red, "red"}, {Color::red, "rouge"}, {Color::green, "green"}})));
  static_assert(find_name(enum_names<Color>("color", {{Color::red, "red"}, {Color::green, "green"}}), "green") == Color::green);
}

TEST(DispatchFloat, CallsWithTheFloatingPointTypeOfTheDtype) {
  const auto width = [](auto tag) -> std::size_t {
    using T = typename decltype(tag)::type;
    static_assert(std::is_floating_point_v<T>);
    return sizeof(T);
  };
  EXPECT_EQ(dispatch_float(DType::f32, width), 4u);
  EXPECT_EQ(dispatch_float(DType::f64, width), 8u);
  // A reference result passes through (decltype(auto)).
  double x = 1;
  double& r = dispatch_float(DType::f64, [&](auto) -> double& { return x; });
  EXPECT_EQ(&r, &x);
  for (DType d : {DType::i32, DType::i64, DType::u8}) {
    try {
      dispatch_float(d, width);
      ADD_FAILURE() << to_string(d) << " dispatched";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("dtype ") + to_string(d)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("float32 or float64"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace dynascope
