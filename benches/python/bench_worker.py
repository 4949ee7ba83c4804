"""The Python side of the benches as a long-lived worker, shared by models_bench.py and
metrics_bench.py.

`SCRIPT --serve THREADS` starts one Python per bench binary. It prints `@@ {json}` lines on
stdout (nothing else goes there: prints of libraries are sent to stderr) and reads one JSON
request per line on stdin:

- `{"cmd": "setup", "what": W, "args": {...}}`: builds every variant of workload W (the
  reference and the faster variants a speed-minded user would pick), runs each once (twice for
  `torch.compile`d ones: the first call compiles), counts the FLOPs of the variant that does
  the same work as ours with `torch.utils.flop_counter` (conv, linear, matmul, attention;
  forward and backward as they are dispatched), and answers `{"variants": [...], "flops": F,
  "flops_of": NAME, "setup_s": {...}, "skipped": {NAME: why}}`;
- `{"cmd": "time", "what": W, "repeats": N, "round": R}`: the median of N calls of each variant,
  back to back (the order rotates with R), `{"times": {NAME: seconds}}`;
- `{"cmd": "drop", "what": W}` frees it; `{"cmd": "quit"}` ends the worker.

The first line is `{"ready": true, "info": {...}}`: versions, thread settings and what
torch.compile needs. A failed request answers `{"error": "..."}` and the worker carries on.
"""

import contextlib
import importlib.metadata
import json
import os
import shutil
import statistics
import sys
import time
import traceback

import torch

_OUT = sys.stdout


def emit(obj):
    _OUT.write("@@ " + json.dumps(obj) + "\n")
    _OUT.flush()


def median_time(fn, repeats):
    """Median wall time of `repeats` calls (no warm-up: the worker warms up once at setup)."""
    ts = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def version(pkg):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def info():
    par = torch.__config__.parallel_info().splitlines()
    backend = next((l.split(":", 1)[1].strip() for l in par if l.startswith("ATen parallel backend")), None)
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_git": getattr(torch.version, "git_version", None),
        "diffusers": version("diffusers"),
        "transformers": version("transformers"),
        "numpy": version("numpy"),
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
        "parallel_backend": backend,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cxx_for_inductor": shutil.which(os.environ.get("CXX", "g++")),
        "compile_disabled": no_compile(),
    }


def no_compile():
    return bool(os.environ.get("GENMODELS_BENCH_NO_COMPILE"))


def count_flops(fn):
    """FLOPs of one call of `fn`: torch.utils.flop_counter's formulas (convolutions, matrix
    products, attention, forward and backward), applied as FlopCounterMode applies them
    (ops without a formula are decomposed first), without its module tracking, which fails on
    steps that switch requires_grad (StyleGAN2's frozen D)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Flops(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            packet = func._overloadpacket
            if packet not in flop_registry:
                with self:
                    r = func.decompose(*args, **kwargs)
                if r is not NotImplemented:
                    return r
            out = func(*args, **kwargs)
            if packet in flop_registry:
                self.total += flop_registry[packet](*args, **kwargs, out_val=out)
            return out

    mode = Flops()
    with mode:
        fn()
    return float(mode.total)


class Workload:
    """Variants of one workload: `variants` is a list of (name, builder, compiled); a builder
    returns the callable to time. `flops_of` names the variant whose FLOPs are counted."""

    def __init__(self, variants, flops_of=None):
        self.variants, self.flops_of = variants, flops_of
        self.fns, self.setup_s, self.skipped, self.flops = {}, {}, {}, None
        self.extra = {}  # more keys for the setup answer (e.g. a parameter count)

    def setup(self):
        for name, build, compiled in self.variants:
            if compiled and no_compile():
                self.skipped[name] = "GENMODELS_BENCH_NO_COMPILE is set"
                continue
            t0 = time.perf_counter()
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    fn = build()
                    fn()  # warm-up; for a compiled variant this compiles
                    if compiled:
                        fn()  # a second call: recompiles on guard failures happen here
            except Exception as e:  # noqa: BLE001 -- report why and carry on without it
                msg = (str(e).strip().splitlines() or [""])[0][:300]
                self.skipped[name] = f"{type(e).__name__}: {msg}"
                traceback.print_exc(file=sys.stderr)
                continue
            self.fns[name] = fn
            self.setup_s[name] = time.perf_counter() - t0
        if self.flops_of in self.fns:
            try:
                with contextlib.redirect_stdout(sys.stderr):
                    self.flops = count_flops(self.fns[self.flops_of])
            except Exception as e:  # noqa: BLE001
                self.skipped["flop count"] = f"{type(e).__name__}: {e}"
        return {
            "variants": list(self.fns),
            "flops": self.flops,
            "flops_of": self.flops_of,
            "setup_s": self.setup_s,
            "skipped": self.skipped,
            **self.extra,
        }

    def time(self, repeats, rnd):
        names = list(self.fns)
        k = rnd % len(names) if names else 0
        out = {}
        with contextlib.redirect_stdout(sys.stderr):
            for name in names[k:] + names[:k]:
                out[name] = median_time(self.fns[name], repeats)
        return {"times": {n: out[n] for n in names}}


def serve(workloads):
    """`workloads`: {what: function(args) -> Workload}."""
    threads = int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    emit({"ready": True, "info": info()})
    live = {}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            cmd = req["cmd"]
            if cmd == "quit":
                break
            what = req.get("what")
            if cmd == "setup":
                if what not in workloads:
                    raise KeyError(f"unknown benchmark {what}; known: {', '.join(workloads)}")
                torch.manual_seed(0)
                with contextlib.redirect_stdout(sys.stderr):
                    w = workloads[what](req.get("args") or {})
                live[what] = w
                emit(w.setup())
            elif cmd == "time":
                emit(live[what].time(int(req.get("repeats", 1)), int(req.get("round", 0))))
            elif cmd == "drop":
                live.pop(what, None)
                emit({"dropped": what})
            else:
                raise KeyError(f"unknown command {cmd}")
        except Exception as e:  # noqa: BLE001 -- answer and keep serving
            traceback.print_exc(file=sys.stderr)
            emit({"error": f"{type(e).__name__}: {e}"})
