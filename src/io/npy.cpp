// .npy arrays: https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
//
// Layout: "\x93NUMPY", major and minor version bytes, the header length (u16 in version 1.0,
// u32 in 2.0 and 3.0, little-endian), the header (a Python dict literal padded with spaces and
// ended by '\n'), then the data in C order.
#include <limits>

#include "io/io_detail.hpp"

namespace dynascope::io {
namespace detail {

namespace {

constexpr std::size_t kMagicLen = 6;
constexpr std::uint64_t kMaxHeaderLen = std::uint64_t{1} << 20;  // 1 MiB
constexpr std::size_t kAlign = 64;  // numpy aligns the data to 64 bytes

struct NpyDType {
  const char* descr;
  DType dtype;
};
constexpr NpyDType kNpyDTypes[] = {
    {"<f4", DType::f32}, {"<f8", DType::f64}, {"<i4", DType::i32}, {"<i8", DType::i64},
    {"|u1", DType::u8},  {"<u1", DType::u8},
};

const char* descr_of(DType dtype) {
  switch (dtype) {
    case DType::f32: return "<f4";
    case DType::f64: return "<f8";
    case DType::i32: return "<i4";
    case DType::i64: return "<i8";
    case DType::u8: return "|u1";
  }
  throw InvalidArgument("write_npy: invalid dtype");
}

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  Shape shape;
};

// The header dict is a Python literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// Only this form is accepted (any whitespace, either quote, trailing commas, Python 2 'L' ints):
// exactly the three keys, a string, a bool and a tuple of non-negative integers.
class HeaderParser {
 public:
  HeaderParser(const ByteSource& src, std::string_view text) : src_(src), text_(text) {}

  NpyHeader parse() {
    NpyHeader h;
    bool seen_descr = false, seen_order = false, seen_shape = false;
    skip_space();
    expect('{', "at the start of the header dict");
    for (;;) {
      skip_space();
      if (consume('}')) break;
      if (!at_quote()) fail("expected a quoted key or '}'");
      const std::string key = parse_string();
      skip_space();
      expect(':', "after key '" + printable(key) + "'");
      skip_space();
      if (key == "descr") {
        mark_seen(seen_descr, key);
        if (peek() == '[' || peek() == '{')
          fail("structured dtypes are not supported (descr is a list)");
        if (!at_quote()) fail("'descr' must be a string");
        h.descr = parse_string();
      } else if (key == "fortran_order") {
        mark_seen(seen_order, key);
        h.fortran_order = parse_bool();
      } else if (key == "shape") {
        mark_seen(seen_shape, key);
        h.shape = parse_shape();
      } else {
        fail("unexpected key '" + printable(key) +
             "' (a .npy header has exactly 'descr', 'fortran_order' and 'shape')");
      }
      skip_space();
      if (consume(',')) continue;
      if (consume('}')) break;
      fail("expected ',' or '}' after the value of '" + printable(key) + "'");
    }
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the header dict");
    if (!seen_descr) fail("the header has no 'descr' key");
    if (!seen_order) fail("the header has no 'fortran_order' key");
    if (!seen_shape) fail("the header has no 'shape' key");
    return h;
  }

 private:
  [[noreturn]] void fail(const std::string& problem) const {
    src_.fail("malformed .npy header: " + problem + " at character " + std::to_string(pos_) +
              " of \"" + printable(text_, 160) + "\"");
  }
  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool at_quote() const { return peek() == '\'' || peek() == '"'; }
  bool consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, const std::string& where) {
    if (!consume(c)) fail(std::string("expected '") + c + "' " + where);
  }
  void skip_space() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }
  void mark_seen(bool& seen, const std::string& key) {
    if (seen) fail("duplicate key '" + key + "'");
    seen = true;
  }

  std::string parse_string() {
    const char quote = text_[pos_++];
    std::string s;
    for (;;) {
      if (pos_ >= text_.size()) fail("unterminated string");
      char c = text_[pos_++];
      if (c == quote) return s;
      if (c == '\\') {
        if (pos_ >= text_.size()) fail("unterminated string");
        c = text_[pos_++];
      }
      s += c;
    }
  }

  bool parse_bool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    fail("'fortran_order' must be True or False");
  }

  Shape parse_shape() {
    if (!consume('(')) fail("'shape' must be a tuple such as (3, 4), (5,) or ()");
    Shape shape;
    bool trailing_comma = false;
    for (;;) {
      skip_space();
      if (consume(')')) break;
      if (!shape.empty() && !trailing_comma) fail("expected ',' or ')' in 'shape'");
      shape.push_back(parse_extent());
      skip_space();
      trailing_comma = consume(',');
      if (!trailing_comma && peek() != ')') fail("expected ',' or ')' in 'shape'");
    }
    // In Python (3) is the integer 3, not a tuple.
    if (shape.size() == 1 && !trailing_comma) fail("'shape' must be a tuple: write (n,) for one dimension");
    return shape;
  }

  index_t parse_extent() {
    if (peek() == '-') fail("negative extent in 'shape'");
    if (peek() < '0' || peek() > '9') fail("'shape' must hold non-negative integers");
    index_t v = 0;
    while (peek() >= '0' && peek() <= '9') {
      const int digit = peek() - '0';
      if (v > (std::numeric_limits<index_t>::max() - digit) / 10) fail("extent too large in 'shape'");
      v = v * 10 + digit;
      ++pos_;
    }
    if (peek() == 'L' || peek() == 'l') ++pos_;  // Python 2 long
    return v;
  }

  const ByteSource& src_;
  std::string_view text_;
  std::size_t pos_ = 0;
};

DType dtype_of_descr(const ByteSource& src, const std::string& descr) {
  for (const auto& d : kNpyDTypes)
    if (descr == d.descr) return d.dtype;
  const std::string shown = std::string("'").append(printable(descr)).append("'");
  if (!descr.empty() && descr[0] == '>')
    src.fail("unsupported dtype " + shown + ": big-endian data is not supported (convert with "
             "arr.astype(arr.dtype.newbyteorder('<')))");
  src.fail("unsupported dtype " + shown + " (supported: <f4, <f8, <i4, <i8, |u1)");
}

std::uint32_t read_le(const unsigned char* p, int bytes) {
  std::uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

Tensor parse_npy(const ByteSource& src) {
  unsigned char prefix[12] = {};
  src.read(0, prefix, 8, "the .npy magic and version");
  if (std::memcmp(prefix, "\x93NUMPY", kMagicLen) != 0) src.fail("not a .npy file (bad magic)");
  const int major = prefix[6], minor = prefix[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    src.fail("unsupported .npy version " + std::to_string(major) + "." + std::to_string(minor) +
             " (supported: 1.0, 2.0, 3.0)");
  const int len_bytes = major == 1 ? 2 : 4;
  src.read(8, prefix + 8, static_cast<std::size_t>(len_bytes), "the .npy header length");
  const std::uint64_t header_len = read_le(prefix + 8, len_bytes);
  const std::uint64_t header_start = 8 + static_cast<std::uint64_t>(len_bytes);
  if (header_len > kMaxHeaderLen)
    src.fail("header length " + std::to_string(header_len) + " exceeds the 1 MiB limit");
  const std::vector<std::byte> raw = src.read_bytes(header_start, header_len, "the .npy header");
  const std::string_view text(reinterpret_cast<const char*>(raw.data()), raw.size());

  const NpyHeader h = HeaderParser(src, text).parse();
  const DType dtype = dtype_of_descr(src, h.descr);
  if (h.fortran_order)
    src.fail("fortran_order is True: Fortran-order (column-major) arrays are not supported; save a "
             "C-order array (numpy.ascontiguousarray)");
  const auto nbytes = checked_nbytes(h.shape, dtype);
  if (!nbytes) src.fail("shape " + shape_text(h.shape) + " has too many elements");

  const std::uint64_t data_start = header_start + header_len;
  const std::uint64_t available = src.size() - data_start;
  const std::string what = "shape " + shape_text(h.shape) + " of " + h.descr;
  if (available < *nbytes)
    src.fail("truncated: " + what + " needs " + std::to_string(*nbytes) +
             " data bytes but the file has " + std::to_string(available));
  if (available > *nbytes)
    src.fail("trailing bytes: " + std::to_string(available - *nbytes) + " bytes after the " +
             std::to_string(*nbytes) + " bytes of array data (" + what + ")");

  Tensor t;
  t.dtype = dtype;
  t.shape = h.shape;
  t.bytes = src.read_bytes(data_start, static_cast<std::size_t>(*nbytes), "the array data");
  return t;
}

std::string npy_header(const Tensor& tensor) {
  validate_tensor(tensor, "write_npy");
  return npy_header_for(tensor.dtype, tensor.shape);
}

std::string npy_header_for(DType dtype, const Shape& shape) {
  std::string dict = std::string("{'descr': '") + descr_of(dtype) +
                     "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) dict += ", ";
    dict += std::to_string(shape[i]);
  }
  dict += shape.size() == 1 ? ",), }" : "), }";

  // Version 1.0 unless the header outgrows its 16-bit length field.
  auto padded = [&](std::size_t prefix_len) {
    const std::size_t unpadded = prefix_len + dict.size() + 1;  // + '\n'
    return dict.size() + (kAlign - unpadded % kAlign) % kAlign + 1;
  };
  int major = 1;
  std::size_t prefix_len = 10;
  std::size_t header_len = padded(prefix_len);
  if (header_len > 0xffff) {
    major = 2;
    prefix_len = 12;
    header_len = padded(prefix_len);
    if (header_len > kMaxHeaderLen)
      throw InvalidArgument("write_npy: shape with " + std::to_string(shape.size()) +
                            " dimensions needs a header over the 1 MiB limit");
  }

  std::string out("\x93NUMPY", kMagicLen);
  out += static_cast<char>(major);
  out += '\0';
  for (std::size_t i = 0; i < prefix_len - 8; ++i)
    out += static_cast<char>((header_len >> (8 * i)) & 0xff);
  out += dict;
  out.append(header_len - dict.size() - 1, ' ');
  out += '\n';
  return out;
}

}  // namespace detail

Tensor read_npy(const std::string& path) {
  detail::FileSource src(path);
  return detail::parse_npy(src);
}

void write_npy(const std::string& path, const Tensor& tensor) {
  const std::string header = detail::npy_header(tensor);
  const std::span<const std::byte> pieces[] = {detail::as_bytes(header), tensor.bytes};
  detail::write_pieces_atomic(path, pieces);
}

}  // namespace dynascope::io
