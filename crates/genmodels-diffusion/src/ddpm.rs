//! DDPM (Ho et al. 2020) on the core trainer: a [`UNet2D`] trained to predict the noise (or
//! `x_0`, or the velocity) of `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps` at a uniformly
//! drawn timestep, with the simple loss `|| target - net(x_t, t) ||^2`; sampled through any
//! [`Scheduler`] (DDPM, DDIM, DPM-Solver++, Euler, Euler ancestral, Heun).
//!
//! `ddpm-cond` adds a class embedding with one extra "null" class: during training each label
//! is replaced by the null class with probability `label_dropout` (10 %), so one network learns
//! the conditional and the unconditional model, and sampling mixes them by classifier-free
//! guidance (Ho & Salimans 2022): `eps = eps_null + s (eps_class - eps_null)`.
//!
//! With `scheduler.variance_type = "learned_range"` the network also outputs `v` in [-1, 1]
//! per pixel, interpolating the log variance of each reverse step between beta-tilde and beta
//! (Improved DDPM, Nichol & Dhariwal 2021), trained by the hybrid loss
//! `L_simple + lambda L_vlb` (lambda = `vlb_weight`, 0.001) with the mean's gradient stopped in
//! `L_vlb`. Every model has a likelihood: the variational bound in bits per dimension
//! ([`crate::vlb`]).

use crate::schedulers::{
    build_scheduler, PredictionType, Scheduler, SchedulerConfig, SchedulerKind, VarianceType,
};
use crate::unet::{UNet2D, UNet2DConfig};
use crate::vlb::{bound_strata, Diffusion};
use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::Batch;
use genmodels_core::model::check::Check;
use genmodels_core::model::{
    Capability, ClassConditional, DataInfo, Likelihood, Losses, Model, ModelEntry, Output,
    SamplerChoice, Samples, ScheduledSampling,
};
use genmodels_core::optim::{Adam, AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Largest image side the model accepts (the U-Net's memory grows with its square).
const MAX_SIDE: i64 = 512;

/// A DDPM's config: data shape, network, training noise schedule, optimiser, sampler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdpmConfig {
    pub channels: i64,
    pub image_size: i64,
    /// Class-conditional with this many classes (plus the null class) when set.
    pub num_classes: Option<i64>,
    /// Probability of training on the null class instead of the label (classifier-free
    /// guidance; Ho & Salimans use 0.1 to 0.2).
    pub label_dropout: f64,
    /// The network; `None`: [`UNet2DConfig::small`] for the data's shape.
    pub unet: Option<UNet2DConfig>,
    /// The noise schedule and prediction type the network is trained with (diffusers'
    /// scheduler config; DDPM's defaults: 1000 steps, linear betas 1e-4 to 0.02, epsilon).
    pub scheduler: SchedulerConfig,
    /// Adam (Ho et al.: 2e-4, with warm-up; `--lr-schedule` gives the warm-up).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// What `sample` uses (DDIM with 50 steps by default: 1000 DDPM steps are 20 times slower).
    pub sampler: SamplerChoice,
    /// lambda of the hybrid loss `L_simple + lambda L_vlb` (Improved DDPM: 0.001), used when the
    /// variance is learned (`scheduler.variance_type` `learned_range` or `learned`).
    pub vlb_weight: f64,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        DdpmConfig {
            channels: 1,
            image_size: 28,
            num_classes: None,
            label_dropout: 0.1,
            unet: None,
            scheduler: SchedulerConfig::default(),
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            sampler: SamplerChoice {
                scheduler: "ddim".into(),
                steps: 50,
                eta: Some(0.0),
                guidance_scale: None,
                karras: false,
            },
            vlb_weight: 0.001,
        }
    }
}

impl DdpmConfig {
    /// Whether the network outputs a variance (twice the image's channels).
    pub fn learns_variance(&self) -> bool {
        matches!(
            self.scheduler.variance_type,
            Some(VarianceType::Learned | VarianceType::LearnedRange)
        )
    }

    /// The variance of the reverse steps in the bound (fixed small unless set).
    pub fn variance(&self) -> VarianceType {
        self.scheduler
            .variance_type
            .unwrap_or(VarianceType::FixedSmall)
    }

    /// The network this config describes.
    pub fn unet_config(&self) -> UNet2DConfig {
        let mut u = self.unet.clone().unwrap_or_else(|| {
            let mut u = UNet2DConfig::small(
                self.channels,
                self.image_size,
                self.num_classes.map(|c| c + 1),
            );
            if self.learns_variance() {
                u.out_channels = 2 * self.channels;
            }
            u
        });
        if self.unet.is_some() {
            u.num_class_embeds = self.num_classes.map(|c| c + 1).or(u.num_class_embeds);
        }
        u
    }

    /// Every field in range, before any network is made.
    pub fn validate(&self, model: &str) -> Result<()> {
        let c = Check::model(model);
        c.image(self.channels, self.image_size, 4, MAX_SIDE)?;
        if let Some(k) = self.num_classes {
            c.int("num_classes", k, 1, 100_000)?;
        }
        c.probability("label_dropout", self.label_dropout)?;
        c.adam("lr", self.lr, self.beta1, self.beta2)?;
        let u = self.unet_config();
        let out = if self.learns_variance() {
            2 * self.channels
        } else {
            self.channels
        };
        c.ensure(
            u.in_channels == self.channels && u.out_channels == out,
            "unet",
            format_args!("{} in, {} out channels", u.in_channels, u.out_channels),
            format_args!(
                "{} in and {out} out (variance {:?}: twice the image's channels when learned)",
                self.channels,
                self.variance()
            ),
        )?;
        c.probability("vlb_weight", self.vlb_weight)?;
        u.validate()?;
        // the scheduler config must build, and the sampler with it
        build_scheduler(SchedulerKind::Ddpm, &self.scheduler)?;
        check_sampler(self, &self.sampler)?;
        Ok(())
    }
}

fn check_sampler(cfg: &DdpmConfig, s: &SamplerChoice) -> Result<()> {
    let kind: SchedulerKind = s.scheduler.parse()?;
    let t = cfg.scheduler.num_train_timesteps;
    if s.steps == 0 || s.steps > t {
        return Err(Error::invalid(format!(
            "--steps {}: expected 1 to {t} (the model was trained with {t} timesteps)",
            s.steps
        )));
    }
    if let Some(g) = s.guidance_scale {
        if cfg.num_classes.is_none() {
            return Err(Error::invalid(format!(
                "--guidance {g}: classifier-free guidance needs a class-conditional model (ddpm-cond); this one is unconditional"
            )));
        }
        if !g.is_finite() {
            return Err(Error::invalid(format!(
                "--guidance {g}: expected a finite number"
            )));
        }
    }
    if let Some(e) = s.eta {
        if !(0.0..=1.0).contains(&e) {
            return Err(Error::invalid(format!(
                "--eta {e}: expected a number in [0, 1]"
            )));
        }
    }
    sampling_scheduler(cfg, s, kind).map(|_| ())
}

fn sampling_scheduler(
    cfg: &DdpmConfig,
    s: &SamplerChoice,
    kind: SchedulerKind,
) -> Result<Box<dyn Scheduler>> {
    let mut sc = cfg.scheduler.clone();
    if let Some(e) = s.eta {
        sc.eta = e;
    }
    sc.use_karras_sigmas = s.karras;
    let mut sched = build_scheduler(kind, &sc)?;
    sched.set_timesteps(s.steps)?;
    Ok(sched)
}

/// A DDPM: the U-Net, its optimiser, the training schedule and the sampler.
pub struct Ddpm {
    pub cfg: DdpmConfig,
    name: &'static str,
    vs: VarStore,
    unet: UNet2D,
    opt: Adam,
    train_sched: Box<dyn Scheduler>,
    diffusion: Diffusion,
    device: Device,
}

impl Ddpm {
    pub fn new(name: &'static str, cfg: DdpmConfig, device: Device) -> Result<Self> {
        cfg.validate(name)?;
        let vs = VarStore::new(device);
        let unet = UNet2D::new(&vs.root(), &cfg.unet_config())?;
        let opt = Adam::new(&vs, AdamConfig::new(cfg.lr, cfg.beta1, cfg.beta2));
        let train_sched = build_scheduler(SchedulerKind::Ddpm, &cfg.scheduler)?;
        let diffusion = Diffusion::new(train_sched.alphas_cumprod(), device)?;
        Ok(Ddpm {
            cfg,
            name,
            vs,
            unet,
            opt,
            train_sched,
            diffusion,
            device,
        })
    }

    /// The simple loss (and, with a learned variance, the hybrid loss's `L_vlb` term with the
    /// mean's gradient stopped) of `out` for `x0` noised to `xt` at `t`.
    fn losses(
        &self,
        out: &Tensor,
        x0: &Tensor,
        xt: &Tensor,
        noise: &Tensor,
        t: &Tensor,
    ) -> Result<(Tensor, Losses)> {
        let target = self.target(x0, noise, t)?;
        if !self.cfg.learns_variance() {
            let mse = out.mse_loss(&target, tch::Reduction::Mean);
            let v = mse.double_value(&[]);
            return Ok((mse, vec![("loss".into(), v)]));
        }
        let c = self.cfg.channels;
        let mse = out.narrow(1, 0, c).mse_loss(&target, tch::Reduction::Mean);
        let frozen = Tensor::cat(&[out.narrow(1, 0, c).detach(), out.narrow(1, c, c)], 1);
        let vb = self
            .diffusion
            .vb_terms_bits(
                &frozen,
                x0,
                xt,
                t,
                self.cfg.scheduler.prediction_type,
                self.cfg.variance(),
                false,
            )?
            .mean(Kind::Float);
        // lambda L_vlb with L_vlb = T E_t[L_t] (improved-diffusion's rescaled vb term)
        let loss = &mse + &vb * (self.cfg.vlb_weight * self.diffusion.steps as f64);
        let losses = vec![
            ("loss".into(), loss.double_value(&[])),
            ("mse".into(), mse.double_value(&[])),
            ("vb_bits".into(), vb.double_value(&[])),
        ];
        Ok((loss, losses))
    }

    /// The network's output at `x_t`, `t` for `labels` (the null class for a conditional model
    /// given none).
    fn net(&self, xt: &Tensor, t: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        let nulls = match (labels, self.null_class()) {
            (None, Some(null)) => Some(Tensor::full(
                [xt.size()[0]],
                null,
                (Kind::Int64, self.device),
            )),
            _ => None,
        };
        self.unet.forward(xt, t, labels.or(nulls.as_ref()), false)
    }

    /// Per-image estimate of the variational bound (nats) with `evals` network evaluations per
    /// image ([`bound_strata`]), plus the prior term.
    fn vlb_nats(&self, x0: &Tensor, labels: Option<&Tensor>, evals: i64) -> Result<Tensor> {
        let n = x0.size()[0];
        let dims: i64 = x0.size()[1..].iter().product();
        let x0 = x0.to_device(self.device).to_kind(Kind::Float);
        tch::no_grad(|| {
            let mut total = self.diffusion.prior_bits(&x0).to_kind(Kind::Double);
            for (lo, hi) in bound_strata(self.diffusion.steps, evals) {
                let w = (hi - lo) as f64;
                let tt = Tensor::randint_low(lo, hi, [n], (Kind::Int64, self.device));
                let noise = x0.randn_like();
                let xt = self.diffusion.q_sample(&x0, &noise, &tt);
                let out = self.net(&xt, &tt, labels)?;
                let bits = self.diffusion.vb_terms_bits(
                    &out,
                    &x0,
                    &xt,
                    &tt,
                    self.cfg.scheduler.prediction_type,
                    self.cfg.variance(),
                    true,
                )?;
                total += bits.to_kind(Kind::Double) * w;
            }
            Ok(total * (dims as f64 * std::f64::consts::LN_2))
        })
    }

    fn null_class(&self) -> Option<i64> {
        self.cfg.num_classes
    }

    /// The training target for `x0`, `noise` at `t`.
    fn target(&self, x0: &Tensor, noise: &Tensor, t: &Tensor) -> Result<Tensor> {
        Ok(match self.cfg.scheduler.prediction_type {
            PredictionType::Epsilon => noise.shallow_clone(),
            PredictionType::Sample => x0.shallow_clone(),
            PredictionType::VPrediction => self.train_sched.get_velocity(x0, noise, t)?,
        })
    }

    /// The network's output at `x` (already scaled) and time `t` for `labels`, guided by
    /// `scale` against the null class when given.
    fn predict(&self, x: &Tensor, t: f64, labels: Option<&Tensor>, scale: f64) -> Result<Tensor> {
        let n = x.size()[0];
        let tt = Tensor::full([n], t, (Kind::Float, self.device));
        let (Some(labels), Some(null)) = (labels, self.null_class()) else {
            return self.unet.forward(x, &tt, None, false);
        };
        if scale == 1.0 {
            return self.unet.forward(x, &tt, Some(labels), false);
        }
        let nulls = Tensor::full([n], null, (Kind::Int64, self.device));
        if scale == 0.0 {
            return self.unet.forward(x, &tt, Some(&nulls), false);
        }
        let both = self.unet.forward(
            &Tensor::cat(&[x, x], 0),
            &Tensor::cat(&[&tt, &tt], 0),
            Some(&Tensor::cat(&[labels, &nulls], 0)),
            false,
        )?;
        let parts = both.chunk(2, 0);
        let (cond, uncond) = (&parts[0], &parts[1]);
        if self.cfg.learns_variance() {
            // guide the mean; the variance is the conditional one (GLIDE, DiT)
            let c = self.cfg.channels;
            let (cm, um) = (cond.narrow(1, 0, c), uncond.narrow(1, 0, c));
            return Ok(Tensor::cat(
                &[&um + (&cm - &um) * scale, cond.narrow(1, c, c)],
                1,
            ));
        }
        Ok(uncond + (cond - uncond) * scale)
    }

    /// Runs the sampler from noise; `every` > 0 also keeps `(x_t, x_0)` every that many steps.
    fn run_sampler(
        &self,
        n: usize,
        labels: Option<&Tensor>,
        every: usize,
    ) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
        let s = &self.cfg.sampler;
        let kind: SchedulerKind = s.scheduler.parse()?;
        let mut sched = sampling_scheduler(&self.cfg, s, kind)?;
        let scale = s.guidance_scale.unwrap_or(1.0);
        let c = &self.cfg;
        tch::no_grad(|| {
            let mut x = Tensor::randn(
                [n as i64, c.channels, c.image_size, c.image_size],
                (Kind::Float, self.device),
            ) * sched.init_noise_sigma();
            let mut frames = Vec::new();
            let ts = sched.timesteps().to_vec();
            for (i, &t) in ts.iter().enumerate() {
                let xin = sched.scale_model_input(&x, t)?;
                let mut out = self.predict(&xin, t, labels, scale)?;
                if self.cfg.learns_variance() && kind != SchedulerKind::Ddpm {
                    // only DDPM's ancestral step uses the learned variance
                    out = out.narrow(1, 0, c.channels);
                }
                let step = sched.step(&out, t, &x, None)?;
                x = step.prev_sample;
                if every > 0 && ((i + 1) % every == 0 || i + 1 == ts.len()) {
                    frames.push((
                        x.clamp(-1.0, 1.0),
                        step.pred_original_sample.clamp(-1.0, 1.0),
                    ));
                }
            }
            let bad = x.isnan().any().int64_value(&[]) != 0;
            if bad {
                return Err(Error::invalid(format!(
                    "{} sampling with {} ({} steps) produced NaN: the weights are not finite or the schedule is degenerate",
                    self.name, s.scheduler, s.steps
                )));
            }
            Ok((x.clamp(-1.0, 1.0), frames))
        })
    }

    fn balanced_labels(&self, n: usize) -> Option<Tensor> {
        self.cfg
            .num_classes
            .map(|k| Tensor::arange(n as i64, (Kind::Int64, self.device)).remainder(k))
    }
}

impl Model for Ddpm {
    fn name(&self) -> &str {
        self.name
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let x0 = batch.x.to_device(self.device).to_kind(Kind::Float);
        let n = x0.size()[0];
        let t_max = self.cfg.scheduler.num_train_timesteps as i64;
        let t = Tensor::randint(t_max, [n], (Kind::Int64, self.device));
        let noise = x0.randn_like();
        let xt = self.train_sched.add_noise(&x0, &noise, &t)?;
        let labels = match self.null_class() {
            Some(null) => {
                let y = batch.y.as_ref().ok_or_else(|| {
                    Error::invalid(format!(
                        "{} needs labelled data (class-conditional); the data has no labels",
                        self.name
                    ))
                })?;
                let y = y.to_device(self.device);
                let drop = Tensor::rand([n], (Kind::Float, self.device)).lt(self.cfg.label_dropout);
                Some(y.where_self(&drop.logical_not(), &y.full_like(null)))
            }
            None => None,
        };
        let out = self.unet.forward(&xt, &t, labels.as_ref(), true)?;
        let (loss, losses) = self.losses(&out, &x0, &xt, &noise, &t)?;
        self.opt.backward_step(&loss, ctx);
        Ok(losses)
    }

    /// The simple loss on held-out images at random timesteps (labels kept).
    fn eval_step(&mut self, batch: &Batch) -> Result<Option<Losses>> {
        let x0 = batch.x.to_device(self.device).to_kind(Kind::Float);
        let n = x0.size()[0];
        let t_max = self.cfg.scheduler.num_train_timesteps as i64;
        tch::no_grad(|| {
            let t = Tensor::randint(t_max, [n], (Kind::Int64, self.device));
            let noise = x0.randn_like();
            let xt = self.train_sched.add_noise(&x0, &noise, &t)?;
            let labels = match (self.null_class(), &batch.y) {
                (Some(_), Some(y)) => Some(y.to_device(self.device)),
                _ => None,
            };
            let out = self.unet.forward(&xt, &t, labels.as_ref(), false)?;
            Ok(Some(self.losses(&out, &x0, &xt, &noise, &t)?.1))
        })
    }

    fn sample(&mut self, n: usize) -> Result<Samples> {
        let labels = self.balanced_labels(n);
        Ok(Samples::Images(self.run_sampler(n, labels.as_ref(), 0)?.0))
    }

    fn as_class_conditional(&mut self) -> Option<&mut dyn ClassConditional> {
        if self.cfg.num_classes.is_some() {
            Some(self)
        } else {
            None
        }
    }

    fn as_scheduled(&mut self) -> Option<&mut dyn ScheduledSampling> {
        Some(self)
    }

    fn as_likelihood(&mut self) -> Option<&mut dyn Likelihood> {
        Some(self)
    }

    fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        vec![("unet", &self.vs)]
    }

    fn ema_store(&self) -> Option<&VarStore> {
        Some(&self.vs)
    }

    fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.opt.save_state("unet", ckpt);
    }

    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.opt.load_state("unet", ckpt, path)
    }
}

impl ClassConditional for Ddpm {
    fn num_classes(&self) -> i64 {
        self.cfg.num_classes.unwrap_or(0)
    }

    /// Guided samples of `labels`; `truncation` has no meaning for diffusion and is ignored.
    fn sample_classes(&mut self, labels: &Tensor, _truncation: f64) -> Result<Tensor> {
        let k = self.num_classes();
        let n = genmodels_core::model::check_labels(labels, k)?;
        let labels = labels.to_device(self.device).to_kind(Kind::Int64);
        Ok(self.run_sampler(n as usize, Some(&labels), 0)?.0)
    }
}

/// The variational bound of Ho et al. (an upper bound on `-log p(x)`), on 8-bit images as
/// they are, through the discretised decoder; a class-conditional model is scored
/// unconditionally (the null class).
impl Likelihood for Ddpm {
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        // the 256 levels the decoder's bins are centred on
        Ok(((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round() / 127.5 - 1.0)
    }

    fn preparation(&self) -> String {
        let null = if self.cfg.num_classes.is_some() {
            "; unconditional (the null class)"
        } else {
            ""
        };
        format!("8-bit pixels in [-1, 1], no dequantisation: the discretised Gaussian decoder of Ho et al. at t = 0 (256 bins){null}")
    }

    fn estimator(&self, samples: i64) -> String {
        let t = self.diffusion.steps;
        if samples >= t {
            format!("variational bound, all {t} terms (an upper bound on -log p(x))")
        } else {
            format!(
                "variational bound (an upper bound on -log p(x)): decoder and prior exact, the {} KL terms estimated from {} stratified timesteps per image",
                t - 1,
                samples.max(2) - 1
            )
        }
    }

    /// Minus the variational bound, estimated with `samples` network evaluations per image
    /// (all `T` terms exactly when `samples >= T`).
    fn log_likelihood(&self, x: &Tensor, samples: i64) -> Result<Tensor> {
        Ok(-self.vlb_nats(x, None, samples.max(2))?)
    }

    /// The one-timestep estimate of the bound (decoder, one weighted KL term, prior).
    fn bound(&self, x: &Tensor) -> Result<Tensor> {
        Ok(-self.vlb_nats(x, None, 2)?)
    }

    fn posterior_means(&self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

impl ScheduledSampling for Ddpm {
    fn set_sampler(&mut self, choice: &SamplerChoice) -> Result<()> {
        check_sampler(&self.cfg, choice)?;
        self.cfg.sampler = choice.clone();
        Ok(())
    }

    fn sampler(&self) -> SamplerChoice {
        self.cfg.sampler.clone()
    }

    fn trajectory(&mut self, n: usize, frames: usize) -> Result<(Tensor, Tensor)> {
        let steps = self.cfg.sampler.steps;
        let every = (steps / frames.max(1)).max(1);
        let labels = self.balanced_labels(n);
        let (_, kept) = self.run_sampler(n, labels.as_ref(), every)?;
        let (xs, x0s): (Vec<Tensor>, Vec<Tensor>) = kept.into_iter().unzip();
        Ok((Tensor::stack(&xs, 0), Tensor::stack(&x0s, 0)))
    }
}

/// Makes a run folder from a diffusers folder: a `UNet2DModel` folder (`config.json` +
/// `diffusion_pytorch_model.safetensors`) or a pipeline folder holding `unet/` and, optionally,
/// `scheduler/scheduler_config.json` (else DDPM's defaults). A U-Net with a class table of
/// `K + 1` entries becomes a `ddpm-cond` of `K` classes, the last entry taken as the null class
/// (DiT's convention). Returns the model name and its config.
pub fn import_diffusers_as_run(dir: &Path, out: &Path) -> Result<(&'static str, DdpmConfig)> {
    use genmodels_core::checkpoint::TrainState;
    let unet_dir = if dir.join("unet").join(crate::unet::CONFIG_FILE).is_file() {
        dir.join("unet")
    } else {
        dir.to_path_buf()
    };
    let (unet, vs) = UNet2D::from_diffusers_folder(&unet_dir, Device::Cpu)?;
    let u = unet.config().clone();
    let side = match u.sample_size {
        Some(crate::unet::SampleSize::Square(s)) => s,
        Some(crate::unet::SampleSize::Rect([h, w])) if h == w => h,
        other => {
            return Err(Error::bad_data(
                unet_dir.join(crate::unet::CONFIG_FILE),
                format!(
                "sample_size {other:?}: expected one square side (the model samples square images)"
            ),
            ))
        }
    };
    let sched_file = dir.join("scheduler").join("scheduler_config.json");
    let scheduler = if sched_file.is_file() {
        SchedulerConfig::from_json_file(&sched_file)?
    } else {
        SchedulerConfig::default()
    };
    let num_classes = match u.num_class_embeds {
        Some(k) if k >= 2 => Some(k - 1),
        Some(k) => {
            return Err(Error::bad_data(
                unet_dir.join(crate::unet::CONFIG_FILE),
                format!("num_class_embeds {k}: expected at least 2 (classes and the null class)"),
            ))
        }
        None => None,
    };
    let name = if num_classes.is_some() {
        ddpm_cond_entry().name
    } else {
        ddpm_entry().name
    };
    let cfg = DdpmConfig {
        channels: u.in_channels,
        image_size: side,
        num_classes,
        unet: Some(u),
        scheduler,
        ..Default::default()
    };
    cfg.validate(name)?;
    let mut ck = Checkpoint::new(name, serde_json::to_value(&cfg)?, TrainState::default());
    ck.add_var_store("model/unet", &vs);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    ck.save(&genmodels_core::run::RunLayout::new(out).checkpoint())?;
    Ok((name, cfg))
}

fn default_for(info: &DataInfo, name: &str, conditional: bool) -> Result<serde_json::Value> {
    let (c, h) = genmodels_core::model::square_image(name, info)?;
    let num_classes = if conditional {
        Some(info.num_classes.ok_or_else(|| {
            Error::invalid(format!(
                "{name} is class-conditional and needs labelled data; this data has no labels (use ddpm)"
            ))
        })? as i64)
    } else {
        None
    };
    let cfg = DdpmConfig {
        channels: c,
        image_size: h,
        num_classes,
        ..Default::default()
    };
    cfg.validate(name)?;
    Ok(serde_json::to_value(cfg)?)
}

fn build(name: &'static str, json: &serde_json::Value, device: Device) -> Result<Box<dyn Model>> {
    let cfg: DdpmConfig = Check::model(name).parse(json)?;
    Ok(Box::new(Ddpm::new(name, cfg, device)?))
}

/// `ddpm`: unconditional.
pub fn ddpm_entry() -> ModelEntry {
    ModelEntry {
        name: "ddpm",
        family: "diffusion",
        output: Output::Images,
        capabilities: &[Capability::Likelihood, Capability::Schedulers],
        interpolation: None,
        summary: "DDPM (Ho et al. 2020): U-Net (diffusers' UNet2DModel) trained on the simple loss; sampled by DDPM, DDIM, DPM-Solver++, Euler (ancestral) or Heun",
        default_config: |info| default_for(info, "ddpm", false),
        build: |json, device| build("ddpm", json, device),
    }
}

/// `ddpm-cond`: class-conditional with label dropout, for classifier-free guidance.
pub fn ddpm_cond_entry() -> ModelEntry {
    ModelEntry {
        name: "ddpm-cond",
        family: "diffusion",
        output: Output::Images,
        capabilities: &[
            Capability::ClassConditional,
            Capability::Likelihood,
            Capability::Schedulers,
        ],
        interpolation: None,
        summary: "class-conditional DDPM with 10 % label dropout to a null class: classifier-free guidance (Ho & Salimans 2022)",
        default_config: |info| default_for(info, "ddpm-cond", true),
        build: |json, device| build("ddpm-cond", json, device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unet::{DownBlockType, UpBlockType};

    fn info(classes: Option<usize>) -> DataInfo {
        DataInfo {
            example_shape: vec![1, 8, 8],
            num_classes: classes,
            vocab_size: None,
            vocab: None,
        }
    }

    fn tiny(classes: Option<usize>) -> Ddpm {
        tiny_with(classes, None)
    }

    fn tiny_with(classes: Option<usize>, variance: Option<VarianceType>) -> Ddpm {
        let mut cfg: DdpmConfig =
            serde_json::from_value(default_for(&info(classes), "ddpm", classes.is_some()).unwrap())
                .unwrap();
        cfg.scheduler.variance_type = variance;
        let mut u = cfg.unet_config();
        u.block_out_channels = vec![8, 16];
        u.down_block_types = vec![DownBlockType::Plain, DownBlockType::Attn];
        u.up_block_types = vec![UpBlockType::Attn, UpBlockType::Plain];
        u.norm_num_groups = 4;
        u.layers_per_block = 1;
        cfg.unet = Some(u);
        cfg.sampler.steps = 4;
        Ddpm::new("ddpm", cfg, Device::Cpu).unwrap()
    }

    #[test]
    fn trains_and_samples_with_every_scheduler() {
        let mut m = tiny(None);
        let batch = Batch {
            x: Tensor::rand([4, 1, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
            y: None,
        };
        let l = m.train_step(&batch, &StepCtx::default()).unwrap();
        assert!(l[0].1.is_finite());
        for s in [
            "ddpm",
            "ddim",
            "dpm-solver++",
            "euler",
            "euler-ancestral",
            "heun",
        ] {
            m.set_sampler(&SamplerChoice {
                scheduler: s.into(),
                steps: 3,
                eta: None,
                guidance_scale: None,
                karras: false,
            })
            .unwrap();
            let Samples::Images(x) = m.sample(2).unwrap() else {
                panic!("images")
            };
            assert_eq!(x.size(), vec![2, 1, 8, 8], "{s}");
        }
        let (xs, x0s) = m.trajectory(2, 3).unwrap();
        assert_eq!(xs.size()[1..], [2, 1, 8, 8]);
        assert_eq!(xs.size(), x0s.size());
    }

    #[test]
    fn bad_sampler_choices_are_one_line_errors() {
        let mut m = tiny(None);
        let mut c = m.sampler();
        c.scheduler = "ddlm".into();
        let e = m.set_sampler(&c).unwrap_err().to_string();
        assert!(e.contains("ddlm") && e.contains("ddim"), "{e}");
        c.scheduler = "ddim".into();
        c.steps = 5000;
        let e = m.set_sampler(&c).unwrap_err().to_string();
        assert!(e.contains("5000") && e.contains("1000"), "{e}");
        c.steps = 10;
        c.guidance_scale = Some(3.0);
        let e = m.set_sampler(&c).unwrap_err().to_string();
        assert!(e.contains("class-conditional"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn the_conditional_model_drops_labels_and_guides() {
        let mut m = tiny(Some(3));
        let batch = Batch {
            x: Tensor::rand([6, 1, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
            y: Some(Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2])),
        };
        m.train_step(&batch, &StepCtx::default()).unwrap();
        let mut c = m.sampler();
        c.guidance_scale = Some(3.0);
        m.set_sampler(&c).unwrap();
        let x = m
            .sample_classes(&Tensor::from_slice(&[0i64, 2]), 0.0)
            .unwrap();
        assert_eq!(x.size(), vec![2, 1, 8, 8]);
        assert!(m.sample_classes(&Tensor::from_slice(&[3i64]), 0.0).is_err());
        // without labels the conditional model refuses to train
        let unl = Batch {
            x: batch.x.shallow_clone(),
            y: None,
        };
        let e = m
            .train_step(&unl, &StepCtx::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("labelled"), "{e}");
    }

    #[test]
    fn the_hybrid_loss_trains_the_variance_and_leaves_the_mean_to_the_simple_loss() {
        let mut m = tiny_with(Some(3), Some(VarianceType::LearnedRange));
        assert_eq!(m.unet.config().out_channels, 2);
        let x0 = (Tensor::randint(256, [4, 1, 8, 8], (Kind::Float, Device::Cpu)) / 127.5) - 1.0;
        let noise = x0.randn_like();
        let t = Tensor::from_slice(&[0i64, 5, 500, 999]);
        let xt = m.diffusion.q_sample(&x0, &noise, &t);
        let out = Tensor::randn([4, 2, 8, 8], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (loss, parts) = m.losses(&out, &x0, &xt, &noise, &t).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
            ["loss", "mse", "vb_bits"]
        );
        loss.backward();
        let g = out.grad();
        // the mean's gradient is the simple loss's alone: 2 (out - noise) / numel
        let want = (out.narrow(1, 0, 1).detach() - &noise) * (2.0 / 256.0);
        let diff = (g.narrow(1, 0, 1) - want).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "the vb term leaked into the mean: {diff}");
        // and the variance channels get a gradient from the vb term
        assert!(g.narrow(1, 1, 1).abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // a step through the trainer, then every scheduler samples (DDPM with the variance)
        let batch = Batch {
            x: x0.shallow_clone(),
            y: Some(Tensor::from_slice(&[0i64, 1, 2, 0])),
        };
        let l = m.train_step(&batch, &StepCtx::default()).unwrap();
        assert!(l.iter().all(|(_, v)| v.is_finite()), "{l:?}");
        for s in ["ddpm", "ddim", "dpm-solver++"] {
            m.set_sampler(&SamplerChoice {
                scheduler: s.into(),
                steps: 3,
                eta: None,
                guidance_scale: Some(2.0),
                karras: false,
            })
            .unwrap();
            let Samples::Images(x) = m.sample(2).unwrap() else {
                panic!("images")
            };
            assert_eq!(x.size(), vec![2, 1, 8, 8], "{s}");
        }
    }

    #[test]
    fn the_bound_is_finite_and_its_estimate_is_unbiased_for_the_full_sum() {
        let mut cfg = tiny(None).cfg;
        cfg.scheduler.num_train_timesteps = 10;
        cfg.sampler.steps = 4;
        tch::manual_seed(3);
        let m = Ddpm::new("ddpm", cfg, Device::Cpu).unwrap();
        let x = m
            .prepare(&(Tensor::rand([3, 1, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0))
            .unwrap();
        let levels = (&x + 1.0) * 127.5;
        assert!((&levels - levels.round()).abs().max().double_value(&[]) < 1e-4);
        let exact = -m.log_likelihood(&x, 10).unwrap();
        assert_eq!(exact.size(), vec![3]);
        // the stratified estimate with 3 evaluations averages to the full sum (the noise of
        // x_t differs between calls, so compare means over repeats within their spread)
        let reps: Vec<Tensor> = (0..24).map(|_| -m.log_likelihood(&x, 3).unwrap()).collect();
        let est = Tensor::stack(&reps, 0);
        let (mean, se) = (
            est.mean_dim(0, false, Kind::Double),
            est.std_dim(0, true, false) / 24f64.sqrt(),
        );
        let fulls: Vec<Tensor> = (0..8).map(|_| -m.log_likelihood(&x, 10).unwrap()).collect();
        let fulls = Tensor::stack(&fulls, 0);
        let full = fulls.mean_dim(0, false, Kind::Double);
        let se_full = fulls.std_dim(0, true, false) / 8f64.sqrt();
        let spread = (se.square() + se_full.square()).sqrt() + 1e-9;
        let z = ((mean - &full).abs() / spread).max().double_value(&[]);
        assert!(z < 5.0, "estimate off by {z} standard errors");
        assert!(exact.min().double_value(&[]) > 0.0);
        assert!(m.estimator(3).contains("stratified"));
        assert!(m.estimator(10).contains("all 10 terms"));
    }
}
