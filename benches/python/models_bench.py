"""Python counterparts of benches/benches/models.rs and diffusion.rs, run as a long-lived worker
(bench_worker.py: `models_bench.py --serve THREADS`, one JSON request per line).

Workloads (each with the reference first, then what a speed-minded PyTorch user would add):
dcgan_step | stylegan2_step | iwae_step | vae_step | vae_nll | vqvae_step | jem_step | gpt_step | gpt_generate | unet_train_step | ddim_sample
"""

import json
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_worker import Workload, serve

VOCAB = 96


def compiled(fn_or_module):
    return torch.compile(fn_or_module)


# --- DCGAN at 28x28, the networks of crates/genmodels-gan/src/dcgan.rs ----------------------
def set_trainable(net, on):
    for p in net.parameters():
        p.requires_grad_(on)


def dcgan_nets():
    """G and D of the `dcgan` default at 28x28 (also used by ddp_bench.py)."""
    G = nn.Sequential(
        nn.ConvTranspose2d(100, 128, 7, 1, 0, bias=False), nn.BatchNorm2d(128), nn.ReLU(True),
        nn.ConvTranspose2d(128, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
        nn.ConvTranspose2d(64, 1, 4, 2, 1, bias=False), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(128, 1, 7, 1, 0, bias=False))
    return G, D


def dcgan(fast=False, compile=False):
    """The PyTorch DCGAN example's step; `fast`: the same step with Adam(fused=True) and D's
    parameters frozen during the G update (what genmodels does), for comparison; `compile`:
    G and D through torch.compile as well."""
    G, D = dcgan_nets()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fast or None)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), fused=fast or None)
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    ones, zeros = torch.ones(64), torch.zeros(64)
    Gm, Dm = G, D
    if compile:
        G, D = compiled(Gm), compiled(Dm)

    def step():
        z = torch.randn(64, 100, 1, 1)
        fake = G(z)
        opt_d.zero_grad(set_to_none=True)
        d_loss = F.binary_cross_entropy_with_logits(D(x).view(-1), ones) + \
            F.binary_cross_entropy_with_logits(D(fake.detach()).view(-1), zeros)
        d_loss.backward()
        opt_d.step()
        if fast:
            set_trainable(Dm, False)
        opt_g.zero_grad(set_to_none=True)
        g_loss = F.binary_cross_entropy_with_logits(D(fake).view(-1), ones)
        g_loss.backward()
        opt_g.step()
        if fast:
            set_trainable(Dm, True)
        return d_loss.item(), g_loss.item()
    return step


# --- StyleGAN2 at 28x28 (net 32x32), the networks of crates/genmodels-gan/src/stylegan.rs ----
# Same layers, widths, initialisation scales and step as ours: mapping 8 x 128 (lr mul 0.01),
# modulated/demodulated 3x3 convolutions as one grouped convolution, noise, skip to-RGB,
# residual D with minibatch std, non-saturating loss, style mixing at 0.9, Adam (0, 0.99) with
# the lazy-R1 rescaling of the D's lr and betas. The benchmarked step is one without R1 (15 of
# every 16 steps).
SQRT2 = math.sqrt(2.0)


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
        self.fused = True  # one grouped convolution per layer (rosinality's default; ADA at inference)

    def forward(self, x, w):
        n, i, h, wd = x.shape
        o = self.weight.shape[0]
        s = self.affine(w)
        gain = 1.0 / math.sqrt(i * self.k * self.k)
        if not self.fused:
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


def stylegan2(batch=32, fused_modconv=True, fused_adam=False, compile=False):
    """D is frozen during the G update, as both reference implementations do (StyleGAN2-ADA's
    `requires_grad_` per phase, rosinality's `requires_grad(discriminator, False)`).
    `compile`: the mapping, the synthesis network and D through torch.compile."""
    G, D = SgGenerator(), SgDiscriminator()
    for mod in G.modules():
        if isinstance(mod, ModConv):
            mod.fused = fused_modconv
    Dm = D
    map_fn, synth = G.map, G.synthesis
    if compile:
        map_fn, synth, D = compiled(G.map), compiled(G.synthesis), compiled(Dm)
    c = 16 / 17
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99), fused=fused_adam or None)
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3 * c, betas=(0.0 ** c, 0.99 ** c),
                             fused=fused_adam or None)
    x = torch.rand(batch, 1, 28, 28) * 2 - 1
    real = F.pad(x + 1.0, (2, 2, 2, 2)) - 1.0

    def styles(n):
        ws = map_fn(torch.randn(n, 128)).unsqueeze(1).repeat(1, G.num_ws, 1)
        if torch.rand(()).item() < 0.9:
            cut = 1 + int(torch.rand(()).item() * (G.num_ws - 1))
            other = map_fn(torch.randn(n, 128)).unsqueeze(1).repeat(1, G.num_ws, 1)
            layer = torch.arange(G.num_ws).view(1, -1, 1)
            ws = torch.where(layer < cut, ws, other)
        return ws

    def step():
        with torch.no_grad():
            fake = synth(styles(batch))
        d_real, d_fake = D(real), D(fake)
        d_loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        set_trainable(Dm, False)
        g_loss = F.softplus(-D(synth(styles(batch)))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        set_trainable(Dm, True)
        with torch.no_grad():
            w = map_fn(torch.randn(batch, 128)).mean(0)
            G.w_avg.copy_(G.w_avg + (w - G.w_avg) * (1.0 - 0.995))
        return d_loss.item(), g_loss.item()
    return step


# --- IWAE (Burda et al. 2016), the networks and bound of crates/genmodels-vae/src/vae.rs -----
LN2PI = math.log(2 * math.pi)


def iwae_step(k=5, batch=100, fast=False):
    """`fast`: Adam(fused=True) and the bound's forward pass through torch.compile."""
    mlp = lambda i, o: nn.Sequential(nn.Linear(i, 200), nn.Tanh(), nn.Linear(200, 200), nn.Tanh(),
                                     nn.Linear(200, o))
    enc, dec = mlp(784, 100), mlp(50, 784)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3, eps=1e-4,
                           fused=fast or None)
    intensities = torch.rand(batch, 784)

    def loss_of(x):
        mu, logvar = enc(x).chunk(2, 1)
        eps = torch.randn(k, batch, 50)
        z = mu + (0.5 * logvar).exp() * eps
        log_q = (-0.5 * (eps.square() + logvar + LN2PI)).sum(-1)
        log_prior = (-0.5 * (z.square() + LN2PI)).sum(-1)
        log_px = -F.binary_cross_entropy_with_logits(
            dec(z), x.expand(k, -1, -1), reduction="none").sum(-1)
        bound = torch.logsumexp(log_px + log_prior - log_q, 0) - math.log(k)
        return -bound.mean()

    if fast:
        loss_fn = compiled(loss_of)

        def step():
            loss = loss_fn(torch.bernoulli(intensities))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.item()
        return step

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


def gpt_step(fast=False):
    """nanoGPT's loop; `fast`: AdamW(fused=True) and the model through torch.compile (what
    nanoGPT's train.py does by default, with `fused` where available)."""
    m = GPT()
    decay = [p for p in m.parameters() if p.dim() >= 2]
    no_decay = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.99),
                            fused=fast or None)
    fwd = compiled(m) if fast else m
    x = torch.randint(0, VOCAB, (12, 64))
    y = torch.randint(0, VOCAB, (12, 64))

    def step():
        loss = fwd(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=fast or None)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return step


GEN_TOKENS, GEN_CONTEXT = 200, 256


def hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=GEN_CONTEXT, n_embd=128, n_layer=4, n_head=4,
                     bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(cfg).eval()


def gpt_generate(m):
    """`transformers`' generate: sampling at temperature 1, no top-k, exactly 200 new tokens."""
    prompt = torch.tensor([[1]])

    def run():
        with torch.no_grad():
            out = m.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                             top_k=0, max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS,
                             pad_token_id=0)
        assert out.shape[1] == GEN_TOKENS + 1
    return run


class CachedGPT2(nn.Module):
    """The same GPT-2 (its weights copied from the `transformers` model) as a plain PyTorch
    decoder with a preallocated KV cache: what a speed-minded PyTorch user writes instead of
    `generate`. `step(tok, pos)` runs one token at position `pos` and returns its logits.
    With `static`, attention always spans the whole cache under a position mask (fixed shapes,
    so that torch.compile traces it once); otherwise it spans the filled part only."""

    def __init__(self, hf, static=False):
        super().__init__()
        t = hf.transformer
        self.c = hf.config.n_embd
        self.h = hf.config.n_head
        self.static = static
        self.wte, self.wpe, self.ln_f = t.wte, t.wpe, t.ln_f
        self.blocks = []
        for b in t.h:
            lin = lambda conv: (conv.weight.t().contiguous(), conv.bias)  # Conv1D: [in, out]
            self.blocks.append(dict(ln_1=b.ln_1, ln_2=b.ln_2, attn=lin(b.attn.c_attn),
                                    proj=lin(b.attn.c_proj), fc=lin(b.mlp.c_fc),
                                    mproj=lin(b.mlp.c_proj)))
        d = self.c // self.h
        self.k = [torch.zeros(1, self.h, GEN_CONTEXT, d) for _ in self.blocks]
        self.v = [torch.zeros(1, self.h, GEN_CONTEXT, d) for _ in self.blocks]
        self.slots = torch.arange(GEN_CONTEXT)

    def step(self, tok, pos):
        """`tok` [1, 1]; `pos`: an int (dynamic) or a [1] long tensor (static)."""
        C, H = self.c, self.h
        p = pos if self.static else torch.tensor([pos])
        x = self.wte(tok) + self.wpe(p)
        mask = (self.slots <= pos).view(1, 1, 1, -1) if self.static else None
        for i, b in enumerate(self.blocks):
            q, k, v = F.linear(b["ln_1"](x), *b["attn"]).split(C, dim=2)
            q, k, v = (t.view(1, 1, H, C // H).transpose(1, 2) for t in (q, k, v))
            if self.static:
                self.k[i].index_copy_(2, pos, k)
                self.v[i].index_copy_(2, pos, v)
                y = F.scaled_dot_product_attention(q, self.k[i], self.v[i], attn_mask=mask)
            else:
                self.k[i][:, :, pos] = k[:, :, 0]
                self.v[i][:, :, pos] = v[:, :, 0]
                y = F.scaled_dot_product_attention(
                    q, self.k[i][:, :, : pos + 1], self.v[i][:, :, : pos + 1])
            x = x + F.linear(y.transpose(1, 2).reshape(1, 1, C), *b["proj"])
            h = F.gelu(F.linear(b["ln_2"](x), *b["fc"]), approximate="tanh")
            x = x + F.linear(h, *b["mproj"])
        return F.linear(self.ln_f(x), self.wte.weight)[:, -1]


def plain_generate(hf, compile=False):
    """200 tokens by the plain loop: one cached step per token, softmax + multinomial."""
    m = CachedGPT2(hf, static=compile)
    step = compiled(m.step) if compile else m.step
    with torch.no_grad():  # the plain decoder is the transformers model, step by step
        ids = torch.randint(0, VOCAB, (1, 12))
        ref = hf(ids).logits[0]
        for i in range(ids.shape[1]):
            pos = torch.tensor([i]) if compile else i
            got = m.step(ids[:, i : i + 1], pos)[0]
            assert torch.allclose(got, ref[i], atol=1e-4), "plain decoder differs from transformers"

    def run():
        with torch.no_grad():
            tok = torch.tensor([[1]])
            out = []
            for i in range(GEN_TOKENS):
                logits = step(tok, torch.tensor([i]) if compile else i)
                tok = torch.multinomial(torch.softmax(logits, -1), 1)
                out.append(tok)
        assert len(out) == GEN_TOKENS
    return run


# --- diffusers' UNet2DModel, the config our UNet2D writes (crates/genmodels-diffusion) --------
def diffusers_unet(args):
    from diffusers import UNet2DModel
    with open(args["config"]) as f:
        cfg = json.load(f)
    return UNet2DModel.from_config(cfg)


def unet_train_step(args, fused_adam=False, compile=False):
    """DDPM's training step (Ho et al. 2020, Algorithm 1; the simple epsilon loss) with Adam 2e-4:
    t uniform in [0, 1000), x_t by DDPMScheduler.add_noise, dropout on."""
    from diffusers import DDPMScheduler
    m = diffusers_unet(args).train()
    sched = DDPMScheduler()
    opt = torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.9, 0.999), fused=fused_adam or None)
    net = compiled(m) if compile else m
    b, c, side = args["batch"], m.config.in_channels, args["side"]
    x0 = torch.rand(b, c, side, side) * 2 - 1

    def step():
        t = torch.randint(0, sched.config.num_train_timesteps, (b,))
        noise = torch.randn_like(x0)
        xt = sched.add_noise(x0, noise, t)
        loss = F.mse_loss(net(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def ddim_sample(args, compile=False):
    """DDIM with 50 steps (eta 0) from DDIMScheduler's defaults (= our SchedulerConfig default):
    the loop of diffusers' DDIMPipeline, under no_grad."""
    from diffusers import DDIMScheduler
    m = diffusers_unet(args).eval()
    sched = DDIMScheduler()
    sched.set_timesteps(args["steps"])
    net = compiled(m) if compile else m
    b, c, side = args["batch"], m.config.in_channels, args["side"]

    def run():
        with torch.no_grad():
            x = torch.randn(b, c, side, side)
            for t in sched.timesteps:
                x = sched.step(net(x, t).sample, t, x).prev_sample
        return x
    return run


# --- VAE (ELBO, k = 1) and its importance-sampled NLL, the networks of vae.rs -------------------
def vae_nets(a):
    """`a`: hidden, layers, z, activation ("tanh" | "relu"), as the Rust side's VaeConfig."""
    h, layers, z = a.get("hidden", 200), a.get("layers", 2), a.get("z", 50)
    act = nn.ReLU if a.get("activation", "tanh") == "relu" else nn.Tanh

    def mlp(i, o):
        mods, d = [], i
        for _ in range(layers):
            mods += [nn.Linear(d, h), act()]
            d = h
        return nn.Sequential(*mods, nn.Linear(d, o))
    return mlp(784, 2 * z), mlp(z, 784), z


def vae_step(a, fast=False):
    """One ELBO step (k = 1) on a dynamically binarised batch; `fast`: Adam(fused=True) and the
    loss through torch.compile."""
    enc, dec, zd = vae_nets(a)
    batch = a.get("batch", 128)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-3,
                           eps=a.get("adam_eps", 1e-4), fused=fast or None)
    intensities = torch.rand(batch, 784)

    def loss_of(x):
        mu, logvar = enc(x).chunk(2, 1)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(-1)
        kl = 0.5 * (mu.square() + logvar.exp() - logvar - 1).sum(-1)
        return (rec + kl).mean()

    loss_fn = compiled(loss_of) if fast else loss_of

    def step():
        loss = loss_fn(torch.bernoulli(intensities))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def vae_nll(a, fast=False):
    """log p(x) by importance sampling (Burda et al. 2016) for `n` binarised images with `k`
    samples, `chunk` samples per decoder pass (as the Rust side: about 4k rows); `fast`: the
    chunk's computation through torch.compile."""
    enc, dec, zd = vae_nets(a)
    n, k = a.get("n", 100), a.get("k", 500)
    chunk = max(1, 4096 // n)
    x = torch.bernoulli(torch.rand(n, 784))

    def part(x, mu, logvar, m):
        eps = torch.randn(m, n, zd)
        z = mu + (0.5 * logvar).exp() * eps
        log_q = (-0.5 * (eps.square() + logvar + LN2PI)).sum(-1)
        log_prior = (-0.5 * (z.square() + LN2PI)).sum(-1)
        log_px = -F.binary_cross_entropy_with_logits(
            dec(z), x.expand(m, -1, -1), reduction="none").sum(-1)
        return torch.logsumexp(log_px + log_prior - log_q, 0)

    part_fn = compiled(part) if fast else part

    def run():
        with torch.no_grad():
            mu, logvar = enc(x).chunk(2, 1)
            parts, done = [], 0
            while done < k:
                m = min(chunk, k - done)
                parts.append(part_fn(x, mu, logvar, m))
                done += m
            return (torch.logsumexp(torch.stack(parts), 0) - math.log(k)).mean().item()
    return run


# --- VQ-VAE (autoencoder phase), the networks of vqvae.rs ------------------------------------
class VqRes(nn.Module):
    def __init__(self, ch, hidden):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(ch, hidden, 3, padding=1), nn.Conv2d(hidden, ch, 1)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(F.relu(x))))


class VqEncoder(nn.Module):
    def __init__(self, h=64, rh=32, d=16):
        super().__init__()
        self.down1 = nn.Conv2d(1, h // 2, 4, 2, 1)
        self.down2 = nn.Conv2d(h // 2, h, 4, 2, 1)
        self.res = nn.Sequential(VqRes(h, rh), VqRes(h, rh))
        self.to_code = nn.Conv2d(h, d, 1)

    def forward(self, x):
        return self.to_code(F.relu(self.res(self.down2(F.relu(self.down1(x))))))


class VqDecoder(nn.Module):
    def __init__(self, h=64, rh=32, d=16):
        super().__init__()
        self.from_code = nn.Conv2d(d, h, 3, padding=1)
        self.res = nn.Sequential(VqRes(h, rh), VqRes(h, rh))
        self.up1 = nn.ConvTranspose2d(h, h // 2, 4, 2, 1)
        self.up2 = nn.ConvTranspose2d(h // 2, 1, 4, 2, 1)

    def forward(self, z):
        return self.up2(F.relu(self.up1(F.relu(self.res(self.from_code(z))))))


def vqvae_step(batch=64, fast=False, codes=128, d=16, beta=0.25, decay=0.99):
    """One autoencoder step: MSE reconstruction + beta x commitment, straight-through, then the
    EMA codebook update (van den Oord et al. 2017, App. A.1) with Laplace-smoothed counts."""
    enc, dec = VqEncoder(d=d), VqDecoder(d=d)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=2e-4,
                           fused=fast or None)
    embed = (torch.rand(codes, d) * 2 - 1) / codes
    cluster, embed_avg = torch.zeros(codes), embed.clone()
    x = torch.rand(batch, 1, 28, 28) * 2 - 1

    def fwd(x, embed):
        z_e = enc(x)
        n, _, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        with torch.no_grad():
            idx = torch.cdist(flat.detach(), embed).argmin(1)
        e = embed[idx].view(n, h, w, d).permute(0, 3, 1, 2)
        z_q = z_e + (e - z_e).detach()
        recon = dec(z_q)
        loss = F.mse_loss(recon, x) + beta * F.mse_loss(z_e, e.detach())
        return loss, flat.detach(), idx

    fwd_fn = compiled(fwd) if fast else fwd

    def step():
        nonlocal embed, cluster, embed_avg
        loss, flat, idx = fwd_fn(x, embed)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            onehot = F.one_hot(idx, codes).float()
            cluster = cluster * decay + onehot.sum(0) * (1 - decay)
            embed_avg = embed_avg * decay + (onehot.t() @ flat) * (1 - decay)
            total = cluster.sum()
            smoothed = (cluster + 1e-5) / (total + codes * 1e-5) * total
            embed = embed_avg / smoothed.unsqueeze(1)
        return loss.item()
    return step


# --- JEM, the image energy of crates/genmodels-ebm/src/net.rs ---------------------------------
class EnergyNet(nn.Module):
    """`C -> w`, then [3x3, 4x4/2] to 2w and 4w, a last 3x3, the spatial mean, `4w -> heads`;
    LeakyReLU 0.2; PyTorch's default initialisation."""

    def __init__(self, c=1, w=32, heads=10):
        super().__init__()
        plan = [(c, w, 3, 1, 1), (w, w, 3, 1, 1), (w, 2 * w, 4, 2, 1), (2 * w, 2 * w, 3, 1, 1),
                (2 * w, 4 * w, 4, 2, 1), (4 * w, 4 * w, 3, 1, 1)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, s, p) for i, o, k, s, p in plan)
        self.head = nn.Linear(4 * w, heads)

    def forward(self, x):
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return self.head(x.mean((2, 3)))


def jem_step(a, fast=False):
    """One JEM step (Grathwohl et al. 2020, `train_wrn_ebm.py`): 20 SGLD steps (step 1, noise
    0.01) from a 10k replay buffer with 5 % uniform restarts, the chain ends stored back, then
    Adam on CE + E(data + 0.03 noise) - E(samples) (+ the L2 energy penalty of weight `l2`);
    `fast`: the network through torch.compile and Adam(fused=True)."""
    batch, steps, l2 = a.get("batch", 64), a.get("steps", 20), a.get("l2", 0.0)
    net = EnergyNet(w=a.get("width", 32))
    f = compiled(net) if fast else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999), fused=fast or None)
    buffer = torch.rand(10_000, 1, 28, 28) * 2 - 1
    x = torch.rand(batch, 1, 28, 28) * 2 - 1
    y = torch.randint(10, (batch,))

    def step():
        idx = torch.randint(len(buffer), (batch,))
        fresh = (torch.rand(batch) < 0.05).view(-1, 1, 1, 1)
        xk = torch.where(fresh, torch.rand(batch, 1, 28, 28) * 2 - 1, buffer[idx])
        for _ in range(steps):
            xk.requires_grad_(True)
            e = -torch.logsumexp(f(xk), 1).sum()
            g, = torch.autograd.grad(e, xk)
            xk = (xk - g + 0.01 * torch.randn_like(xk)).detach()
        buffer[idx] = xk
        out_pos = f(x + 0.03 * torch.randn_like(x))
        e_pos, e_neg = -torch.logsumexp(out_pos, 1), -torch.logsumexp(f(xk), 1)
        loss = (e_pos.mean() - e_neg.mean() + l2 * (e_pos.square().mean() + e_neg.square().mean())
                + F.cross_entropy(out_pos, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def workloads():
    def unet_params(args):
        return sum(p.numel() for p in diffusers_unet(args).parameters())

    def with_params(w, args):
        w.extra = {"params": unet_params(args)}
        return w

    return {
        "dcgan_step": lambda a: Workload([
            ("pytorch dcgan step", lambda: dcgan(), False),
            ("same, Adam(fused=True) + D frozen in the G step", lambda: dcgan(True), False),
            ("same, fused Adam + D frozen + torch.compile", lambda: dcgan(True, True), True),
        ], flops_of="same, Adam(fused=True) + D frozen in the G step"),
        "stylegan2_step": lambda a: Workload([
            ("pytorch stylegan2 step", lambda: stylegan2(), False),
            ("same, ADA's unfused modulated conv", lambda: stylegan2(fused_modconv=False), False),
            ("same, unfused modconv + Adam(fused=True)",
             lambda: stylegan2(fused_modconv=False, fused_adam=True), False),
            ("same, unfused + fused Adam + torch.compile",
             lambda: stylegan2(fused_modconv=False, fused_adam=True, compile=True), True),
        ], flops_of="same, ADA's unfused modulated conv"),
        "iwae_step": lambda a: Workload([
            ("pytorch iwae step", lambda: iwae_step(), False),
            ("same, Adam(fused=True) + torch.compile", lambda: iwae_step(fast=True), True),
        ], flops_of="pytorch iwae step"),
        "vae_step": lambda a: Workload([
            ("pytorch vae step", lambda: vae_step(a), False),
            ("same, Adam(fused=True) + torch.compile", lambda: vae_step(a, fast=True), True),
        ], flops_of="pytorch vae step"),
        "vae_nll": lambda a: Workload([
            ("pytorch importance sampling, eager", lambda: vae_nll(a), False),
            ("same, each pass through torch.compile", lambda: vae_nll(a, fast=True), True),
        ], flops_of="pytorch importance sampling, eager"),
        "vqvae_step": lambda a: Workload([
            ("pytorch vq-vae step", lambda: vqvae_step(), False),
            ("same, Adam(fused=True) + torch.compile", lambda: vqvae_step(fast=True), True),
        ], flops_of="pytorch vq-vae step"),
        "jem_step": lambda a: Workload([
            ("pytorch jem step", lambda: jem_step(a), False),
            ("same, Adam(fused=True) + torch.compile", lambda: jem_step(a, fast=True), True),
        ], flops_of="pytorch jem step"),
        "gpt_step": lambda a: Workload([
            ("pytorch nanoGPT step", lambda: gpt_step(), False),
            ("same, AdamW(fused=True) + torch.compile", lambda: gpt_step(fast=True), True),
        ], flops_of="pytorch nanoGPT step"),
        "gpt_generate": lambda a: (lambda hf: Workload([
            ("transformers generate", lambda: gpt_generate(hf), False),
            ("plain PyTorch loop with a KV cache", lambda: plain_generate(hf), False),
            ("plain loop, static cache + torch.compile", lambda: plain_generate(hf, True), True),
        ], flops_of="plain PyTorch loop with a KV cache"))(hf_gpt2()),
        "unet_train_step": lambda a: with_params(Workload([
            ("diffusers UNet2DModel step, eager", lambda: unet_train_step(a), False),
            ("same, Adam(fused=True)", lambda: unet_train_step(a, fused_adam=True), False),
            ("same, fused Adam + torch.compile",
             lambda: unet_train_step(a, fused_adam=True, compile=True), True),
        ], flops_of="diffusers UNet2DModel step, eager"), a),
        "ddim_sample": lambda a: with_params(Workload([
            ("diffusers DDIMScheduler loop, eager", lambda: ddim_sample(a), False),
            ("same, UNet through torch.compile", lambda: ddim_sample(a, True), True),
        ], flops_of="diffusers DDIMScheduler loop, eager"), a),
    }


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "--serve":
        raise SystemExit(__doc__)
    serve(workloads())
