//! VAE-GAN (Larsen, Sonderby, Larochelle & Winther 2016, "Autoencoding beyond pixels using a
//! learned similarity metric").
//!
//! A VAE whose decoder is also a GAN generator, and whose reconstruction error is measured in
//! the discriminator's feature space instead of pixels:
//!
//! - `L_prior = KL(q(z|x) || p(z))`;
//! - `L_llike^Dis_l = -E_q log p(Dis_l(x) | z)` with a Gaussian of unit variance on the
//!   features of D's `l`-th layer: `0.5 * ||Dis_l(Dec(z)) - Dis_l(x)||^2` (Eq. 8-9);
//! - `L_GAN = log Dis(x) + log(1 - Dis(Dec(z))) + log(1 - Dis(Dec(z_p)))`, with both the
//!   reconstructions and samples from the prior as fakes (Eq. 10).
//!
//! Each network minimises its own part (Alg. 1): the encoder `L_prior + L_llike`, the decoder
//! `gamma * L_llike - L_GAN` (here with the non-saturating generator loss), the discriminator
//! `-L_GAN`; the GAN loss never reaches the encoder and `L_llike` never trains D. The three
//! updates alternate within a step (D, then the decoder, then the encoder), each with the
//! networks it must not train frozen.
//!
//! Networks (Table, Sec. 4, scaled to 28x28 and a CPU): encoder 5x5 stride-2 convolutions
//! 32 -> 64 with batch norm and ReLU, a 256-unit layer, then mean and log-variance of 32
//! latents; decoder a 64x7x7 layer and 4x4 stride-2 transposed convolutions 64 -> 32 -> C
//! (tanh); discriminator 5x5 stride-2 convolutions 32 -> 64 (its output is `Dis_l`), a 256-unit
//! layer and the logit. RMSProp in the paper; Adam(2e-4, 0.5) here, as for DCGAN.

use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::Batch;
use genmodels_core::losses::gaussian_kl;
use genmodels_core::model::check::{Check, MAX_LAYER_WEIGHTS, MAX_SIDE, MAX_WIDTH};
use genmodels_core::model::{
    Capability, DataInfo, Losses, Model, ModelEntry, Output, Reconstruct, Samples,
};
use genmodels_core::optim::{Adam, AdamConfig, Frozen, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::{self, Module, ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeGanConfig {
    pub channels: i64,
    /// Side of the images; a multiple of 4.
    pub image_size: i64,
    pub z_dim: i64,
    /// Width of the first convolution (the second has twice as many channels).
    pub width: i64,
    pub hidden: i64,
    /// Weight of the feature-space reconstruction in the decoder's loss (against the GAN
    /// loss).
    pub gamma: f64,
    pub lr: f64,
    pub beta1: f64,
}

impl Default for VaeGanConfig {
    fn default() -> Self {
        VaeGanConfig {
            channels: 1,
            image_size: 28,
            z_dim: 32,
            width: 32,
            hidden: 256,
            gamma: 0.01,
            lr: 2e-4,
            beta1: 0.5,
        }
    }
}

impl VaeGanConfig {
    /// Every field in range, before any network is made.
    pub fn validate(&self) -> Result<()> {
        let c = Check::model("vaegan");
        c.image(self.channels, self.image_size, 4, MAX_SIDE)?;
        c.ensure(
            self.image_size % 4 == 0,
            "image_size",
            self.image_size,
            "a multiple of 4 (two stride-2 layers)",
        )?;
        c.int("z_dim", self.z_dim, 1, MAX_WIDTH)?;
        // The second convolution has 2 * width channels.
        c.int("width", self.width, 1, MAX_WIDTH / 2)?;
        c.int("hidden", self.hidden, 1, MAX_WIDTH)?;
        // The encoder's and D's fully connected layers are (2 width (image_size / 4)^2) x hidden.
        let features = 2 * self.width * (self.image_size / 4).pow(2);
        c.ensure(
            features * self.hidden <= MAX_LAYER_WEIGHTS,
            "hidden",
            self.hidden,
            format_args!(
                "at most {} for {features} convolution features (one layer's weights at most 2^30)",
                MAX_LAYER_WEIGHTS / features
            ),
        )?;
        c.non_negative("gamma", self.gamma)?;
        c.non_negative("lr", self.lr)?;
        c.fraction("beta1", self.beta1)
    }
}

fn conv5(p: nn::Path, i: i64, o: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        i,
        o,
        5,
        nn::ConvConfig {
            stride: 2,
            padding: 2,
            ..Default::default()
        },
    )
}

fn up4(p: nn::Path, i: i64, o: i64) -> nn::ConvTranspose2D {
    nn::conv_transpose2d(
        p,
        i,
        o,
        4,
        nn::ConvTransposeConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        },
    )
}

#[derive(Debug)]
struct Encoder {
    c1: nn::Conv2D,
    b1: nn::BatchNorm,
    c2: nn::Conv2D,
    b2: nn::BatchNorm,
    fc: nn::Linear,
    bf: nn::BatchNorm,
    out: nn::Linear,
}

#[derive(Debug)]
struct Decoder {
    fc: nn::Linear,
    bf: nn::BatchNorm,
    u1: nn::ConvTranspose2D,
    b1: nn::BatchNorm,
    u2: nn::ConvTranspose2D,
    w: i64,
    side: i64,
}

#[derive(Debug)]
struct Discriminator {
    c1: nn::Conv2D,
    c2: nn::Conv2D,
    b2: nn::BatchNorm,
    fc: nn::Linear,
    bf: nn::BatchNorm,
    out: nn::Linear,
}

impl Encoder {
    fn new(p: nn::Path, c: &VaeGanConfig) -> Self {
        let (w, s) = (c.width, c.image_size / 4);
        Encoder {
            c1: conv5(&p / "c1", c.channels, w),
            b1: nn::batch_norm2d(&p / "b1", w, Default::default()),
            c2: conv5(&p / "c2", w, 2 * w),
            b2: nn::batch_norm2d(&p / "b2", 2 * w, Default::default()),
            fc: nn::linear(&p / "fc", 2 * w * s * s, c.hidden, Default::default()),
            bf: nn::batch_norm1d(&p / "bf", c.hidden, Default::default()),
            out: nn::linear(&p / "out", c.hidden, 2 * c.z_dim, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> (Tensor, Tensor) {
        let h = self.b1.forward_t(&self.c1.forward(x), train).relu();
        let h = self.b2.forward_t(&self.c2.forward(&h), train).relu();
        let h = self
            .bf
            .forward_t(&self.fc.forward(&h.flatten(1, -1)), train)
            .relu();
        let o = self.out.forward(&h);
        let z = o.size()[1] / 2;
        (o.narrow(1, 0, z), o.narrow(1, z, z))
    }
}

impl Decoder {
    fn new(p: nn::Path, c: &VaeGanConfig) -> Self {
        let (w, s) = (c.width, c.image_size / 4);
        Decoder {
            fc: nn::linear(&p / "fc", c.z_dim, 2 * w * s * s, Default::default()),
            bf: nn::batch_norm1d(&p / "bf", 2 * w * s * s, Default::default()),
            u1: up4(&p / "u1", 2 * w, w),
            b1: nn::batch_norm2d(&p / "b1", w, Default::default()),
            u2: up4(&p / "u2", w, c.channels),
            w,
            side: s,
        }
    }

    fn forward(&self, z: &Tensor, train: bool) -> Tensor {
        let h = self.bf.forward_t(&self.fc.forward(z), train).relu();
        let h = h.view([-1, 2 * self.w, self.side, self.side]);
        let h = self.b1.forward_t(&self.u1.forward(&h), train).relu();
        self.u2.forward(&h).tanh()
    }
}

impl Discriminator {
    fn new(p: nn::Path, c: &VaeGanConfig) -> Self {
        let (w, s) = (c.width, c.image_size / 4);
        Discriminator {
            c1: conv5(&p / "c1", c.channels, w),
            c2: conv5(&p / "c2", w, 2 * w),
            b2: nn::batch_norm2d(&p / "b2", 2 * w, Default::default()),
            fc: nn::linear(&p / "fc", 2 * w * s * s, c.hidden, Default::default()),
            bf: nn::batch_norm1d(&p / "bf", c.hidden, Default::default()),
            out: nn::linear(&p / "out", c.hidden, 1, Default::default()),
        }
    }

    /// `(Dis_l(x) [N, F], logit [N])`.
    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let h = self.c1.forward(x).relu();
        let feat = self.b2.forward_t(&self.c2.forward(&h), true).relu();
        let h = self
            .bf
            .forward_t(&self.fc.forward(&feat.flatten(1, -1)), true)
            .relu();
        (feat.flatten(1, -1), self.out.forward(&h).squeeze_dim(1))
    }
}

fn bce(logits: &Tensor, target: f64) -> Tensor {
    logits.binary_cross_entropy_with_logits::<Tensor>(
        &logits.full_like(target),
        None,
        None,
        Reduction::Mean,
    )
}

/// `0.5 * ||a - b||^2` summed over features, averaged over the batch (`L_llike^Dis_l`).
pub fn feature_nll(rec: &Tensor, real: &Tensor) -> Tensor {
    ((rec - real).square().sum_dim_intlist(1, false, Kind::Float) * 0.5).mean(Kind::Float)
}

pub struct VaeGan {
    pub cfg: VaeGanConfig,
    enc_vs: VarStore,
    dec_vs: VarStore,
    dis_vs: VarStore,
    opt_enc: Adam,
    opt_dec: Adam,
    opt_dis: Adam,
    enc: Encoder,
    dec: Decoder,
    dis: Discriminator,
    device: Device,
}

impl VaeGan {
    pub fn new(cfg: VaeGanConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let (enc_vs, dec_vs, dis_vs) = (
            VarStore::new(device),
            VarStore::new(device),
            VarStore::new(device),
        );
        let enc = Encoder::new(enc_vs.root() / "enc", &cfg);
        let dec = Decoder::new(dec_vs.root() / "dec", &cfg);
        let dis = Discriminator::new(dis_vs.root() / "dis", &cfg);
        let adam = AdamConfig::new(cfg.lr, cfg.beta1, 0.999);
        Ok(VaeGan {
            opt_enc: Adam::new(&enc_vs, adam),
            opt_dec: Adam::new(&dec_vs, adam),
            opt_dis: Adam::new(&dis_vs, adam),
            cfg,
            enc_vs,
            dec_vs,
            dis_vs,
            enc,
            dec,
            dis,
            device,
        })
    }

    fn check(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let want = [c.channels, c.image_size, c.image_size];
        if x.dim() != 4 || x.size()[1..] != want {
            return Err(Error::invalid(format!(
                "vaegan configured for images {want:?}, got a batch of {:?}",
                x.size()
            )));
        }
        Ok(x.to_device(self.device))
    }

    fn reparam(mu: &Tensor, logvar: &Tensor) -> Tensor {
        mu + (logvar * 0.5).exp() * mu.randn_like()
    }

    fn prior(&self, n: i64) -> Tensor {
        Tensor::randn([n, self.cfg.z_dim], (Kind::Float, self.device))
    }

    /// Reconstructions (decoder at the posterior mean, evaluation mode) of images in [-1, 1].
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.check(x)?;
        Ok(tch::no_grad(|| {
            self.dec.forward(&self.enc.forward(&x, false).0, false)
        }))
    }
}

impl Model for VaeGan {
    fn as_reconstruct(&mut self) -> Option<&mut dyn Reconstruct> {
        Some(self)
    }

    fn name(&self) -> &str {
        "vaegan"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let x = self.check(&batch.x)?;
        let n = x.size()[0];
        // D: real against reconstructions and prior samples (Eq. 10).
        let (z, rec, gen) = tch::no_grad(|| {
            let (mu, logvar) = self.enc.forward(&x, true);
            let z = Self::reparam(&mu, &logvar);
            let rec = self.dec.forward(&z, true);
            (z, rec, self.dec.forward(&self.prior(n), true))
        });
        let (_, d_real) = self.dis.forward(&x);
        let (_, d_rec) = self.dis.forward(&rec);
        let (_, d_gen) = self.dis.forward(&gen);
        let d_loss = bce(&d_real, 1.0) + bce(&d_rec, 0.0) + bce(&d_gen, 0.0);
        self.opt_dis.backward_step(&d_loss, ctx);
        // Decoder: gamma * L_llike + non-saturating GAN loss, D frozen, the encoder's sample
        // held fixed so nothing reaches the encoder.
        let frozen_dis = Frozen::store(&self.dis_vs);
        let f_real = tch::no_grad(|| self.dis.forward(&x).0);
        let rec = self.dec.forward(&z, true);
        let (f_rec, d_rec) = self.dis.forward(&rec);
        let (_, d_gen) = self.dis.forward(&self.dec.forward(&self.prior(n), true));
        let llike_dec = feature_nll(&f_rec, &f_real);
        let g_adv = bce(&d_rec, 1.0) + bce(&d_gen, 1.0);
        let dec_loss = &llike_dec * self.cfg.gamma + &g_adv;
        self.opt_dec.backward_step(&dec_loss, ctx);
        // Encoder: KL + L_llike through the (frozen) decoder and D.
        let frozen_dec = Frozen::store(&self.dec_vs);
        let (mu, logvar) = self.enc.forward(&x, true);
        let kl = gaussian_kl(&mu, &logvar).mean(Kind::Float);
        let rec = self.dec.forward(&Self::reparam(&mu, &logvar), true);
        let llike = feature_nll(&self.dis.forward(&rec).0, &f_real);
        let enc_loss = &kl + &llike;
        self.opt_enc.backward_step(&enc_loss, ctx);
        drop(frozen_dec);
        drop(frozen_dis);
        Ok(vec![
            ("d_loss".into(), d_loss.double_value(&[])),
            ("g_adv".into(), g_adv.double_value(&[])),
            ("llike".into(), llike.double_value(&[])),
            ("kl".into(), kl.double_value(&[])),
            (
                "pixel_mse".into(),
                rec.detach().mse_loss(&x, Reduction::Mean).double_value(&[]),
            ),
        ])
    }

    fn sample(&mut self, n: usize) -> Result<Samples> {
        let z = self.prior(n as i64);
        Ok(Samples::Images(tch::no_grad(|| {
            self.dec.forward(&z, false)
        })))
    }

    fn interpolate(&mut self, rows: usize, steps: usize) -> Result<Option<Tensor>> {
        let (a, b) = (self.prior(rows as i64), self.prior(rows as i64));
        let z = genmodels_core::samplers::slerp_grid(&a, &b, steps);
        Ok(Some(tch::no_grad(|| self.dec.forward(&z, false))))
    }

    fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        vec![
            ("enc", &self.enc_vs),
            ("dec", &self.dec_vs),
            ("dis", &self.dis_vs),
        ]
    }

    fn ema_store(&self) -> Option<&VarStore> {
        Some(&self.dec_vs)
    }

    fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.opt_enc.save_state("enc", ckpt);
        self.opt_dec.save_state("dec", ckpt);
        self.opt_dis.save_state("dis", ckpt);
    }

    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.opt_enc.load_state("enc", ckpt, path)?;
        self.opt_dec.load_state("dec", ckpt, path)?;
        self.opt_dis.load_state("dis", ckpt, path)
    }
}

impl Reconstruct for VaeGan {
    fn reconstruct(&mut self, x: &Tensor) -> Result<Tensor> {
        VaeGan::reconstruct(self, x)
    }
}

pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "vaegan",
        family: "vae",
        output: Output::Images,
        capabilities: &[Capability::Interpolation, Capability::Reconstruction],
        interpolation: Some("slerp in z"),
        summary: "VAE-GAN (Larsen et al. 2016): VAE decoder as GAN generator, reconstruction in D's feature space",
        default_config: |info: &DataInfo| {
            crate::image_config(
                info,
                "vaegan",
                |channels, image_size| VaeGanConfig {
                    channels,
                    image_size,
                    ..Default::default()
                },
                VaeGanConfig::validate,
            )
        },
        build: |json, device| {
            let cfg: VaeGanConfig = Check::model("vaegan").parse(json)?;
            Ok(Box::new(VaeGan::new(cfg, device)?))
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
            ("channels", json!(0)),
            ("image_size", json!(26)),
            ("image_size", json!(0)),
            ("z_dim", json!(0)),
            ("width", json!(-32)),
            ("width", json!(8192)), // its second convolution would be 16384 wide
            ("hidden", json!(0)),
            ("gamma", json!(-0.01)),
            ("lr", json!(-2e-4)),
            ("beta1", json!(1.0)),
        ];
        genmodels_core::model::check::assert_rejects(&entry(), &crate::fashion_info(), &bad);
        // At 2048 x 2048 the fully connected layers would have 2 * 32 * 512^2 * 256 weights.
        let big = VaeGanConfig {
            image_size: 2048,
            ..Default::default()
        };
        let e = big.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("vaegan config: `hidden` = 256, expected at most 64"),
            "{e}"
        );
    }

    fn tiny() -> VaeGan {
        let cfg = VaeGanConfig {
            image_size: 8,
            z_dim: 4,
            width: 4,
            hidden: 8,
            ..Default::default()
        };
        VaeGan::new(cfg, Device::Cpu).unwrap()
    }

    fn grads(vs: &VarStore) -> Vec<Tensor> {
        let mut v = vs.variables().into_iter().collect::<Vec<_>>();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(_, t)| t.grad().copy())
            .collect()
    }

    /// Which network each loss reaches (Alg. 1). With a learning rate of 0 nothing moves, so
    /// two steps from the same seed differ only by gamma: the encoder's and D's gradients must
    /// not change with it (gamma weights the decoder's loss only), the decoder's must; and D's
    /// gradient is that of its own GAN loss alone (no feature term reaches it).
    #[test]
    fn each_network_gets_exactly_its_own_losses() {
        let _rng = crate::test_lock();
        let x = Tensor::rand([6, 1, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let batch = Batch {
            x: x.shallow_clone(),
            y: None,
        };
        let step = |gamma: f64| {
            tch::manual_seed(5);
            let mut m = VaeGan::new(
                VaeGanConfig {
                    gamma,
                    lr: 0.0,
                    ..tiny().cfg
                },
                Device::Cpu,
            )
            .unwrap();
            tch::manual_seed(6);
            m.train_step(&batch, &StepCtx::default()).unwrap();
            (grads(&m.enc_vs), grads(&m.dec_vs), grads(&m.dis_vs))
        };
        let (e0, d0, s0) = step(0.0);
        let (e1, d1, s1) = step(1000.0);
        let same = |a: &[Tensor], b: &[Tensor]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| x.allclose(y, 1e-6, 1e-7, false))
        };
        assert!(same(&e0, &e1), "gamma changed the encoder's gradient");
        assert!(same(&s0, &s1), "gamma changed D's gradient");
        assert!(
            !same(&d0, &d1),
            "gamma did not change the decoder's gradient"
        );
        // D's gradient is that of -L_GAN alone, drawn with the same noise.
        tch::manual_seed(5);
        let m = VaeGan::new(
            VaeGanConfig {
                lr: 0.0,
                ..tiny().cfg
            },
            Device::Cpu,
        )
        .unwrap();
        tch::manual_seed(6);
        let (rec, gen) = tch::no_grad(|| {
            let (mu, logvar) = m.enc.forward(&x, true);
            let z = VaeGan::reparam(&mu, &logvar);
            (m.dec.forward(&z, true), m.dec.forward(&m.prior(6), true))
        });
        let d_loss = bce(&m.dis.forward(&x).1, 1.0)
            + bce(&m.dis.forward(&rec).1, 0.0)
            + bce(&m.dis.forward(&gen).1, 0.0);
        d_loss.backward();
        assert!(
            same(&grads(&m.dis_vs), &s0),
            "D's gradient is not its GAN loss's"
        );
        // The formula of the feature term.
        let a = Tensor::from_slice(&[1.0f32, 2.0, 0.0, 0.0]).view([2, 2]);
        let b = Tensor::from_slice(&[0.0f32, 0.0, 3.0, 0.0]).view([2, 2]);
        let v = feature_nll(&a, &b).double_value(&[]);
        assert!((v - 0.5 * (5.0 + 9.0) / 2.0).abs() < 1e-6);
        // One step: every parameter of every network moves.
        let mut m = tiny();
        let before: Vec<Tensor> = [&m.enc_vs, &m.dec_vs, &m.dis_vs]
            .iter()
            .flat_map(|vs| vs.trainable_variables())
            .map(|t| t.copy())
            .collect();
        let l = m.train_step(&batch, &StepCtx::default()).unwrap();
        assert!(l.iter().all(|(_, v)| v.is_finite()), "{l:?}");
        let after: Vec<Tensor> = [&m.enc_vs, &m.dec_vs, &m.dis_vs]
            .iter()
            .flat_map(|vs| vs.trainable_variables())
            .collect();
        for (a, b) in before.iter().zip(&after) {
            assert!(!a.equal(b), "a parameter did not move");
        }
        // Every store is trainable again after the step's freezing.
        assert!(after.iter().all(|t| t.requires_grad()));
        let Samples::Images(s) = m.sample(3).unwrap() else {
            panic!("images")
        };
        assert_eq!(s.size(), [3, 1, 8, 8]);
        assert_eq!(m.reconstruct(&x).unwrap().size(), [6, 1, 8, 8]);
        assert!(m
            .check(&Tensor::zeros([1, 1, 9, 9], (Kind::Float, Device::Cpu)))
            .is_err());
    }
}
