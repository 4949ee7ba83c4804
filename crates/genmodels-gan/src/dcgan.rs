//! DCGAN (Radford, Metz & Chintala 2016, "Unsupervised Representation Learning with Deep
//! Convolutional Generative Adversarial Networks").
//!
//! The paper's architecture guidelines (Sec. 3): strided convolutions instead of pooling,
//! batch norm in both networks (except the generator's output and the discriminator's input
//! layer), no fully connected hidden layers, ReLU in the generator with tanh output, LeakyReLU
//! (0.2) in the discriminator. Training (Sec. 4): weights from N(0, 0.02), Adam with lr 2e-4 and
//! beta1 0.5, batch 128, the non-saturating generator loss of Goodfellow et al.
//!
//! WGAN-GP (Gulrajani et al. 2017, "Improved Training of Wasserstein GANs") is the same
//! generator against a critic without batch norm (Sec. 4: "we omit batch normalization in the
//! critic"; layer norm is their suggested drop-in, `d_norm = "layer"`), trained with the
//! Wasserstein loss plus the gradient penalty (lambda 10), n_critic = 5 critic updates per
//! generator update, Adam(1e-4, beta1 0, beta2 0.9) (their Algorithm 1). Each critic update takes
//! its own slice of the trainer's batch, so `batch_size = 5 * 64` gives the paper's m = 64 fresh
//! real samples per critic update. Registered as `wgan-gp`.
//!
//! The paper works at 64x64 with four up-samplings from 4x4; here the number of up-samplings
//! follows the image side (28 = 7 * 2^2 for Fashion-MNIST, 32 = 4 * 2^3, 64 = 4 * 2^4), keeping
//! the same layer pattern.

use crate::pair::{critic_chunks, GanPair};
use genmodels_core::data::Batch;
use genmodels_core::losses::{gradient_penalty, GanLoss};
use genmodels_core::model::check::{Check, MAX_SIDE, MAX_WIDTH};
use genmodels_core::model::{Capability, DataInfo, Losses, Model, ModelEntry, Output, Samples};
use genmodels_core::optim::{AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// DCGAN settings; defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DcganConfig {
    /// Output image channels.
    pub channels: i64,
    /// Output image side (square).
    pub image_size: i64,
    /// Side of the square the networks work on (0: `image_size`); must be base * 2^k with
    /// base >= 4 and k >= 1. Larger than `image_size`, real images are padded with background
    /// (-1) around their centre for D, and G's canvas is cropped back to `image_size` when
    /// sampling: the PyTorch example's 32x32 layout (4 -> 8 -> 16 -> 32) for 28x28 images.
    pub canvas: i64,
    /// Latent dimension (paper: 100).
    pub z_dim: i64,
    /// Generator width: channels of its last hidden layer (paper: 128 at 64x64; 64 is the
    /// common choice of the PyTorch example).
    pub ngf: i64,
    /// Discriminator width: channels of its first layer.
    pub ndf: i64,
    /// Adam learning rate for both networks (paper: 2e-4).
    pub lr: f64,
    /// Adam beta1 (paper: 0.5; 0.9 "resulted in training oscillation and instability").
    pub beta1: f64,
    pub beta2: f64,
    /// Adversarial loss (paper: non-saturating).
    pub loss: GanLoss,
    /// Normalisation in the discriminator's hidden layers (DCGAN: batch; WGAN-GP: none or layer).
    pub d_norm: DNorm,
    /// Gradient-penalty weight (WGAN-GP: 10; 0 turns it off).
    pub gp_lambda: f64,
    /// Critic updates per generator update, each on its own slice of the batch (WGAN-GP: 5).
    pub n_critic: usize,
}

/// Discriminator normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DNorm {
    Batch,
    Layer,
    None,
}

impl Default for DcganConfig {
    fn default() -> Self {
        DcganConfig {
            channels: 1,
            image_size: 28,
            canvas: 0,
            z_dim: 100,
            ngf: 64,
            ndf: 64,
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            loss: GanLoss::NonSaturating,
            d_norm: DNorm::Batch,
            gp_lambda: 0.0,
            n_critic: 1,
        }
    }
}

impl DcganConfig {
    /// WGAN-GP's settings (Gulrajani et al. 2017, Algorithm 1) on the DCGAN networks.
    pub fn wgan_gp() -> Self {
        DcganConfig {
            lr: 1e-4,
            beta1: 0.0,
            beta2: 0.9,
            loss: GanLoss::Wasserstein,
            d_norm: DNorm::None,
            gp_lambda: 10.0,
            n_critic: 5,
            ..Default::default()
        }
    }

    /// (base side, number of stride-2 layers) for the image side.
    pub fn geometry(&self) -> Result<(i64, usize)> {
        self.geometry_for("dcgan")
    }

    /// The side the networks work on.
    pub fn canvas_side(&self) -> i64 {
        if self.canvas > 0 {
            self.canvas
        } else {
            self.image_size
        }
    }

    /// The smallest side 4 * 2^k (k >= 1) that holds `image_size`: 28 -> 32, 64 -> 64.
    pub fn power_of_two_canvas(image_size: i64) -> i64 {
        let mut side = 8;
        while side < image_size && side < MAX_SIDE {
            side *= 2;
        }
        side
    }

    fn geometry_for(&self, model: &str) -> Result<(i64, usize)> {
        let (mut side, mut k) = (self.canvas_side(), 0usize);
        while side % 2 == 0 && side / 2 >= 4 {
            side /= 2;
            k += 1;
        }
        if k == 0 || side < 4 {
            let (key, v) = if self.canvas > 0 {
                ("canvas", self.canvas)
            } else {
                ("image_size", self.image_size)
            };
            return Err(Check::model(model).error(
                key,
                v,
                "base * 2^k with base >= 4 and k >= 1 (e.g. 28, 32, 64)",
            ));
        }
        Ok((side, k))
    }

    /// Every field in range, before any network is made; errors name `model` and the key.
    pub fn validate(&self, model: &str) -> Result<()> {
        let c = Check::model(model);
        c.image(self.channels, self.image_size, 8, MAX_SIDE)?;
        c.ensure(
            self.canvas == 0 || (self.image_size..=MAX_SIDE).contains(&self.canvas),
            "canvas",
            self.canvas,
            format!(
                "0 (the image side) or a side from image_size ({}) to {MAX_SIDE}",
                self.image_size
            ),
        )?;
        let (_, k) = self.geometry_for(model)?;
        // The widest layers are ngf * 2^(k-1) (G's first) and ndf * 2^(k-1) (D's last).
        let widest = MAX_WIDTH >> (k - 1);
        c.int("z_dim", self.z_dim, 1, MAX_WIDTH)?;
        c.int("ngf", self.ngf, 1, widest)?;
        c.int("ndf", self.ndf, 1, widest)?;
        c.adam("lr", self.lr, self.beta1, self.beta2)?;
        c.non_negative("gp_lambda", self.gp_lambda)?;
        c.int("n_critic", self.n_critic, 1, 100)?;
        c.ensure(
            !(self.d_norm == DNorm::Batch && self.gp_lambda > 0.0),
            "d_norm",
            "\"batch\"",
            "\"none\" or \"layer\" with gp_lambda > 0: a gradient penalty needs a critic without batch norm (per-sample gradients)",
        )
    }
}

/// DCGAN weight init (Sec. 4): conv weights ~ N(0, 0.02); batch-norm scale ~ N(1, 0.02), shift 0.
fn conv_cfg() -> nn::ConvConfig {
    nn::ConvConfig {
        stride: 2,
        padding: 1,
        bias: false,
        ws_init: nn::Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
        ..Default::default()
    }
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            ws_init: nn::Init::Randn {
                mean: 1.0,
                stdev: 0.02,
            },
            ..Default::default()
        },
    )
}

/// Generator: z -> (ConvT base x base) -> k-1 x [ConvT 4/2, BN, ReLU] -> ConvT 4/2 -> tanh.
pub fn generator(p: nn::Path, c: &DcganConfig) -> Result<nn::SequentialT> {
    let (base, k) = c.geometry()?;
    let mut ch = c.ngf * (1 << (k - 1));
    let mut seq = nn::seq_t()
        .add_fn(|z| z.unsqueeze(-1).unsqueeze(-1))
        .add(nn::conv_transpose2d(
            &p / "proj",
            c.z_dim,
            ch,
            base,
            nn::ConvTransposeConfig {
                stride: 1,
                padding: 0,
                bias: false,
                ws_init: conv_cfg().ws_init,
                ..Default::default()
            },
        ))
        .add(bn(&p / "proj_bn", ch))
        .add_fn(relu_in_place);
    let up = |stride_cfg: nn::ConvConfig| nn::ConvTransposeConfig {
        stride: stride_cfg.stride,
        padding: stride_cfg.padding,
        bias: stride_cfg.bias,
        ws_init: stride_cfg.ws_init,
        ..Default::default()
    };
    for i in 0..k - 1 {
        seq = seq
            .add(nn::conv_transpose2d(
                &p / format!("up{i}"),
                ch,
                ch / 2,
                4,
                up(conv_cfg()),
            ))
            .add(bn(&p / format!("up{i}_bn"), ch / 2))
            .add_fn(relu_in_place);
        ch /= 2;
    }
    Ok(seq
        .add(nn::conv_transpose2d(
            &p / "out",
            ch,
            c.channels,
            4,
            up(conv_cfg()),
        ))
        .add_fn(|x| x.tanh()))
}

/// Discriminator: Conv 4/2 + LReLU (no BN on the input layer) -> k-1 x [Conv 4/2, BN, LReLU] -> Conv base -> logit.
pub fn discriminator(p: nn::Path, c: &DcganConfig) -> Result<nn::SequentialT> {
    let (base, k) = c.geometry()?;
    let mut ch = c.ndf;
    let mut side = c.canvas_side() / 2;
    let mut seq = nn::seq_t()
        .add(nn::conv2d(&p / "in", c.channels, ch, 4, conv_cfg()))
        .add_fn(|x| crate::ops::leaky_relu(x, 0.2));
    for i in 0..k - 1 {
        seq = seq.add(nn::conv2d(
            &p / format!("down{i}"),
            ch,
            ch * 2,
            4,
            conv_cfg(),
        ));
        side /= 2;
        seq = match c.d_norm {
            DNorm::Batch => seq.add(bn(&p / format!("down{i}_bn"), ch * 2)),
            DNorm::Layer => seq.add(nn::layer_norm(
                &p / format!("down{i}_ln"),
                vec![ch * 2, side, side],
                Default::default(),
            )),
            DNorm::None => seq,
        }
        .add_fn(|x| crate::ops::leaky_relu(x, 0.2));
        ch *= 2;
    }
    Ok(seq
        .add(nn::conv2d(
            &p / "logit",
            ch,
            1,
            base,
            nn::ConvConfig {
                stride: 1,
                padding: 0,
                bias: false,
                ws_init: conv_cfg().ws_init,
                ..Default::default()
            },
        ))
        .add_fn(|x| x.flatten(1, -1).squeeze_dim(1)))
}

/// ReLU written into the batch-norm output it follows (nothing else reads that tensor, and
/// ReLU's backward needs only its result), as PyTorch's `nn.ReLU(inplace=True)`.
fn relu_in_place(x: &Tensor) -> Tensor {
    let mut y = x.shallow_clone();
    y.relu_()
}

/// A DCGAN (or WGAN-GP) with its two optimisers.
pub struct Dcgan {
    pub cfg: DcganConfig,
    pub pair: GanPair,
    pub g: nn::SequentialT,
    pub d: nn::SequentialT,
    name: &'static str,
    device: Device,
}

impl Dcgan {
    pub fn new(cfg: DcganConfig, device: Device) -> Result<Self> {
        Self::named("dcgan", cfg, device)
    }

    /// The same networks registered under another name (`wgan-gp`).
    pub fn named(name: &'static str, cfg: DcganConfig, device: Device) -> Result<Self> {
        cfg.validate(name)?;
        let adam = AdamConfig::new(cfg.lr, cfg.beta1, cfg.beta2);
        let (pair, (g, d)) = GanPair::new(device, adam, adam, |g_vs, d_vs| {
            Ok((
                generator(g_vs.root(), &cfg)?,
                discriminator(d_vs.root(), &cfg)?,
            ))
        })?;
        Ok(Dcgan {
            cfg,
            pair,
            g,
            d,
            name,
            device,
        })
    }

    /// Latents z ~ N(0, I), shape `[n, z_dim]` (in training, this process's rows of the
    /// global batch's draw: `genmodels_core::rng::randn_rows`).
    pub fn latents(&self, n: i64) -> Tensor {
        genmodels_core::rng::randn_rows(&[n, self.cfg.z_dim], 0, (Kind::Float, self.device))
    }

    /// Generator output for given latents, in evaluation mode (batch-norm running statistics),
    /// cropped from the canvas to the image side.
    pub fn generate(&self, z: &Tensor) -> Tensor {
        let x = tch::no_grad(|| self.g.forward_t(z, false));
        self.crop(&x)
    }

    /// Offset of the image inside the canvas (left/top).
    fn margin(&self) -> i64 {
        (self.cfg.canvas_side() - self.cfg.image_size) / 2
    }

    /// The image's square from the centre of a canvas batch.
    pub fn crop(&self, x: &Tensor) -> Tensor {
        let (m, s) = (self.margin(), self.cfg.image_size);
        if self.cfg.canvas_side() == s {
            return x.shallow_clone();
        }
        x.narrow(2, m, s).narrow(3, m, s)
    }

    /// Real images placed on the canvas, padded with background (-1).
    pub fn pad(&self, x: &Tensor) -> Tensor {
        let (m, extra) = (self.margin(), self.cfg.canvas_side() - self.cfg.image_size);
        if extra == 0 {
            return x.shallow_clone();
        }
        let r = extra - m;
        (x + 1.0).constant_pad_nd([m, r, m, r]) - 1.0
    }
}

impl Model for Dcgan {
    fn name(&self) -> &str {
        self.name
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    /// Alternating updates (Goodfellow et al. Alg. 1): first D (n_critic times, each on its own
    /// slice of the batch and a fresh detached fake batch), then G through the updated D.
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let x = &batch.x;
        let expect = [self.cfg.channels, self.cfg.image_size, self.cfg.image_size];
        if x.size()[1..] != expect {
            return Err(Error::invalid(format!(
                "DCGAN configured for images {:?}, got a batch of {:?}",
                expect,
                x.size()
            )));
        }
        let x = &self.pad(x);
        let chunks = critic_chunks(x, self.cfg.n_critic)?;
        let n = chunks[0].size()[0];
        let (mut d_loss_v, mut gp_v) = (0.0, 0.0);
        let (mut d_real_v, mut d_fake_v) = (0.0, 0.0);
        let mut fake = Tensor::new();
        for real in &chunks {
            fake = self.g.forward_t(&self.latents(n), true);
            let d_real = self.d.forward_t(real, true);
            let d_fake = self.d.forward_t(&fake.detach(), true);
            let mut d_loss = self.cfg.loss.d_loss(&d_real, &d_fake);
            d_loss_v = d_loss.double_value(&[]);
            if self.cfg.gp_lambda > 0.0 {
                let d = &self.d;
                let gp =
                    gradient_penalty(|t| d.forward_t(t, true), real, &fake, self.cfg.gp_lambda)?;
                gp_v = gp.double_value(&[]);
                d_loss += gp;
            }
            self.pair.opt_d.backward_step(&d_loss, ctx);
            // Critic means for the Wasserstein estimate, mean D probabilities otherwise.
            let wass = self.cfg.loss == GanLoss::Wasserstein;
            let avg = |t: &Tensor| {
                let t = if wass {
                    t.detach()
                } else {
                    t.detach().sigmoid()
                };
                t.mean(Kind::Float).double_value(&[])
            };
            d_real_v = avg(&d_real);
            d_fake_v = avg(&d_fake);
        }
        let frozen = self.pair.freeze_d();
        // With one critic update G reuses that update's fakes (as the DCGAN PyTorch example does).
        if self.cfg.n_critic > 1 {
            fake = self.g.forward_t(&self.latents(n), true);
        }
        let g_loss = self.cfg.loss.g_loss(&self.d.forward_t(&fake, true));
        self.pair.opt_g.backward_step(&g_loss, ctx);
        drop(frozen);
        let mut out = vec![
            ("d_loss".into(), d_loss_v),
            ("g_loss".into(), g_loss.double_value(&[])),
        ];
        if self.cfg.loss == GanLoss::Wasserstein {
            // The critic's estimate of the Wasserstein distance, E D(x) - E D(G(z)) (paper Fig. 3).
            out.push(("w_dist".into(), d_real_v - d_fake_v));
            if self.cfg.gp_lambda > 0.0 {
                out.push(("gp".into(), gp_v));
            }
        } else {
            out.push(("d_real".into(), d_real_v));
            out.push(("d_fake".into(), d_fake_v));
        }
        Ok(out)
    }

    fn sample(&mut self, n: usize) -> Result<Samples> {
        let z = self.latents(n as i64);
        Ok(Samples::Images(self.generate(&z)))
    }

    fn interpolate(&mut self, rows: usize, steps: usize) -> Result<Option<Tensor>> {
        let (a, b) = (self.latents(rows as i64), self.latents(rows as i64));
        let z = genmodels_core::samplers::slerp_grid(&a, &b, steps);
        Ok(Some(self.generate(&z)))
    }

    crate::pair::delegate_to_pair!();
}

/// The data's image shape in `base`; with `canvas`, the networks work on the smallest
/// 4 * 2^k square holding the images (28x28 Fashion-MNIST on 32x32, as the PyTorch example).
fn image_config(
    name: &str,
    info: &DataInfo,
    base: DcganConfig,
    canvas: bool,
) -> Result<serde_json::Value> {
    let (c, h) = crate::pair::square_image(name, info)?;
    let side = DcganConfig::power_of_two_canvas(h);
    let cfg = DcganConfig {
        channels: c,
        image_size: h,
        canvas: if canvas && side > h { side } else { 0 },
        ..base
    };
    cfg.validate(name)?;
    Ok(serde_json::to_value(cfg)?)
}

/// Registration for the command line.
pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "dcgan",
        family: "gan",
        output: Output::Images,
        capabilities: &[Capability::Interpolation],
        interpolation: Some("slerp in z"),
        summary: "DCGAN (Radford et al. 2016): strided convs, batch norm, Adam(2e-4, 0.5), non-saturating loss",
        default_config: |info| image_config("dcgan", info, DcganConfig::default(), true),
        build: |json, device| Ok(Box::new(Dcgan::new(Check::model("dcgan").parse(json)?, device)?)),
    }
}

/// WGAN-GP on the DCGAN networks.
pub fn wgan_gp_entry() -> ModelEntry {
    ModelEntry {
        name: "wgan-gp",
        family: "gan",
        output: Output::Images,
        capabilities: &[Capability::Interpolation],
        interpolation: Some("slerp in z"),
        summary: "WGAN-GP (Gulrajani et al. 2017): critic without batch norm, gradient penalty 10, 5 critic steps (batch = 5 x 64), Adam(1e-4, 0, 0.9)",
        default_config: |info| image_config("wgan-gp", info, DcganConfig::wgan_gp(), false),
        build: |json, device| Ok(Box::new(Dcgan::named("wgan-gp", Check::model("wgan-gp").parse(json)?, device)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(size: i64) -> DcganConfig {
        DcganConfig {
            image_size: size,
            z_dim: 8,
            ngf: 4,
            ndf: 4,
            ..Default::default()
        }
    }

    #[test]
    fn bad_config_values_are_one_line_errors_naming_the_key() {
        use serde_json::json;
        let bad = [
            ("channels", json!(0)),
            ("channels", json!(65)),
            ("image_size", json!(4)),
            ("image_size", json!(8192)),
            ("z_dim", json!(0)),
            ("z_dim", json!(100_000)),
            ("ngf", json!(-1)),
            ("ngf", json!(5000)), // ngf * 2 at 28x28 is over the width cap
            ("ndf", json!(0)),
            ("lr", json!(-1e-4)),
            ("beta1", json!(1.0)),
            ("beta2", json!(-0.1)),
            ("gp_lambda", json!(-1.0)),
            ("n_critic", json!(0)),
            ("n_critic", json!(-1)),
            ("loss", json!("bogus")),
            ("d_norm", json!("bogus")),
            ("lr", json!("fast")),
            ("canvas", json!(20)),
            ("canvas", json!(29)), // odd: no stride-2 layer fits
        ];
        genmodels_core::model::check::assert_rejects(&entry(), &crate::fashion_info(), &bad);
        let wgan = [("d_norm", json!("batch")), ("n_critic", json!(1000))];
        genmodels_core::model::check::assert_rejects(
            &wgan_gp_entry(),
            &crate::fashion_info(),
            &wgan,
        );
    }

    #[test]
    fn fashion_mnist_trains_on_the_pytorch_examples_32_canvas_and_samples_28() {
        let _rng = crate::test_lock();
        let json = (entry().default_config)(&crate::fashion_info()).unwrap();
        let cfg: DcganConfig = serde_json::from_value(json).unwrap();
        assert_eq!((cfg.image_size, cfg.canvas), (28, 32));
        // 4 -> 8 -> 16 -> 32: G's widths 256-128-64 as the example's.
        assert_eq!(cfg.geometry().unwrap(), (4, 3));
        let m = Dcgan::new(cfg.clone(), Device::Cpu).unwrap();
        let vars = m.pair.g_vs.variables();
        for (name, shape) in [
            ("proj.weight", [100, 256, 4, 4]),
            ("up0.weight", [256, 128, 4, 4]),
            ("up1.weight", [128, 64, 4, 4]),
            ("out.weight", [64, 1, 4, 4]),
        ] {
            assert_eq!(vars[name].size(), shape.to_vec(), "{name}");
        }
        let x = Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let p = m.pad(&x);
        assert_eq!(p.size(), vec![2, 1, 32, 32]);
        assert_eq!(m.crop(&p), x);
        // The border is background, -1.
        let ones = Tensor::ones([2, 1, 28, 28], (Kind::Float, Device::Cpu));
        let border = (m.pad(&ones) + 1.0).sum(Kind::Float).double_value(&[]);
        assert_eq!(border, 2.0 * 28.0 * 28.0 * 2.0);
        assert_eq!(m.generate(&m.latents(3)).size(), vec![3, 1, 28, 28]);
        // One training step takes 28x28 batches.
        let mut m = m;
        let batch = Batch { x, y: None };
        m.train_step(&batch, &StepCtx::default()).unwrap();
        // Run folders from before the canvas keep the 28-side networks.
        let mut old = serde_json::to_value(&cfg).unwrap();
        old.as_object_mut().unwrap().remove("canvas");
        let old: DcganConfig = serde_json::from_value(old).unwrap();
        assert_eq!((old.canvas, old.geometry().unwrap()), (0, (7, 2)));
    }

    #[test]
    fn shapes_for_several_sides() {
        let _rng = crate::test_lock();
        for (size, base, k) in [(28, 7, 2), (32, 4, 3), (64, 4, 4)] {
            let c = tiny(size);
            assert_eq!(c.geometry().unwrap(), (base, k));
            let m = Dcgan::new(c, Device::Cpu).unwrap();
            let x = m.generate(&m.latents(3));
            assert_eq!(x.size(), vec![3, 1, size, size]);
            assert!(x.abs().max().double_value(&[]) <= 1.0);
            assert_eq!(m.d.forward_t(&x, false).size(), vec![3]);
        }
        assert_eq!(tiny(30).geometry().unwrap(), (15, 1));
        assert!(tiny(9).geometry().is_err());
        assert!(tiny(4).geometry().is_err());
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        let _rng = crate::test_lock();
        let m = Dcgan::new(tiny(28), Device::Cpu).unwrap();
        let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let z = m.latents(4);
        let fake = m.g.forward_t(&z, true);
        let loss = m
            .cfg
            .loss
            .d_loss(&m.d.forward_t(&x, true), &m.d.forward_t(&fake, true));
        loss.backward();
        for (name, t) in m
            .pair
            .g_vs
            .variables()
            .into_iter()
            .chain(m.pair.d_vs.variables())
        {
            if t.requires_grad() {
                let g = t.grad();
                assert!(
                    g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                    "{name} got no gradient"
                );
            }
        }
    }

    #[test]
    fn the_logged_losses_are_the_non_saturating_losses() {
        let _rng = crate::test_lock();
        tch::manual_seed(3);
        let m = Dcgan::new(tiny(28), Device::Cpu).unwrap();
        let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        // Recompute the D loss by its formula on the same draws: -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))).
        tch::manual_seed(10);
        let z = m.latents(4);
        let fake = m.g.forward_t(&z, true);
        let (dr, df) = (m.d.forward_t(&x, true), m.d.forward_t(&fake, true));
        let by_formula = (-(dr.sigmoid().log().mean(Kind::Float))
            - (-df.sigmoid() + 1.0).log().mean(Kind::Float))
        .double_value(&[]);
        let mut m2 = Dcgan::new(tiny(28), Device::Cpu).unwrap();
        m2.pair.g_vs.copy(&m.pair.g_vs).unwrap();
        m2.pair.d_vs.copy(&m.pair.d_vs).unwrap();
        tch::manual_seed(10);
        let losses = m2
            .train_step(
                &Batch {
                    x: x.shallow_clone(),
                    y: None,
                },
                &StepCtx::default(),
            )
            .unwrap();
        assert!(
            (losses[0].1 - by_formula).abs() < 1e-5,
            "{} vs {by_formula}",
            losses[0].1
        );
    }
}

#[cfg(test)]
mod wgan_gp_tests {
    use super::*;

    fn tiny() -> DcganConfig {
        DcganConfig {
            z_dim: 8,
            ngf: 4,
            ndf: 4,
            ..DcganConfig::wgan_gp()
        }
    }

    #[test]
    fn the_critic_has_no_batch_norm_and_batch_norm_with_a_penalty_is_refused() {
        let _rng = crate::test_lock();
        let m = Dcgan::named("wgan-gp", tiny(), Device::Cpu).unwrap();
        assert!(m.pair.d_vs.variables().keys().all(|k| !k.contains("bn")));
        let bad = DcganConfig {
            d_norm: DNorm::Batch,
            ..tiny()
        };
        let err = Dcgan::new(bad, Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("batch norm"), "{err}");
        let layer = DcganConfig {
            d_norm: DNorm::Layer,
            ..tiny()
        };
        let m = Dcgan::new(layer, Device::Cpu).unwrap();
        assert!(m.pair.d_vs.variables().keys().any(|k| k.contains("_ln")));
    }

    #[test]
    fn five_critic_updates_each_on_its_own_slice_then_one_generator_update() {
        let _rng = crate::test_lock();
        let mut m = Dcgan::named("wgan-gp", tiny(), Device::Cpu).unwrap();
        let x = Tensor::rand([10, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let losses = m
            .train_step(&Batch { x, y: None }, &StepCtx::default())
            .unwrap();
        assert_eq!(m.pair.opt_d.steps(), 5);
        assert_eq!(m.pair.opt_g.steps(), 1);
        let names: Vec<&str> = losses.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["d_loss", "g_loss", "w_dist", "gp"]);
        assert!(losses.iter().all(|(_, v)| v.is_finite()));
        let x = Tensor::rand([3, 1, 28, 28], (Kind::Float, Device::Cpu));
        let err = m
            .train_step(&Batch { x, y: None }, &StepCtx::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("multiple of 5"), "{err}");
    }

    #[test]
    fn the_critic_loss_is_the_wasserstein_loss_plus_the_penalty() {
        let _rng = crate::test_lock();
        tch::manual_seed(5);
        let m = Dcgan::named(
            "wgan-gp",
            DcganConfig {
                n_critic: 1,
                ..tiny()
            },
            Device::Cpu,
        )
        .unwrap();
        let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        tch::manual_seed(11);
        let fake = m.g.forward_t(&m.latents(4), true);
        let w = (m.d.forward_t(&fake, true).mean(Kind::Float)
            - m.d.forward_t(&x, true).mean(Kind::Float))
        .double_value(&[]);
        // The penalty by hand: interpolates with the same uniform draw, gradient norms via autograd.
        let e = Tensor::rand([4, 1, 1, 1], (Kind::Float, Device::Cpu));
        let xh = (&e * &x + (-&e + 1.0) * fake.detach()).set_requires_grad(true);
        let g = Tensor::run_backward(
            &[m.d.forward_t(&xh, true).sum(Kind::Float)],
            &[&xh],
            false,
            false,
        )
        .remove(0);
        let norms = g
            .flatten(1, -1)
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
            .sqrt();
        let gp = ((norms - 1.0).square().mean(Kind::Float) * 10.0).double_value(&[]);
        let mut m2 = Dcgan::named("wgan-gp", m.cfg.clone(), Device::Cpu).unwrap();
        m2.pair.g_vs.copy(&m.pair.g_vs).unwrap();
        m2.pair.d_vs.copy(&m.pair.d_vs).unwrap();
        tch::manual_seed(11);
        let l = m2
            .train_step(&Batch { x, y: None }, &StepCtx::default())
            .unwrap();
        assert!((l[0].1 - w).abs() < 1e-5, "{} vs {w}", l[0].1);
        assert!(
            (l[3].1 - gp).abs() < 1e-4 * gp.max(1.0),
            "{} vs {gp}",
            l[3].1
        );
        assert!((l[2].1 + w).abs() < 1e-5);
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;
    use genmodels_core::checkpoint::Checkpoint;
    use genmodels_core::checkpoint::TrainState;
    use genmodels_core::model::load_model_state;

    #[test]
    fn checkpoint_round_trip_reproduces_samples_bit_for_bit() {
        let _rng = crate::test_lock();
        let cfg = DcganConfig {
            image_size: 28,
            z_dim: 8,
            ngf: 4,
            ndf: 4,
            ..Default::default()
        };
        let mut m = Dcgan::new(cfg.clone(), Device::Cpu).unwrap();
        let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        m.train_step(&Batch { x, y: None }, &StepCtx::default())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut ck = Checkpoint::new("dcgan", m.config_json(), TrainState::default());
        for (name, vs) in m.var_stores() {
            ck.add_var_store(&format!("model/{name}"), vs);
        }
        m.save_optimizers(&mut ck);
        ck.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        let mut m2 = (entry().build)(&back.meta.config, Device::Cpu).unwrap();
        load_model_state(m2.as_mut(), &back, &p, true).unwrap();
        tch::manual_seed(42);
        let Samples::Images(a) = m.sample(6).unwrap() else {
            panic!("images expected")
        };
        tch::manual_seed(42);
        let Samples::Images(b) = m2.sample(6).unwrap() else {
            panic!("images expected")
        };
        assert!(a.equal(&b));
    }
}
