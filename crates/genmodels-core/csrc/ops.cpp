// ATen operators whose arguments tch does not expose. tch's generated API drops defaulted
// scalar arguments, so `leaky_relu` there has its slope fixed at 0.01; the PReLU stand-in
// computes a weight gradient in every backward pass (about 3x slower at GAN sizes).
//
// Each function takes and returns `at::Tensor*` (what tch's `C_tensor` points to) and never
// lets a C++ exception cross into Rust: on error it returns null and keeps the message for
// `genmodels_last_error`.
#include <ATen/core/Tensor.h>
#include <ATen/ops/leaky_relu.h>

#include <exception>
#include <string>

static thread_local std::string last_error;

extern "C" {

void *genmodels_leaky_relu(void *x, double slope) {
  try {
    const at::Tensor &t = *static_cast<at::Tensor *>(x);
    return new at::Tensor(at::leaky_relu(t, slope));
  } catch (const std::exception &e) {
    last_error = e.what();
    return nullptr;
  }
}

const char *genmodels_last_error() { return last_error.c_str(); }
}
