"""Python counterparts of benches/benches/models.rs, timed the same way (median of repeats).

usage: models_bench.py WHAT REPEATS THREADS   -> prints one JSON line {name: median_seconds}
WHAT: dcgan_step | gpt_step | gpt_generate
"""

import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 96


def median_time(fn, repeats):
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# --- DCGAN at 28x28, the networks of crates/genmodels-gan/src/dcgan.rs ----------------------
def dcgan():
    G = nn.Sequential(
        nn.ConvTranspose2d(100, 128, 7, 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
        nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(128, 1, 7, 1, 0, bias=False))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    ones, zeros = torch.ones(64), torch.zeros(64)

    def step():
        z = torch.randn(64, 100, 1, 1)
        fake = G(z)
        opt_d.zero_grad(set_to_none=True)
        d_loss = F.binary_cross_entropy_with_logits(D(x).view(-1), ones) + \
            F.binary_cross_entropy_with_logits(D(fake.detach()).view(-1), zeros)
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        g_loss = F.binary_cross_entropy_with_logits(D(fake).view(-1), ones)
        g_loss.backward()
        opt_g.step()
        return d_loss.item(), g_loss.item()
    return step


# --- nanoGPT's model (Karpathy, model.py), trimmed to what the benchmark uses ---------------
class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.c_attn, self.c_proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.c_fc, self.mlp_proj = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.h = h

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, layers=4, heads=4, c=128, block=64):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, c), nn.Embedding(block, c)
        self.h = nn.ModuleList(Block(c, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(c)
        self.lm_head = nn.Linear(c, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.h:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def gpt_step():
    m = GPT()
    decay = [p for p in m.parameters() if p.dim() >= 2]
    no_decay = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99))
    x = torch.randint(0, VOCAB, (12, 64))
    y = torch.randint(0, VOCAB, (12, 64))

    def step():
        loss = m(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


def gpt_generate():
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=256, n_embd=128, n_layer=4, n_head=4,
                     bos_token_id=None, eos_token_id=None)
    m = GPT2LMHeadModel(cfg).eval()
    prompt = torch.tensor([[1]])

    def run():
        with torch.no_grad():
            out = m.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                             top_k=0, max_new_tokens=200, min_new_tokens=200, pad_token_id=0)
        assert out.shape[1] == 201
    return run


def main():
    what, repeats, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if what == "dcgan_step":
        out = {"pytorch dcgan step": median_time(dcgan(), repeats)}
    elif what == "gpt_step":
        out = {"pytorch nanoGPT step": median_time(gpt_step(), repeats)}
    elif what == "gpt_generate":
        out = {"transformers generate": median_time(gpt_generate(), repeats)}
    else:
        raise SystemExit(f"unknown benchmark {what}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
