//! StyleGAN2 (Karras, Laine, Aittala, Hellsten, Lehtinen & Aila 2020, "Analyzing and Improving
//! the Image Quality of StyleGAN"), at Fashion-MNIST scale.
//!
//! The mechanisms that define it:
//! - a **mapping network** `z -> w` (normalised z, `map_layers` fully connected layers with leaky
//!   ReLU and a 0.01 learning-rate multiplier, Sec. 2 of StyleGAN);
//! - a synthesis network from a learned 4x4 constant whose convolutions are **modulated and
//!   demodulated** (Sec. 2.2, Eq. 1-3): per sample, the weights are scaled by the style
//!   `s = A(w)` (affine, bias initialised to 1) and renormalised per output channel, computed as
//!   one grouped convolution over the batch;
//! - **noise inputs**: per-pixel Gaussian noise after each convolution, with a learned strength;
//! - skip-connection to-RGB outputs summed over resolutions (the "skip" generator, Fig. 7);
//! - a residual discriminator with **minibatch standard deviation**;
//! - the non-saturating logistic loss with **R1** (gamma) applied **lazily** (Sec. 3.1, App. B):
//!   every `r1_every` steps D takes an extra optimiser step on `R1 x r1_every` alone, as the
//!   official code and rosinality's port do, and D's Adam runs with its learning rate and
//!   betas raised to `c = r1_every / (r1_every + 1)` (lr x c, beta ** c);
//! - **style mixing regularisation** (probability `mixing_prob`, a random crossover layer);
//! - **path-length regularisation** (Sec. 3.2; `pl_weight` 2 every 4 generator steps in the
//!   paper), lazily in the same way: an extra G step on `PL x pl_every` alone, on half the
//!   batch with mixed styles (as ADA's loss), and G's Adam rescaled by
//!   `pl_every / (pl_every + 1)` (4/5 in the official configs); **off by default**
//!   (`pl_weight = 0`, and then G's Adam is not rescaled): at 28x28 and a few thousand steps it
//!   costs a second backward pass for no measurable gain;
//! - **truncation in W**: `w_avg` is tracked during training (decay 0.995) and sampling uses
//!   `w_avg + psi (w - w_avg)`.
//!
//! Equalised learning rate throughout (weights N(0, 1) scaled at run time). Up-sampling is
//! bilinear x2 before the modulated 3x3 convolution (StyleGAN2 uses a transposed convolution
//! with a [1, 3, 3, 1] blur; this is the same low-pass idea in one step). Images whose side is
//! not 4 * 2^k are padded with the background value and cropped back, as in `progan`.

use crate::pair::GanPair;
use genmodels_core::data::Batch;
use genmodels_core::losses::{r1_penalty, GanLoss};
use genmodels_core::model::check::{Check, MAX_WIDTH};
use genmodels_core::model::{Capability, DataInfo, Losses, Model, ModelEntry, Output, Samples};
use genmodels_core::optim::{AdamConfig, StepCtx};
use genmodels_core::samplers::truncate_toward;
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StyleGanConfig {
    pub channels: i64,
    /// Side of the data; the networks work at the next 4 * 2^k.
    pub image_size: i64,
    pub z_dim: i64,
    pub w_dim: i64,
    pub map_layers: i64,
    /// Feature maps at 4x4 and 8x8, halved per later doubling down to `fmap_min`.
    pub fmap_max: i64,
    pub fmap_min: i64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// R1 weight gamma and its lazy interval.
    pub r1_gamma: f64,
    pub r1_every: u64,
    pub mixing_prob: f64,
    /// Path-length regularisation weight (0: off) and interval.
    pub pl_weight: f64,
    pub pl_every: u64,
    /// Truncation psi for `sample` (1: none).
    pub truncation_psi: f64,
    /// Modulated convolutions as one grouped convolution with per-sample kernels (the paper's
    /// formulation, StyleGAN2-ADA's inference path) instead of scaling the activations around
    /// one convolution with the shared kernel (ADA's training path). Same function; the
    /// unfused form is faster here (docs/results.md).
    pub fused_modconv: bool,
}

impl Default for StyleGanConfig {
    fn default() -> Self {
        StyleGanConfig {
            channels: 1,
            image_size: 28,
            z_dim: 128,
            w_dim: 128,
            map_layers: 8,
            fmap_max: 128,
            fmap_min: 32,
            lr: 2e-3,
            beta1: 0.0,
            beta2: 0.99,
            r1_gamma: 0.1,
            r1_every: 16,
            mixing_prob: 0.9,
            pl_weight: 0.0,
            pl_every: 4,
            truncation_psi: 1.0,
            fused_modconv: false,
        }
    }
}

impl StyleGanConfig {
    /// Whether step `step` takes D's extra R1 step.
    pub fn r1_lazy_step(&self, step: u64) -> bool {
        self.r1_gamma > 0.0 && step % self.r1_every.max(1) == 0
    }

    /// Whether step `step` takes G's extra path-length step.
    pub fn pl_lazy_step(&self, step: u64) -> bool {
        self.pl_weight > 0.0 && step % self.pl_every.max(1) == 0
    }

    /// Adam for G and D. A lazily regularised network takes one extra step every `k` steps, so
    /// its Adam runs with `lr x c` and `beta ** c`, `c = k / (k + 1)` (App. B; the official
    /// code's `mb_ratio`): D with `k = r1_every` when R1 is on, G with `k = pl_every` when the
    /// path-length penalty is on.
    pub fn adam_configs(&self) -> (AdamConfig, AdamConfig) {
        let scaled = |on: bool, every: u64| {
            let c = if on {
                every as f64 / (every as f64 + 1.0)
            } else {
                1.0
            };
            AdamConfig::new(self.lr * c, self.beta1.powf(c), self.beta2.powf(c))
        };
        (
            scaled(self.pl_weight > 0.0, self.pl_every),
            scaled(self.r1_gamma > 0.0, self.r1_every),
        )
    }

    pub fn net_size(&self) -> Result<(i64, usize)> {
        Check::model("stylegan2").int("image_size", self.image_size, 8, 1024)?;
        let (mut side, mut k) = (4i64, 0usize);
        while side < self.image_size {
            side *= 2;
            k += 1;
        }
        Ok((side, k))
    }

    /// Every field in range, before any network is made.
    pub fn validate(&self) -> Result<()> {
        let c = Check::model("stylegan2");
        c.image(self.channels, self.image_size, 8, 1024)?;
        c.int("z_dim", self.z_dim, 1, MAX_WIDTH)?;
        c.int("w_dim", self.w_dim, 1, MAX_WIDTH)?;
        c.int("map_layers", self.map_layers, 0, 64)?;
        c.ensure(
            self.map_layers > 0 || self.z_dim == self.w_dim,
            "map_layers",
            0,
            format_args!(
                "at least 1 while z_dim ({}) differs from w_dim ({})",
                self.z_dim, self.w_dim
            ),
        )?;
        c.int("fmap_max", self.fmap_max, 1, MAX_WIDTH)?;
        c.int("fmap_min", self.fmap_min, 1, self.fmap_max)?;
        c.adam("lr", self.lr, self.beta1, self.beta2)?;
        c.non_negative("r1_gamma", self.r1_gamma)?;
        c.int("r1_every", self.r1_every, 1, 1_000_000)?;
        c.probability("mixing_prob", self.mixing_prob)?;
        c.non_negative("pl_weight", self.pl_weight)?;
        c.int("pl_every", self.pl_every, 1, 1_000_000)?;
        c.finite("truncation_psi", self.truncation_psi)
    }

    fn fmaps(&self, stage: usize) -> i64 {
        (self.fmap_max >> stage.saturating_sub(1)).max(self.fmap_min)
    }

    /// Style inputs of the synthesis network: two per resolution after the first (which has
    /// one), plus one per to-RGB layer.
    fn num_ws(&self) -> Result<i64> {
        let (_, k) = self.net_size()?;
        Ok(2 * k as i64 + 2)
    }
}

const SQRT2: f64 = std::f64::consts::SQRT_2;

fn lrelu(x: &Tensor) -> Tensor {
    crate::ops::leaky_relu(x, 0.2) * SQRT2
}

/// Equalised fully connected layer with a learning-rate multiplier.
struct EqLinear {
    w: Tensor,
    b: Tensor,
    w_scale: f64,
    lr_mul: f64,
}

impl EqLinear {
    fn new(p: nn::Path, i: i64, o: i64, lr_mul: f64, bias_init: f64) -> Self {
        EqLinear {
            w: p.var(
                "weight",
                &[o, i],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0 / lr_mul,
                },
            ),
            b: p.var("bias", &[o], nn::Init::Const(bias_init / lr_mul)),
            w_scale: lr_mul / (i as f64).sqrt(),
            lr_mul,
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&(&self.w * self.w_scale), Some(&(&self.b * self.lr_mul)))
    }
}

/// Modulated (and optionally demodulated) convolution, one group per sample.
struct ModConv {
    weight: Tensor,
    affine: EqLinear,
    demod: bool,
    k: i64,
    /// One grouped convolution with per-sample kernels instead of scaling the activations
    /// around one convolution with the shared kernel (see [`StyleGanConfig::fused_modconv`]).
    fused: bool,
}

impl ModConv {
    fn new(p: nn::Path, i: i64, o: i64, k: i64, w_dim: i64, demod: bool, fused: bool) -> Self {
        ModConv {
            weight: p.var(
                "weight",
                &[o, i, k, k],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            affine: EqLinear::new(&p / "affine", w_dim, i, 1.0, 1.0),
            demod,
            k,
            fused,
        }
    }

    fn forward(&self, x: &Tensor, w: &Tensor) -> Tensor {
        let (n, i, h, wd) = x.size4().unwrap_or((0, 0, 0, 0));
        let o = self.weight.size()[0];
        let s = self.affine.forward(w); // [N, I]
        let scale = 1.0 / ((i * self.k * self.k) as f64).sqrt();
        let pad = [self.k / 2, self.k / 2];
        if !self.fused {
            // conv(x * s, W) * d = conv(x, W * s) * d: the same modulated convolution as one
            // batched convolution with the shared kernel (StyleGAN2-ADA's training path).
            let y = (x * s.view([n, i, 1, 1])).conv2d(
                &(&self.weight * scale),
                None::<&Tensor>,
                [1, 1],
                pad,
                [1, 1],
                1,
            );
            if !self.demod {
                return y;
            }
            // d[n, o] = 1 / sqrt(sum_{i,kh,kw} (scale * W[o,i,kh,kw] * s[n,i])^2 + 1e-8)
            //         = 1 / sqrt(scale^2 * (s^2 @ sum_{kh,kw} W^2 ^T)[n, o] + 1e-8)   (Eq. 3)
            let w_sq = self
                .weight
                .square()
                .sum_dim_intlist(&[2i64, 3][..], false, Kind::Float); // [O, I]
            let d = (s.square().matmul(&w_sq.tr()) * (scale * scale) + 1e-8).rsqrt();
            return y * d.view([n, o, 1, 1]);
        }
        let mut wt = self.weight.unsqueeze(0) * scale * s.view([n, 1, i, 1, 1]); // [N, O, I, k, k]
        if self.demod {
            let d = (wt
                .square()
                .sum_dim_intlist(&[2i64, 3, 4][..], true, Kind::Float)
                + 1e-8)
                .rsqrt();
            wt = &wt * d;
        }
        let y = x.reshape([1, n * i, h, wd]).conv2d(
            &wt.reshape([n * o, i, self.k, self.k]),
            None::<&Tensor>,
            [1, 1],
            pad,
            [1, 1],
            n,
        );
        y.reshape([n, o, h, wd])
    }
}

/// Modulated 3x3 convolution + noise + bias + leaky ReLU.
struct StyleLayer {
    conv: ModConv,
    noise_strength: Tensor,
    bias: Tensor,
    up: bool,
}

impl StyleLayer {
    fn new(p: nn::Path, i: i64, o: i64, w_dim: i64, up: bool, fused: bool) -> Self {
        StyleLayer {
            conv: ModConv::new(&p / "conv", i, o, 3, w_dim, true, fused),
            noise_strength: p.zeros("noise_strength", &[1]),
            bias: p.zeros("bias", &[o]),
            up,
        }
    }

    fn forward(&self, x: &Tensor, w: &Tensor) -> Tensor {
        let x = if self.up {
            let s = x.size();
            x.upsample_bilinear2d([s[2] * 2, s[3] * 2], false, None, None)
        } else {
            x.shallow_clone()
        };
        let y = self.conv.forward(&x, w);
        let s = y.size();
        let noise = Tensor::randn([s[0], 1, s[2], s[3]], (Kind::Float, y.device()));
        lrelu(&(y + noise * &self.noise_strength + self.bias.view([1, -1, 1, 1])))
    }
}

struct ToRgb {
    conv: ModConv,
    bias: Tensor,
}

impl ToRgb {
    fn new(p: nn::Path, i: i64, c: i64, w_dim: i64, fused: bool) -> Self {
        ToRgb {
            conv: ModConv::new(&p / "conv", i, c, 1, w_dim, false, fused),
            bias: p.zeros("bias", &[c]),
        }
    }
    fn forward(&self, x: &Tensor, w: &Tensor) -> Tensor {
        self.conv.forward(x, w) + self.bias.view([1, -1, 1, 1])
    }
}

pub struct Generator {
    mapping: Vec<EqLinear>,
    constant: Tensor,
    layers: Vec<StyleLayer>,
    to_rgb: Vec<ToRgb>,
    /// Running mean of w (not trained; checkpointed).
    pub w_avg: Tensor,
    num_ws: i64,
}

impl Generator {
    fn new(p: nn::Path, c: &StyleGanConfig) -> Result<Self> {
        let (_, k) = c.net_size()?;
        let mapping = (0..c.map_layers)
            .map(|i| {
                let inp = if i == 0 { c.z_dim } else { c.w_dim };
                EqLinear::new(&p / format!("map{i}"), inp, c.w_dim, 0.01, 0.0)
            })
            .collect();
        let f0 = c.fmaps(0);
        let fu = c.fused_modconv;
        let mut layers = vec![StyleLayer::new(&p / "l0", f0, f0, c.w_dim, false, fu)];
        let mut to_rgb = vec![ToRgb::new(&p / "rgb0", f0, c.channels, c.w_dim, fu)];
        for s in 1..=k {
            let (i, o) = (c.fmaps(s - 1), c.fmaps(s));
            layers.push(StyleLayer::new(
                &p / format!("l{s}a"),
                i,
                o,
                c.w_dim,
                true,
                fu,
            ));
            layers.push(StyleLayer::new(
                &p / format!("l{s}b"),
                o,
                o,
                c.w_dim,
                false,
                fu,
            ));
            to_rgb.push(ToRgb::new(
                &p / format!("rgb{s}"),
                o,
                c.channels,
                c.w_dim,
                fu,
            ));
        }
        Ok(Generator {
            mapping,
            constant: p.var(
                "const",
                &[1, f0, 4, 4],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            layers,
            to_rgb,
            w_avg: p.zeros_no_train("w_avg", &[c.w_dim]),
            num_ws: c.num_ws()?,
        })
    }

    /// `w = mapping(z)` (z normalised to the unit sphere times sqrt(dim), as pixel norm).
    pub fn map(&self, z: &Tensor) -> Tensor {
        let mut x = z * (z.square().mean_dim(1, true, Kind::Float) + 1e-8).rsqrt();
        for l in &self.mapping {
            x = lrelu(&l.forward(&x));
        }
        x
    }

    /// Images from per-layer styles `ws` `[N, num_ws, w_dim]`.
    pub fn synthesis(&self, ws: &Tensor) -> Tensor {
        let n = ws.size()[0];
        let mut x = self.constant.expand([n, -1, -1, -1], false);
        let mut img: Option<Tensor> = None;
        let mut wi = 0i64;
        let mut li = 0usize;
        for (r, rgb) in self.to_rgb.iter().enumerate() {
            let count = if r == 0 { 1 } else { 2 };
            for _ in 0..count {
                x = self.layers[li].forward(&x, &ws.select(1, wi));
                li += 1;
                wi += 1;
            }
            let y = rgb.forward(&x, &ws.select(1, wi));
            img = Some(match img {
                None => y,
                Some(prev) => {
                    let s = prev.size();
                    prev.upsample_bilinear2d([s[2] * 2, s[3] * 2], false, None, None) + y
                }
            });
        }
        img.unwrap_or_default()
    }

    /// Broadcasts one w to every layer.
    pub fn broadcast(&self, w: &Tensor) -> Tensor {
        w.unsqueeze(1).repeat([1, self.num_ws, 1])
    }
}

pub struct Discriminator {
    from_rgb: nn::Conv2D,
    blocks: Vec<(nn::Conv2D, nn::Conv2D, nn::Conv2D)>,
    conv_last: nn::Conv2D,
    fc: nn::Linear,
    out: nn::Linear,
}

/// The discriminator's layers hold N(0, 1) weights; `eq` and `eq_linear` apply He's constant at
/// run time (equalised learning rate), as in the generator.
fn d_conv(p: nn::Path, i: i64, o: i64, k: i64, bias: bool) -> nn::Conv2D {
    nn::conv2d(
        p,
        i,
        o,
        k,
        nn::ConvConfig {
            padding: k / 2,
            bias,
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
            ..Default::default()
        },
    )
}

fn eq(conv: &nn::Conv2D, x: &Tensor) -> Tensor {
    let w = &conv.ws;
    let fan_in: i64 = w.size()[1..].iter().product();
    let pad = w.size()[2] / 2;
    x.conv2d(
        &(w / (fan_in as f64).sqrt()),
        conv.bs.as_ref(),
        [1, 1],
        [pad, pad],
        [1, 1],
        1,
    )
}

fn eq_linear(l: &nn::Linear, x: &Tensor) -> Tensor {
    let fan_in = l.ws.size()[1];
    x.linear(&(&l.ws / (fan_in as f64).sqrt()), l.bs.as_ref())
}

impl Discriminator {
    fn new(p: nn::Path, c: &StyleGanConfig) -> Result<Self> {
        let (_, k) = c.net_size()?;
        let lin = |p: nn::Path, i: i64, o: i64| {
            nn::linear(
                p,
                i,
                o,
                nn::LinearConfig {
                    ws_init: nn::Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                    bs_init: Some(nn::Init::Const(0.0)),
                    bias: true,
                },
            )
        };
        let blocks = (1..=k)
            .rev()
            .map(|s| {
                let (i, o) = (c.fmaps(s), c.fmaps(s - 1));
                (
                    d_conv(&p / format!("b{s}_conv1"), i, i, 3, true),
                    d_conv(&p / format!("b{s}_conv2"), i, o, 3, true),
                    d_conv(&p / format!("b{s}_skip"), i, o, 1, false),
                )
            })
            .collect();
        let f0 = c.fmaps(0);
        Ok(Discriminator {
            from_rgb: d_conv(&p / "from_rgb", c.channels, c.fmaps(k), 1, true),
            blocks,
            conv_last: d_conv(&p / "conv_last", f0 + 1, f0, 3, true),
            fc: lin(&p / "fc", f0 * 16, f0),
            out: lin(&p / "out", f0, 1),
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let down = |t: &Tensor| t.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None);
        let mut h = lrelu(&eq(&self.from_rgb, x));
        for (c1, c2, skip) in &self.blocks {
            let y = down(&lrelu(&eq(c2, &lrelu(&eq(c1, &h)))));
            let s = eq(skip, &down(&h));
            h = (y + s) / SQRT2;
        }
        let h = lrelu(&eq(&self.conv_last, &crate::progan::minibatch_std(&h, 4)));
        let h = lrelu(&eq_linear(&self.fc, &h.flatten(1, -1)));
        eq_linear(&self.out, &h).squeeze_dim(1)
    }
}

pub struct StyleGan {
    pub cfg: StyleGanConfig,
    pub pair: GanPair,
    pub g: Generator,
    pub d: Discriminator,
    pl_mean: Tensor,
    device: Device,
}

impl StyleGan {
    pub fn new(cfg: StyleGanConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let (adam_g, adam_d) = cfg.adam_configs();
        let (pair, (g, d, pl_mean)) = GanPair::new(device, adam_g, adam_d, |g_vs, d_vs| {
            let g = Generator::new(g_vs.root(), &cfg)?;
            let pl = g_vs.root().zeros_no_train("pl_mean", &[]);
            Ok((g, Discriminator::new(d_vs.root(), &cfg)?, pl))
        })?;
        Ok(StyleGan {
            cfg,
            pair,
            g,
            d,
            pl_mean,
            device,
        })
    }

    fn z(&self, n: i64) -> Tensor {
        Tensor::randn([n, self.cfg.z_dim], (Kind::Float, self.device))
    }

    /// Per-layer styles for `n` samples, with style mixing at probability `mixing_prob`.
    fn styles(&self, n: i64, mixing: bool) -> Tensor {
        let ws = self.g.broadcast(&self.g.map(&self.z(n)));
        if mixing && rand_f64() < self.cfg.mixing_prob {
            let num = self.g.num_ws;
            let cut = 1 + (rand_f64() * (num - 1) as f64) as i64;
            let other = self.g.broadcast(&self.g.map(&self.z(n)));
            let layer = Tensor::arange(num, (Kind::Int64, self.device)).view([1, num, 1]);
            ws.where_self(&layer.lt(cut), &other)
        } else {
            ws
        }
    }

    fn pad_reals(&self, x: &Tensor) -> Result<Tensor> {
        let (side, _) = self.cfg.net_size()?;
        Ok(crate::ops::pad_background(x, side))
    }

    fn crop(&self, x: &Tensor) -> Result<Tensor> {
        Ok(crate::ops::crop_center(x, self.cfg.image_size))
    }

    /// Samples with truncation `psi` toward `w_avg` (1: none), cropped to `image_size`.
    pub fn generate_psi(&self, z: &Tensor, psi: f64) -> Result<Tensor> {
        let img = tch::no_grad(|| {
            let w = truncate_toward(&self.g.map(z), &self.g.w_avg, psi);
            self.g.synthesis(&self.g.broadcast(&w))
        });
        Ok(self.crop(&img)?.clamp(-1.0, 1.0))
    }
}

/// Path lengths (Sec. 3.2): `|| J_w^T y ||` per sample, computed as the gradient of
/// `sum(img * y)` with respect to the per-layer styles `ws` `[N, layers, w_dim]`, squared, summed
/// over `w_dim`, averaged over layers, square root (the official code's `pl_lengths`). Keeps
/// the graph so that the penalty can be differentiated.
pub fn path_lengths(img: &Tensor, ws: &Tensor, y: &Tensor) -> Tensor {
    let kind = img.kind();
    let grad = Tensor::run_backward(&[(img * y).sum(kind)], &[ws], true, true).remove(0);
    grad.square()
        .sum_dim_intlist(2, false, kind)
        .mean_dim(1, false, kind)
        .sqrt()
}

fn rand_f64() -> f64 {
    f64::try_from(Tensor::rand([], (Kind::Double, Device::Cpu))).unwrap_or(0.0)
}

impl Model for StyleGan {
    fn name(&self) -> &str {
        "stylegan2"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let c = self.cfg.clone();
        let expect = [c.channels, c.image_size, c.image_size];
        if batch.x.size()[1..] != expect {
            return Err(Error::invalid(format!(
                "StyleGAN configured for images {expect:?}, got a batch of {:?}",
                batch.x.size()
            )));
        }
        let n = batch.x.size()[0];
        if n % 4 != 0 {
            return Err(Error::invalid(format!(
                "the batch size {n} must be a multiple of 4 (minibatch standard deviation groups)"
            )));
        }
        let real = self.pad_reals(&batch.x)?;
        // D: the logistic loss every step ("Dmain").
        let fake = tch::no_grad(|| self.g.synthesis(&self.styles(n, true)));
        let d_adv = GanLoss::NonSaturating.d_loss(&self.d.forward(&real), &self.d.forward(&fake));
        self.pair.opt_d.backward_step(&d_adv, ctx);
        // Every r1_every steps, a separate D step on R1 x r1_every alone ("Dreg").
        let mut r1_v = None;
        if c.r1_lazy_step(ctx.step) {
            let real_in = real.detach().set_requires_grad(true);
            let r1 =
                r1_penalty(&self.d.forward(&real_in), &real_in, c.r1_gamma) * c.r1_every as f64;
            self.pair.opt_d.backward_step(&r1, ctx);
            r1_v = Some(r1.double_value(&[]));
        }
        // G: non-saturating loss with style mixing ("Gmain").
        let frozen = self.pair.freeze_d();
        let ws = self.styles(n, true);
        let g_adv = GanLoss::NonSaturating.g_loss(&self.d.forward(&self.g.synthesis(&ws)));
        self.pair.opt_g.backward_step(&g_adv, ctx);
        drop(frozen);
        // Every pl_every steps, a separate G step on the path-length penalty x pl_every
        // ("Gpl"), on half the batch with mixed styles.
        let mut pl_v = None;
        if c.pl_lazy_step(ctx.step) {
            // Not detached: as in ADA and rosinality's port, the penalty also reaches the
            // mapping network through the styles.
            let ws = self.styles((n / 2).max(1), true);
            let img = self.g.synthesis(&ws);
            let s = img.size();
            let y = Tensor::randn_like(&img) / ((s[2] * s[3]) as f64).sqrt();
            let lengths = path_lengths(&img, &ws, &y);
            let mean = tch::no_grad(|| {
                let m = &self.pl_mean + (lengths.mean(Kind::Float) - &self.pl_mean) * 0.01;
                self.pl_mean.shallow_clone().copy_(&m);
                m
            });
            let pl =
                (lengths - mean).square().mean(Kind::Float) * (c.pl_weight * c.pl_every as f64);
            self.pair.opt_g.backward_step(&pl, ctx);
            pl_v = Some(pl.double_value(&[]));
        }
        // Track the mean w for truncation.
        tch::no_grad(|| {
            let w = self.g.map(&self.z(n)).mean_dim(0, false, Kind::Float);
            let avg = &self.g.w_avg + (w - &self.g.w_avg) * (1.0 - 0.995);
            self.g.w_avg.shallow_clone().copy_(&avg);
        });
        let mut out = vec![
            ("d_loss".into(), d_adv.double_value(&[])),
            ("g_loss".into(), g_adv.double_value(&[])),
        ];
        if let Some(v) = r1_v {
            out.push(("r1".into(), v));
        }
        if let Some(v) = pl_v {
            out.push(("pl".into(), v));
        }
        Ok(out)
    }

    fn sample(&mut self, n: usize) -> Result<Samples> {
        let z = self.z(n as i64);
        Ok(Samples::Images(
            self.generate_psi(&z, self.cfg.truncation_psi)?,
        ))
    }

    /// Rows walk linearly in W between two mapped latents.
    fn interpolate(&mut self, rows: usize, steps: usize) -> Result<Option<Tensor>> {
        let steps = steps.max(2);
        let (wa, wb) = tch::no_grad(|| {
            (
                self.g.map(&self.z(rows as i64)),
                self.g.map(&self.z(rows as i64)),
            )
        });
        let walk: Vec<Tensor> = (0..steps)
            .map(|i| {
                let t = i as f64 / (steps - 1) as f64;
                &wa * (1.0 - t) + &wb * t
            })
            .collect();
        let w = Tensor::stack(&walk, 1).view([(rows * steps) as i64, -1]);
        let img = tch::no_grad(|| self.g.synthesis(&self.g.broadcast(&w)));
        Ok(Some(self.crop(&img)?.clamp(-1.0, 1.0)))
    }

    crate::pair::delegate_to_pair!();
}

pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "stylegan2",
        family: "gan",
        output: Output::Images,
        capabilities: &[Capability::Interpolation],
        interpolation: Some("linearly in W"),
        summary: "StyleGAN2 (Karras et al. 2020): mapping network, modulated/demodulated convs, noise, skip G, residual D, style mixing, lazy R1, path length (off by default), truncation in W",
        default_config: |info: &DataInfo| {
            let (c, h) = crate::pair::square_image("stylegan2", info)?;
            let cfg = StyleGanConfig { channels: c, image_size: h, ..Default::default() };
            cfg.validate()?;
            Ok(serde_json::to_value(cfg)?)
        },
        build: |json, device| {
            let cfg: StyleGanConfig = Check::model("stylegan2").parse(json)?;
            Ok(Box::new(StyleGan::new(cfg, device)?))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    #[test]
    fn bad_config_values_are_one_line_errors_naming_the_key() {
        use serde_json::json;
        let bad = [
            ("channels", json!(100)),
            ("image_size", json!(4)),
            ("z_dim", json!(0)),
            ("w_dim", json!(-1)),
            ("map_layers", json!(-1)),
            ("map_layers", json!(1000)),
            ("fmap_max", json!(0)),
            ("fmap_min", json!(1024)),
            ("lr", json!(-2e-3)),
            ("beta1", json!(1.0)),
            ("beta2", json!(2.0)),
            ("r1_gamma", json!(-0.1)),
            ("r1_every", json!(0)),
            ("mixing_prob", json!(1.5)),
            ("mixing_prob", json!(-0.1)),
            ("pl_weight", json!(-2.0)),
            ("pl_every", json!(0)),
            ("truncation_psi", json!("none")),
            ("fused_modconv", json!(1)),
        ];
        genmodels_core::model::check::assert_rejects(&entry(), &crate::fashion_info(), &bad);
        // No mapping layers is only possible when z and w have one size.
        let c = StyleGanConfig {
            map_layers: 0,
            w_dim: 64,
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`map_layers` = 0"), "{e}");
        let ok = StyleGanConfig {
            map_layers: 0,
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
    }

    fn tiny() -> StyleGanConfig {
        StyleGanConfig {
            z_dim: 8,
            w_dim: 8,
            map_layers: 2,
            fmap_max: 8,
            fmap_min: 4,
            r1_every: 2,
            ..Default::default()
        }
    }

    #[test]
    fn demodulation_removes_the_weight_scale_and_styles_stay_per_sample() {
        let _rng = crate::test_lock();
        for fused in [false, true] {
            modconv_properties(fused);
        }
    }

    /// The grouped (fused) and the activation-scaling (unfused) modulated convolutions are the
    /// same function, with and without demodulation, forward and backward.
    #[test]
    fn fused_and_unfused_modconv_agree() {
        let _rng = crate::test_lock();
        for demod in [true, false] {
            let vs = VarStore::new(Device::Cpu);
            let mut a = ModConv::new(vs.root(), 6, 5, 3, 4, demod, true);
            let x = Tensor::randn([3, 6, 7, 7], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let w = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
            let ya = a.forward(&x, &w);
            let ga = Tensor::run_backward(
                &[ya.square().sum(Kind::Float)],
                &[&x, &a.weight],
                false,
                false,
            );
            a.fused = false;
            let yb = a.forward(&x, &w);
            let gb = Tensor::run_backward(
                &[yb.square().sum(Kind::Float)],
                &[&x, &a.weight],
                false,
                false,
            );
            let close = |p: &Tensor, q: &Tensor| {
                (p - q).abs().max().double_value(&[])
                    <= 1e-4 * (1.0 + q.abs().max().double_value(&[]))
            };
            assert!(close(&ya, &yb), "demod={demod}: outputs differ");
            for (p, q) in ga.iter().zip(&gb) {
                assert!(close(p, q), "demod={demod}: gradients differ");
            }
        }
    }

    fn modconv_properties(fused: bool) {
        let vs = VarStore::new(Device::Cpu);
        let m = ModConv::new(vs.root(), 3, 5, 3, 4, true, fused);
        let x = Tensor::randn([2, 3, 7, 7], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([2, 4], (Kind::Float, Device::Cpu)) * 3.0;
        // Demodulation removes any overall scale of the weights (Eq. 3): the output is unchanged
        // when the kernel is multiplied by 5.
        let before = m.forward(&x, &w);
        tch::no_grad(|| {
            let scaled = &m.weight * 5.0;
            m.weight.shallow_clone().copy_(&scaled);
        });
        let after = m.forward(&x, &w);
        assert!(before.allclose(&after, 1e-4, 1e-4, false));
        // Without demodulation it scales with the kernel.
        let vs2 = VarStore::new(Device::Cpu);
        let plain = ModConv::new(vs2.root(), 3, 5, 3, 4, false, fused);
        let y1 = plain.forward(&x, &w);
        tch::no_grad(|| {
            let scaled = &plain.weight * 5.0;
            plain.weight.shallow_clone().copy_(&scaled);
        });
        assert!(
            (plain.forward(&x, &w) - y1 * 5.0)
                .abs()
                .max()
                .double_value(&[])
                < 1e-3
        );
        // Output of one sample depends only on its own style.
        let y = m.forward(&x, &w);
        let w2 = Tensor::cat(
            &[
                w.get(0).unsqueeze(0),
                Tensor::randn([1, 4], (Kind::Float, Device::Cpu)),
            ],
            0,
        );
        let y2 = m.forward(&x, &w2);
        assert!(y.get(0).allclose(&y2.get(0), 1e-5, 1e-5, false));
        assert!(!y.get(1).allclose(&y2.get(1), 1e-3, 1e-3, false));
    }

    #[test]
    fn trains_with_r1_mixing_and_path_length_and_every_parameter_learns() {
        let _rng = crate::test_lock();
        tch::manual_seed(0);
        let mut m = StyleGan::new(
            StyleGanConfig {
                pl_weight: 2.0,
                pl_every: 1,
                ..tiny()
            },
            Device::Cpu,
        )
        .unwrap();
        let snap = |vs: &VarStore| -> Vec<(String, Tensor)> {
            vs.variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .map(|(k, t)| (k, t.copy()))
                .collect()
        };
        let (g0, d0) = (snap(&m.pair.g_vs), snap(&m.pair.d_vs));
        let x = Tensor::rand([8, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        for step in 0..2 {
            let l = m
                .train_step(
                    &Batch {
                        x: x.shallow_clone(),
                        y: None,
                    },
                    &StepCtx {
                        step,
                        ..Default::default()
                    },
                )
                .unwrap();
            assert!(l.iter().all(|(_, v)| v.is_finite()), "{l:?}");
            if step == 0 {
                assert!(l.iter().any(|(k, _)| k == "r1") && l.iter().any(|(k, _)| k == "pl"));
            }
        }
        for (vs, before) in [(&m.pair.g_vs, g0), (&m.pair.d_vs, d0)] {
            let now = vs.variables();
            for (k, t) in before {
                assert!(
                    (&now[&k] - t).abs().max().double_value(&[]) > 0.0,
                    "{k} did not change"
                );
            }
        }
        assert!(m.g.w_avg.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        let Samples::Images(s) = m.sample(3).unwrap() else {
            panic!()
        };
        assert_eq!(s.size(), [3, 1, 28, 28]);
        let grid = m.interpolate(2, 3).unwrap().unwrap();
        assert_eq!(grid.size(), [6, 1, 28, 28]);
    }

    #[test]
    fn lazy_regularisation_takes_its_own_optimiser_steps_with_rescaled_adam() {
        let _rng = crate::test_lock();
        tch::manual_seed(0);
        let cfg = StyleGanConfig {
            pl_weight: 2.0,
            pl_every: 4,
            r1_every: 2,
            ..tiny()
        };
        // c = k / (k + 1): D 2/3 (R1 every 2), G 4/5 (path length every 4).
        let (g, d) = cfg.adam_configs();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(d.lr, cfg.lr * 2.0 / 3.0) && close(d.beta2, cfg.beta2.powf(2.0 / 3.0)));
        assert!(close(g.lr, cfg.lr * 0.8) && close(g.beta2, cfg.beta2.powf(0.8)));
        assert!(close(d.beta1, cfg.beta1.powf(2.0 / 3.0)));
        // Without the path-length penalty G's Adam is the configured one.
        let (g_off, _) = StyleGanConfig {
            pl_weight: 0.0,
            ..cfg.clone()
        }
        .adam_configs();
        assert!(close(g_off.lr, cfg.lr) && close(g_off.beta2, cfg.beta2));
        let mut m = StyleGan::new(cfg, Device::Cpu).unwrap();
        assert!(close(m.pair.opt_d.cfg.lr, d.lr) && close(m.pair.opt_g.cfg.lr, g.lr));
        let x = Tensor::rand([8, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        // Optimiser steps after each training step: D 1 + (R1 at 0, 2, 4), G 1 + (PL at 0, 4).
        let want = [(2, 2), (3, 3), (5, 4), (6, 5), (8, 7)];
        for (step, (d_steps, g_steps)) in want.into_iter().enumerate() {
            let l = m
                .train_step(
                    &Batch {
                        x: x.shallow_clone(),
                        y: None,
                    },
                    &StepCtx {
                        step: step as u64,
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(
                (m.pair.opt_d.steps(), m.pair.opt_g.steps()),
                (d_steps, g_steps),
                "after step {step}"
            );
            let has = |k: &str| l.iter().any(|(n, _)| n == k);
            assert_eq!(has("r1"), step % 2 == 0, "{l:?}");
            assert_eq!(has("pl"), step % 4 == 0, "{l:?}");
        }
    }

    #[test]
    fn path_lengths_follow_their_formula() {
        // img[n, 0, l, 0] = sum_w ws[n, l, w] a[w]: J^T y = y[n, l] a, so the length is
        // |a| * sqrt(mean_l y[n, l]^2).
        let _rng = crate::test_lock();
        let ws = Tensor::randn([3, 5, 4], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let a = Tensor::from_slice(&[1.0f64, -2.0, 0.5, 3.0]);
        let img = (&ws * &a)
            .sum_dim_intlist(2, false, Kind::Double)
            .view([3, 1, 5, 1]);
        let y = Tensor::randn([3, 1, 5, 1], (Kind::Double, Device::Cpu));
        let got = path_lengths(&img, &ws, &y);
        let norm_a = (1.0f64 + 4.0 + 0.25 + 9.0).sqrt();
        let want = y
            .view([3, 5])
            .square()
            .mean_dim(1, false, Kind::Double)
            .sqrt()
            * norm_a;
        assert!(got.allclose(&want, 1e-9, 1e-12, false), "{got} {want}");
    }

    #[test]
    fn truncation_zero_gives_the_mean_image() {
        let _rng = crate::test_lock();
        tch::manual_seed(1);
        let m = StyleGan::new(tiny(), Device::Cpu).unwrap();
        tch::no_grad(|| {
            m.g.w_avg
                .shallow_clone()
                .copy_(&Tensor::randn([8], (Kind::Float, Device::Cpu)))
        });
        // Noise inputs are random per call: fix the generator's seed for both draws.
        tch::manual_seed(5);
        let a = m.generate_psi(&m.z(2), 0.0).unwrap();
        tch::manual_seed(5);
        let b = m.generate_psi(&(m.z(2) * 3.0), 0.0).unwrap();
        assert!(a.allclose(&b, 1e-5, 1e-5, false), "psi = 0 must ignore z");
    }
}
