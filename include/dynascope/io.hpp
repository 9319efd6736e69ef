#pragma once
// File formats of the CLI contract (docs/cli.md): .npy arrays, safetensors weights, IDX (MNIST) data.
// Readers are hardened against malformed files: every problem (truncation, a header that lies
// about sizes or offsets, overlapping or out-of-range tensors, absurd header lengths, unsupported
// dtypes) throws FileFormatError naming the file and the problem, before any allocation larger
// than the file itself could justify. Writers never leave a partial file: they write a temporary
// file next to the target and rename it into place.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "dynascope/array.hpp"
#include "dynascope/types.hpp"

namespace dynascope::io {

// A host tensor of any supported dtype, row-major, as read from or written to a file.
struct Tensor {
  DType dtype = DType::f32;
  Shape shape;
  std::vector<std::byte> bytes;  // numel * size_of(dtype), little-endian

  index_t numel() const { return shape_numel(shape); }
  // The values converted to T (integers to floating point and back as static_cast does).
  template <class T>
  DYNASCOPE_API std::vector<T> to_vector() const;
  // A host Array<T> with the values converted to T.
  template <class T>
  Array<T> to_array(const Context& host_ctx) const;

  template <class T>
  static Tensor from(const T* data, Shape shape);
};

// ---- .npy (version 1.0, 2.0 and 3.0 headers; C order; little-endian f4, f8, i4, i8, u1) ----
DYNASCOPE_API Tensor read_npy(const std::string& path);
DYNASCOPE_API void write_npy(const std::string& path, const Tensor& tensor);

// A .npy file written in place through a memory map, for arrays larger than memory (a kernel
// matrix computed tile by tile). The data lives in a temporary file next to `path` until
// commit() flushes it and renames it into place; destroyed without commit, nothing is left.
class DYNASCOPE_API MappedNpy {
 public:
  MappedNpy(const std::string& path, DType dtype, Shape shape);
  ~MappedNpy();
  MappedNpy(const MappedNpy&) = delete;
  MappedNpy& operator=(const MappedNpy&) = delete;
  void* data() noexcept { return data_; }
  template <class T>
  T* data_as() {
    if (dtype_v<T> != dtype_) throw InvalidArgument("MappedNpy: element type does not match the file's dtype");
    return static_cast<T*>(data_);
  }
  void commit();

 private:
  std::string path_, tmp_;
  DType dtype_;
  void* map_ = nullptr;
  void* data_ = nullptr;
  std::size_t map_bytes_ = 0;
  bool committed_ = false;
};

// ---- safetensors ----
struct NamedTensor {
  std::string name;
  Tensor tensor;
  // The dtype as the file stores it ("F32", "F16", "BF16", ...): F16 and BF16 tensors are widened
  // to f32 on reading, exactly (every half and bfloat16 value, subnormals, infinities and NaN
  // included, is a float). Empty for tensors built in memory; the writer ignores it.
  std::string stored_dtype{};
};
struct Safetensors {
  std::map<std::string, std::string> metadata;  // the "__metadata__" object (string values)
  std::vector<NamedTensor> tensors;             // in the order of their data offsets
  DYNASCOPE_API const Tensor* find(const std::string& name) const;
};
// Accepted dtypes: F32, F64, F16 and BF16 (both read as F32), I32, I64, U8; others are rejected
// with a clear error. A PyTorch torch.save file (a zip archive or a pickle) or a .npy array given
// instead is recognised and named, with how to save safetensors instead. The writer writes
// F32, F64, I32, I64 and U8.
DYNASCOPE_API Safetensors read_safetensors(const std::string& path);
DYNASCOPE_API void write_safetensors(const std::string& path, const Safetensors& file);

// ---- IDX (MNIST format; gzip-compressed when the file starts with the gzip magic) ----
// u8 data stays u8; i8 and i16 widen to i32; i32, f32 and f64 keep their type.
DYNASCOPE_API Tensor read_idx(const std::string& path);

// Reads .npy, .idx / -ubyte / .gz (IDX) by looking at the file's first bytes.
DYNASCOPE_API Tensor read_array(const std::string& path);

// Atomically replaces `path` with `contents` (temporary file + rename).
DYNASCOPE_API void write_file_atomic(const std::string& path, const void* data, std::size_t bytes);
DYNASCOPE_API void write_text_atomic(const std::string& path, const std::string& text);
// Atomic writes and MappedNpy refuse to replace a file whose mode has no write bit (IoError).

// Checks, before any work, that `path` could be written: its folder exists and takes new files,
// and it is not a folder or a read-only file. Throws IoError saying which.
DYNASCOPE_API void check_writable(const std::string& path);

// Removes every temporary file an atomic write or a MappedNpy has open right now. Async-signal-
// safe: a program's SIGINT/SIGTERM handler calls it before exiting, so an interrupted run leaves
// no hidden `.NAME.tmp*` files behind.
DYNASCOPE_API void remove_temporary_files() noexcept;

// ---- inline template definitions ----
template <class T>
Array<T> Tensor::to_array(const Context& host_ctx) const {
  if (!host_ctx.is_host()) throw InvalidArgument("io::Tensor::to_array: needs a host context");
  std::vector<T> v = to_vector<T>();
  Array<T> a(host_ctx, shape);
  std::copy(v.begin(), v.end(), a.data());
  return a;
}

template <class T>
Tensor Tensor::from(const T* data, Shape shape) {
  Tensor t;
  t.dtype = dtype_v<T>;
  t.shape = std::move(shape);
  const std::size_t n = static_cast<std::size_t>(t.numel()) * sizeof(T);
  t.bytes.resize(n);
  if (n) std::memcpy(t.bytes.data(), data, n);
  return t;
}

}  // namespace dynascope::io
