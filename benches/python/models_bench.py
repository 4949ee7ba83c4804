"""Python counterparts of benches/benches/models.rs, timed the same way (median of repeats).

usage: models_bench.py WHAT REPEATS THREADS   -> prints one JSON line {name: median_seconds}
WHAT: dcgan_step | stylegan2_step | iwae_step | gpt_step | gpt_generate
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
def set_trainable(net, on):
    for p in net.parameters():
        p.requires_grad_(on)


def dcgan(fast=False):
    """The PyTorch DCGAN example's step; `fast`: the same step with Adam(fused=True) and D's
    parameters frozen during the G update (what genmodels does), for comparison."""
    G = nn.Sequential(
        nn.ConvTranspose2d(100, 128, 7, 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
        nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(128, 1, 7, 1, 0, bias=False))
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fast or None)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fast or None)
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
        if fast:
            set_trainable(D, False)
        opt_g.zero_grad(set_to_none=True)
        g_loss = F.binary_cross_entropy_with_logits(D(fake).view(-1), ones)
        g_loss.backward()
        opt_g.step()
        if fast:
            set_trainable(D, True)
        return d_loss.item(), g_loss.item()
    return step


# --- StyleGAN2 at 28x28 (net 32x32), the networks of crates/genmodels-gan/src/stylegan.rs ----
# Same layers, widths, initialisation scales and step as ours: mapping 8 x 128 (lr mul 0.01),
# modulated/demodulated 3x3 convolutions as one grouped convolution, noise, skip to-RGB,
# residual D with minibatch std, non-saturating loss, style mixing at 0.9, Adam (0, 0.99) with
# the lazy-R1 rescaling of the D's lr and betas. The benchmarked step is one without R1 (15 of
# every 16 steps).
SQRT2 = math.sqrt(2.0)
FUSED_MODCONV = True  # one grouped convolution per layer (rosinality's default; ADA at inference)


def lrelu(x):
    return F.leaky_relu(x, 0.2) * SQRT2


class EqLinear(nn.Module):
    def __init__(self, i, o, lr_mul=1.0, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(o, i) / lr_mul)
        self.bias = nn.Parameter(torch.full((o,), bias_init / lr_mul))
        self.w_scale, self.lr_mul = lr_mul / math.sqrt(i), lr_mul

    def forward(self, x):
        return F.linear(x, self.weight * self.w_scale, self.bias * self.lr_mul)


class ModConv(nn.Module):
    def __init__(self, i, o, k, w_dim, demod):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(o, i, k, k))
        self.affine = EqLinear(w_dim, i, 1.0, 1.0)
        self.demod, self.k = demod, k

    def forward(self, x, w):
        n, i, h, wd = x.shape
        o = self.weight.shape[0]
        s = self.affine(w)
        gain = 1.0 / math.sqrt(i * self.k * self.k)
        if not FUSED_MODCONV:
            # StyleGAN2-ADA's training path (fused_modconv=False): scale the activations
            # before and after one convolution with the shared weight.
            wt = self.weight.unsqueeze(0) * gain * s.view(n, 1, i, 1, 1)
            y = F.conv2d(x * s.view(n, i, 1, 1), self.weight * gain, padding=self.k // 2)
            if self.demod:
                y = y * (wt.square().sum([2, 3, 4]) + 1e-8).rsqrt().view(n, o, 1, 1)
            return y
        wt = self.weight.unsqueeze(0) * gain * s.view(n, 1, i, 1, 1)
        if self.demod:
            wt = wt * (wt.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
        y = F.conv2d(x.reshape(1, n * i, h, wd), wt.reshape(n * o, i, self.k, self.k),
                     padding=self.k // 2, groups=n)
        return y.reshape(n, o, h, wd)


class StyleLayer(nn.Module):
    def __init__(self, i, o, w_dim, up):
        super().__init__()
        self.conv = ModConv(i, o, 3, w_dim, True)
        self.noise_strength = nn.Parameter(torch.zeros(1))
        self.bias = nn.Parameter(torch.zeros(o))
        self.up = up

    def forward(self, x, w):
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        y = self.conv(x, w)
        noise = torch.randn(y.shape[0], 1, y.shape[2], y.shape[3])
        return lrelu(y + noise * self.noise_strength + self.bias.view(1, -1, 1, 1))


class ToRgb(nn.Module):
    def __init__(self, i, c, w_dim):
        super().__init__()
        self.conv = ModConv(i, c, 1, w_dim, False)
        self.bias = nn.Parameter(torch.zeros(c))

    def forward(self, x, w):
        return self.conv(x, w) + self.bias.view(1, -1, 1, 1)


def sg_fmaps(stage, fmax=64, fmin=16):
    return max(fmax >> max(stage - 1, 0), fmin)


class SgGenerator(nn.Module):
    def __init__(self, k=3, z_dim=128, w_dim=128, channels=1):
        super().__init__()
        self.mapping = nn.ModuleList(
            [EqLinear(z_dim if i == 0 else w_dim, w_dim, 0.01, 0.0) for i in range(8)])
        f0 = sg_fmaps(0)
        self.const = nn.Parameter(torch.randn(1, f0, 4, 4))
        layers, rgb = [StyleLayer(f0, f0, w_dim, False)], [ToRgb(f0, channels, w_dim)]
        for s in range(1, k + 1):
            i, o = sg_fmaps(s - 1), sg_fmaps(s)
            layers += [StyleLayer(i, o, w_dim, True), StyleLayer(o, o, w_dim, False)]
            rgb.append(ToRgb(o, channels, w_dim))
        self.layers, self.to_rgb = nn.ModuleList(layers), nn.ModuleList(rgb)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.num_ws = 2 * k + 2

    def map(self, z):
        x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        for l in self.mapping:
            x = lrelu(l(x))
        return x

    def synthesis(self, ws):
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        img, wi, li = None, 0, 0
        for r, rgb in enumerate(self.to_rgb):
            for _ in range(1 if r == 0 else 2):
                x = self.layers[li](x, ws[:, wi])
                li, wi = li + 1, wi + 1
            y = rgb(x, ws[:, wi])
            img = y if img is None else F.interpolate(
                img, scale_factor=2, mode="bilinear", align_corners=False) + y
        return img


def eq_conv(x, conv):
    fan_in = conv.weight[0].numel()
    return F.conv2d(x, conv.weight / math.sqrt(fan_in), conv.bias, padding=conv.weight.shape[2] // 2)


def eq_lin(x, lin):
    return F.linear(x, lin.weight / math.sqrt(lin.weight.shape[1]), lin.bias)


def minibatch_std(x, group=4):
    n, c, h, w = x.shape
    g = max(min(group, n), 1)
    y = x.view(g, -1, c, h, w)
    y = (y - y.mean(0, keepdim=True)).square().mean(0)
    y = (y + 1e-8).sqrt().mean([1, 2, 3], keepdim=True).repeat(g, 1, h, w)
    return torch.cat([x, y], 1)


def randn_conv(i, o, k, bias):
    c = nn.Conv2d(i, o, k, padding=k // 2, bias=bias)
    nn.init.normal_(c.weight)
    if bias:
        nn.init.zeros_(c.bias)
    return c


def randn_lin(i, o):
    l = nn.Linear(i, o)
    nn.init.normal_(l.weight)
    nn.init.zeros_(l.bias)
    return l


class SgDiscriminator(nn.Module):
    def __init__(self, k=3, channels=1):
        super().__init__()
        self.from_rgb = randn_conv(channels, sg_fmaps(k), 1, True)
        self.blocks = nn.ModuleList([nn.ModuleList([
            randn_conv(sg_fmaps(s), sg_fmaps(s), 3, True),
            randn_conv(sg_fmaps(s), sg_fmaps(s - 1), 3, True),
            randn_conv(sg_fmaps(s), sg_fmaps(s - 1), 1, False)]) for s in range(k, 0, -1)])
        f0 = sg_fmaps(0)
        self.conv_last = randn_conv(f0 + 1, f0, 3, True)
        self.fc, self.out = randn_lin(f0 * 16, f0), randn_lin(f0, 1)

    def forward(self, x):
        h = lrelu(eq_conv(x, self.from_rgb))
        for c1, c2, skip in self.blocks:
            y = F.avg_pool2d(lrelu(eq_conv(lrelu(eq_conv(h, c1)), c2)), 2)
            h = (y + eq_conv(F.avg_pool2d(h, 2), skip)) / SQRT2
        h = lrelu(eq_conv(minibatch_std(h, 4), self.conv_last))
        h = lrelu(eq_lin(h.flatten(1), self.fc))
        return eq_lin(h, self.out).squeeze(1)


def stylegan2(batch=32, fused_adam=False):
    """D is frozen during the G update, as both reference implementations do (StyleGAN2-ADA's
    `requires_grad_` per phase, rosinality's `requires_grad(discriminator, False)`)."""
    G, D = SgGenerator(), SgDiscriminator()
    c = 16 / 17
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99), fused=fused_adam or None)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3 * c, betas=(0.0 ** c, 0.99 ** c),
                             fused=fused_adam or None)
    x = torch.rand(batch, 1, 28, 28) * 2 - 1
    real = F.pad(x + 1.0, (2, 2, 2, 2)) - 1.0

    def styles(n):
        ws = G.map(torch.randn(n, 128)).unsqueeze(1).repeat(1, G.num_ws, 1)
        if torch.rand(()).item() < 0.9:
            cut = 1 + int(torch.rand(()).item() * (G.num_ws - 1))
            other = G.map(torch.randn(n, 128)).unsqueeze(1).repeat(1, G.num_ws, 1)
            layer = torch.arange(G.num_ws).view(1, -1, 1)
            ws = torch.where(layer < cut, ws, other)
        return ws

    def step():
        with torch.no_grad():
            fake = G.synthesis(styles(batch))
        d_real, d_fake = D(real), D(fake)
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        set_trainable(D, False)
        g_loss = F.softplus(-D(G.synthesis(styles(batch)))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        set_trainable(D, True)
        with torch.no_grad():
            w = G.map(torch.randn(batch, 128)).mean(0)
            G.w_avg.copy_(G.w_avg + (w - G.w_avg) * (1.0 - 0.995))
        return d_loss.item(), g_loss.item()
    return step


# --- IWAE (Burda et al. 2016), the networks and bound of crates/genmodels-vae/src/vae.rs -----
LN2PI = math.log(2 * math.pi)


def iwae_step(k=5, batch=100):
    mlp = lambda i, o: nn.Sequential(nn.Linear(i, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(),
                                     nn.Linear(200, o))
    enc, dec = mlp(784, 100), mlp(50, 784)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3, eps=1e-4)
    intensities = torch.rand(batch, 784)

    def step():
        x = torch.bernoulli(intensities)  # dynamic binarisation
        mu, logvar = enc(x).chunk(2, 1)
        eps = torch.randn(k, batch, 50)
        z = mu + (0.5 * logvar).exp() * eps
        log_q = (-0.5 * (eps.square() + logvar + LN2PI)).sum(-1)
        log_prior = (-0.5 * (z.square() + LN2PI)).sum(-1)
        log_px = -F.binary_cross_entropy_with_logits(
            dec(z), x.expand(k, -1, -1), reduction="none").sum(-1)
        bound = torch.logsumexp(log_px + log_prior - log_q, 0) - math.log(k)
        loss = -bound.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
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
    global FUSED_MODCONV
    if what == "dcgan_step":
        out = {"pytorch dcgan step": median_time(dcgan(), repeats),
               "same, Adam(fused=True) + D frozen in the G step": median_time(dcgan(True), repeats)}
    elif what == "stylegan2_step":
        out = {"pytorch stylegan2 step": median_time(stylegan2(), repeats)}
        FUSED_MODCONV = False
        out["same, ADA's unfused modulated conv"] = median_time(stylegan2(), repeats)
        out["same, unfused modconv + Adam(fused=True)"] = median_time(stylegan2(fused_adam=True), repeats)
        FUSED_MODCONV = True
    elif what == "iwae_step":
        out = {"pytorch iwae step": median_time(iwae_step(), repeats)}
    elif what == "gpt_step":
        out = {"pytorch nanoGPT step": median_time(gpt_step(), repeats)}
    elif what == "gpt_generate":
        out = {"transformers generate": median_time(gpt_generate(), repeats)}
    else:
        raise SystemExit(f"unknown benchmark {what}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
