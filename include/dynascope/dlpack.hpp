#pragma once
// DLPack at the boundary: hand dynascope arrays to a framework and take a framework's tensors
// without copies. Only row-major (C-contiguous) tensors are adopted as arrays; strided 2-D tensors
// can be viewed as MatrixViews when their last dimension is contiguous.
#include <dlpack/dlpack.h>

#include "dynascope/array.hpp"

namespace dynascope {

// Transfers ownership of `array` into a DLManagedTensor; the consumer calls its deleter.
template <class T>
DYNASCOPE_API DLManagedTensor* to_dlpack(Array<T>&& array, int device_id = 0);

// Takes ownership of `tensor` (its deleter runs when the returned array is destroyed).
// Throws InvalidArgument when the dtype is not T, the device is neither CPU nor CUDA, or the
// tensor is not C-contiguous (the tensor is then left to the caller).
template <class T>
DYNASCOPE_API Array<T> from_dlpack(DLManagedTensor* tensor);

// A non-owning view of a rank-1 or rank-2 DLTensor whose last dimension is contiguous.
template <class T>
DYNASCOPE_API MatrixView<T> view_dlpack(const DLTensor& tensor);

}  // namespace dynascope
