"""Python counterparts of benches/benches/metrics.rs, timed the same way (median of repeats).

usage: metrics_bench.py WHAT REPEATS THREADS   -> prints one JSON line {name: median_seconds}
WHAT: fid_distance | inception | prc
"""

import json
import statistics
import sys
import time

import numpy as np
import torch


def median_time(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def stats(seed, n=10_000, d=2048):
    g = np.random.default_rng(seed)
    x = g.normal(size=(n, d)).astype(np.float32)
    x[:, : d // 2] *= 2.0
    return x.mean(0).astype(np.float64), np.cov(x.astype(np.float64), rowvar=False)


def main():
    what, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    out = {}
    if what == "fid_distance":
        from pytorch_fid.fid_score import calculate_frechet_distance
        from torch_fidelity.metric_fid import fid_statistics_to_metric

        mu1, s1 = stats(1)
        mu2, s2 = stats(2)
        out["pytorch-fid (scipy sqrtm)"] = median_time(lambda: calculate_frechet_distance(mu1, s1, mu2, s2), repeats)
        st1, st2 = {"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}
        out["torch-fidelity (eigvals)"] = median_time(lambda: fid_statistics_to_metric(st1, st2, False), repeats)
    elif what == "inception":
        import os

        net = torch.jit.load(os.environ["FID_TORCHSCRIPT"], map_location="cpu").eval()
        x = torch.randn(50, 3, 299, 299)
        with torch.no_grad():
            out["TorchScript FID Inception, batch 50"] = median_time(lambda: net(x), repeats)
    elif what == "prc":
        from torch_fidelity.metric_prc import calculate_precision_recall_full

        g = torch.Generator().manual_seed(0)
        n = int(sys.argv[4])
        a, b = torch.randn(n, 2048, generator=g), torch.randn(n, 2048, generator=g)
        out[f"torch-fidelity precision/recall {n}x{n}x2048"] = median_time(lambda: calculate_precision_recall_full(a, b, 3), repeats)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
