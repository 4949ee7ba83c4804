#!/usr/bin/env python3
"""The plain PyTorch VAE a user compares `genmodels train vae` with, under the same protocol.

Model: the PyTorch examples' VAE (github.com/pytorch/examples, vae/main.py): fc1 784->400,
ReLU, fc21/fc22 400->20 (mu, logvar), fc3 20->400, ReLU, fc4 400->784, Bernoulli decoder, loss
= BCE summed over pixels and over the batch + the closed-form KL, Adam(lr 1e-3), batch 128,
shuffled every epoch. Two changes, both to match our protocol: the images are dynamically
binarised (each pixel drawn as Bernoulli(intensity) every time it is seen), and the decoder's
BCE is computed from logits (`binary_cross_entropy_with_logits`) instead of sigmoid + BCE (same
value, without the example's clamp of log at -100). The last partial batch of an epoch is
dropped, as our loader does, so 20 epochs are 20 x 468 = 9360 steps on both sides.

Evaluation, the protocol of `genmodels nll`: the test images binarised once, batch by batch
(100 images) after `torch.manual_seed(seed)` (seed 0), exactly as the Rust side draws them (the
SHA-256 of the binarised float32 test set is printed and stored; `genmodels nll --json` stores
the same digest as `test_set_sha256`); then log p(x) by importance sampling with the encoder
as proposal, K = 5000 (Burda et al. 2016, Sec. 5), standard error over images, and the active
units (Cov_x E_q[z_u] > 0.01).

    .venv/bin/python scripts/vae_reference.py --seeds 0 1 2 --out runs/vae-ref
"""

import argparse
import gzip
import hashlib
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, h, w = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, h * w)


def intensities(u8):
    """Our loader's pixels (v / 127.5 - 1, float32) mapped back to [0, 1] as the VAE does."""
    x = torch.from_numpy(u8.astype(np.float32)) / 127.5 - 1.0
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


class Vae(nn.Module):
    def __init__(self, hidden=400, z=20):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc21 = nn.Linear(hidden, z)
        self.fc22 = nn.Linear(hidden, z)
        self.fc3 = nn.Linear(z, hidden)
        self.fc4 = nn.Linear(hidden, 784)

    def encode(self, x):
        h = F.relu(self.fc1(x))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return self.fc4(F.relu(self.fc3(z)))  # logits

    def forward(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def loss_function(logits, x, mu, logvar):
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


@torch.no_grad()
def log_likelihood(model, x, k, chunk):
    mu, logvar = model.encode(x)
    n, zd = mu.shape
    ln2pi = math.log(2 * math.pi)
    parts = []
    done = 0
    while done < k:
        m = min(chunk, k - done)
        eps = torch.randn(m, n, zd)
        z = mu + torch.exp(0.5 * logvar) * eps
        log_q = (-0.5 * (eps.square() + logvar + ln2pi)).sum(-1)
        log_prior = (-0.5 * (z.square() + ln2pi)).sum(-1)
        logits = model.decode(z)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, x.unsqueeze(0).expand(m, n, x.shape[1]), reduction="none"
        ).sum(-1)
        parts.append(torch.logsumexp(log_px + log_prior - log_q, 0))
        done += m
    return torch.logsumexp(torch.stack(parts), 0) - math.log(k)


def binarised_test_set(u8, n, seed, per=100):
    torch.manual_seed(seed)
    p = intensities(u8[:n])
    return torch.cat([torch.bernoulli(p[i : i + per]) for i in range(0, n, per)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("-k", type=int, default=5000)
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--test-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/vae-ref")
    ap.add_argument("--init", choices=["pytorch", "tch"], default="pytorch",
                    help="tch: every Linear's weights as tch's default (Kaiming uniform with the "
                    "ReLU gain, bound sqrt(6 / fan_in), 2.45x PyTorch's 1 / sqrt(fan_in))")
    ap.add_argument("--hash-only", action="store_true", help="print the test set's digest and stop")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    assets = os.environ.get("GENMODELS_ASSETS", os.path.join(ROOT, "assets"))
    fm = os.path.join(assets, "fashion-mnist")
    test_u8 = load_idx(os.path.join(fm, "t10k-images-idx3-ubyte.gz"))
    xt = binarised_test_set(test_u8, a.n, a.test_seed)
    digest = hashlib.sha256(xt.numpy().astype("<f4").tobytes()).hexdigest()
    print(f"test set: fashion-mnist:test, {a.n} images binarised with seed {a.test_seed}, sha256 {digest}")
    if a.hash_only:
        return
    train = intensities(load_idx(os.path.join(fm, "train-images-idx3-ubyte.gz")))
    os.makedirs(a.out, exist_ok=True)
    bpe = train.shape[0] // a.batch_size
    for seed in a.seeds:
        torch.manual_seed(seed)
        model = Vae()
        if a.init == "tch":
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
        opt = torch.optim.Adam(model.parameters(), lr=a.lr)
        t0 = time.time()
        for epoch in range(a.epochs):
            order = torch.randperm(train.shape[0])
            tot = 0.0
            for b in range(bpe):
                x = torch.bernoulli(train[order[b * a.batch_size : (b + 1) * a.batch_size]])
                logits, mu, logvar = model(x)
                loss = loss_function(logits, x, mu, logvar)
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += loss.item()
            print(f"seed {seed} epoch {epoch + 1}: train -ELBO {tot / (bpe * a.batch_size):.2f}", flush=True)
        train_s = time.time() - t0
        model.eval()
        torch.manual_seed(a.test_seed ^ 0x15A39E)
        t1 = time.time()
        with torch.no_grad():
            mus = torch.cat([model.encode(xt[i : i + 100])[0] for i in range(0, a.n, 100)])
            ll = torch.cat(
                [log_likelihood(model, xt[i : i + 100], a.k, 40) for i in range(0, a.n, 100)]
            ).double()
        act = mus.var(0, unbiased=False)
        r = {
            "model": "pytorch-examples-vae (784-400-20, ReLU)",
            "init": a.init,
            "seed": seed,
            "epochs": a.epochs,
            "steps": a.epochs * bpe,
            "batch_size": a.batch_size,
            "data": "fashion-mnist:test",
            "n": a.n,
            "k": a.k,
            "test_seed": a.test_seed,
            "test_set_sha256": digest,
            "nll_nats": -ll.mean().item(),
            "nll_standard_error": ll.std().item() / math.sqrt(a.n),
            "bits_per_dim": -ll.mean().item() / (784 * math.log(2)),
            "active_units": int((act > 0.01).sum()),
            "z_dim": int(act.numel()),
            "train_seconds": train_s,
            "nll_seconds": time.time() - t1,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        print(json.dumps(r), flush=True)
        with open(os.path.join(a.out, f"seed{seed}.json"), "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
