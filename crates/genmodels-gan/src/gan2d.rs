//! GANs on 2-D points, the testbed for mode collapse (ring-8 and grid-25 mixtures).
//!
//! A plain GAN (Goodfellow et al. 2014) with MLPs is known to cover only some of the modes of
//! these mixtures. Two remedies can be switched on and compared with `genmodels metrics`
//! (mode coverage):
//! - `minibatch_std`: the discriminator sees the batch's mean standard deviation of its last
//!   hidden features as one extra feature (Karras et al. 2018, Sec. 3), so a collapsed batch is
//!   easy to tell from real data;
//! - `loss = "wasserstein"` with `gp_lambda > 0` and `n_critic = 5`: WGAN-GP (Gulrajani et al.
//!   2017; their toy experiments use lambda 0.1 and Adam(1e-4, 0.5, 0.9)).
//!
//! Networks: G z(16) -> 128 -> 128 -> 2 with ReLU; D 2 -> 128 -> 128 -> 1 with LeakyReLU 0.2.

use crate::pair::GanPair;
use genmodels_core::data::Batch;
use genmodels_core::losses::{gradient_penalty, GanLoss};
use genmodels_core::model::check::{Check, MAX_WIDTH};
use genmodels_core::model::{DataInfo, Losses, Model, ModelEntry, Output, Samples};
use genmodels_core::optim::{AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
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
        c.adam("lr", self.lr, self.beta1, self.beta2)
    }
}

pub struct Gan2d {
    pub cfg: Gan2dConfig,
    pair: GanPair,
    g: nn::Sequential,
    d_body: nn::Sequential,
    d_out: nn::Linear,
    device: Device,
}

impl Gan2d {
    pub fn new(cfg: Gan2dConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let adam = AdamConfig::new(cfg.lr, cfg.beta1, cfg.beta2);
        let h = cfg.hidden;
        let (pair, (g, d_body, d_out)) = GanPair::new(device, adam, adam, |g_vs, d_vs| {
            let (gp, dp) = (g_vs.root(), d_vs.root());
            let g = nn::seq()
                .add(nn::linear(&gp / "l1", cfg.z_dim, h, Default::default()))
                .add_fn(|x| x.relu())
                .add(nn::linear(&gp / "l2", h, h, Default::default()))
                .add_fn(|x| x.relu())
                .add(nn::linear(&gp / "l3", h, 2, Default::default()));
            let lrelu = |x: &Tensor| x.maximum(&(x * 0.2));
            let d_body = nn::seq()
                .add(nn::linear(&dp / "l1", 2, h, Default::default()))
                .add_fn(lrelu)
                .add(nn::linear(&dp / "l2", h, h, Default::default()))
                .add_fn(lrelu);
            let d_out = nn::linear(
                &dp / "l3",
                h + i64::from(cfg.minibatch_std),
                1,
                Default::default(),
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

    /// D's output `[N]`; with minibatch std, the batch's mean feature std is appended first.
    pub fn critic(&self, x: &Tensor) -> Tensor {
        let h = self.d_body.forward(x);
        let h = if self.cfg.minibatch_std {
            let s = (h.var_dim(0, false, false) + 1e-8).sqrt().mean(Kind::Float);
            Tensor::cat(&[h.shallow_clone(), s.expand([h.size()[0], 1], false)], 1)
        } else {
            h
        };
        self.d_out.forward(&h).squeeze_dim(1)
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
        let mut d_loss_v = 0.0;
        let mut gp_v = 0.0;
        for _ in 0..self.cfg.n_critic {
            let fake = tch::no_grad(|| self.g.forward(&self.latents(n)));
            let mut d_loss = self.cfg.loss.d_loss(&self.critic(x), &self.critic(&fake));
            d_loss_v = d_loss.double_value(&[]);
            if self.cfg.gp_lambda > 0.0 {
                let gp = gradient_penalty(|t| self.critic(t), x, &fake, self.cfg.gp_lambda)?;
                gp_v = gp.double_value(&[]);
                d_loss += gp;
            }
            self.pair.opt_d.backward_step(&d_loss, ctx);
        }
        let frozen = self.pair.freeze_d();
        let g_loss = self
            .cfg
            .loss
            .g_loss(&self.critic(&self.g.forward(&self.latents(n))));
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
            self.g.forward(&self.latents(n as i64))
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
        // the extra feature is the batch's mean std: zero for a collapsed batch
        let collapsed = Tensor::ones([16, 2], (Kind::Float, Device::Cpu));
        let h = m.d_body.forward(&collapsed);
        assert!(h.var_dim(0, false, false).max().double_value(&[]) < 1e-10);
        let fake = m.g.forward(&m.latents(16));
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
}
