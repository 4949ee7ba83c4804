"""PyTorch's side of benches/benches/distributed.rs: seconds per training step of the same
networks with the same global batch, in one process or under torchrun with
DistributedDataParallel (Gloo, one thread per process).

    python ddp_bench.py WORKLOAD STEPS WARMUP GLOBAL_BATCH
    torchrun --nproc-per-node 2 ddp_bench.py WORKLOAD STEPS WARMUP GLOBAL_BATCH

WORKLOAD: dcgan (the `dcgan` default at 28x28: D on real and fake, then G through the frozen D,
Adam(2e-4, 0.5, fused)) or gpt (nanoGPT's CPU configuration, 4 x 4 x 128, context 64, AdamW
fused, clipping at 1.0). Each process takes GLOBAL_BATCH / WORLD_SIZE rows. The strongest eager
variant: fused Adam, DDP(gradient_as_bucket_view=True), and D's G-step forward through
D.module with D's parameters frozen (no gradient and no all-reduce for D there; DDP would
otherwise reduce D's gradients of the G loss too). Rank 0 prints one JSON line,
{"s_per_step": ...}, timed between two barriers after the warm-up steps.
"""

import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(__file__))
from models_bench import GPT, VOCAB, dcgan_nets, set_trainable  # noqa: E402


def ddp(m, world):
    return DDP(m, gradient_as_bucket_view=True) if world > 1 else m


def dcgan(rows, world):
    G, D = dcgan_nets()
    Gd, Dd = ddp(G, world), ddp(D, world)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=True)
    x = torch.rand(rows, 1, 28, 28) * 2 - 1
    ones, zeros = torch.ones(rows), torch.zeros(rows)

    def step():
        fake = Gd(torch.randn(rows, 100, 1, 1))
        opt_d.zero_grad(set_to_none=True)
        d_loss = F.binary_cross_entropy_with_logits(Dd(x).view(-1), ones) + \
            F.binary_cross_entropy_with_logits(Dd(fake.detach()).view(-1), zeros)
        d_loss.backward()
        opt_d.step()
        set_trainable(D, False)
        opt_g.zero_grad(set_to_none=True)
        g_loss = F.binary_cross_entropy_with_logits(D(fake).view(-1), ones)
        g_loss.backward()
        opt_g.step()
        set_trainable(D, True)
        return d_loss.item() + g_loss.item()
    return step


def gpt(rows, world):
    m = GPT()
    md = ddp(m, world)
    decay = [p for p in m.parameters() if p.dim() >= 2]
    no_decay = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99),
                            fused=True)
    x = torch.randint(0, VOCAB, (rows, 64))
    y = torch.randint(0, VOCAB, (rows, 64))

    def step():
        loss = md(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def main():
    what, steps, warmup, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    step = {"dcgan": dcgan, "gpt": gpt}[what](batch // world, world)
    for _ in range(warmup):
        step()
    if world > 1:
        dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if world > 1:
        dist.barrier()
    s = (time.perf_counter() - t0) / steps
    if rank == 0:
        print(json.dumps({"s_per_step": s, "torch": torch.__version__}), flush=True)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
