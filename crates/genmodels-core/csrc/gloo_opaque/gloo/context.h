// Opaque stand-in (see README.md). c10d holds gloo::Context only through std::shared_ptr; the
// one member named here is called by the inline virtual ProcessGroupGloo::setTimeout, which is
// emitted with ProcessGroupGloo's vtable inside libtorch_cpu.so, never in our code (the class's
// key function, its destructor, is defined there). The declaration matches Gloo's own
// (`void setTimeout(std::chrono::milliseconds)`, exported by libtorch_cpu.so).
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
