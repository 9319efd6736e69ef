#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "dynascope/export.h"

namespace dynascope {

using index_t = std::int64_t;

enum class Backend { host, cuda };

enum class DType { f32, f64, i32, i64, u8 };

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<std::int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<std::int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<std::uint8_t> { static constexpr DType value = DType::u8; };
template <class T> inline constexpr DType dtype_v = dtype_of<T>::value;

constexpr std::size_t size_of(DType t) noexcept {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

DYNASCOPE_API const char* to_string(Backend backend) noexcept;
DYNASCOPE_API const char* to_string(DType dtype) noexcept;

}  // namespace dynascope
