// Opaque stand-in (see README.md): c10d names these only through std::shared_ptr / std::unique_ptr
// members of classes whose constructors and destructors are defined in libtorch_cpu.so.
#pragma once
namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
