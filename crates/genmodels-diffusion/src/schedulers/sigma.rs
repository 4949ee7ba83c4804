//! What the sigma-stepping schedulers (DPM-Solver++, Euler, Euler ancestral, Heun) share: the
//! sigmas they step through and where they are in them ([`SigmaState`]: index lookup, begin
//! index, `add_noise`, `get_velocity`, `scale_model_input`), the Karras / exponential respacing,
//! and the k-diffusion (variance-exploding) formulas of the Euler-type ones.
//!
//! A sigma s stands for the VP point x = alpha (x0 + s eps) with alpha = 1 / sqrt(1 + s^2):
//! the Euler-type schedulers step the VE sample x0 + s eps, DPM-Solver++ the VP one.

use super::config::{
    FinalSigmasType, PredictionType, SchedulerConfig, SchedulerKind, TimestepSpacing,
};
use super::schedule::{self, TrainSchedule};
use super::{
    batch_timesteps, check_model_output, check_same_shape, per_sample, work_kind, StepOutput,
};
use genmodels_core::{Error, Result};
use tch::{Kind, Tensor};

/// Where a sigma-stepping scheduler is in its schedule (diffusers' `_step_index` / `_begin_index`).
#[derive(Debug, Clone, Default)]
pub(crate) struct StepIndex {
    pub step: Option<usize>,
    pub begin: Option<usize>,
}

impl StepIndex {
    /// The index for a call at `t`: found on the first call (from `begin`, else from `t`),
    /// then counted; `t` must be the schedule's timestep there.
    pub fn at(&mut self, timesteps: &[f64], t: f64, who: SchedulerKind) -> Result<usize> {
        let i = match (self.step, self.begin) {
            (Some(i), _) => i,
            (None, Some(b)) => b,
            (None, None) => index_for_timestep(timesteps, t, who)?,
        };
        if i >= timesteps.len() {
            return Err(Error::invalid(format!(
                "{who}: the schedule of {} timesteps is finished; call set_timesteps again",
                timesteps.len()
            )));
        }
        if timesteps[i] != t {
            return Err(Error::invalid(format!(
                "{who}: called at timestep {t}, but the schedule is at index {i}, timestep {}",
                timesteps[i]
            )));
        }
        self.step = Some(i);
        Ok(i)
    }
}

/// diffusers' `index_for_timestep`: the position of `t` in the schedule, the second one if `t`
/// is there twice (so that img2img, starting mid-schedule, does not skip a sigma). One
/// difference: the schedule's first timestep is position 0 even if it repeats (diffusers then
/// starts at the second copy and runs off the end of its sigmas).
pub(crate) fn index_for_timestep(timesteps: &[f64], t: f64, who: SchedulerKind) -> Result<usize> {
    if timesteps.first() == Some(&t) {
        return Ok(0);
    }
    let found: Vec<usize> = timesteps
        .iter()
        .enumerate()
        .filter(|(_, &s)| s == t)
        .map(|(i, _)| i)
        .collect();
    match found.as_slice() {
        [] => Err(Error::invalid(format!(
            "{who}: timestep {t} is not in the schedule; call step with the values of timesteps()"
        ))),
        [i] => Ok(*i),
        [_, i, ..] => Ok(*i),
    }
}

/// alpha, sigma_t of the VP point with sigma s: alpha = 1 / sqrt(1 + s^2), sigma_t = s alpha
/// (alpha^2 = alphas_cumprod for a training timestep).
pub(crate) fn alpha_sigma(s: f64) -> (f64, f64) {
    let alpha = 1.0 / (s * s + 1.0).powf(0.5);
    (alpha, s * alpha)
}

/// x0 of a k-diffusion (VE) point at sigma: eps and v use the c_skip / c_out of the VP model.
pub(crate) fn ve_x0(
    p: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    sigma_eps: f64,
    sigma_v: f64,
) -> Tensor {
    match p {
        PredictionType::Sample => model_output.shallow_clone(),
        PredictionType::Epsilon => sample - model_output * sigma_eps,
        PredictionType::VPrediction => {
            model_output * (-sigma_v / (sigma_v * sigma_v + 1.0).powf(0.5))
                + sample / (sigma_v * sigma_v + 1.0)
        }
    }
}

/// The Karras (Eq. 5, rho = 7) or else exponential sigmas from `hi` down to `lo`, when the config
/// asks for one of them (`None`: the sigmas of the timesteps stay).
pub(crate) fn respaced_sigmas(
    cfg: &SchedulerConfig,
    lo: f64,
    hi: f64,
    n: usize,
) -> Option<Vec<f64>> {
    if cfg.use_karras_sigmas {
        Some(schedule::karras_sigmas(lo, hi, n))
    } else if cfg.use_exponential_sigmas {
        Some(schedule::exponential_sigmas(lo, hi, n))
    } else {
        None
    }
}

/// The state of a sigma-stepping scheduler: its training schedule, the timesteps and sigmas laid
/// out by `set_timesteps` (before it, the training chain), and the step index.
#[derive(Debug)]
pub(crate) struct SigmaState {
    who: SchedulerKind,
    /// The forward process the sigmas come from.
    pub schedule: TrainSchedule,
    /// The timesteps handed to the model, in order.
    pub timesteps: Vec<f64>,
    /// One per timestep, plus the final one.
    pub sigmas: Vec<f64>,
    /// `None` before `set_timesteps`.
    pub num_inference_steps: Option<usize>,
    /// Where the schedule is.
    pub index: StepIndex,
}

impl SigmaState {
    /// The training chain: timesteps T-1, ..., 0 at their training sigmas, then sigma 0 (the
    /// schedule before `set_timesteps`, which `add_noise` reads).
    pub fn training_chain(who: SchedulerKind, schedule: TrainSchedule) -> Self {
        let sigmas: Vec<f64> = schedule.sigmas().into_iter().rev().chain([0.0]).collect();
        let timesteps = (0..schedule.len()).rev().map(|t| t as f64).collect();
        SigmaState {
            who,
            schedule,
            timesteps,
            sigmas,
            num_inference_steps: None,
            index: StepIndex::default(),
        }
    }

    /// The scheduler whose state this is (for its messages).
    pub fn who(&self) -> SchedulerKind {
        self.who
    }

    /// Lays out a schedule: `sigmas` (one per timestep) end with `final_sigma`; the step and
    /// begin indices are reset.
    pub fn lay_out(
        &mut self,
        timesteps: Vec<f64>,
        sigmas: Vec<f64>,
        final_sigma: f64,
        num_inference_steps: Option<usize>,
    ) {
        self.timesteps = timesteps;
        self.sigmas = sigmas.into_iter().chain([final_sigma]).collect();
        self.num_inference_steps = num_inference_steps;
        self.index = StepIndex::default();
    }

    /// The sigma the last step goes to: 0, or the training schedule's smallest sigma.
    pub fn final_sigma(&self, final_sigmas_type: FinalSigmasType) -> f64 {
        match final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => {
                let a0 = self.schedule.alphas_cumprod[0];
                ((1.0 - a0) / a0).powf(0.5)
            }
        }
    }

    /// The training sigmas at (fractional) timesteps, interpolated linearly.
    pub fn train_sigmas_at(&self, timesteps: &[f64]) -> Vec<f64> {
        let train = self.schedule.sigmas();
        timesteps
            .iter()
            .map(|&t| schedule::interp(t, &train))
            .collect()
    }

    /// The fractional training timesteps of sigmas (diffusers' `_sigma_to_t`).
    pub fn timesteps_of(&self, sigmas: &[f64]) -> Vec<f64> {
        let log_sigmas: Vec<f64> = self.schedule.sigmas().iter().map(|s| s.ln()).collect();
        sigmas
            .iter()
            .map(|&s| schedule::sigma_to_t(s, &log_sigmas))
            .collect()
    }

    /// `n` spaced inference timesteps (fractional under `linspace`), after checking `n`.
    pub fn spaced_timesteps(&self, cfg: &SchedulerConfig, n: usize) -> Result<Vec<f64>> {
        schedule::inference_timesteps(cfg, n, self.who, false)
    }

    /// Checks custom timesteps; Karras / exponential sigmas, which set their own, refuse them.
    pub fn check_custom_timesteps(&self, cfg: &SchedulerConfig, timesteps: &[f64]) -> Result<()> {
        let who = self.who;
        schedule::check_custom_timesteps(timesteps, cfg.num_train_timesteps, who.as_str())?;
        if cfg.use_karras_sigmas || cfg.use_exponential_sigmas {
            return Err(Error::invalid(format!(
                "{who}: custom timesteps cannot be used with use_karras_sigmas or \
                 use_exponential_sigmas (they set their own timesteps)"
            )));
        }
        Ok(())
    }

    /// [`Scheduler::set_begin_index`](super::Scheduler::set_begin_index).
    pub fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        if begin_index >= self.timesteps.len() {
            return Err(Error::invalid(format!(
                "{}: begin_index {begin_index} is past the {} timesteps",
                self.who,
                self.timesteps.len()
            )));
        }
        self.index.begin = Some(begin_index);
        Ok(())
    }

    /// The schedule index of a call at `timestep` (see [`StepIndex::at`]).
    pub fn index_at(&mut self, timestep: f64) -> Result<usize> {
        self.index.at(&self.timesteps, timestep, self.who)
    }

    /// The start of an Euler-type step: after checking the model output against the sample,
    /// the schedule index of `timestep`, the kind computations run in ([`work_kind`]), and the
    /// model output and the sample in that kind.
    pub fn step_input(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
    ) -> Result<(usize, Kind, Tensor, Tensor)> {
        check_model_output(self.who, model_output, sample, false)?;
        let i = self.index_at(timestep)?;
        let kind = work_kind(sample);
        Ok((i, kind, model_output.to_kind(kind), sample.to_kind(kind)))
    }

    /// The end of a step from index `i`: the next call is at `i + 1`.
    pub fn step_output(&mut self, i: usize, prev_sample: Tensor, x0: Tensor) -> StepOutput {
        self.index.step = Some(i + 1);
        StepOutput {
            prev_sample,
            pred_original_sample: x0,
        }
    }

    /// The k-diffusion model input at `timestep`: x / sqrt(sigma^2 + 1).
    pub fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let i = self.index_at(timestep)?;
        let s = self.sigmas[i];
        Ok(sample / (s * s + 1.0).powf(0.5))
    }

    /// diffusers' `init_noise_sigma` of the Euler-type schedulers: the largest sigma (`leading`
    /// spacing: the standard deviation sqrt(sigma^2 + 1) of the VP point).
    pub fn ve_init_noise_sigma(&self, spacing: TimestepSpacing) -> f64 {
        let max = self
            .sigmas
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        match spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).powf(0.5),
        }
    }

    /// The sigmas `add_noise` uses, as diffusers picks them: the current step's (or the begin
    /// index's) when a begin index is set, else the schedule's sigma at each timestep's
    /// position; a timestep outside the schedule gets the training sigma at it.
    fn sigma_lookup(&self, ts: &[f64]) -> Result<Vec<f64>> {
        let who = self.who;
        if let Some(b) = self.index.begin {
            let i = self.index.step.unwrap_or(b);
            let s = *self.sigmas.get(i).ok_or_else(|| {
                Error::invalid(format!("{who}: step index {i} is past the schedule"))
            })?;
            return Ok(vec![s; ts.len()]);
        }
        let train = self.schedule.sigmas();
        ts.iter()
            .map(|&t| match index_for_timestep(&self.timesteps, t, who) {
                Ok(i) => Ok(self.sigmas[i]),
                Err(_) => {
                    schedule::alphas_cumprod_at(&self.schedule.alphas_cumprod, t)?;
                    Ok(schedule::interp(t, &train))
                }
            })
            .collect()
    }

    /// The sigmas of `add_noise` / `get_velocity` at `timesteps` (one per batch element of
    /// `sample`, or one), `noise` checked against `sample` first.
    fn noise_sigmas(
        &self,
        sample: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Vec<f64>> {
        check_same_shape("noise", self.who, noise, sample)?;
        let ts = batch_timesteps(timesteps, sample, self.who)?;
        self.sigma_lookup(&ts)
    }

    /// The forward process of the Euler-type schedulers: x0 + sigma noise.
    pub fn ve_add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let s = self.noise_sigmas(x0, noise, timesteps)?;
        Ok(x0 + per_sample(&s, x0)? * noise)
    }

    /// The forward process of DPM-Solver++: alpha x0 + sigma_t noise (see [`alpha_sigma`]).
    pub fn vp_add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let sigmas = self.noise_sigmas(x0, noise, timesteps)?;
        let (a, s): (Vec<f64>, Vec<f64>) = sigmas.iter().map(|&s| alpha_sigma(s)).unzip();
        Ok(per_sample(&a, x0)? * x0 + per_sample(&s, x0)? * noise)
    }

    /// The v-prediction target at the sigma `add_noise` picks: v = alpha noise - sigma_t sample
    /// (see [`alpha_sigma`]).
    pub fn velocity(&self, sample: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let sigmas = self.noise_sigmas(sample, noise, timesteps)?;
        let (a, b): (Vec<f64>, Vec<f64>) = sigmas.iter().map(|&s| alpha_sigma(s)).unzip();
        Ok(per_sample(&a, sample)? * noise - per_sample(&b, sample)? * sample)
    }
}
