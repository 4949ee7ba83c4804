//! CycleGAN (Zhu, Park, Isola & Efros 2017, "Unpaired Image-to-Image Translation using
//! Cycle-Consistent Adversarial Networks"), between two unpaired domains given as two classes
//! of one labelled dataset (e.g. Fashion-MNIST sneakers, class 7, and ankle boots, class 9:
//! `--data fashion-mnist@7,9`).
//!
//! As in the paper and its reference code:
//! - two ResNet generators (Johnson et al. 2016): `c7s1-ngf, d2ngf, d4ngf, R4ngf x n_res,
//!   u2ngf, ungf, c7s1-C` with reflection padding and instance norm, tanh output;
//! - two PatchGAN discriminators: `C ndf (no norm) - C 2ndf - C 4ndf (stride 1) - 1` with 4x4
//!   convolutions, instance norm and leaky ReLU 0.2;
//! - the least-squares adversarial loss (`(D(G(x)) - 1)^2` for G, `((D(y) - 1)^2 + D(G(x))^2) / 2`
//!   for D), the cycle loss `lambda * (|F(G(a)) - a|_1 + |G(F(b)) - b|_1)` with lambda 10, the
//!   identity loss `0.5 * lambda * (|G(b) - b|_1 + |F(a) - a|_1)`;
//! - a history of 50 generated images per domain (Shrivastava et al. 2017): the discriminators
//!   see, with probability 1/2, an older generated image instead of the newest; the buffers are
//!   variables, so they survive a checkpoint;
//! - Adam(2e-4, 0.5, 0.999) for both generators together and both discriminators together.
//!
//! Each batch is split by label into its A and B images (equal counts), so the pairs are
//! unpaired random draws. `sample` shows rows of [A, G(A), F(G(A))] on a fixed set of A images
//! kept from the first batch (also a variable).

use crate::pair::GanPair;
use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::Batch;
use genmodels_core::model::check::{Check, MAX_SIDE, MAX_WIDTH};
use genmodels_core::model::{
    Capability, DataInfo, Losses, Model, ModelEntry, Output, Samples, Translate,
};
use genmodels_core::optim::{AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CycleGanConfig {
    pub channels: i64,
    /// Image side (divisible by 4).
    pub image_size: i64,
    /// Label of domain A and of domain B in the data.
    pub class_a: i64,
    pub class_b: i64,
    pub ngf: i64,
    pub ndf: i64,
    /// Residual blocks per generator (paper: 6 at 128x128, 9 at 256x256).
    pub n_res: i64,
    pub lambda_cycle: f64,
    /// Identity weight as a fraction of `lambda_cycle` (paper: 0.5).
    pub lambda_identity: f64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Generated images kept per domain for the discriminators (paper: 50; 0: off).
    pub pool_size: i64,
    /// A images kept for the sample grids.
    pub showcase: i64,
}

impl Default for CycleGanConfig {
    fn default() -> Self {
        CycleGanConfig {
            channels: 1,
            image_size: 28,
            class_a: 7,
            class_b: 9,
            ngf: 32,
            ndf: 32,
            n_res: 6,
            lambda_cycle: 10.0,
            lambda_identity: 0.5,
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            pool_size: 50,
            showcase: 8,
        }
    }
}

impl CycleGanConfig {
    /// Every field in range, before any network is made.
    pub fn validate(&self) -> Result<()> {
        let c = Check::model("cyclegan");
        c.image(self.channels, self.image_size, 16, MAX_SIDE)?;
        c.ensure(
            self.image_size % 4 == 0,
            "image_size",
            self.image_size,
            "a multiple of 4 (two stride-2 layers in G, the PatchGAN's receptive field)",
        )?;
        c.int("class_a", self.class_a, 0, 65535)?;
        c.int("class_b", self.class_b, 0, 65535)?;
        c.ensure(
            self.class_a != self.class_b,
            "class_b",
            self.class_b,
            format_args!(
                "a class other than class_a ({}): the two domains",
                self.class_a
            ),
        )?;
        // Both networks are at most 4 width units wide.
        c.int("ngf", self.ngf, 1, MAX_WIDTH / 4)?;
        c.int("ndf", self.ndf, 1, MAX_WIDTH / 4)?;
        c.int("n_res", self.n_res, 0, 64)?;
        c.non_negative("lambda_cycle", self.lambda_cycle)?;
        c.non_negative("lambda_identity", self.lambda_identity)?;
        c.adam("lr", self.lr, self.beta1, self.beta2)?;
        c.int("pool_size", self.pool_size, 0, 1000)?;
        c.int("showcase", self.showcase, 1, 1024)
    }
}

fn conv(p: nn::Path, i: i64, o: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        i,
        o,
        k,
        nn::ConvConfig {
            stride,
            padding,
            // CycleGAN's init_weights('normal', 0.02).
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            ..Default::default()
        },
    )
}

fn inorm(x: &Tensor) -> Tensor {
    // nn.InstanceNorm2d(affine=False, track_running_stats=False), the reference's default.
    Tensor::instance_norm(
        x,
        None::<&Tensor>,
        None::<&Tensor>,
        None::<&Tensor>,
        None::<&Tensor>,
        true,
        0.1,
        1e-5,
        false,
    )
}

fn reflect(x: &Tensor, p: i64) -> Tensor {
    x.reflection_pad2d([p, p, p, p])
}

fn lrelu(x: &Tensor) -> Tensor {
    crate::ops::leaky_relu(x, 0.2)
}

/// The ResNet generator.
pub struct ResnetGenerator {
    c_in: nn::Conv2D,
    down: Vec<nn::Conv2D>,
    res: Vec<(nn::Conv2D, nn::Conv2D)>,
    up: Vec<nn::ConvTranspose2D>,
    c_out: nn::Conv2D,
}

impl ResnetGenerator {
    fn new(p: nn::Path, c: &CycleGanConfig) -> Self {
        let g = c.ngf;
        let up = |p: nn::Path, i: i64, o: i64| {
            nn::conv_transpose2d(
                p,
                i,
                o,
                3,
                nn::ConvTransposeConfig {
                    stride: 2,
                    padding: 1,
                    output_padding: 1,
                    ws_init: nn::Init::Randn {
                        mean: 0.0,
                        stdev: 0.02,
                    },
                    ..Default::default()
                },
            )
        };
        ResnetGenerator {
            c_in: conv(&p / "c_in", c.channels, g, 7, 1, 0),
            down: vec![
                conv(&p / "down0", g, 2 * g, 3, 2, 1),
                conv(&p / "down1", 2 * g, 4 * g, 3, 2, 1),
            ],
            res: (0..c.n_res)
                .map(|i| {
                    (
                        conv(&p / format!("res{i}_a"), 4 * g, 4 * g, 3, 1, 0),
                        conv(&p / format!("res{i}_b"), 4 * g, 4 * g, 3, 1, 0),
                    )
                })
                .collect(),
            up: vec![up(&p / "up0", 4 * g, 2 * g), up(&p / "up1", 2 * g, g)],
            c_out: conv(&p / "c_out", g, c.channels, 7, 1, 0),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        use nn::Module;
        let mut h = inorm(&self.c_in.forward(&reflect(x, 3))).relu();
        for d in &self.down {
            h = inorm(&d.forward(&h)).relu();
        }
        for (a, b) in &self.res {
            let r = inorm(&a.forward(&reflect(&h, 1))).relu();
            let r = inorm(&b.forward(&reflect(&r, 1)));
            h = &h + r; // not `+=`: the convolution saved `h` for its backward
        }
        for u in &self.up {
            h = inorm(&u.forward(&h)).relu();
        }
        self.c_out.forward(&reflect(&h, 3)).tanh()
    }
}

/// The PatchGAN discriminator: a map of real/fake scores over overlapping patches.
pub struct PatchDiscriminator {
    convs: Vec<nn::Conv2D>,
}

impl PatchDiscriminator {
    fn new(p: nn::Path, c: &CycleGanConfig) -> Self {
        let d = c.ndf;
        PatchDiscriminator {
            convs: vec![
                conv(&p / "c0", c.channels, d, 4, 2, 1),
                conv(&p / "c1", d, 2 * d, 4, 2, 1),
                conv(&p / "c2", 2 * d, 4 * d, 4, 1, 1),
                conv(&p / "c3", 4 * d, 1, 4, 1, 1),
            ],
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        use nn::Module;
        let h = lrelu(&self.convs[0].forward(x));
        let h = lrelu(&inorm(&self.convs[1].forward(&h)));
        let h = lrelu(&inorm(&self.convs[2].forward(&h)));
        self.convs[3].forward(&h)
    }
}

/// Shrivastava et al.'s image history, as CycleGAN's `ImagePool`: a variable of `size` images
/// and a fill count.
struct ImagePool {
    images: Tensor,
    filled: Tensor,
    size: i64,
}

impl ImagePool {
    fn new(p: &nn::Path, name: &str, size: i64, c: &CycleGanConfig) -> Self {
        ImagePool {
            images: p.zeros_no_train(name, &[size.max(1), c.channels, c.image_size, c.image_size]),
            filled: p.zeros_no_train(&format!("{name}_filled"), &[]),
            size,
        }
    }

    /// The images to show the discriminator for this batch of new ones.
    fn query(&mut self, new: &Tensor) -> Tensor {
        if self.size == 0 {
            return new.shallow_clone();
        }
        tch::no_grad(|| {
            let mut out = Vec::new();
            for i in 0..new.size()[0] {
                let img = new.get(i);
                let filled = self.filled.double_value(&[]) as i64;
                if filled < self.size {
                    self.images.get(filled).copy_(&img);
                    let _ = self.filled.fill_((filled + 1) as f64);
                    out.push(img);
                } else if f64::try_from(Tensor::rand([], (Kind::Float, Device::Cpu))).unwrap_or(0.0)
                    > 0.5
                {
                    let j =
                        i64::try_from(Tensor::randint(self.size, [], (Kind::Int64, Device::Cpu)))
                            .unwrap_or(0);
                    let old = self.images.get(j).copy();
                    self.images.get(j).copy_(&img);
                    out.push(old);
                } else {
                    out.push(img);
                }
            }
            Tensor::stack(&out, 0)
        })
    }
}

pub struct CycleGan {
    pub cfg: CycleGanConfig,
    pub pair: GanPair,
    /// A -> B and B -> A.
    pub g_ab: ResnetGenerator,
    pub g_ba: ResnetGenerator,
    pub d_a: PatchDiscriminator,
    pub d_b: PatchDiscriminator,
    pool_a: ImagePool,
    pool_b: ImagePool,
    showcase: Tensor,
    showcase_set: Tensor,
}

fn mse_to(x: &Tensor, target: f64) -> Tensor {
    (x - target).square().mean(Kind::Float)
}

fn l1(a: &Tensor, b: &Tensor) -> Tensor {
    (a - b).abs().mean(Kind::Float)
}

impl CycleGan {
    pub fn new(cfg: CycleGanConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let adam = AdamConfig::new(cfg.lr, cfg.beta1, cfg.beta2);
        let (pair, nets) = GanPair::new(device, adam, adam, |g_vs, d_vs| {
            let (g, d) = (g_vs.root(), d_vs.root());
            Ok((
                ResnetGenerator::new(&g / "g_ab", &cfg),
                ResnetGenerator::new(&g / "g_ba", &cfg),
                PatchDiscriminator::new(&d / "d_a", &cfg),
                PatchDiscriminator::new(&d / "d_b", &cfg),
                ImagePool::new(&d, "pool_a", cfg.pool_size, &cfg),
                ImagePool::new(&d, "pool_b", cfg.pool_size, &cfg),
                g.zeros_no_train(
                    "showcase",
                    &[
                        cfg.showcase.max(1),
                        cfg.channels,
                        cfg.image_size,
                        cfg.image_size,
                    ],
                ),
                g.zeros_no_train("showcase_set", &[]),
            ))
        })?;
        let (g_ab, g_ba, d_a, d_b, pool_a, pool_b, showcase, showcase_set) = nets;
        Ok(CycleGan {
            cfg,
            pair,
            g_ab,
            g_ba,
            d_a,
            d_b,
            pool_a,
            pool_b,
            showcase,
            showcase_set,
        })
    }

    /// Images of `class` in the batch.
    fn domain(x: &Tensor, y: &Tensor, class: i64) -> Tensor {
        let idx = y.eq(class).nonzero().squeeze_dim(1);
        x.index_select(0, &idx)
    }

    /// Translates a batch A -> B (`to_b`) or B -> A, in evaluation mode.
    pub fn translate(&self, x: &Tensor, to_b: bool) -> Tensor {
        tch::no_grad(|| {
            if to_b {
                self.g_ab.forward(x)
            } else {
                self.g_ba.forward(x)
            }
        })
    }
}

impl Model for CycleGan {
    fn as_translate(&mut self) -> Option<&mut dyn Translate> {
        Some(self)
    }

    fn name(&self) -> &str {
        "cyclegan"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let c = self.cfg.clone();
        let y = batch.y.as_ref().ok_or_else(|| {
            Error::invalid("CycleGAN takes its two domains from labels: use labelled data such as fashion-mnist@7,9")
        })?;
        let (xa, xb) = (
            Self::domain(&batch.x, y, c.class_a),
            Self::domain(&batch.x, y, c.class_b),
        );
        let n = xa.size()[0].min(xb.size()[0]);
        if n == 0 {
            return Err(Error::invalid(format!(
                "this batch has no images of class {} or none of class {}; train on `DATA@{},{}` so every batch has both",
                c.class_a, c.class_b, c.class_a, c.class_b
            )));
        }
        let (xa, xb) = (xa.narrow(0, 0, n), xb.narrow(0, 0, n));
        if self.showcase_set.double_value(&[]) == 0.0 && n >= 1 {
            tch::no_grad(|| {
                let k = c.showcase.min(n);
                self.showcase.narrow(0, 0, k).copy_(&xa.narrow(0, 0, k));
                let _ = self.showcase_set.fill_(k as f64);
            });
        }
        // Generators: adversarial (LSGAN) + cycle + identity.
        let fake_b = self.g_ab.forward(&xa);
        let fake_a = self.g_ba.forward(&xb);
        let rec_a = self.g_ba.forward(&fake_b);
        let rec_b = self.g_ab.forward(&fake_a);
        let frozen = self.pair.freeze_d();
        let adv = mse_to(&self.d_b.forward(&fake_b), 1.0) + mse_to(&self.d_a.forward(&fake_a), 1.0);
        let cycle = (l1(&rec_a, &xa) + l1(&rec_b, &xb)) * c.lambda_cycle;
        let identity = if c.lambda_identity > 0.0 {
            (l1(&self.g_ab.forward(&xb), &xb) + l1(&self.g_ba.forward(&xa), &xa))
                * (c.lambda_cycle * c.lambda_identity)
        } else {
            Tensor::zeros([], (Kind::Float, xa.device()))
        };
        let g_loss = &adv + &cycle + &identity;
        self.pair.opt_g.backward_step(&g_loss, ctx);
        drop(frozen);
        // Discriminators, on the history of generated images.
        let hist_b = self.pool_b.query(&fake_b.detach());
        let hist_a = self.pool_a.query(&fake_a.detach());
        let d_a =
            (mse_to(&self.d_a.forward(&xa), 1.0) + mse_to(&self.d_a.forward(&hist_a), 0.0)) * 0.5;
        let d_b =
            (mse_to(&self.d_b.forward(&xb), 1.0) + mse_to(&self.d_b.forward(&hist_b), 0.0)) * 0.5;
        let d_loss = &d_a + &d_b;
        self.pair.opt_d.backward_step(&d_loss, ctx);
        Ok(vec![
            ("g_adv".into(), adv.double_value(&[])),
            ("cycle".into(), cycle.double_value(&[])),
            ("identity".into(), identity.double_value(&[])),
            ("d_a".into(), d_a.double_value(&[])),
            ("d_b".into(), d_b.double_value(&[])),
        ])
    }

    /// Rows of [A, G(A), F(G(A))] for the kept A images, cycling through them to fill `n`
    /// (three images per row; a grid of ceil(sqrt(n)) columns is best read with n = 9, 36, ...).
    fn sample(&mut self, n: usize) -> Result<Samples> {
        let k = (self.showcase_set.double_value(&[]) as i64).max(1);
        let rows = (n as i64 / 3).max(1);
        let idx = Tensor::arange(rows, (Kind::Int64, self.showcase.device())).remainder(k);
        let a = self.showcase.index_select(0, &idx);
        let b = CycleGan::translate(self, &a, true);
        let back = CycleGan::translate(self, &b, false);
        let triplets = Tensor::stack(&[a, b, back], 1).flatten(0, 1);
        Ok(Samples::Images(triplets))
    }

    fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        self.pair.var_stores()
    }

    fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.pair.save_optimizers(ckpt)
    }

    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.pair.load_optimizers(ckpt, path)
    }
}

impl Translate for CycleGan {
    fn translate(&mut self, x: &Tensor, forward: bool) -> Result<Tensor> {
        Ok(CycleGan::translate(self, x, forward))
    }
}

pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "cyclegan",
        family: "gan",
        output: Output::Images,
        capabilities: &[Capability::Translation],
        interpolation: None,
        summary: "CycleGAN (Zhu et al. 2017) between two classes (default 7 <-> 9: sneaker <-> ankle boot; data fashion-mnist@7,9): ResNet G, PatchGAN D, LSGAN, cycle 10, identity 0.5, 50-image history",
        default_config: |info: &DataInfo| {
            let (c, h) = crate::pair::square_image("cyclegan", info)?;
            if info.num_classes.is_none() {
                return Err(Error::invalid("CycleGAN takes its two domains from labels: use labelled data such as fashion-mnist@7,9"));
            }
            let cfg = CycleGanConfig { channels: c, image_size: h, ..Default::default() };
            cfg.validate()?;
            Ok(serde_json::to_value(cfg)?)
        },
        build: |json, device| {
            let cfg: CycleGanConfig = Check::model("cyclegan").parse(json)?;
            Ok(Box::new(CycleGan::new(cfg, device)?))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_values_are_one_line_errors_naming_the_key() {
        use serde_json::json;
        let bad = [
            ("pool_size", json!(-1)),
            ("pool_size", json!(1_000_000)),
            ("showcase", json!(-1)),
            ("showcase", json!(0)),
            ("channels", json!(0)),
            ("image_size", json!(30)),
            ("image_size", json!(12)),
            ("class_a", json!(-1)),
            ("class_b", json!(7)), // the same as class_a
            ("ngf", json!(0)),
            ("ndf", json!(-32)),
            ("ngf", json!(100_000)),
            ("n_res", json!(-1)),
            ("lambda_cycle", json!(-10.0)),
            ("lambda_identity", json!(-0.5)),
            ("lr", json!(-2e-4)),
            ("beta1", json!(1.0)),
            ("beta2", json!(-1.0)),
        ];
        genmodels_core::model::check::assert_rejects(&entry(), &crate::fashion_info(), &bad);
    }

    fn tiny() -> CycleGanConfig {
        CycleGanConfig {
            ngf: 4,
            ndf: 4,
            n_res: 1,
            pool_size: 3,
            showcase: 2,
            ..Default::default()
        }
    }

    fn batch() -> Batch {
        Batch {
            x: Tensor::rand([6, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
            y: Some(Tensor::from_slice(&[7i64, 9, 7, 9, 3, 7])),
        }
    }

    #[test]
    fn shapes_losses_and_every_parameter_learns() {
        let _rng = crate::test_lock();
        let mut m = CycleGan::new(tiny(), Device::Cpu).unwrap();
        let x = Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu));
        assert_eq!(m.g_ab.forward(&x).size(), [2, 1, 28, 28]);
        assert_eq!(m.d_a.forward(&x).size(), [2, 1, 5, 5]);
        let snap = |vs: &VarStore| -> Vec<(String, Tensor)> {
            vs.variables()
                .into_iter()
                .filter(|(_, t)| t.requires_grad())
                .map(|(k, t)| (k, t.copy()))
                .collect()
        };
        let (g0, d0) = (snap(&m.pair.g_vs), snap(&m.pair.d_vs));
        let l = m.train_step(&batch(), &StepCtx::default()).unwrap();
        let names: Vec<&str> = l.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["g_adv", "cycle", "identity", "d_a", "d_b"]);
        for (vs, before) in [(&m.pair.g_vs, g0), (&m.pair.d_vs, d0)] {
            let now = vs.variables();
            for (k, t) in before {
                assert!(
                    (&now[&k] - t).abs().max().double_value(&[]) > 0.0,
                    "{k} did not change"
                );
            }
        }
        let Samples::Images(s) = m.sample(6).unwrap() else {
            panic!()
        };
        assert_eq!(s.size(), [6, 1, 28, 28]);
    }

    #[test]
    fn the_cycle_loss_is_lambda_times_the_l1_reconstruction() {
        let _rng = crate::test_lock();
        let mut m = CycleGan::new(
            CycleGanConfig {
                lambda_identity: 0.0,
                ..tiny()
            },
            Device::Cpu,
        )
        .unwrap();
        let b = batch();
        let y = b.y.as_ref().unwrap();
        let (xa, xb) = (
            CycleGan::domain(&b.x, y, 7).narrow(0, 0, 2),
            CycleGan::domain(&b.x, y, 9),
        );
        let want = tch::no_grad(|| {
            let ra = m.g_ba.forward(&m.g_ab.forward(&xa));
            let rb = m.g_ab.forward(&m.g_ba.forward(&xb));
            ((ra - &xa).abs().mean(Kind::Float) + (rb - &xb).abs().mean(Kind::Float))
                .double_value(&[])
                * 10.0
        });
        let l = m.train_step(&b, &StepCtx::default()).unwrap();
        assert!((l[1].1 - want).abs() < 1e-5, "{} vs {want}", l[1].1);
        assert_eq!(l[2].1, 0.0);
    }

    #[test]
    fn the_history_fills_then_mixes_old_and_new() {
        let _rng = crate::test_lock();
        let vs = VarStore::new(Device::Cpu);
        let c = CycleGanConfig {
            image_size: 16,
            ..tiny()
        };
        let mut pool = ImagePool::new(&vs.root(), "p", 3, &c);
        let first = Tensor::ones([3, 1, 16, 16], (Kind::Float, Device::Cpu));
        assert!(pool.query(&first).equal(&first));
        assert_eq!(pool.filled.double_value(&[]), 3.0);
        tch::manual_seed(0);
        let new = Tensor::zeros([40, 1, 16, 16], (Kind::Float, Device::Cpu));
        let out = pool.query(&new);
        let old = out
            .sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float)
            .gt(0.0)
            .sum(Kind::Int64)
            .int64_value(&[]);
        // The three stored ones come back at most once each; the rest are new.
        assert!((1..=3).contains(&old), "{old} old images returned");
    }

    #[test]
    fn batches_without_both_domains_and_equal_classes_are_refused() {
        let _rng = crate::test_lock();
        let mut m = CycleGan::new(tiny(), Device::Cpu).unwrap();
        let b = Batch {
            x: Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu)),
            y: Some(Tensor::from_slice(&[7i64, 7])),
        };
        let e = m
            .train_step(&b, &StepCtx::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("@7,9"), "{e}");
        assert!(CycleGan::new(
            CycleGanConfig {
                class_b: 7,
                ..tiny()
            },
            Device::Cpu
        )
        .is_err());
    }
}
