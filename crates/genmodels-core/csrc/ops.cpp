// ATen operators that tch does not expose (or not with all their arguments):
//
// - `leaky_relu` with its slope: tch's generated API drops defaulted scalar arguments, so its
//   `leaky_relu` has the slope fixed at 0.01, and the PReLU stand-in computes a weight gradient
//   in every backward pass (about 3x slower at GAN sizes);
// - clearing a gradient (`zero_grad(set_to_none=True)` in PyTorch): the next backward pass then
//   stores its gradient instead of adding it to a zeroed buffer;
// - `_fused_adam_` / `_fused_adamw_`: Adam's update of all parameters in one vectorised pass per
//   tensor (what `torch.optim.Adam(fused=True)` calls) instead of seven elementwise kernels.
//
// Each function takes `at::Tensor*` (what tch's `C_tensor` points to) and never lets a C++
// exception cross into Rust: on error it returns null / false and keeps the message for
// `genmodels_last_error`.
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/leaky_relu.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

static thread_local std::string last_error;

// For dist.cpp, which reports its errors through the same `genmodels_last_error`.
void genmodels_set_last_error(const std::string &msg) { last_error = msg; }

static std::vector<at::Tensor> tensors(void *const *ptrs, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(*static_cast<const at::Tensor *>(ptrs[i]));
  }
  return out;
}

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

bool genmodels_grad_reset(void *x) {
  try {
    static_cast<at::Tensor *>(x)->mutable_grad().reset();
    return true;
  } catch (const std::exception &e) {
    last_error = e.what();
    return false;
  }
}

// One Adam step over `n` parameters: `params`, `grads`, `exp_avgs`, `exp_avg_sqs` and `steps`
// each point to `n` tensors (`steps[i]`: a float scalar holding the step count, already
// incremented, as torch.optim.Adam keeps it).
bool genmodels_fused_adam(void *const *params, void *const *grads, void *const *exp_avgs,
                          void *const *exp_avg_sqs, void *const *steps, int64_t n, double lr,
                          double beta1, double beta2, double weight_decay, double eps,
                          bool decoupled) {
  try {
    at::NoGradGuard no_grad;
    auto p = tensors(params, n), g = tensors(grads, n), m = tensors(exp_avgs, n),
         v = tensors(exp_avg_sqs, n), s = tensors(steps, n);
    std::vector<at::Tensor> max_v;
    if (decoupled) {
      at::_fused_adamw_(p, g, m, v, max_v, s, lr, beta1, beta2, weight_decay, eps, false, false);
    } else {
      at::_fused_adam_(p, g, m, v, max_v, s, lr, beta1, beta2, weight_decay, eps, false, false);
    }
    return true;
  } catch (const std::exception &e) {
    last_error = e.what();
    return false;
  }
}

const char *genmodels_last_error() { return last_error.c_str(); }
}
