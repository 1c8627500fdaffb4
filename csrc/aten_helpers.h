// Small torch-side helpers shared by the kernels' registrations.
#pragma once

#include <ATen/ATen.h>

namespace convspectra {

// The conjugate transpose of the last two dims as a materialised contiguous
// tensor. Kernels never pass lazy conj views around: raw-pointer code would read
// the unconjugated memory, and traced (torch.compile) graphs have mishandled them.
inline at::Tensor conj_transpose(const at::Tensor& x) {
  return x.transpose(-2, -1).conj_physical().contiguous();
}

}  // namespace convspectra
