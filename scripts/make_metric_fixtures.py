"""Make the metric parity fixtures with the reference implementations themselves.

    .venv/bin/python scripts/make_metric_fixtures.py crates/genmodels-metrics/tests/fixtures/metrics.safetensors

References (pinned in scripts/requirements.txt):
  FID                   pytorch-fid 0.3.0   calculate_frechet_distance(np.mean, np.cov)
  KID, IS, prec/recall  torch-fidelity 0.4.0
  density/coverage      prdc 0.2            compute_prdc(nearest_k=5)
  numpy legacy RNG      numpy RandomState(2020)
"""

import sys

import numpy as np
import torch
from prdc import compute_prdc
from pytorch_fid.fid_score import calculate_frechet_distance
from safetensors.torch import save_file
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import calculate_precision_recall_full


def main(out):
    g = np.random.default_rng(7)
    d = 24
    real = g.normal(size=(400, d))
    mix = np.eye(d) + 0.08 * g.normal(size=(d, d))
    fake = g.normal(size=(350, d)) @ mix + 0.1
    logits = g.normal(size=(500, 12)) * 3.0

    fid = calculate_frechet_distance(
        real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
    )
    kid = kid_features_to_metric(
        torch.from_numpy(real), torch.from_numpy(fake), kid_subsets=20, kid_subset_size=100, verbose=False
    )
    isc = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
    precision, recall = calculate_precision_recall_full(torch.from_numpy(fake), torch.from_numpy(real), neighborhood=3)
    dc = compute_prdc(real_features=real, fake_features=fake, nearest_k=5)

    rs = np.random.RandomState(2020)
    perm = rs.permutation(1000)
    rs = np.random.RandomState(2020)
    choices = np.concatenate([rs.choice(300, 100, replace=False), rs.choice(250, 100, replace=False)])

    f64 = lambda x: torch.tensor(float(x), dtype=torch.float64)
    tensors = {
        "real": torch.from_numpy(real),
        "fake": torch.from_numpy(fake),
        "logits": torch.from_numpy(logits),
        "fid": f64(fid),
        "kid_mean": f64(kid["kernel_inception_distance_mean"]),
        "kid_std": f64(kid["kernel_inception_distance_std"]),
        "isc_mean": f64(isc["inception_score_mean"]),
        "isc_std": f64(isc["inception_score_std"]),
        "precision": f64(precision),
        "recall": f64(recall),
        "density": f64(dc["density"]),
        "coverage": f64(dc["coverage"]),
        "np_permutation_2020_1000": torch.from_numpy(perm.astype(np.int64)),
        "np_choices_2020": torch.from_numpy(choices.astype(np.int64)),
    }
    save_file(tensors, out)
    for k, v in tensors.items():
        if v.dim() == 0:
            print(f"{k} = {v.item():.12g}")


if __name__ == "__main__":
    main(sys.argv[1])
