//! DCGAN (Radford, Metz & Chintala 2016, "Unsupervised Representation Learning with Deep
//! Convolutional Generative Adversarial Networks").
//!
//! The paper's architecture guidelines (Sec. 3): strided convolutions instead of pooling,
//! batch norm in both networks (except the generator's output and the discriminator's input
//! layer), no fully connected hidden layers, ReLU in the generator with tanh output, LeakyReLU
//! (0.2) in the discriminator. Training (Sec. 4): weights from N(0, 0.02), Adam with lr 2e-4 and
//! beta1 0.5, batch 128, the non-saturating generator loss of Goodfellow et al.
//!
//! The paper works at 64x64 with four up-samplings from 4x4; here the number of up-samplings
//! follows the image side (28 = 7 * 2^2 for Fashion-MNIST, 32 = 4 * 2^3, 64 = 4 * 2^4), keeping
//! the same layer pattern.

use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::Batch;
use genmodels_core::losses::GanLoss;
use genmodels_core::model::{DataInfo, Losses, Model, ModelEntry, Samples};
use genmodels_core::optim::{Adam, AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::{self, ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

/// DCGAN settings; defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DcganConfig {
    /// Output image channels.
    pub channels: i64,
    /// Output image side (square); must be base * 2^k with base >= 4 and k >= 1.
    pub image_size: i64,
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
}

impl Default for DcganConfig {
    fn default() -> Self {
        DcganConfig {
            channels: 1,
            image_size: 28,
            z_dim: 100,
            ngf: 64,
            ndf: 64,
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            loss: GanLoss::NonSaturating,
        }
    }
}

impl DcganConfig {
    /// (base side, number of stride-2 layers) for the image side.
    pub fn geometry(&self) -> Result<(i64, usize)> {
        let (mut side, mut k) = (self.image_size, 0usize);
        while side % 2 == 0 && side / 2 >= 4 {
            side /= 2;
            k += 1;
        }
        if k == 0 || side < 4 {
            return Err(Error::invalid(format!(
                "DCGAN image_size {} must be base * 2^k with base >= 4 and k >= 1 (e.g. 28, 32, 64)",
                self.image_size
            )));
        }
        Ok((side, k))
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
        .add_fn(|x| x.relu());
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
            .add_fn(|x| x.relu());
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
    let mut seq = nn::seq_t()
        .add(nn::conv2d(&p / "in", c.channels, ch, 4, conv_cfg()))
        .add_fn(|x| x.leaky_relu_with(0.2));
    for i in 0..k - 1 {
        seq = seq
            .add(nn::conv2d(
                &p / format!("down{i}"),
                ch,
                ch * 2,
                4,
                conv_cfg(),
            ))
            .add(bn(&p / format!("down{i}_bn"), ch * 2))
            .add_fn(|x| x.leaky_relu_with(0.2));
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

trait LeakyRelu {
    fn leaky_relu_with(&self, slope: f64) -> Tensor;
}

impl LeakyRelu for Tensor {
    fn leaky_relu_with(&self, slope: f64) -> Tensor {
        self.maximum(&(self * slope))
    }
}

/// A DCGAN with its two optimisers.
pub struct Dcgan {
    pub cfg: DcganConfig,
    pub g_vs: VarStore,
    pub d_vs: VarStore,
    pub g: nn::SequentialT,
    pub d: nn::SequentialT,
    opt_g: Adam,
    opt_d: Adam,
    device: Device,
}

impl Dcgan {
    pub fn new(cfg: DcganConfig, device: Device) -> Result<Self> {
        let g_vs = VarStore::new(device);
        let d_vs = VarStore::new(device);
        let g = generator(g_vs.root(), &cfg)?;
        let d = discriminator(d_vs.root(), &cfg)?;
        let adam = AdamConfig::new(cfg.lr, cfg.beta1, cfg.beta2);
        let opt_g = Adam::new(&g_vs, adam);
        let opt_d = Adam::new(&d_vs, adam);
        Ok(Dcgan {
            cfg,
            g_vs,
            d_vs,
            g,
            d,
            opt_g,
            opt_d,
            device,
        })
    }

    /// Latents z ~ N(0, I), shape `[n, z_dim]`.
    pub fn latents(&self, n: i64) -> Tensor {
        Tensor::randn([n, self.cfg.z_dim], (Kind::Float, self.device))
    }

    /// Generator output for given latents, in evaluation mode (batch-norm running statistics).
    pub fn generate(&self, z: &Tensor) -> Tensor {
        tch::no_grad(|| self.g.forward_t(z, false))
    }
}

impl Model for Dcgan {
    fn name(&self) -> &str {
        "dcgan"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    /// Alternating updates (Goodfellow et al. Alg. 1 with k = 1): first D on a real batch and a
    /// detached fake batch, then G through the updated D with the non-saturating loss.
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
        let n = x.size()[0];
        let z = self.latents(n);
        let fake = self.g.forward_t(&z, true);
        let d_real = self.d.forward_t(x, true);
        let d_fake = self.d.forward_t(&fake.detach(), true);
        let d_loss = self.cfg.loss.d_loss(&d_real, &d_fake);
        self.opt_d.backward_step(&d_loss, ctx);
        let g_loss = self.cfg.loss.g_loss(&self.d.forward_t(&fake, true));
        self.opt_g.backward_step(&g_loss, ctx);
        let sig = |t: &Tensor| t.detach().sigmoid().mean(Kind::Float).double_value(&[]);
        Ok(vec![
            ("d_loss".into(), d_loss.double_value(&[])),
            ("g_loss".into(), g_loss.double_value(&[])),
            ("d_real".into(), sig(&d_real)),
            ("d_fake".into(), sig(&d_fake)),
        ])
    }

    fn sample(&mut self, n: usize) -> Result<Samples> {
        let z = self.latents(n as i64);
        Ok(Samples::Images(self.generate(&z)))
    }

    fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        vec![("g", &self.g_vs), ("d", &self.d_vs)]
    }

    fn ema_store(&self) -> Option<&VarStore> {
        Some(&self.g_vs)
    }

    fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.opt_g.save_state("g", ckpt);
        self.opt_d.save_state("d", ckpt);
    }

    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.opt_g.load_state("g", ckpt, path)?;
        self.opt_d.load_state("d", ckpt, path)
    }
}

/// Registration for the command line.
pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "dcgan",
        family: "gan",
        summary: "DCGAN (Radford et al. 2016): strided convs, batch norm, Adam(2e-4, 0.5), non-saturating loss",
        default_config: |info: &DataInfo| {
            let (c, h, w) = match info.example_shape.as_slice() {
                &[c, h, w] => (c, h, w),
                s => return Err(Error::invalid(format!("DCGAN needs image data [C, H, W], got examples of shape {s:?}"))),
            };
            if h != w {
                return Err(Error::invalid(format!("DCGAN needs square images, got {h}x{w}")));
            }
            let cfg = DcganConfig { channels: c, image_size: h, ..Default::default() };
            cfg.geometry()?;
            Ok(serde_json::to_value(cfg)?)
        },
        build: |json, device| {
            let cfg: DcganConfig = serde_json::from_value(json.clone()).map_err(|e| Error::invalid(format!("DCGAN config: {e}")))?;
            Ok(Box::new(Dcgan::new(cfg, device)?))
        },
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
    fn shapes_for_several_sides() {
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
        let m = Dcgan::new(tiny(28), Device::Cpu).unwrap();
        let x = Tensor::rand([4, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let z = m.latents(4);
        let fake = m.g.forward_t(&z, true);
        let loss = m
            .cfg
            .loss
            .d_loss(&m.d.forward_t(&x, true), &m.d.forward_t(&fake, true));
        loss.backward();
        for (name, t) in m.g_vs.variables().into_iter().chain(m.d_vs.variables()) {
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
        m2.g_vs.copy(&m.g_vs).unwrap();
        m2.d_vs.copy(&m.d_vs).unwrap();
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
mod checkpoint_tests {
    use super::*;
    use genmodels_core::checkpoint::TrainState;
    use genmodels_core::model::load_model_state;

    #[test]
    fn checkpoint_round_trip_reproduces_samples_bit_for_bit() {
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
