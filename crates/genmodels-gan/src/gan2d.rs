//! GANs on 2-D points, the testbed for mode collapse (ring-8 and grid-25 mixtures).
//!
//! A plain GAN (Goodfellow et al. 2014) with MLPs is known to cover only some of the modes of
//! these mixtures. Two remedies can be switched on and compared with `genmodels metrics`
//! (mode coverage):
//! - `minibatch_std`: the discriminator sees the batch's mean standard deviation of its last
//!   hidden features as one extra feature (Karras et al. 2018, Sec. 3), so a collapsed batch is
//!   easy to tell from real data;
//! - `loss = "wasserstein"` with `gp_lambda > 0` and `n_critic = 5`: WGAN-GP (Gulrajani et al.
//!   2017; their toy experiments use lambda 0.1 and Adam(1e-4, 0.5, 0.9));
//! - `pack = m`: PacGAN (Lin et al. 2018): D judges m samples at once, concatenated along the
//!   feature axis into one input of width 2m, all real or all generated (each slot an
//!   independent draw); a batch of N points becomes N / m packed inputs.
//!
//! Networks by default: G z(16) -> 128 -> 128 -> 2 with ReLU; D 2 -> 128 -> 128 -> 1 with
//! LeakyReLU 0.2. PacGAN's 2-D networks (its code, `synthetic_data_experiments`) are a setting:
//! `z_dim = 2, hidden = 400, g_layers = 4, g_batch_norm = true` (linear layers without bias,
//! batch norm, ReLU) and `d_hidden = 200, d_layers = 3, maxout = 5` (maxout units of 5 pieces),
//! `init_std = 0.02`, Adam(1e-4, 0.8, 0.999).

use crate::pair::GanPair;
use genmodels_core::data::Batch;
use genmodels_core::losses::{gradient_penalty, GanLoss};
use genmodels_core::model::check::{Check, MAX_WIDTH};
use genmodels_core::model::{DataInfo, Losses, Model, ModelEntry, Output, Samples};
use genmodels_core::optim::{AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gan2dConfig {
    pub z_dim: i64,
    pub hidden: i64,
    pub loss: GanLoss,
    /// Gradient-penalty weight (0: off).
    pub gp_lambda: f64,
    /// Critic updates per generator update (on the same real batch, fresh latents each time).
    pub n_critic: usize,
    pub minibatch_std: bool,
    /// PacGAN's packing degree m (1: no packing).
    pub pack: i64,
    /// Hidden layers of G and of D; D's width (0: `hidden`).
    pub g_layers: i64,
    pub d_layers: i64,
    pub d_hidden: i64,
    /// Batch norm after G's hidden linear layers (then without bias), as PacGAN's G.
    pub g_batch_norm: bool,
    /// D's hidden units: maxout over this many pieces (PacGAN: 5); 0: LeakyReLU 0.2.
    pub maxout: i64,
    /// Weights drawn from N(0, init_std) and biases zero (PacGAN: 0.02); 0: tch's default
    /// (Kaiming uniform with the ReLU gain, 2.45 times PyTorch's Linear bound).
    pub init_std: f64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
}

impl Default for Gan2dConfig {
    fn default() -> Self {
        Gan2dConfig {
            z_dim: 16,
            hidden: 128,
            loss: GanLoss::NonSaturating,
            gp_lambda: 0.0,
            n_critic: 1,
            minibatch_std: false,
            pack: 1,
            g_layers: 2,
            d_layers: 2,
            d_hidden: 0,
            g_batch_norm: false,
            maxout: 0,
            init_std: 0.0,
            lr: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
        }
    }
}

impl Gan2dConfig {
    /// Every field in range, before any network is made.
    pub fn validate(&self) -> Result<()> {
        let c = Check::model("gan2d");
        c.int("z_dim", self.z_dim, 1, MAX_WIDTH)?;
        c.int("hidden", self.hidden, 1, MAX_WIDTH)?;
        c.non_negative("gp_lambda", self.gp_lambda)?;
        c.int("n_critic", self.n_critic, 1, 100)?;
        c.int("pack", self.pack, 1, 64)?;
        c.int("g_layers", self.g_layers, 1, 32)?;
        c.int("d_layers", self.d_layers, 1, 32)?;
        c.int("d_hidden", self.d_hidden, 0, MAX_WIDTH)?;
        c.ensure(
            self.maxout == 0 || (2..=64).contains(&self.maxout),
            "maxout",
            self.maxout,
            "0 (LeakyReLU) or an integer from 2 to 64 (pieces per maxout unit)",
        )?;
        c.ensure(
            (0.0..=10.0).contains(&self.init_std),
            "init_std",
            self.init_std,
            "a standard deviation from 0 (default initialisation) to 10",
        )?;
        c.adam("lr", self.lr, self.beta1, self.beta2)
    }
}

pub struct Gan2d {
    pub cfg: Gan2dConfig,
    pair: GanPair,
    g: nn::SequentialT,
    d_body: nn::SequentialT,
    d_out: nn::Linear,
    device: Device,
}

impl Gan2dConfig {
    /// D's hidden width.
    pub fn d_width(&self) -> i64 {
        if self.d_hidden > 0 {
            self.d_hidden
        } else {
            self.hidden
        }
    }
}

impl Gan2d {
    pub fn new(cfg: Gan2dConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let adam = AdamConfig::new(cfg.lr, cfg.beta1, cfg.beta2);
        let (h, dh) = (cfg.hidden, cfg.d_width());
        let lin = |p: nn::Path, i: i64, o: i64, bias: bool| {
            let c = if cfg.init_std > 0.0 {
                nn::LinearConfig {
                    ws_init: nn::Init::Randn {
                        mean: 0.0,
                        stdev: cfg.init_std,
                    },
                    bs_init: Some(nn::Init::Const(0.0)),
                    bias,
                }
            } else {
                nn::LinearConfig {
                    bias,
                    ..Default::default()
                }
            };
            nn::linear(p, i, o, c)
        };
        let (pair, (g, d_body, d_out)) = GanPair::new(device, adam, adam, |g_vs, d_vs| {
            let (gp, dp) = (g_vs.root(), d_vs.root());
            // Layer names l1, l2, ... as before the options existed (checkpoints still load).
            let mut g = nn::seq_t();
            let mut width = cfg.z_dim;
            for i in 1..=cfg.g_layers {
                g = g.add(lin(&gp / format!("l{i}"), width, h, !cfg.g_batch_norm));
                if cfg.g_batch_norm {
                    g = g.add(nn::batch_norm1d(
                        &gp / format!("bn{i}"),
                        h,
                        Default::default(),
                    ));
                }
                g = g.add_fn(|x| x.relu());
                width = h;
            }
            let g = g.add(lin(&gp / format!("l{}", cfg.g_layers + 1), width, 2, true));
            let pieces = cfg.maxout;
            let mut d_body = nn::seq_t();
            let mut width = 2 * cfg.pack;
            for i in 1..=cfg.d_layers {
                if pieces >= 2 {
                    d_body = d_body
                        .add(lin(&dp / format!("l{i}"), width, dh * pieces, true))
                        .add_fn(move |x| x.view([-1, dh, pieces]).amax([2], false));
                } else {
                    d_body = d_body
                        .add(lin(&dp / format!("l{i}"), width, dh, true))
                        .add_fn(|x| x.maximum(&(x * 0.2)));
                }
                width = dh;
            }
            let d_out = lin(
                &dp / format!("l{}", cfg.d_layers + 1),
                dh + i64::from(cfg.minibatch_std),
                1,
                true,
            );
            Ok((g, d_body, d_out))
        })?;
        Ok(Gan2d {
            cfg,
            pair,
            g,
            d_body,
            d_out,
            device,
        })
    }

    /// D's output `[N / pack]` for points `[N, 2]` (packed first); with minibatch std, the
    /// batch's mean feature std is appended first.
    pub fn critic(&self, x: &Tensor) -> Tensor {
        self.d_out.forward(&self.critic_features(x)).squeeze_dim(1)
    }

    /// What D's last layer sees `[N / pack, hidden (+ 1)]`: the body's features of the packed
    /// points, with minibatch std the batch's mean feature std appended as the last column.
    pub fn critic_features(&self, x: &Tensor) -> Tensor {
        let h = self.d_body.forward_t(&self.pack(x), true);
        if self.cfg.minibatch_std {
            let s = (h.var_dim(0, false, false) + 1e-8).sqrt().mean(Kind::Float);
            Tensor::cat(&[h.shallow_clone(), s.expand([h.size()[0], 1], false)], 1)
        } else {
            h
        }
    }

    /// PacGAN's packing: points `[N, 2]` to `[N / m, 2m]`, consecutive points side by side.
    pub fn pack(&self, x: &Tensor) -> Tensor {
        x.reshape([-1, 2 * self.cfg.pack])
    }

    /// Generator output for latents `[N, z_dim]` (batch statistics when `train`).
    fn generate(&self, z: &Tensor, train: bool) -> Tensor {
        self.g.forward_t(z, train)
    }

    fn latents(&self, n: i64) -> Tensor {
        Tensor::randn([n, self.cfg.z_dim], (Kind::Float, self.device))
    }
}

impl Model for Gan2d {
    fn name(&self) -> &str {
        "gan2d"
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let x = &batch.x;
        if x.dim() != 2 || x.size()[1] != 2 {
            return Err(Error::invalid(format!(
                "gan2d trains on 2-D points [N, 2], got {:?}",
                x.size()
            )));
        }
        let n = x.size()[0];
        if n % self.cfg.pack != 0 {
            return Err(Error::invalid(format!(
                "gan2d with pack = {m}: the batch size {n} must be a multiple of {m} (each D input packs {m} points)",
                m = self.cfg.pack
            )));
        }
        let mut d_loss_v = 0.0;
        let mut gp_v = 0.0;
        for _ in 0..self.cfg.n_critic {
            let fake = tch::no_grad(|| self.generate(&self.latents(n), true));
            let mut d_loss = self.cfg.loss.d_loss(&self.critic(x), &self.critic(&fake));
            d_loss_v = d_loss.double_value(&[]);
            if self.cfg.gp_lambda > 0.0 {
                // On packed inputs: the interpolates mix packed real and packed fake inputs.
                let gp = gradient_penalty(
                    |t| self.critic(t),
                    &self.pack(x),
                    &self.pack(&fake),
                    self.cfg.gp_lambda,
                )?;
                gp_v = gp.double_value(&[]);
                d_loss += gp;
            }
            self.pair.opt_d.backward_step(&d_loss, ctx);
        }
        let frozen = self.pair.freeze_d();
        let g_loss = self
            .cfg
            .loss
            .g_loss(&self.critic(&self.generate(&self.latents(n), true)));
        self.pair.opt_g.backward_step(&g_loss, ctx);
        drop(frozen);
        let mut out = vec![
            ("d_loss".to_string(), d_loss_v),
            ("g_loss".to_string(), g_loss.double_value(&[])),
        ];
        if self.cfg.gp_lambda > 0.0 {
            out.push(("gp".into(), gp_v));
        }
        Ok(out)
    }
    fn sample(&mut self, n: usize) -> Result<Samples> {
        Ok(Samples::Points(tch::no_grad(|| {
            self.generate(&self.latents(n as i64), false)
        })))
    }
    crate::pair::delegate_to_pair!();
}

pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "gan2d",
        family: "gan",
        output: Output::Points,
        capabilities: &[],
        interpolation: None,
        summary: "MLP GAN on 2-D points (ring8/grid25) for mode-collapse studies; options: minibatch_std, WGAN-GP",
        default_config: |info: &DataInfo| {
            if info.example_shape != [2] {
                return Err(Error::invalid(format!("gan2d needs 2-D points (ring8, grid25), got examples of shape {:?}", info.example_shape)));
            }
            let cfg = Gan2dConfig::default();
            cfg.validate()?;
            Ok(serde_json::to_value(cfg)?)
        },
        build: |json, device| {
            let cfg: Gan2dConfig = Check::model("gan2d").parse(json)?;
            Ok(Box::new(Gan2d::new(cfg, device)?))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_values_are_one_line_errors_naming_the_key() {
        use serde_json::json;
        let points = DataInfo {
            example_shape: vec![2],
            num_classes: None,
            vocab_size: None,
            vocab: None,
        };
        let bad = [
            ("z_dim", json!(0)),
            ("hidden", json!(-128)),
            ("hidden", json!(1 << 20)),
            ("loss", json!("bogus")),
            ("gp_lambda", json!(-0.1)),
            ("n_critic", json!(0)),
            ("n_critic", json!(-5)),
            ("lr", json!(-1.0)),
            ("beta1", json!(1.0)),
            ("beta2", json!(1.01)),
            ("minibatch_std", json!("yes")),
            ("pack", json!(0)),
            ("g_layers", json!(0)),
            ("d_hidden", json!(-1)),
            ("maxout", json!(1)),
            ("init_std", json!(-0.02)),
        ];
        genmodels_core::model::check::assert_rejects(&entry(), &points, &bad);
    }

    #[test]
    fn minibatch_std_sees_collapse_and_all_parameters_learn() {
        let _rng = crate::test_lock();
        let m = Gan2d::new(
            Gan2dConfig {
                minibatch_std: true,
                ..Default::default()
            },
            Device::Cpu,
        )
        .unwrap();
        let x = Tensor::randn([16, 2], (Kind::Float, Device::Cpu));
        assert_eq!(m.critic(&x).size(), vec![16]);
        // The appended feature is the batch's mean std of the body's features: (almost) zero
        // for a collapsed batch, the formula's value for a diverse one, and the same in every
        // row. D's last layer sees it.
        let collapsed = Tensor::ones([16, 2], (Kind::Float, Device::Cpu));
        let f = m.critic_features(&collapsed);
        assert_eq!(f.size(), vec![16, m.cfg.hidden + 1]);
        let last = |f: &Tensor| f.narrow(1, m.cfg.hidden, 1).squeeze_dim(1);
        assert!(last(&f).abs().max().double_value(&[]) < 1e-3);
        let h = m.d_body.forward_t(&x, true);
        let want = (h.var_dim(0, false, false) + 1e-8)
            .sqrt()
            .mean(Kind::Float)
            .double_value(&[]);
        assert!(want > 1e-2);
        let got = last(&m.critic_features(&x));
        assert!((got.max().double_value(&[]) - want).abs() < 1e-6);
        assert!((got.min().double_value(&[]) - want).abs() < 1e-6);
        // D's last layer reads that column: its weight there is part of the gradient check.
        let fake = m.generate(&m.latents(16), true);
        let loss = m.cfg.loss.d_loss(&m.critic(&x), &m.critic(&fake))
            + m.cfg.loss.g_loss(&m.critic(&fake));
        loss.backward();
        for (name, t) in m
            .pair
            .g_vs
            .variables()
            .into_iter()
            .chain(m.pair.d_vs.variables())
        {
            assert!(
                t.grad().defined() && t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name} got no gradient"
            );
        }
        assert!(Gan2d::new(
            Gan2dConfig {
                n_critic: 0,
                ..Default::default()
            },
            Device::Cpu
        )
        .is_err());
    }

    /// PacGAN's 2-D networks (its code's settings).
    fn pacgan(pack: i64) -> Gan2dConfig {
        Gan2dConfig {
            z_dim: 2,
            hidden: 400,
            g_layers: 4,
            g_batch_norm: true,
            d_hidden: 200,
            d_layers: 3,
            maxout: 5,
            init_std: 0.02,
            pack,
            lr: 1e-4,
            beta1: 0.8,
            ..Default::default()
        }
    }

    #[test]
    fn packing_puts_m_independent_points_side_by_side_in_one_critic_input() {
        let _rng = crate::test_lock();
        tch::manual_seed(0);
        let mut m = Gan2d::new(pacgan(4), Device::Cpu).unwrap();
        // D's first layer reads 2m = 8 values per input: 5 maxout pieces of 200 units.
        let w = &m.pair.d_vs.variables()["l1.weight"];
        assert_eq!(w.size(), vec![200 * 5, 8]);
        // G: no bias before batch norm, as PacGAN's G.
        assert!(!m.pair.g_vs.variables().contains_key("l1.bias"));
        let x = Tensor::randn([12, 2], (Kind::Float, Device::Cpu));
        let packed = m.pack(&x);
        assert_eq!(packed.size(), vec![3, 8]);
        // Input 1 holds points 4..8 in order.
        let want = x.narrow(0, 4, 4).reshape([8]);
        assert!(packed.get(1).equal(&want));
        assert_eq!(m.critic(&x).size(), vec![3]);
        // Reordering points inside one input changes D's verdict: it sees them jointly.
        let swapped = Tensor::cat(
            &[x.narrow(0, 1, 1), x.narrow(0, 0, 1), x.narrow(0, 2, 10)],
            0,
        );
        let (a, b) = (m.critic(&x), m.critic(&swapped));
        assert!((a.get(0) - b.get(0)).abs().double_value(&[]) > 0.0);
        assert!(a.get(1).equal(&b.get(1)));
        // A batch that does not split into inputs of 4 is a clear error.
        let err = m
            .train_step(
                &Batch {
                    x: Tensor::randn([10, 2], (Kind::Float, Device::Cpu)),
                    y: None,
                },
                &StepCtx::default(),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("multiple of 4"), "{err}");
        let l = m
            .train_step(
                &Batch {
                    x: Tensor::randn([16, 2], (Kind::Float, Device::Cpu)),
                    y: None,
                },
                &StepCtx::default(),
            )
            .unwrap();
        assert!(l.iter().all(|(_, v)| v.is_finite()));
        let Samples::Points(p) = m.sample(5).unwrap() else {
            panic!()
        };
        assert_eq!(p.size(), vec![5, 2]);
    }

    #[test]
    fn weights_drawn_with_the_configured_std_and_zero_biases() {
        let _rng = crate::test_lock();
        tch::manual_seed(0);
        let m = Gan2d::new(pacgan(1), Device::Cpu).unwrap();
        let v = m.pair.d_vs.variables();
        let std = v["l2.weight"].std(true).double_value(&[]);
        assert!((std - 0.02).abs() < 0.002, "{std}");
        assert_eq!(v["l2.bias"].abs().max().double_value(&[]), 0.0);
    }
}
