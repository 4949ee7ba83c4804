//! What the schedulers that step in alphas_cumprod at integer timesteps (DDPM, DDIM) share
//! ([`AlphaState`]): the timestep list, each step going from its timestep to the next one of the
//! list, and the forward process sqrt(abar_t) x0 + sqrt(1 - abar_t) noise.

use super::config::{SchedulerConfig, SchedulerKind};
use super::schedule::{self, TrainSchedule};
use super::{batch_timesteps, check_same_shape, per_sample};
use genmodels_core::{Error, Result};
use tch::Tensor;

/// The state of DDPM and DDIM: the training schedule and the timesteps laid out (before
/// `set_timesteps`, the whole training chain T-1, ..., 0).
#[derive(Debug)]
pub(crate) struct AlphaState {
    who: SchedulerKind,
    /// The forward process.
    pub schedule: TrainSchedule,
    /// The timesteps handed to the model, in order.
    pub timesteps: Vec<f64>,
    /// `None` before `set_timesteps`.
    pub num_inference_steps: Option<usize>,
    /// alphas_cumprod "before" the first training timestep, where the last step goes (DDPM: 1;
    /// DDIM: 1 with `set_alpha_to_one`, else alphas_cumprod\[0\]).
    final_alpha_cumprod: f64,
}

impl AlphaState {
    /// The training chain of `schedule`, the last step going to `final_alpha_cumprod`.
    pub fn new(who: SchedulerKind, schedule: TrainSchedule, final_alpha_cumprod: f64) -> Self {
        let timesteps = (0..schedule.len()).rev().map(|t| t as f64).collect();
        AlphaState {
            who,
            schedule,
            timesteps,
            num_inference_steps: None,
            final_alpha_cumprod,
        }
    }

    /// The scheduler whose state this is (for its messages).
    pub fn who(&self) -> SchedulerKind {
        self.who
    }

    /// [`Scheduler::set_timesteps`](super::Scheduler::set_timesteps): `n` spaced timesteps,
    /// integers (`linspace` ones rounded half to even).
    pub fn set_timesteps(&mut self, cfg: &SchedulerConfig, n: usize) -> Result<()> {
        self.timesteps = schedule::inference_timesteps(cfg, n, self.who, true)?;
        self.num_inference_steps = Some(n);
        Ok(())
    }

    /// [`Scheduler::set_custom_timesteps`](super::Scheduler::set_custom_timesteps): strictly
    /// decreasing integer training timesteps.
    pub fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        let who = self.who.as_str();
        schedule::check_custom_timesteps(timesteps, self.schedule.len(), who)?;
        schedule::check_integer_timesteps(timesteps, who)?;
        self.timesteps = timesteps.to_vec();
        self.num_inference_steps = Some(timesteps.len());
        Ok(())
    }

    /// The timestep the step from `t` goes to: the next one of the list (-1 after the last).
    pub fn previous_timestep(&self, t: f64) -> Result<i64> {
        let i = self.timesteps.iter().position(|&s| s == t).ok_or_else(|| {
            Error::invalid(format!(
                "{}: timestep {t} is not in the schedule; call step with the values of timesteps()",
                self.who
            ))
        })?;
        Ok(self.timesteps.get(i + 1).map_or(-1, |&p| p as i64))
    }

    /// alphas_cumprod at the step's timestep `t` and at the timestep it goes to.
    pub fn step_alphas_cumprod(&self, t: f64) -> Result<(f64, f64)> {
        let prev_t = self.previous_timestep(t)?;
        let a_t = self.schedule.alphas_cumprod_int(t)?;
        let a_prev = if prev_t >= 0 {
            self.schedule.alphas_cumprod[prev_t as usize]
        } else {
            self.final_alpha_cumprod
        };
        Ok((a_t, a_prev))
    }

    /// sqrt(abar_t) x0 + sqrt(1 - abar_t) noise at integer `timesteps` (one per batch element,
    /// or one).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        check_same_shape("noise", self.who, noise, x0)?;
        let ts = batch_timesteps(timesteps, x0, self.who)?;
        let a = ts
            .iter()
            .map(|&t| self.schedule.alphas_cumprod_int(t))
            .collect::<Result<Vec<f64>>>()?;
        let sa: Vec<f64> = a.iter().map(|a| a.powf(0.5)).collect();
        let sb: Vec<f64> = a.iter().map(|a| (1.0 - a).powf(0.5)).collect();
        Ok(per_sample(&sa, x0)? * x0 + per_sample(&sb, x0)? * noise)
    }
}
