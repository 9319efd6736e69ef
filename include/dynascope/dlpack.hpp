#pragma once
// DLPack at the boundary: hand dynascope arrays to a framework and take a framework's tensors
// without copies. Only row-major (C-contiguous) tensors are adopted as arrays; strided 2-D tensors
// can be viewed as MatrixViews when their last dimension is contiguous.
#include <dlpack/dlpack.h>

#include "dynascope/array.hpp"

namespace dynascope {

// Transfers ownership of `array` into a DLManagedTensor; the consumer calls its deleter. The
// tensor's device is the array's: kDLCPU, or kDLCUDA with the array's device(). On cuda there is
// no stream handshake: synchronize the producing context before the consumer reads the data, and
// let the consumer's own stream finish its work on it before calling the deleter (which frees in
// the producing context's stream order).
template <class T>
DYNASCOPE_API DLManagedTensor* to_dlpack(Array<T>&& array);

// Takes ownership of `tensor` (its deleter runs when the returned array is destroyed); a CUDA
// tensor's device_id becomes the array's device().
// Throws InvalidArgument when the dtype is not T, the device is neither CPU nor CUDA, or the
// tensor is not C-contiguous (the tensor is then left to the caller).
template <class T>
DYNASCOPE_API Array<T> from_dlpack(DLManagedTensor* tensor);

// A non-owning view of a rank-1 or rank-2 DLTensor whose last dimension is contiguous (carrying
// the tensor's device_id for CUDA memory).
template <class T>
DYNASCOPE_API MatrixView<T> view_dlpack(const DLTensor& tensor);

}  // namespace dynascope
