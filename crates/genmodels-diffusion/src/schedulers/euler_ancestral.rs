//! Ancestral Euler (k-diffusion's `sample_euler_ancestral`), as diffusers'
//! `EulerAncestralDiscreteScheduler`: an Euler step down to sigma_down, then fresh noise of
//! sigma_up, with sigma_up^2 = sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2 and
//! sigma_down^2 = sigma_to^2 - sigma_up^2.
//!
//! Also takes `prediction_type = sample` (diffusers: NotImplementedError).
//!
//! Reads: the beta schedule keys, `prediction_type`, `timestep_spacing`, `steps_offset`,
//! `rescale_betas_zero_snr`.

use super::config::{SchedulerConfig, SchedulerKind};
use super::euler::{ve_add_noise, ve_init_noise_sigma, ve_x0};
use super::schedule::{self, TrainSchedule};
use super::{
    check_model_output, sigma_velocity, step_noise, work_kind, Scheduler, StepIndex, StepOutput,
};
use genmodels_core::{Error, Result};
use tch::Tensor;

const WHO: SchedulerKind = SchedulerKind::EulerAncestral;

/// Euler ancestral (diffusers' `EulerAncestralDiscreteScheduler`).
#[derive(Debug)]
pub struct EulerAncestral {
    cfg: SchedulerConfig,
    schedule: TrainSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
}

impl EulerAncestral {
    /// An Euler-ancestral scheduler; before `set_timesteps` its schedule is the training chain.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let cfg = config.resolved(WHO);
        cfg.validate(WHO)?;
        let schedule = TrainSchedule::new(&cfg, true)?;
        let sigmas: Vec<f64> = schedule.sigmas().into_iter().rev().chain([0.0]).collect();
        let timesteps = (0..cfg.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(EulerAncestral {
            cfg,
            schedule,
            timesteps,
            sigmas,
            num_inference_steps: None,
            index: StepIndex::default(),
        })
    }
}

impl Scheduler for EulerAncestral {
    fn kind(&self) -> SchedulerKind {
        WHO
    }

    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let big_t = self.cfg.num_train_timesteps;
        schedule::check_steps(n, big_t, "euler-ancestral")?;
        let ts =
            schedule::spaced_timesteps(self.cfg.spacing(), n, big_t, self.cfg.steps_offset, false);
        let train = self.schedule.sigmas();
        self.sigmas = ts
            .iter()
            .map(|&t| schedule::interp(t, &train))
            .chain([0.0])
            .collect();
        self.timesteps = ts;
        self.num_inference_steps = Some(n);
        self.index = StepIndex::default();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn init_noise_sigma(&self) -> f64 {
        ve_init_noise_sigma(&self.sigmas, self.cfg.spacing())
    }

    fn alphas_cumprod(&self) -> &[f64] {
        &self.schedule.alphas_cumprod
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn is_stochastic(&self) -> bool {
        true
    }

    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        if begin_index >= self.timesteps.len() {
            return Err(Error::invalid(format!(
                "euler-ancestral: begin_index {begin_index} is past the {} timesteps",
                self.timesteps.len()
            )));
        }
        self.index.begin = Some(begin_index);
        Ok(())
    }

    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = self.index.at(&self.timesteps, timestep, WHO)?;
        let s = self.sigmas[i];
        Ok(sample / (s * s + 1.0).powf(0.5))
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_model_output(WHO, model_output, sample, false)?;
        let i = self.index.at(&self.timesteps, timestep, WHO)?;
        let kind = work_kind(sample);
        let (m, x) = (model_output.to_kind(kind), sample.to_kind(kind));
        let sigma = self.sigmas[i];
        let x0 = ve_x0(self.cfg.prediction_type, &m, &x, sigma, sigma);
        let (from, to) = (sigma, self.sigmas[i + 1]);
        let up = (to * to * (from * from - to * to) / (from * from)).powf(0.5);
        let down = (to * to - up * up).powf(0.5);
        let derivative = (&x - &x0) / sigma;
        let z = step_noise(WHO, noise, sample, kind)?;
        let prev = x + derivative * (down - sigma) + z * up;
        self.index.step = Some(i + 1);
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, ts: &Tensor) -> Result<Tensor> {
        ve_add_noise(
            WHO,
            &self.index,
            &self.timesteps,
            &self.sigmas,
            &self.schedule,
            x0,
            noise,
            ts,
        )
    }

    fn get_velocity(&self, sample: &Tensor, noise: &Tensor, ts: &Tensor) -> Result<Tensor> {
        sigma_velocity(
            WHO,
            &self.index,
            &self.timesteps,
            &self.sigmas,
            &self.schedule,
            sample,
            noise,
            ts,
        )
    }
}
