// Data-parallel collectives on libtorch's own c10d: a TCPStore rendezvous and the Gloo process
// group (`c10d::ProcessGroupGloo`), both compiled into libtorch_cpu.so. tch has no binding for
// them; this file is that binding, as a handful of C functions.
//
// The torch wheel does not ship Gloo's headers, which ProcessGroupGloo.hpp includes. The
// directory `gloo_opaque/` declares the Gloo types that header names, and nothing more: this
// file never creates, copies or calls a Gloo object. It constructs the process group through
// its exported constructor, with options from the exported `Options::create_default` (which
// picks the transport device as torch.distributed does: GLOO_SOCKET_IFNAME, else the
// hostname's address, else loopback), and then uses it only through `c10d::Backend`'s virtual
// interface, whose header the wheel does ship. docs/distributed.md says why this is sound.
//
// No C++ exception crosses into Rust: each function returns null / false on error and keeps
// the message for `genmodels_last_error` (defined in ops.cpp).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

void genmodels_set_last_error(const std::string &msg);

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

// The tensors behind `n` of tch's `C_tensor` pointers (shallow copies sharing storage).
std::vector<at::Tensor> tensors(void *const *ptrs, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) {
    out.push_back(*static_cast<const at::Tensor *>(ptrs[i]));
  }
  return out;
}

// Waits for every work item; a failure or a timeout throws (Work::wait rethrows the
// collective's error). Gloo's worker threads may still be using the tensors of a collective
// that timed out, so on failure the work items and their tensors are deliberately kept alive
// (leaked): the run stops right after, and freeing them would be a use after free.
void finish(std::vector<c10::intrusive_ptr<c10d::Work>> works, std::vector<at::Tensor> ts,
            const Group &g) {
  try {
    for (auto &w : works) {
      if (!w->wait(g.timeout)) {
        throw std::runtime_error("the collective did not complete within the timeout");
      }
    }
  } catch (...) {
    new std::vector<c10::intrusive_ptr<c10d::Work>>(std::move(works));
    new std::vector<at::Tensor>(std::move(ts));
    throw;
  }
}

// Runs `f` and turns any exception into false plus the message for genmodels_last_error.
template <typename F> bool guarded(F f) {
  try {
    f();
    return true;
  } catch (const c10::Error &e) {
    genmodels_set_last_error(e.what_without_backtrace());
    return false;
  } catch (const std::exception &e) {
    genmodels_set_last_error(e.what());
    return false;
  }
}

// One collective per tensor (`launch(group, {tensor})`), all in flight at once (the group's
// worker threads take them in order), then waited for.
template <typename L> bool each(void *group, void *const *ptrs, int64_t n, L launch) {
  return guarded([&] {
    auto &g = *static_cast<Group *>(group);
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    works.reserve(n);
    auto ts = tensors(ptrs, n);
    for (auto &t : ts) {
      std::vector<at::Tensor> one{t};
      works.push_back(launch(g, one));
    }
    finish(std::move(works), std::move(ts), g);
  });
}

} // namespace

extern "C" {

// Joins the group: rank 0 serves the TCPStore on host:port unless `agent_store` (torchrun's
// elastic agent already serves one there; every rank is then a client). `prefix` namespaces the
// keys (torchrun's "/worker/attempt_N"). Blocks until all `size` ranks have joined or
// `timeout_ms` has passed.
void *genmodels_dist_new(const char *host, int port, int rank, int size, int64_t timeout_ms,
                         bool agent_store, const char *prefix) {
  try {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = !agent_store && rank == 0;
    opts.numWorkers = agent_store ? std::nullopt : std::optional<std::size_t>(size);
    opts.waitWorkers = !agent_store;
    opts.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(host, opts);
    store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store);
    auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
    c10::intrusive_ptr<c10d::Backend> backend =
        c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
    return new Group{store, backend, timeout};
  } catch (const c10::Error &e) {
    genmodels_set_last_error(e.what_without_backtrace());
    return nullptr;
  } catch (const std::exception &e) {
    genmodels_set_last_error(e.what());
    return nullptr;
  }
}

void genmodels_dist_free(void *group) { delete static_cast<Group *>(group); }

// Sums each tensor over the ranks, in place.
bool genmodels_dist_allreduce_sum(void *group, void *const *ptrs, int64_t n) {
  return each(group, ptrs, n, [](Group &g, std::vector<at::Tensor> &one) {
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = g.timeout;
    return g.backend->allreduce(one, opts);
  });
}

// Overwrites each tensor with rank `root`'s.
bool genmodels_dist_broadcast(void *group, void *const *ptrs, int64_t n, int root) {
  return each(group, ptrs, n, [root](Group &g, std::vector<at::Tensor> &one) {
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = g.timeout;
    return g.backend->broadcast(one, opts);
  });
}

bool genmodels_dist_barrier(void *group) {
  return guarded([&] {
    auto &g = *static_cast<Group *>(group);
    c10d::BarrierOptions opts;
    opts.timeout = g.timeout;
    finish({g.backend->barrier(opts)}, {}, g);
  });
}

} // extern "C"
