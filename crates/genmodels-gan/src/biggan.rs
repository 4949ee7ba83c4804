//! A BigGAN-style class-conditional GAN (Brock, Donahue & Simonyan 2019, "Large Scale GAN
//! Training for High Fidelity Natural Image Synthesis"), at Fashion-MNIST scale.
//!
//! The mechanisms that define it, each here:
//! - class-conditional batch norm in every generator block: the normalised activations are
//!   scaled by `1 + gain(c)` and shifted by `bias(c)`, where `c` is the concatenation of a
//!   **shared class embedding** and this block's chunk of the latent (hierarchical latents,
//!   Sec. 3 / App. B); the first chunk feeds the linear layer that makes the 4x4 (7x7) map;
//! - a **projection discriminator** (Miyato & Koyama 2018): `D(x, y) = psi(phi(x)) +
//!   <embed(y), phi(x)>` on globally sum-pooled ReLU features;
//! - **spectral normalisation** (Miyato et al. 2018) of every weight in both networks, with one
//!   power iteration per training forward; the vector `u` is checkpointed;
//! - a **self-attention** block (Zhang et al. 2019, SAGAN) at `attn_res` in both networks, its
//!   output gated by a learned scalar that starts at 0;
//! - the **hinge loss**;
//! - **orthogonal regularisation** (Eq. 3), in BigGAN-PyTorch's form: the generator's weights
//!   get the gradient `beta * 2 (W W^T * (1 - I)) W` (the penalty `beta/2 ||W W^T * (1-I)||_F^2`);
//! - the **truncation trick** at sampling: latents redrawn until `|z| <= truncation`;
//! - `d_steps` discriminator updates per generator update (BigGAN: 2), each on its own slice of
//!   the trainer's batch, real and fake through D in one concatenated forward as BigGAN does.
//!
//! Residual blocks as in BigGAN's 128x128 architecture (App. B, Table 4): G blocks are
//! `CBN, ReLU, up x2, conv3, CBN, ReLU, conv3` plus an up-sampled 1x1 shortcut, then
//! `BN, ReLU, conv3, tanh`; D blocks are `ReLU, conv3, ReLU, conv3, avg-pool` plus a 1x1 shortcut
//! (the first block without the leading ReLU). Adam with beta1 = 0 and beta2 = 0.999 (BigGAN);
//! learning rates 1e-4 (G) and 4e-4 (D) follow SAGAN's two time-scale rule, which suits small
//! batches better than BigGAN's 5e-5 / 2e-4 at batch 2048. The generator's EMA (BigGAN samples
//! with it) is the trainer's `--ema 0.999`.

use crate::pair::{critic_chunks, GanPair};
use genmodels_core::data::Batch;
use genmodels_core::layers::SpectralNorm;
use genmodels_core::losses::GanLoss;
use genmodels_core::model::check::{Check, MAX_SIDE, MAX_WIDTH};
use genmodels_core::model::{
    Capability, ClassConditional, DataInfo, Losses, Model, ModelEntry, Output, Samples,
};
use genmodels_core::optim::{AdamConfig, StepCtx};
use genmodels_core::samplers::gaussian_latents;
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BigGanConfig {
    pub channels: i64,
    /// Square image side: base * 2^k with base 4..7 (28 -> 7 * 4, 32 -> 4 * 8).
    pub image_size: i64,
    pub num_classes: i64,
    /// Latent size, split into k + 1 equal chunks (hierarchical latents).
    pub z_dim: i64,
    /// Size of the shared class embedding (BigGAN: 128).
    pub shared_dim: i64,
    /// Generator width unit.
    pub g_ch: i64,
    /// Discriminator width unit.
    pub d_ch: i64,
    /// Feature-map side at which both networks attend (0: no attention).
    pub attn_res: i64,
    pub lr_g: f64,
    pub lr_d: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Discriminator updates per generator update.
    pub d_steps: usize,
    /// Orthogonal regularisation strength beta (BigGAN: 1e-4; 0: off).
    pub ortho: f64,
    /// Truncation threshold for `sample` (0: none).
    pub truncation: f64,
}

impl Default for BigGanConfig {
    fn default() -> Self {
        BigGanConfig {
            channels: 1,
            image_size: 28,
            num_classes: 10,
            z_dim: 60,
            shared_dim: 32,
            g_ch: 32,
            d_ch: 32,
            attn_res: 14,
            lr_g: 1e-4,
            lr_d: 4e-4,
            beta1: 0.0,
            beta2: 0.999,
            d_steps: 2,
            ortho: 1e-4,
            truncation: 0.0,
        }
    }
}

impl BigGanConfig {
    /// (base side, number of up-sampling blocks).
    pub fn geometry(&self) -> Result<(i64, usize)> {
        let (mut side, mut k) = (self.image_size, 0usize);
        while side % 2 == 0 && side / 2 >= 4 {
            side /= 2;
            k += 1;
        }
        if k == 0 || !(4..=7).contains(&side) {
            return Err(Check::model("biggan").error(
                "image_size",
                self.image_size,
                "base * 2^k with base 4..7 and k >= 1 (e.g. 28, 32, 64)",
            ));
        }
        Ok((side, k))
    }

    /// Every field in range, before any network is made: (base side, up-sampling blocks).
    pub fn validate(&self) -> Result<(i64, usize)> {
        let c = Check::model("biggan");
        c.image(self.channels, self.image_size, 8, MAX_SIDE)?;
        let (base, k) = self.geometry()?;
        c.int("num_classes", self.num_classes, 1, 65536)?;
        c.int("z_dim", self.z_dim, 1, MAX_WIDTH)?;
        let chunks = k as i64 + 1;
        c.ensure(
            self.z_dim % chunks == 0,
            "z_dim",
            self.z_dim,
            format_args!(
                "a multiple of {chunks} (one equal chunk per generator block plus the input at image_size {})",
                self.image_size
            ),
        )?;
        c.int("shared_dim", self.shared_dim, 1, MAX_WIDTH)?;
        // Both networks are at most 4 width units wide.
        c.int("g_ch", self.g_ch, 1, MAX_WIDTH / 4)?;
        c.int("d_ch", self.d_ch, 1, MAX_WIDTH / 4)?;
        let mut sides: Vec<i64> = (1..=k).map(|i| base << i).collect(); // G's blocks
        sides.extend((1..=k).map(|i| self.image_size >> i)); // D's blocks
        sides.sort_unstable();
        sides.dedup();
        c.ensure(
            self.attn_res == 0 || sides.contains(&self.attn_res),
            "attn_res",
            self.attn_res,
            format_args!("0 (no attention) or a feature-map side of the networks: {sides:?}"),
        )?;
        c.non_negative("lr_g", self.lr_g)?;
        c.adam("lr_d", self.lr_d, self.beta1, self.beta2)?;
        c.int("d_steps", self.d_steps, 1, 100)?;
        c.non_negative("ortho", self.ortho)?;
        c.non_negative("truncation", self.truncation)?;
        Ok((base, k))
    }

    /// Generator widths from the input map to the output: 4ch, then halving down to ch.
    fn g_widths(&self, k: usize) -> Vec<i64> {
        (0..=k)
            .map(|i| self.g_ch * (1i64 << (k - i).min(2)))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Spectral normalisation

/// A spectrally normalised weight (the core's [`SpectralNorm`]), drawn from N(0, 1/fan_in):
/// BigGAN-PyTorch initialises with orthogonal init, which is close for our sizes.
#[derive(Debug)]
struct SnWeight(SpectralNorm);

impl SnWeight {
    fn new(p: &nn::Path, shape: &[i64]) -> Self {
        let fan_in: i64 = shape[1..].iter().product();
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: (1.0 / fan_in as f64).sqrt(),
        };
        SnWeight(SpectralNorm::new(p, shape, init))
    }

    fn get(&self, train: bool) -> Tensor {
        self.0.get(train)
    }
}

#[derive(Debug)]
struct SnConv {
    w: SnWeight,
    b: Option<Tensor>,
    padding: i64,
}

impl SnConv {
    fn new(p: nn::Path, i: i64, o: i64, k: i64) -> Self {
        Self::with_bias(p, i, o, k, true)
    }
    fn with_bias(p: nn::Path, i: i64, o: i64, k: i64, bias: bool) -> Self {
        SnConv {
            w: SnWeight::new(&p, &[o, i, k, k]),
            b: bias.then(|| p.zeros("bias", &[o])),
            padding: k / 2,
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        x.conv2d(
            &self.w.get(train),
            self.b.as_ref(),
            [1, 1],
            [self.padding, self.padding],
            [1, 1],
            1,
        )
    }
}

#[derive(Debug)]
struct SnLinear {
    w: SnWeight,
    b: Option<Tensor>,
}

impl SnLinear {
    fn new(p: nn::Path, i: i64, o: i64, bias: bool) -> Self {
        SnLinear {
            w: SnWeight::new(&p, &[o, i]),
            b: bias.then(|| p.zeros("bias", &[o])),
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        x.linear(&self.w.get(train), self.b.as_ref())
    }
}

// ---------------------------------------------------------------------------------------------
// Building blocks

/// Batch norm without its own affine parameters (running statistics kept and checkpointed).
#[derive(Debug)]
struct PlainBn {
    mean: Tensor,
    var: Tensor,
}

impl PlainBn {
    fn new(p: &nn::Path, c: i64) -> Self {
        PlainBn {
            mean: p.zeros_no_train("running_mean", &[c]),
            var: p.ones_no_train("running_var", &[c]),
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        Tensor::batch_norm(
            x,
            None::<&Tensor>,
            None::<&Tensor>,
            Some(&self.mean),
            Some(&self.var),
            train,
            0.1,
            1e-5,
            false,
        )
    }
}

/// Class-conditional batch norm: `bn(x) * (1 + gain(c)) + bias(c)`.
#[derive(Debug)]
struct Cbn {
    bn: PlainBn,
    gain: SnLinear,
    bias: SnLinear,
}

impl Cbn {
    fn new(p: nn::Path, c: i64, cond: i64) -> Self {
        Cbn {
            bn: PlainBn::new(&p, c),
            gain: SnLinear::new(&p / "gain", cond, c, false),
            bias: SnLinear::new(&p / "bias", cond, c, false),
        }
    }
    fn forward(&self, x: &Tensor, cond: &Tensor, train: bool) -> Tensor {
        let g = (self.gain.forward(cond, train) + 1.0)
            .unsqueeze(-1)
            .unsqueeze(-1);
        let b = self.bias.forward(cond, train).unsqueeze(-1).unsqueeze(-1);
        self.bn.forward(x, train) * g + b
    }
}

/// SAGAN self-attention: theta/phi at C/8, g at C/2, 2x2 max-pooled keys and values.
#[derive(Debug)]
struct SelfAttention {
    theta: SnConv,
    phi: SnConv,
    g: SnConv,
    o: SnConv,
    gamma: Tensor,
}

impl SelfAttention {
    fn new(p: nn::Path, c: i64) -> Self {
        let (c8, c2) = ((c / 8).max(1), (c / 2).max(1));
        SelfAttention {
            // No biases, as in BigGAN-PyTorch (a key bias would not even get a gradient:
            // the softmax over keys is invariant to it).
            theta: SnConv::with_bias(&p / "theta", c, c8, 1, false),
            phi: SnConv::with_bias(&p / "phi", c, c8, 1, false),
            g: SnConv::with_bias(&p / "g", c, c2, 1, false),
            o: SnConv::with_bias(&p / "o", c2, c, 1, false),
            gamma: p.zeros("gamma", &[1]),
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, _, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
        let pooled = |t: Tensor| t.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false);
        let theta = self.theta.forward(x, train).view([b, -1, h * w]);
        let phi = pooled(self.phi.forward(x, train)).view([b, theta.size()[1], -1]);
        let g = pooled(self.g.forward(x, train));
        let c2 = g.size()[1];
        let g = g.view([b, c2, -1]);
        let beta = theta.transpose(1, 2).bmm(&phi).softmax(-1, Kind::Float); // [B, HW, HW/4]
        let o = g.bmm(&beta.transpose(1, 2)).view([b, c2, h, w]);
        x + &self.gamma * self.o.forward(&o, train)
    }
}

#[derive(Debug)]
struct GBlock {
    cbn1: Cbn,
    conv1: SnConv,
    cbn2: Cbn,
    conv2: SnConv,
    sc: SnConv,
}

impl GBlock {
    fn new(p: nn::Path, i: i64, o: i64, cond: i64) -> Self {
        GBlock {
            cbn1: Cbn::new(&p / "cbn1", i, cond),
            conv1: SnConv::new(&p / "conv1", i, o, 3),
            cbn2: Cbn::new(&p / "cbn2", o, cond),
            conv2: SnConv::new(&p / "conv2", o, o, 3),
            sc: SnConv::new(&p / "sc", i, o, 1),
        }
    }
    fn forward(&self, x: &Tensor, cond: &Tensor, train: bool) -> Tensor {
        let up = |t: &Tensor| t.upsample_nearest2d([t.size()[2] * 2, t.size()[3] * 2], None, None);
        let h = self.cbn1.forward(x, cond, train).relu();
        let h = self.conv1.forward(&up(&h), train);
        let h = self
            .conv2
            .forward(&self.cbn2.forward(&h, cond, train).relu(), train);
        h + self.sc.forward(&up(x), train)
    }
}

#[derive(Debug)]
struct DBlock {
    conv1: SnConv,
    conv2: SnConv,
    sc: Option<SnConv>,
    preact: bool,
    down: bool,
}

impl DBlock {
    fn new(p: nn::Path, i: i64, o: i64, preact: bool, down: bool) -> Self {
        DBlock {
            conv1: SnConv::new(&p / "conv1", i, o, 3),
            conv2: SnConv::new(&p / "conv2", o, o, 3),
            sc: (i != o || down).then(|| SnConv::new(&p / "sc", i, o, 1)),
            preact,
            down,
        }
    }
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let pool = |t: Tensor| t.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
        let h = if self.preact {
            x.relu()
        } else {
            x.shallow_clone()
        };
        let h = self
            .conv2
            .forward(&self.conv1.forward(&h, train).relu(), train);
        let h = if self.down { pool(h) } else { h };
        let s = match &self.sc {
            None => x.shallow_clone(),
            // BigGAN: pre-activated blocks convolve then pool; the first block pools first.
            Some(sc) if self.preact => {
                let s = sc.forward(x, train);
                if self.down {
                    pool(s)
                } else {
                    s
                }
            }
            Some(sc) => sc.forward(
                &if self.down {
                    pool(x.shallow_clone())
                } else {
                    x.shallow_clone()
                },
                train,
            ),
        };
        h + s
    }
}

// ---------------------------------------------------------------------------------------------
// Networks

pub struct Generator {
    shared: Tensor,
    linear: SnLinear,
    blocks: Vec<GBlock>,
    attn: Option<(usize, SelfAttention)>,
    out_bn: nn::BatchNorm,
    out_conv: SnConv,
    base: i64,
    first_ch: i64,
    chunk: i64,
}

impl Generator {
    fn new(p: nn::Path, c: &BigGanConfig) -> Result<Self> {
        let (base, k) = c.validate()?;
        let widths = c.g_widths(k);
        let chunk = c.z_dim / (k as i64 + 1);
        let cond = chunk + c.shared_dim;
        let mut side = base;
        let mut attn = None;
        let mut blocks = Vec::new();
        for i in 0..k {
            blocks.push(GBlock::new(
                &p / format!("block{i}"),
                widths[i],
                widths[i + 1],
                cond,
            ));
            side *= 2;
            if side == c.attn_res && attn.is_none() {
                attn = Some((i, SelfAttention::new(&p / "attn", widths[i + 1])));
            }
        }
        Ok(Generator {
            shared: p.var(
                "shared",
                &[c.num_classes, c.shared_dim],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            linear: SnLinear::new(&p / "linear", chunk, widths[0] * base * base, true),
            blocks,
            attn,
            out_bn: nn::batch_norm2d(&p / "out_bn", widths[k], Default::default()),
            out_conv: SnConv::new(&p / "out_conv", widths[k], c.channels, 3),
            base,
            first_ch: widths[0],
            chunk,
        })
    }

    /// Images in [-1, 1] for latents `[N, z_dim]` and labels `[N]`.
    pub fn forward(&self, z: &Tensor, y: &Tensor, train: bool) -> Tensor {
        use tch::nn::ModuleT;
        let zs = z.split(self.chunk, 1);
        let shared = Tensor::embedding(&self.shared, y, -1, false, false);
        let n = z.size()[0];
        let mut h =
            self.linear
                .forward(&zs[0], train)
                .view([n, self.first_ch, self.base, self.base]);
        for (i, blk) in self.blocks.iter().enumerate() {
            let cond = Tensor::cat(&[&zs[i + 1], &shared], 1);
            h = blk.forward(&h, &cond, train);
            if let Some((at, a)) = &self.attn {
                if *at == i {
                    h = a.forward(&h, train);
                }
            }
        }
        let h = self.out_bn.forward_t(&h, train).relu();
        self.out_conv.forward(&h, train).tanh()
    }
}

pub struct Discriminator {
    blocks: Vec<DBlock>,
    attn: Option<(usize, SelfAttention)>,
    linear: SnLinear,
    embed: SnWeight,
}

impl Discriminator {
    fn new(p: nn::Path, c: &BigGanConfig) -> Result<Self> {
        let (_, k) = c.validate()?;
        let mut blocks = Vec::new();
        let mut attn = None;
        let mut ch = c.channels;
        let mut side = c.image_size;
        for i in 0..k + 1 {
            let out = c.d_ch * (1i64 << i.min(2));
            let down = i < k;
            blocks.push(DBlock::new(&p / format!("block{i}"), ch, out, i > 0, down));
            ch = out;
            if down {
                side /= 2;
            }
            if side == c.attn_res && attn.is_none() {
                attn = Some((i, SelfAttention::new(&p / "attn", ch)));
            }
        }
        Ok(Discriminator {
            blocks,
            attn,
            linear: SnLinear::new(&p / "linear", ch, 1, true),
            embed: SnWeight::new(&(&p / "embed"), &[c.num_classes, ch]),
        })
    }

    /// `psi(phi(x)) + <embed(y), phi(x)>`, shape `[N]`.
    pub fn forward(&self, x: &Tensor, y: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, blk) in self.blocks.iter().enumerate() {
            h = blk.forward(&h, train);
            if let Some((at, a)) = &self.attn {
                if *at == i {
                    h = a.forward(&h, train);
                }
            }
        }
        let phi = h.relu().sum_dim_intlist(&[2i64, 3][..], false, Kind::Float);
        let out = self.linear.forward(&phi, train).squeeze_dim(1);
        let e = Tensor::embedding(&self.embed.get(train), y, -1, false, false);
        out + (e * &phi).sum_dim_intlist(1, false, Kind::Float)
    }
}

/// BigGAN's orthogonal regularisation as a loss whose gradient is BigGAN-PyTorch's:
/// `beta/2 * sum_W ||W W^T * (1 - I)||_F^2` over the generator's weight matrices (the shared
/// embedding excluded), each reshaped to `[out, -1]`.
pub fn ortho_penalty(vs: &VarStore, beta: f64) -> Tensor {
    let mut total = Tensor::zeros([], (Kind::Float, vs.device()));
    for (name, w) in vs.variables() {
        if w.dim() < 2 || !w.requires_grad() || name == "shared" {
            continue;
        }
        let m = w.view([w.size()[0], -1]);
        // ||W W^T * (1 - I)||_F^2 = ||W^T W||_F^2 - sum_i ||w_i||^4: the small Gram matrix
        // (in x in) instead of the large one (out x out, 6272^2 for the first linear layer).
        let small = m.tr().mm(&m).square().sum(Kind::Float);
        let rows = m
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
            .square()
            .sum(Kind::Float);
        total += small - rows;
    }
    total * (beta / 2.0)
}

// ---------------------------------------------------------------------------------------------
// Model

pub struct BigGan {
    pub cfg: BigGanConfig,
    pub pair: GanPair,
    pub g: Generator,
    pub d: Discriminator,
    device: Device,
}

impl BigGan {
    pub fn new(cfg: BigGanConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let adam_g = AdamConfig::new(cfg.lr_g, cfg.beta1, cfg.beta2);
        let adam_d = AdamConfig::new(cfg.lr_d, cfg.beta1, cfg.beta2);
        let (pair, (g, d)) = GanPair::new(device, adam_g, adam_d, |g_vs, d_vs| {
            Ok((
                Generator::new(g_vs.root(), &cfg)?,
                Discriminator::new(d_vs.root(), &cfg)?,
            ))
        })?;
        Ok(BigGan {
            cfg,
            pair,
            g,
            d,
            device,
        })
    }

    /// Latents (truncated when `truncation > 0`) and uniformly drawn labels.
    pub fn latents(&self, n: i64, truncation: f64) -> Result<(Tensor, Tensor)> {
        let z = gaussian_latents(
            n,
            self.cfg.z_dim,
            (truncation > 0.0).then_some(truncation),
            self.device,
        )?;
        let y = Tensor::randint(self.cfg.num_classes, [n], (Kind::Int64, self.device));
        Ok((z, y))
    }

    /// `n` samples of each given class (evaluation mode), e.g. for class-conditional metrics.
    pub fn generate(&self, labels: &Tensor, truncation: f64) -> Result<Tensor> {
        let n = labels.size()[0];
        let (z, _) = self.latents(n, truncation)?;
        Ok(tch::no_grad(|| {
            self.g.forward(&z, &labels.to_device(self.device), false)
        }))
    }

    fn labels_of(&self, batch: &Batch) -> Result<Tensor> {
        let y = batch.y.as_ref().ok_or_else(|| {
            Error::invalid(
                "BigGAN is class-conditional: the data must have labels (e.g. fashion-mnist)",
            )
        })?;
        let max = y.max().int64_value(&[]);
        if max >= self.cfg.num_classes || y.min().int64_value(&[]) < 0 {
            return Err(Error::invalid(format!(
                "label {max} is outside the {} classes this BigGAN was built for",
                self.cfg.num_classes
            )));
        }
        Ok(y.shallow_clone())
    }
}

impl Model for BigGan {
    fn as_class_conditional(&mut self) -> Option<&mut dyn ClassConditional> {
        Some(self)
    }

    fn name(&self) -> &str {
        "biggan"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let c = &self.cfg;
        let expect = [c.channels, c.image_size, c.image_size];
        if batch.x.size()[1..] != expect {
            return Err(Error::invalid(format!(
                "BigGAN configured for images {expect:?}, got a batch of {:?}",
                batch.x.size()
            )));
        }
        let y_all = self.labels_of(batch)?;
        let xs = critic_chunks(&batch.x, c.d_steps)?;
        let ys = critic_chunks(&y_all, c.d_steps)?;
        let n = xs[0].size()[0];
        let (mut d_loss_v, mut real_v, mut fake_v) = (0.0, 0.0, 0.0);
        for (x, y) in xs.iter().zip(&ys) {
            let (z, yf) = self.latents(n, 0.0)?;
            let fake = tch::no_grad(|| self.g.forward(&z, &yf, true));
            // Real and fake through D together, as BigGAN-PyTorch does.
            let out = self.d.forward(
                &Tensor::cat(&[x, &fake], 0),
                &Tensor::cat(&[y, &yf], 0),
                true,
            );
            let (d_real, d_fake) = (out.narrow(0, 0, n), out.narrow(0, n, n));
            let d_loss = GanLoss::Hinge.d_loss(&d_real, &d_fake);
            self.pair.opt_d.backward_step(&d_loss, ctx);
            d_loss_v = d_loss.double_value(&[]);
            real_v = d_real.mean(Kind::Float).double_value(&[]);
            fake_v = d_fake.mean(Kind::Float).double_value(&[]);
        }
        let (z, yf) = self.latents(n, 0.0)?;
        let frozen = self.pair.freeze_d();
        let fake = self.g.forward(&z, &yf, true);
        let g_adv = GanLoss::Hinge.g_loss(&self.d.forward(&fake, &yf, true));
        let ortho = if c.ortho > 0.0 {
            ortho_penalty(&self.pair.g_vs, c.ortho)
        } else {
            Tensor::zeros([], (Kind::Float, self.device))
        };
        let g_loss = &g_adv + &ortho;
        self.pair.opt_g.backward_step(&g_loss, ctx);
        drop(frozen);
        Ok(vec![
            ("d_loss".into(), d_loss_v),
            ("g_loss".into(), g_adv.double_value(&[])),
            ("ortho".into(), ortho.double_value(&[])),
            ("d_real".into(), real_v),
            ("d_fake".into(), fake_v),
        ])
    }

    /// Sample `i` has class `i mod num_classes`, so every draw is balanced over the classes,
    /// however a caller splits it into batches (the metrics sample in batches of 50), and a
    /// grid `num_classes` wide (`n = num_classes^2`) shows class c in column c.
    fn sample(&mut self, n: usize) -> Result<Samples> {
        let labels = sample_labels(n, self.cfg.num_classes);
        let y = Tensor::from_slice(&labels).to_device(self.device);
        Ok(Samples::Images(self.generate(&y, self.cfg.truncation)?))
    }

    /// Row r walks between two latents of class r mod num_classes.
    fn interpolate(&mut self, rows: usize, steps: usize) -> Result<Option<Tensor>> {
        let t = self.cfg.truncation;
        let (a, _) = self.latents(rows as i64, t)?;
        let (b, _) = self.latents(rows as i64, t)?;
        let z = genmodels_core::samplers::slerp_grid(&a, &b, steps);
        let steps = z.size()[0] / rows as i64;
        let y: Vec<i64> = (0..z.size()[0])
            .map(|i| (i / steps) % self.cfg.num_classes)
            .collect();
        let y = Tensor::from_slice(&y).to_device(self.device);
        Ok(Some(tch::no_grad(|| self.g.forward(&z, &y, false))))
    }

    crate::pair::delegate_to_pair!();
}

impl ClassConditional for BigGan {
    fn num_classes(&self) -> i64 {
        self.cfg.num_classes
    }

    fn sample_classes(&mut self, labels: &Tensor, truncation: f64) -> Result<Tensor> {
        self.generate(labels, truncation)
    }
}

pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "biggan",
        family: "gan",
        output: Output::Images,
        capabilities: &[Capability::ClassConditional, Capability::Interpolation],
        interpolation: Some("slerp in z, one class per row"),
        summary: "BigGAN-style conditional GAN (Brock et al. 2019): shared-embedding CBN, projection D, spectral norm, self-attention, hinge, orthogonal reg., truncation; batch = d_steps x slice",
        default_config: |info: &DataInfo| {
            let (c, h) = crate::pair::square_image("biggan", info)?;
            let k = info.num_classes.ok_or_else(|| Error::invalid("BigGAN is class-conditional: the data must have labels (e.g. fashion-mnist)"))?;
            let cfg = BigGanConfig { channels: c, image_size: h, num_classes: k as i64, attn_res: h / 2, ..Default::default() };
            cfg.validate()?;
            Ok(serde_json::to_value(cfg)?)
        },
        build: |json, device| {
            let cfg: BigGanConfig = Check::model("biggan").parse(json)?;
            Ok(Box::new(BigGan::new(cfg, device)?))
        },
    }
}

/// Class of each of `n` samples: `i mod num_classes`.
fn sample_labels(n: usize, num_classes: i64) -> Vec<i64> {
    (0..n as i64).map(|i| i % num_classes.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use genmodels_core::checkpoint::Checkpoint;

    #[test]
    fn samples_are_balanced_over_classes_in_any_batch() {
        // A batch of 50 (the metrics' batch) holds every class 5 times; a 100-sample grid ten
        // wide has class c in column c.
        let l = sample_labels(50, 10);
        for c in 0..10 {
            assert_eq!(l.iter().filter(|&&x| x == c).count(), 5, "class {c}");
        }
        let g = sample_labels(100, 10);
        assert!(g
            .chunks(10)
            .all(|row| row == (0..10).collect::<Vec<i64>>().as_slice()));
    }

    #[test]
    fn bad_config_values_are_one_line_errors_naming_the_key() {
        use serde_json::json;
        let bad = [
            ("channels", json!(0)),
            ("image_size", json!(36)), // 9 * 4: base over 7
            ("image_size", json!(-28)),
            ("num_classes", json!(0)),
            ("z_dim", json!(0)),
            ("z_dim", json!(61)), // three chunks at 28x28
            ("shared_dim", json!(-4)),
            ("g_ch", json!(0)),
            ("d_ch", json!(4096)),
            ("attn_res", json!(9)),
            ("attn_res", json!(-1)),
            ("lr_g", json!(-1e-4)),
            ("lr_d", json!(-1.0)),
            ("beta1", json!(1.5)),
            ("beta2", json!(1.0)),
            ("d_steps", json!(0)),
            ("d_steps", json!(-2)),
            ("ortho", json!(-1e-4)),
            ("truncation", json!(-0.5)),
        ];
        genmodels_core::model::check::assert_rejects(&entry(), &crate::fashion_info(), &bad);
    }

    fn tiny() -> BigGanConfig {
        BigGanConfig {
            z_dim: 12,
            shared_dim: 4,
            g_ch: 8,
            d_ch: 8,
            ..Default::default()
        }
    }

    fn batch(n: i64) -> Batch {
        Batch {
            x: Tensor::rand([n, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
            y: Some(Tensor::randint(10, [n], (Kind::Int64, Device::Cpu))),
        }
    }

    #[test]
    fn shapes_and_every_parameter_learns() {
        let _rng = crate::test_lock();
        tch::manual_seed(0);
        for size in [28, 32] {
            let cfg = BigGanConfig {
                image_size: size,
                attn_res: size / 2,
                ..tiny()
            };
            let mut m = BigGan::new(cfg, Device::Cpu).unwrap();
            assert!(m.g.attn.is_some() && m.d.attn.is_some());
            let y = Tensor::from_slice(&[0i64, 3, 9]);
            let x = m.generate(&y, 0.0).unwrap();
            assert_eq!(x.size(), [3, 1, size, size]);
            let snap = |vs: &VarStore| -> Vec<(String, Tensor)> {
                vs.variables()
                    .into_iter()
                    .filter(|(_, t)| t.requires_grad())
                    .map(|(k, t)| (k, t.copy()))
                    .collect()
            };
            let (g0, d0) = (snap(&m.pair.g_vs), snap(&m.pair.d_vs));
            let b = Batch {
                x: Tensor::rand([8, 1, size, size], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
                y: Some(Tensor::randint(10, [8], (Kind::Int64, Device::Cpu))),
            };
            let l = m.train_step(&b, &StepCtx::default()).unwrap();
            assert!(l.iter().all(|(_, v)| v.is_finite()), "{l:?}");
            assert_eq!(m.pair.opt_d.steps(), 2);
            for (net, vs, before) in [("G", &m.pair.g_vs, g0), ("D", &m.pair.d_vs, d0)] {
                let now = vs.variables();
                for (k, t) in before {
                    // D's output bias has an exactly zero hinge gradient while every output
                    // is inside the margin (-1 + 1 per pair), as at initialisation.
                    if net == "D" && k == "linear.bias" {
                        continue;
                    }
                    let moved = (&now[&k] - t).abs().max().double_value(&[]);
                    assert!(moved > 0.0, "{net} {k} did not change");
                }
            }
        }
    }

    #[test]
    fn ortho_gradient_is_biggan_pytorchs() {
        let _rng = crate::test_lock();
        tch::manual_seed(2);
        let vs = VarStore::new(Device::Cpu);
        let _w = vs.root().var(
            "m_weight",
            &[3, 4],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        let w = vs.variables().into_values().next().unwrap();
        let beta = 0.5;
        let p = ortho_penalty(&vs, beta);
        p.backward();
        // BigGAN-PyTorch's gradient: beta * 2 (W W^T * (1 - I)) W.
        let gram = w.mm(&w.tr());
        let mask = -Tensor::eye(3, (Kind::Float, Device::Cpu)) + 1.0;
        let want = (gram * mask).mm(&w) * (2.0 * beta);
        let d = (w.grad() - want).abs().max().double_value(&[]);
        assert!(d < 1e-5, "ortho gradient off by {d}");
        // An orthonormal-rows matrix has no penalty.
        let q = Tensor::eye(4, (Kind::Float, Device::Cpu)).narrow(0, 0, 3);
        let vs2 = VarStore::new(Device::Cpu);
        let w2 = vs2.root().var("q", &[3, 4], nn::Init::Const(0.0));
        tch::no_grad(|| w2.shallow_clone().copy_(&q));
        assert_eq!(ortho_penalty(&vs2, 1.0).double_value(&[]), 0.0);
    }

    #[test]
    fn truncation_near_zero_gives_one_image_per_class() {
        let _rng = crate::test_lock();
        tch::manual_seed(3);
        let m = BigGan::new(tiny(), Device::Cpu).unwrap();
        let y = Tensor::from_slice(&[4i64, 4, 7]);
        let x = m.generate(&y, 1e-6).unwrap();
        let same = (x.get(0) - x.get(1)).abs().max().double_value(&[]);
        let other = (x.get(0) - x.get(2)).abs().max().double_value(&[]);
        assert!(same < 1e-4, "same class, truncated latents: {same}");
        assert!(other > 1e-4, "classes must differ: {other}");
    }

    #[test]
    fn unlabelled_data_and_bad_labels_are_refused() {
        let _rng = crate::test_lock();
        let mut m = BigGan::new(tiny(), Device::Cpu).unwrap();
        let mut b = batch(4);
        b.y = None;
        let e = m
            .train_step(&b, &StepCtx::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels"), "{e}");
        let mut b = batch(4);
        b.y = Some(Tensor::from_slice(&[0i64, 1, 2, 12]));
        let e = m
            .train_step(&b, &StepCtx::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 12"), "{e}");
        assert!(BigGan::new(
            BigGanConfig {
                z_dim: 10,
                ..tiny()
            },
            Device::Cpu
        )
        .is_err());
    }

    #[test]
    fn checkpoint_round_trip_reproduces_samples() {
        let _rng = crate::test_lock();
        use genmodels_core::checkpoint::TrainState;
        use genmodels_core::model::load_model_state;
        let mut m = BigGan::new(tiny(), Device::Cpu).unwrap();
        m.train_step(&batch(4), &StepCtx::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut ck = Checkpoint::new("biggan", m.config_json(), TrainState::default());
        for (name, vs) in m.var_stores() {
            ck.add_var_store(&format!("model/{name}"), vs);
        }
        m.save_optimizers(&mut ck);
        ck.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        let mut m2 = (entry().build)(&back.meta.config, Device::Cpu).unwrap();
        load_model_state(m2.as_mut(), &back, &p, true).unwrap();
        tch::manual_seed(9);
        let Samples::Images(a) = m.sample(9).unwrap() else {
            panic!()
        };
        tch::manual_seed(9);
        let Samples::Images(b) = m2.sample(9).unwrap() else {
            panic!()
        };
        assert!(a.equal(&b));
    }
}
