"""Python counterparts of benches/benches/metrics.rs, run as a long-lived worker
(bench_worker.py: `metrics_bench.py --serve THREADS`, one JSON request per line).

Workloads: fid_distance | inception (needs $FID_TORCHSCRIPT) | prc (args: n)
"""

import os
import sys

import numpy as np
import torch

from bench_worker import Workload, serve


def stats(seed, n=10_000, d=2048):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, d)).astype(np.float32)
    x[:, : d // 2] *= 2.0
    return x.mean(0).astype(np.float64), np.cov(x.astype(np.float64), rowvar=False)


def fid_distance(_args):
    mu1, s1 = stats(1)
    mu2, s2 = stats(2)

    def pytorch_fid():
        from pytorch_fid.fid_score import calculate_frechet_distance
        return lambda: calculate_frechet_distance(mu1, s1, mu2, s2)

    def torch_fidelity():
        from torch_fidelity.metric_fid import fid_statistics_to_metric
        st1, st2 = {"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}
        return lambda: fid_statistics_to_metric(st1, st2, False)

    return Workload([("pytorch-fid (scipy sqrtm)", pytorch_fid, False),
                     ("torch-fidelity (eigvals)", torch_fidelity, False)])


def inception(_args):
    def build():
        net = torch.jit.load(os.environ["FID_TORCHSCRIPT"], map_location="cpu").eval()
        x = torch.randn(50, 3, 299, 299)

        def run():
            with torch.no_grad():
                net(x)
        return run

    return Workload([("TorchScript FID Inception, batch 50", build, False)])


def prc(args):
    n = int(args["n"])

    def build():
        from torch_fidelity.metric_prc import calculate_precision_recall_full
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, 2048, generator=g), torch.randn(n, 2048, generator=g)
        return lambda: calculate_precision_recall_full(a, b, 3)

    return Workload([(f"torch-fidelity precision/recall {n}x{n}x2048", build, False)])


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "--serve":
        raise SystemExit(__doc__)
    serve({"fid_distance": fid_distance, "inception": inception, "prc": prc})
