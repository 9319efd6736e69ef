#pragma once
// The spellings of an enum, in one table per enum: parse_*, to_string and the command line's
// allowed values and help texts all read the same table, so a new value or alias is added once.
//
//   inline constexpr auto loss_names = enum_names<Loss>("loss", {{Loss::mse, "mse"},
//                                                                {Loss::xent, "xent"},
//                                                                {Loss::xent, "cross_entropy", Spelling::alias}});
//   parse_name(loss_names, "xent") == Loss::xent;  name_of(loss_names, Loss::xent) == "xent"
//   parse_name(loss_names, "l1") throws InvalidArgument "unknown loss 'l1' (known: mse, xent)"
//
// Each value has one canonical name (what to_string returns and what the allowed-value lists
// show) and any number of aliases (accepted by parse_name, never produced or listed).
#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dynascope/error.hpp"

namespace dynascope {

enum class Spelling { canonical, alias };

template <class E>
struct EnumName {
  E value;
  const char* name;
  Spelling spelling = Spelling::canonical;
  // Appended to the name where the known names are listed, e.g. "[:slope]" (leaky_relu:0.2).
  const char* syntax = "";
};

template <class E, std::size_t N>
struct EnumNames {
  const char* what;  // names the kind of value in messages: "unknown <what> '<text>' (known: ...)"
  std::array<EnumName<E>, N> entries;
};

// The table of E, with N deduced from the braced list.
template <class E, std::size_t N>
constexpr EnumNames<E, N> enum_names(const char* what, const EnumName<E> (&entries)[N]) {
  EnumNames<E, N> t{what, {}};
  for (std::size_t i = 0; i < N; ++i) t.entries[i] = entries[i];
  return t;
}

// Every name distinct, one canonical entry per value, every alias of a value that has one
// (checked by a static_assert next to each table).
template <class E, std::size_t N>
constexpr bool well_formed(const EnumNames<E, N>& t) {
  for (std::size_t i = 0; i < N; ++i) {
    if (t.entries[i].name == nullptr || std::string_view(t.entries[i].name).empty()) return false;
    std::size_t canonical = 0;
    for (std::size_t j = 0; j < N; ++j) {
      if (j != i && std::string_view(t.entries[i].name) == std::string_view(t.entries[j].name)) return false;
      if (t.entries[j].value == t.entries[i].value && t.entries[j].spelling == Spelling::canonical) ++canonical;
    }
    if (canonical != 1) return false;
  }
  return true;
}

// The value spelled `text` (canonical name or alias), if any.
template <class E, std::size_t N>
constexpr std::optional<E> find_name(const EnumNames<E, N>& t, std::string_view text) noexcept {
  for (const auto& e : t.entries)
    if (text == e.name) return e.value;
  return std::nullopt;
}

// The canonical names in table order, e.g. for CLI::IsMember.
template <class E, std::size_t N>
std::vector<std::string> canonical_names(const EnumNames<E, N>& t) {
  std::vector<std::string> out;
  for (const auto& e : t.entries)
    if (e.spelling == Spelling::canonical) out.emplace_back(e.name);
  return out;
}

// The canonical names with their syntax, joined: "mse, xent"; with " | " for help texts.
template <class E, std::size_t N>
std::string known_names(const EnumNames<E, N>& t, std::string_view separator = ", ") {
  std::string out;
  for (const auto& e : t.entries) {
    if (e.spelling != Spelling::canonical) continue;
    if (!out.empty()) out += separator;
    out += e.name;
    out += e.syntax;
  }
  return out;
}

// The value spelled `text`; InvalidArgument "unknown <what> '<text>' (known: a, b, c)" otherwise.
template <class E, std::size_t N>
E parse_name(const EnumNames<E, N>& t, const std::string& text) {
  if (const auto v = find_name(t, text)) return *v;
  throw InvalidArgument("unknown " + std::string(t.what) + " '" + text + "' (known: " + known_names(t) + ")");
}

// The canonical name of `value`; "unknown" for a value outside the table (e.g. a bad cast).
template <class E, std::size_t N>
constexpr const char* name_of(const EnumNames<E, N>& t, E value) noexcept {
  for (const auto& e : t.entries)
    if (e.value == value && e.spelling == Spelling::canonical) return e.name;
  return "unknown";
}

}  // namespace dynascope
