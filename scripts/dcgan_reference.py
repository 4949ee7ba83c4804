#!/usr/bin/env python3
"""The textbook PyTorch DCGAN a user compares `genmodels train dcgan` with (issue 19).

Model and training: the PyTorch examples' DCGAN (github.com/pytorch/examples, dcgan/main.py)
at 32x32 for one-channel Fashion-MNIST (images padded by 2 pixels of background to 32x32, the
layout 4 -> 8 -> 16 -> 32 with generator widths 256-128-64 and discriminator widths 64-128-256):
ConvTranspose / Conv 4x4 stride 2 without bias, batch norm except on G's output and D's input,
ReLU in G, LeakyReLU 0.2 in D, tanh output, sigmoid + BCE, weights N(0, 0.02) and batch-norm
scales N(1, 0.02), Adam(2e-4, betas (0.5, 0.999)) for both, nz = 100; each step D takes the
real batch (label 1) and a fake batch (label 0), then G takes the same fake batch with label 1,
as the example does. Batches are drawn as our loader draws them (a fresh permutation per
epoch, the last partial batch dropped).

Samples: `-n` images written as 28x28 PNGs (the centre of the 32x32 canvas, the size of the
test images), for `genmodels fid DIR fashion-mnist:test` or `python -m pytorch_fid`.

    .venv/bin/python scripts/dcgan_reference.py --steps 3000 --batch-size 64 --seed 0 --out runs/dcgan-ref-s0
"""

import argparse
import gzip
import json
import os
import time

import numpy as np
import torch
from PIL import Image
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, h, w = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, 1, h, w)


class Generator(nn.Module):
    def __init__(self, nz=100, ngf=64, nc=1):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z):
        return self.main(z)


class Discriminator(nn.Module):
    def __init__(self, ndf=64, nc=1):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.main(x).view(-1)


def weights_init(m):
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    assets = os.environ.get("GENMODELS_ASSETS", os.path.join(ROOT, "assets"))
    u8 = load_idx(os.path.join(assets, "fashion-mnist", "train-images-idx3-ubyte.gz"))
    x_all = torch.from_numpy(u8.astype(np.float32)) / 127.5 - 1.0
    x_all = nn.functional.pad(x_all, (2, 2, 2, 2), value=-1.0)  # 28 -> 32, background
    g, d = Generator(), Discriminator()
    g.apply(weights_init)
    d.apply(weights_init)
    crit = nn.BCELoss()
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    per_epoch = len(x_all) // a.batch_size
    perm = None
    t0 = time.time()
    for step in range(a.steps):
        if step % per_epoch == 0:
            perm = torch.from_numpy(rng.permutation(len(x_all)))
        i = step % per_epoch
        real = x_all[perm[i * a.batch_size : (i + 1) * a.batch_size]]
        b = real.shape[0]
        d.zero_grad()
        err_real = crit(d(real), torch.ones(b))
        err_real.backward()
        fake = g(torch.randn(b, 100, 1, 1))
        err_fake = crit(d(fake.detach()), torch.zeros(b))
        err_fake.backward()
        opt_d.step()
        g.zero_grad()
        err_g = crit(d(fake), torch.ones(b))
        err_g.backward()
        opt_g.step()
        if step % 500 == 0 or step == a.steps - 1:
            print(f"step {step} loss_d {(err_real + err_fake).item():.4f} loss_g {err_g.item():.4f}", flush=True)
    train_s = time.time() - t0
    os.makedirs(a.out, exist_ok=True)
    g.eval()  # sampling as the example's saved generator is used: batch norm with running stats
    with torch.no_grad():
        k = 0
        while k < a.n:
            m = min(500, a.n - k)
            imgs = g(torch.randn(m, 100, 1, 1))[:, 0, 2:30, 2:30]
            u = ((imgs + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            for j in range(m):
                Image.fromarray(u[j], mode="L").save(os.path.join(a.out, f"{k + j:05}.png"))
            k += m
    with open(os.path.join(a.out, "..", os.path.basename(a.out.rstrip("/")) + ".json"), "w") as f:
        json.dump({"steps": a.steps, "batch_size": a.batch_size, "seed": a.seed, "train_seconds": train_s}, f)
    print(f"trained {a.steps} steps in {train_s:.0f} s; {a.n} samples in {a.out}")


if __name__ == "__main__":
    main()
