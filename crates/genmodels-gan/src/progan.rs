//! Progressive GAN (Karras, Aila, Laine & Lehtinen 2018, "Progressive Growing of GANs for
//! Improved Quality, Stability, and Variation").
//!
//! The mechanisms that define it:
//! - **progressive growing** from 4x4 to the full side: each new resolution first **fades in**
//!   (the new block's output is blended with the up-sampled output of the previous resolution,
//!   `alpha` going linearly from 0 to 1) and then trains **stable**; real images are shown at the
//!   current resolution, blended the same way during the fade (Sec. 2, App. A);
//! - **equalised learning rate** (Sec. 4.1): weights drawn from N(0, 1) and scaled at run time by
//!   He's constant `sqrt(2 / fan_in)` (gain 1 for the to-RGB layers);
//! - **pixel-wise feature normalisation** in the generator after every convolution (Sec. 4.2);
//! - **minibatch standard deviation** (Sec. 3) as one extra feature map before the critic's last
//!   block, computed over groups of 4;
//! - the WGAN-GP loss (lambda 10) with the small drift term `0.001 * E[D(x)^2]` (App. A.1),
//!   Adam(1e-3, beta1 0, beta2 0.99), leaky ReLU 0.2, nearest up-sampling, average pooling.
//!
//! Images of a side that is not 4 * 2^k (Fashion-MNIST's 28) are padded with the background
//! value (-1) to the next such side (32) for training and cropped back when sampling. The
//! training step counter is a (non-trained) variable, so a checkpoint knows its stage.

use crate::pair::GanPair;
use genmodels_core::data::Batch;
use genmodels_core::losses::{gradient_penalty, GanLoss};
use genmodels_core::model::check::{Check, MAX_WIDTH};
use genmodels_core::model::{Capability, DataInfo, Losses, Model, ModelEntry, Output, Samples};
use genmodels_core::optim::{AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProGanConfig {
    pub channels: i64,
    /// Side of the data (28 for Fashion-MNIST); the networks work at the next 4 * 2^k.
    pub image_size: i64,
    pub z_dim: i64,
    /// Feature maps at 4x4 and 8x8; halved at each later doubling, never below `fmap_min`.
    pub fmap_max: i64,
    pub fmap_min: i64,
    /// Steps of each fade-in and each stable phase (the 4x4 stage has only a stable phase).
    pub phase_steps: u64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub gp_lambda: f64,
    pub drift: f64,
    /// Group size of the minibatch standard deviation (the batch must be divisible by it).
    pub mbstd_group: i64,
}

impl Default for ProGanConfig {
    fn default() -> Self {
        ProGanConfig {
            channels: 1,
            image_size: 28,
            z_dim: 128,
            fmap_max: 128,
            fmap_min: 32,
            phase_steps: 500,
            lr: 1e-3,
            beta1: 0.0,
            beta2: 0.99,
            gp_lambda: 10.0,
            drift: 0.001,
            mbstd_group: 4,
        }
    }
}

impl ProGanConfig {
    /// The networks' side (4 * 2^k >= image_size) and the number of doublings k.
    pub fn net_size(&self) -> Result<(i64, usize)> {
        Check::model("progan").int("image_size", self.image_size, 4, 1024)?;
        let (mut side, mut k) = (4i64, 0usize);
        while side < self.image_size {
            side *= 2;
            k += 1;
        }
        Ok((side, k))
    }

    /// Every field in range, before any network is made.
    pub fn validate(&self) -> Result<()> {
        let c = Check::model("progan");
        c.image(self.channels, self.image_size, 4, 1024)?;
        c.int("z_dim", self.z_dim, 1, MAX_WIDTH)?;
        c.int("fmap_max", self.fmap_max, 1, MAX_WIDTH)?;
        c.int("fmap_min", self.fmap_min, 1, self.fmap_max)?;
        c.int("phase_steps", self.phase_steps, 1, 1_000_000_000)?;
        c.adam("lr", self.lr, self.beta1, self.beta2)?;
        c.non_negative("gp_lambda", self.gp_lambda)?;
        c.non_negative("drift", self.drift)?;
        c.int("mbstd_group", self.mbstd_group, 1, 1024)
    }

    fn fmaps(&self, stage: usize) -> i64 {
        let f = self.fmap_max >> stage.saturating_sub(1);
        f.max(self.fmap_min)
    }

    /// Total steps of the full schedule: one stable phase at 4x4, then a fade and a stable
    /// phase per doubling.
    pub fn schedule_steps(&self) -> Result<u64> {
        let (_, k) = self.net_size()?;
        Ok(self.phase_steps * (1 + 2 * k as u64))
    }

    /// (stage, alpha) at `step`: stage 0 is 4x4; alpha < 1 while stage `s` fades in.
    pub fn stage_at(&self, step: u64) -> Result<(usize, f64)> {
        let (_, k) = self.net_size()?;
        let p = self.phase_steps.max(1);
        if step < p {
            return Ok((0, 1.0));
        }
        let after = step - p;
        let s = (after / (2 * p)) as usize + 1;
        if s > k {
            return Ok((k, 1.0));
        }
        let within = after % (2 * p);
        let alpha = if within < p {
            (within as f64 + 1.0) / p as f64
        } else {
            1.0
        };
        Ok((s, alpha))
    }
}

/// A weight used with He's constant at run time (equalised learning rate).
#[derive(Debug)]
struct EqConv {
    w: Tensor,
    b: Tensor,
    scale: f64,
    pad: i64,
}

impl EqConv {
    fn new(p: nn::Path, i: i64, o: i64, k: i64, gain: f64) -> Self {
        let std = nn::Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        EqConv {
            w: p.var("weight", &[o, i, k, k], std),
            b: p.zeros("bias", &[o]),
            scale: gain / ((i * k * k) as f64).sqrt(),
            pad: (k - 1) / 2,
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.conv2d(
            &(&self.w * self.scale),
            Some(&self.b),
            [1, 1],
            [self.pad, self.pad],
            [1, 1],
            1,
        )
    }
}

#[derive(Debug)]
struct EqLinear {
    w: Tensor,
    b: Tensor,
    scale: f64,
}

impl EqLinear {
    fn new(p: nn::Path, i: i64, o: i64, gain: f64) -> Self {
        EqLinear {
            w: p.var(
                "weight",
                &[o, i],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            b: p.zeros("bias", &[o]),
            scale: gain / (i as f64).sqrt(),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&(&self.w * self.scale), Some(&self.b))
    }
}

const SQRT2: f64 = std::f64::consts::SQRT_2;

fn lrelu(x: &Tensor) -> Tensor {
    crate::ops::leaky_relu(x, 0.2)
}

/// Pixel-wise feature normalisation: `x / sqrt(mean_c x^2 + 1e-8)`.
pub fn pixel_norm(x: &Tensor) -> Tensor {
    x * (x.square().mean_dim(1, true, Kind::Float) + 1e-8).rsqrt()
}

/// Appends the minibatch standard deviation (over groups of `group`, averaged over features and
/// pixels) as one feature map (ProGAN's `minibatch_stddev_layer`).
pub fn minibatch_std(x: &Tensor, group: i64) -> Tensor {
    let (n, c, h, w) = x.size4().unwrap_or((0, 0, 0, 0));
    let g = group.min(n).max(1);
    let y = x.view([g, -1, c, h, w]);
    let y = (&y - y.mean_dim(0, true, Kind::Float))
        .square()
        .mean_dim(0, false, Kind::Float);
    let y = (y + 1e-8)
        .sqrt()
        .mean_dim(&[1i64, 2, 3][..], true, Kind::Float); // [n/g, 1, 1, 1]
    let y = y.repeat([g, 1, h, w]);
    Tensor::cat(&[x, &y], 1)
}

fn up(x: &Tensor) -> Tensor {
    let s = x.size();
    x.upsample_nearest2d([s[2] * 2, s[3] * 2], None, None)
}

fn down(x: &Tensor) -> Tensor {
    x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None)
}

pub struct Generator {
    dense: EqLinear,
    conv0: EqConv,
    blocks: Vec<(EqConv, EqConv)>,
    to_rgb: Vec<EqConv>,
    f0: i64,
}

impl Generator {
    fn new(p: nn::Path, c: &ProGanConfig) -> Result<Self> {
        let (_, k) = c.net_size()?;
        let f0 = c.fmaps(0);
        let mut blocks = Vec::new();
        let mut to_rgb = vec![EqConv::new(&p / "to_rgb0", f0, c.channels, 1, 1.0)];
        for s in 1..=k {
            let (i, o) = (c.fmaps(s - 1), c.fmaps(s));
            blocks.push((
                EqConv::new(&p / format!("b{s}_conv1"), i, o, 3, SQRT2),
                EqConv::new(&p / format!("b{s}_conv2"), o, o, 3, SQRT2),
            ));
            to_rgb.push(EqConv::new(
                &p / format!("to_rgb{s}"),
                o,
                c.channels,
                1,
                1.0,
            ));
        }
        Ok(Generator {
            // The paper's first layer maps z to 4x4 (a "4x4 convolution" on a 1x1 input).
            dense: EqLinear::new(&p / "dense", c.z_dim, f0 * 16, SQRT2 / 4.0),
            conv0: EqConv::new(&p / "conv0", f0, f0, 3, SQRT2),
            blocks,
            to_rgb,
            f0,
        })
    }

    /// Images at the resolution of `stage`, blended with the previous one by `alpha`.
    pub fn forward(&self, z: &Tensor, stage: usize, alpha: f64) -> Tensor {
        let n = z.size()[0];
        let h = self
            .dense
            .forward(&pixel_norm(&z.view([n, -1, 1, 1])).view([n, -1]));
        let h = pixel_norm(&lrelu(&h.view([n, self.f0, 4, 4])));
        let mut h = pixel_norm(&lrelu(&self.conv0.forward(&h)));
        let mut prev = Tensor::new();
        for (s, (c1, c2)) in self.blocks.iter().enumerate().take(stage) {
            if s + 1 == stage {
                prev = h.shallow_clone();
            }
            let u = up(&h);
            h = pixel_norm(&lrelu(&c2.forward(&pixel_norm(&lrelu(&c1.forward(&u))))));
        }
        let out = self.to_rgb[stage].forward(&h);
        if stage > 0 && alpha < 1.0 {
            let low = up(&self.to_rgb[stage - 1].forward(&prev));
            low * (1.0 - alpha) + out * alpha
        } else {
            out
        }
    }
}

pub struct Discriminator {
    from_rgb: Vec<EqConv>,
    blocks: Vec<(EqConv, EqConv)>,
    conv_last: EqConv,
    conv4: EqConv,
    out: EqLinear,
    group: i64,
}

impl Discriminator {
    fn new(p: nn::Path, c: &ProGanConfig) -> Result<Self> {
        let (_, k) = c.net_size()?;
        let mut from_rgb = Vec::new();
        let mut blocks = Vec::new();
        for s in 0..=k {
            from_rgb.push(EqConv::new(
                &p / format!("from_rgb{s}"),
                c.channels,
                c.fmaps(s),
                1,
                SQRT2,
            ));
            if s > 0 {
                let (i, o) = (c.fmaps(s), c.fmaps(s - 1));
                blocks.push((
                    EqConv::new(&p / format!("b{s}_conv1"), i, i, 3, SQRT2),
                    EqConv::new(&p / format!("b{s}_conv2"), i, o, 3, SQRT2),
                ));
            }
        }
        let f0 = c.fmaps(0);
        Ok(Discriminator {
            from_rgb,
            blocks,
            conv_last: EqConv::new(&p / "conv_last", f0 + 1, f0, 3, SQRT2),
            conv4: EqConv {
                // 4x4 "valid" convolution to 1x1.
                pad: 0,
                ..EqConv::new(&p / "conv4", f0, f0, 4, SQRT2)
            },
            out: EqLinear::new(&p / "out", f0, 1, 1.0),
            group: c.mbstd_group,
        })
    }

    /// Critic values `[N]` of images at the resolution of `stage`.
    pub fn forward(&self, x: &Tensor, stage: usize, alpha: f64) -> Tensor {
        let mut h = lrelu(&self.from_rgb[stage].forward(x));
        for s in (1..=stage).rev() {
            let (c1, c2) = &self.blocks[s - 1];
            h = down(&lrelu(&c2.forward(&lrelu(&c1.forward(&h)))));
            if s == stage && alpha < 1.0 {
                let skip = lrelu(&self.from_rgb[s - 1].forward(&down(x)));
                h = skip * (1.0 - alpha) + h * alpha;
            }
        }
        let h = lrelu(&self.conv_last.forward(&minibatch_std(&h, self.group)));
        let h = lrelu(&self.conv4.forward(&h)).flatten(1, -1);
        self.out.forward(&h).squeeze_dim(1)
    }
}

pub struct ProGan {
    pub cfg: ProGanConfig,
    pub pair: GanPair,
    pub g: Generator,
    pub d: Discriminator,
    /// Training steps taken (a variable of G's store, so checkpoints carry it).
    progress: Tensor,
    device: Device,
}

impl ProGan {
    pub fn new(cfg: ProGanConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let adam = AdamConfig::new(cfg.lr, cfg.beta1, cfg.beta2);
        let (pair, (g, d, progress)) = GanPair::new(device, adam, adam, |g_vs, d_vs| {
            let g = Generator::new(g_vs.root(), &cfg)?;
            let progress = g_vs.root().zeros_no_train("progress_steps", &[]);
            Ok((g, Discriminator::new(d_vs.root(), &cfg)?, progress))
        })?;
        Ok(ProGan {
            cfg,
            pair,
            g,
            d,
            progress,
            device,
        })
    }

    pub fn steps_done(&self) -> u64 {
        self.progress.double_value(&[]).max(0.0) as u64
    }

    /// Real images padded to the networks' side, at the resolution of `stage`, blended with
    /// the next lower resolution during a fade-in.
    fn reals_at(&self, x: &Tensor, stage: usize, alpha: f64) -> Result<Tensor> {
        let (side, k) = self.cfg.net_size()?;
        let mut x = crate::ops::pad_background(x, side);
        for _ in stage..k {
            x = down(&x);
        }
        if stage > 0 && alpha < 1.0 {
            x = up(&down(&x)) * (1.0 - alpha) + x * alpha;
        }
        Ok(x)
    }

    /// Full-size samples (cropped to `image_size`) at the current stage.
    pub fn generate(&self, z: &Tensor) -> Result<Tensor> {
        let (stage, alpha) = self.cfg.stage_at(self.steps_done())?;
        let (_, k) = self.cfg.net_size()?;
        let mut x = tch::no_grad(|| self.g.forward(z, stage, alpha));
        for _ in stage..k {
            x = up(&x);
        }
        Ok(crate::ops::crop_center(&x, self.cfg.image_size).clamp(-1.0, 1.0))
    }

    fn latents(&self, n: i64) -> Tensor {
        Tensor::randn([n, self.cfg.z_dim], (Kind::Float, self.device))
    }
}

impl Model for ProGan {
    fn name(&self) -> &str {
        "progan"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let c = &self.cfg;
        let expect = [c.channels, c.image_size, c.image_size];
        if batch.x.size()[1..] != expect {
            return Err(Error::invalid(format!(
                "ProGAN configured for images {expect:?}, got a batch of {:?}",
                batch.x.size()
            )));
        }
        let n = batch.x.size()[0];
        if n % c.mbstd_group != 0 {
            return Err(Error::invalid(format!(
                "the batch size {n} must be a multiple of the minibatch-std group {}",
                c.mbstd_group
            )));
        }
        let (stage, alpha) = c.stage_at(ctx.step)?;
        let real = self.reals_at(&batch.x, stage, alpha)?;
        let fake = tch::no_grad(|| self.g.forward(&self.latents(n), stage, alpha));
        let d_real = self.d.forward(&real, stage, alpha);
        let d_fake = self.d.forward(&fake, stage, alpha);
        let wass = GanLoss::Wasserstein.d_loss(&d_real, &d_fake);
        let d = &self.d;
        let gp = gradient_penalty(|t| d.forward(t, stage, alpha), &real, &fake, c.gp_lambda)?;
        let drift = d_real.square().mean(Kind::Float) * c.drift;
        let d_loss = &wass + &gp + &drift;
        self.pair.opt_d.backward_step(&d_loss, ctx);
        let frozen = self.pair.freeze_d();
        let fake = self.g.forward(&self.latents(n), stage, alpha);
        let g_loss = GanLoss::Wasserstein.g_loss(&self.d.forward(&fake, stage, alpha));
        self.pair.opt_g.backward_step(&g_loss, ctx);
        drop(frozen);
        tch::no_grad(|| {
            let _ = self.progress.fill_((ctx.step + 1) as f64);
        });
        Ok(vec![
            ("d_loss".into(), d_loss.double_value(&[])),
            ("g_loss".into(), g_loss.double_value(&[])),
            ("w_dist".into(), -wass.double_value(&[])),
            ("gp".into(), gp.double_value(&[])),
            ("resolution".into(), (4i64 << stage) as f64),
            ("alpha".into(), alpha),
        ])
    }

    fn sample(&mut self, n: usize) -> Result<Samples> {
        let z = self.latents(n as i64);
        Ok(Samples::Images(self.generate(&z)?))
    }

    fn interpolate(&mut self, rows: usize, steps: usize) -> Result<Option<Tensor>> {
        let (a, b) = (self.latents(rows as i64), self.latents(rows as i64));
        let z = genmodels_core::samplers::slerp_grid(&a, &b, steps);
        Ok(Some(self.generate(&z)?))
    }

    crate::pair::delegate_to_pair!();
}

pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "progan",
        family: "gan",
        output: Output::Images,
        capabilities: &[Capability::Interpolation],
        interpolation: Some("slerp in z"),
        summary: "Progressive GAN (Karras et al. 2018): 4x4 -> 32x32 with fade-in, equalised lr, pixel norm, minibatch std, WGAN-GP + drift; train for phase_steps * (1 + 2k) steps",
        default_config: |info: &DataInfo| {
            let (c, h) = crate::pair::square_image("progan", info)?;
            let cfg = ProGanConfig { channels: c, image_size: h, ..Default::default() };
            cfg.validate()?;
            Ok(serde_json::to_value(cfg)?)
        },
        build: |json, device| {
            let cfg: ProGanConfig = Check::model("progan").parse(json)?;
            Ok(Box::new(ProGan::new(cfg, device)?))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genmodels_core::checkpoint::Checkpoint;
    use tch::nn::VarStore;

    #[test]
    fn bad_config_values_are_one_line_errors_naming_the_key() {
        use serde_json::json;
        let bad = [
            ("mbstd_group", json!(0)),
            ("mbstd_group", json!(-4)),
            ("channels", json!(0)),
            ("image_size", json!(2)),
            ("image_size", json!(2048)),
            ("z_dim", json!(0)),
            ("fmap_max", json!(1_000_000)),
            ("fmap_min", json!(0)),
            ("fmap_min", json!(256)), // over fmap_max
            ("phase_steps", json!(0)),
            ("phase_steps", json!(-1)),
            ("lr", json!(-1.0)),
            ("beta1", json!(-0.5)),
            ("beta2", json!(1.0)),
            ("gp_lambda", json!(-10.0)),
            ("drift", json!(-0.001)),
        ];
        genmodels_core::model::check::assert_rejects(&entry(), &crate::fashion_info(), &bad);
    }

    fn tiny() -> ProGanConfig {
        ProGanConfig {
            z_dim: 8,
            fmap_max: 8,
            fmap_min: 4,
            phase_steps: 2,
            ..Default::default()
        }
    }

    #[test]
    fn the_schedule_grows_with_fades() {
        let _rng = crate::test_lock();
        let c = tiny();
        assert_eq!(c.net_size().unwrap(), (32, 3));
        assert_eq!(c.schedule_steps().unwrap(), 14);
        let stages: Vec<(usize, f64)> = (0..15).map(|s| c.stage_at(s).unwrap()).collect();
        assert_eq!(stages[0], (0, 1.0));
        assert_eq!(stages[2], (1, 0.5));
        assert_eq!(stages[3], (1, 1.0));
        assert_eq!(stages[4], (1, 1.0));
        assert_eq!(stages[6], (2, 0.5));
        assert_eq!(stages[14], (3, 1.0));
    }

    #[test]
    fn every_stage_trains_and_samples_full_size() {
        let _rng = crate::test_lock();
        let mut m = ProGan::new(tiny(), Device::Cpu).unwrap();
        let x = Tensor::rand([8, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let snap = |vs: &VarStore| -> Vec<(String, Tensor)> {
            vs.variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .map(|(k, t)| (k, t.copy()))
                .collect()
        };
        let (g0, d0) = (snap(&m.pair.g_vs), snap(&m.pair.d_vs));
        for step in 0..14 {
            let ctx = StepCtx {
                step,
                ..Default::default()
            };
            let l = m
                .train_step(
                    &Batch {
                        x: x.shallow_clone(),
                        y: None,
                    },
                    &ctx,
                )
                .unwrap();
            assert!(l.iter().all(|(_, v)| v.is_finite()), "{l:?}");
            let Samples::Images(s) = m.sample(3).unwrap() else {
                panic!()
            };
            assert_eq!(s.size(), [3, 1, 28, 28]);
        }
        assert_eq!(m.steps_done(), 14);
        // By the end every layer of every resolution has been trained.
        for (vs, before) in [(&m.pair.g_vs, g0), (&m.pair.d_vs, d0)] {
            let now = vs.variables();
            for (k, t) in before {
                assert!(
                    (&now[&k] - t).abs().max().double_value(&[]) > 0.0,
                    "{k} never trained"
                );
            }
        }
        let err = m
            .train_step(
                &Batch {
                    x: x.narrow(0, 0, 6),
                    y: None,
                },
                &StepCtx::default(),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("multiple of the minibatch-std group"), "{err}");
    }

    #[test]
    fn pixel_norm_and_minibatch_std() {
        let _rng = crate::test_lock();
        let x = Tensor::randn([8, 5, 3, 3], (Kind::Float, Device::Cpu)) * 7.0;
        let p = pixel_norm(&x);
        let ms = p.square().mean_dim(1, false, Kind::Float);
        assert!(ms.allclose(&Tensor::ones_like(&ms), 1e-4, 1e-4, false));
        let y = minibatch_std(&x, 4);
        assert_eq!(y.size(), [8, 6, 3, 3]);
        // Identical samples within each group: zero spread (up to the 1e-8 floor).
        let same = Tensor::ones([8, 5, 3, 3], (Kind::Float, Device::Cpu));
        assert!(
            minibatch_std(&same, 4)
                .narrow(1, 5, 1)
                .max()
                .double_value(&[])
                < 1e-3
        );
    }

    #[test]
    fn padding_uses_the_background_value() {
        let _rng = crate::test_lock();
        let m = ProGan::new(tiny(), Device::Cpu).unwrap();
        let x = Tensor::ones([4, 1, 28, 28], (Kind::Float, Device::Cpu));
        let r = m.reals_at(&x, 3, 1.0).unwrap();
        assert_eq!(r.size(), [4, 1, 32, 32]);
        assert_eq!(r.double_value(&[0, 0, 0, 0]), -1.0);
        assert_eq!(r.double_value(&[0, 0, 16, 16]), 1.0);
        assert_eq!(m.reals_at(&x, 0, 1.0).unwrap().size(), [4, 1, 4, 4]);
    }

    #[test]
    fn checkpoint_keeps_the_stage_and_the_samples() {
        let _rng = crate::test_lock();
        use genmodels_core::checkpoint::TrainState;
        use genmodels_core::model::load_model_state;
        let mut m = ProGan::new(tiny(), Device::Cpu).unwrap();
        let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        for step in 0..5 {
            let ctx = StepCtx {
                step,
                ..Default::default()
            };
            m.train_step(
                &Batch {
                    x: x.shallow_clone(),
                    y: None,
                },
                &ctx,
            )
            .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut ck = Checkpoint::new("progan", m.config_json(), TrainState::default());
        for (name, vs) in m.var_stores() {
            ck.add_var_store(&format!("model/{name}"), vs);
        }
        ck.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        let mut m2 = ProGan::new(tiny(), Device::Cpu).unwrap();
        load_model_state(&mut m2, &back, &p, false).unwrap();
        assert_eq!(m2.steps_done(), 5);
        let z = m.latents(3);
        assert!(m.generate(&z).unwrap().equal(&m2.generate(&z).unwrap()));
    }
}
