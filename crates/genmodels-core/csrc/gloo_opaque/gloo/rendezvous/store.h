// Opaque stand-in (see README.md). c10d's nested class ProcessGroupGloo::GlooStore derives from
// gloo::rendezvous::Store and overrides these four members, so the header needs them declared;
// GlooStore is never constructed or called from our code (libtorch builds its own), so its vtable
// layout here is never used. The store_v2 members stay out: GLOO_STORE_HAS_STORE_V2 is not defined.
#pragma once
#include <chrono>
#include <string>
#include <vector>
namespace gloo {
namespace rendezvous {
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys,
                    const std::chrono::milliseconds& timeout) = 0;
};
} // namespace rendezvous
} // namespace gloo
