//! The Euler sampler of Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based
//! Generative Models", Algorithm 2 with optional churn), as diffusers' `EulerDiscreteScheduler`
//! (k-diffusion's `sample_euler`): in sigma, x_{i+1} = x_i + (x_i - x0) / sigma_hat * (sigma_{i+1}
//! - sigma_hat), with the model fed x / sqrt(sigma^2 + 1).
//!
//! Differences from diffusers: `interpolation_type = log_linear` gives n sigmas log-linearly
//! spaced between the sigmas of the first and last timesteps (diffusers makes n + 1 of them for n
//! timesteps, so sigma i is not the sigma of timestep i and the last step ends at sigma_min instead
//! of 0); `get_velocity` reads alphas_cumprod at the timestep (diffusers reads it at the timestep's
//! *position* in the schedule).
//!
//! Reads: the beta schedule keys, `prediction_type`, `interpolation_type`, `use_karras_sigmas`,
//! `use_exponential_sigmas`, `sigma_min`, `sigma_max`, `timestep_spacing`, `timestep_type`,
//! `steps_offset`, `rescale_betas_zero_snr`, `final_sigmas_type`, and the step options
//! `s_churn`, `s_tmin`, `s_tmax`, `s_noise`.

use super::config::{
    FinalSigmasType, InterpolationType, PredictionType, SchedulerConfig, SchedulerKind,
    TimestepSpacing, TimestepType,
};
use super::schedule::{self, TrainSchedule};
use super::{
    batch_timesteps, check_model_output, check_same_shape, per_sample, sigma_lookup,
    sigma_velocity, step_noise, work_kind, Scheduler, StepIndex, StepOutput,
};
use genmodels_core::{Error, Result};
use tch::Tensor;

const WHO: SchedulerKind = SchedulerKind::Euler;

/// Euler (diffusers' `EulerDiscreteScheduler`).
#[derive(Debug)]
pub struct Euler {
    cfg: SchedulerConfig,
    schedule: TrainSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
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

/// diffusers' `init_noise_sigma` of the Euler-type schedulers.
pub(crate) fn ve_init_noise_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
        TimestepSpacing::Leading => (max * max + 1.0).powf(0.5),
    }
}

/// x0 + sigma noise, sigma looked up as diffusers does (see [`sigma_lookup`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn ve_add_noise(
    who: SchedulerKind,
    index: &StepIndex,
    timesteps: &[f64],
    sigmas: &[f64],
    schedule: &TrainSchedule,
    x0: &Tensor,
    noise: &Tensor,
    ts: &Tensor,
) -> Result<Tensor> {
    check_same_shape("noise", who, noise, x0)?;
    let ts = batch_timesteps(ts, x0, who)?;
    let s = sigma_lookup(index, timesteps, sigmas, schedule, &ts, who)?;
    Ok(x0 + per_sample(&s, x0)? * noise)
}

impl Euler {
    /// An Euler scheduler; before `set_timesteps` its schedule is the training chain.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let cfg = config.resolved(WHO);
        cfg.validate(WHO)?;
        if cfg.timestep_type == TimestepType::Continuous
            && cfg.prediction_type != PredictionType::VPrediction
        {
            return Err(Error::invalid(format!(
                "euler: timestep_type = continuous is defined for prediction_type v_prediction \
                 only (got {})",
                cfg.prediction_type
            )));
        }
        let schedule = TrainSchedule::new(&cfg, true)?;
        let mut s = Euler {
            cfg,
            schedule,
            timesteps: vec![],
            sigmas: vec![],
            num_inference_steps: None,
            index: StepIndex::default(),
        };
        let sigmas: Vec<f64> = s.schedule.sigmas().into_iter().rev().collect();
        let timesteps = (0..sigmas.len()).rev().map(|t| t as f64).collect();
        s.finish(timesteps, sigmas, None);
        Ok(s)
    }

    fn finish(&mut self, timesteps: Vec<f64>, sigmas: Vec<f64>, n: Option<usize>) {
        let last = match self.cfg.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => {
                let a0 = self.schedule.alphas_cumprod[0];
                ((1.0 - a0) / a0).powf(0.5)
            }
        };
        // before set_timesteps diffusers appends 0 whatever final_sigmas_type says
        let last = if n.is_some() { last } else { 0.0 };
        self.timesteps = if self.cfg.timestep_type == TimestepType::Continuous {
            sigmas.iter().map(|s| 0.25 * s.ln()).collect()
        } else {
            timesteps
        };
        self.sigmas = sigmas.into_iter().chain([last]).collect();
        self.num_inference_steps = n;
        self.index = StepIndex::default();
    }

    /// Sigmas at the given timesteps, then Karras / exponential respacing.
    fn place(&mut self, timesteps: Vec<f64>, n: usize) -> Result<()> {
        let train = self.schedule.sigmas();
        let log_sigmas: Vec<f64> = train.iter().map(|s| s.ln()).collect();
        let mut timesteps = timesteps;
        let mut sigmas: Vec<f64> = match self.cfg.interpolation_type {
            InterpolationType::Linear => timesteps
                .iter()
                .map(|&t| schedule::interp(t, &train))
                .collect(),
            // diffusers: exp(torch.linspace(log sigma_max_train, log sigma_min_train, n + 1)),
            // n + 1 sigmas for n timesteps; here n, between the first and last timesteps' sigmas
            InterpolationType::LogLinear => {
                let first = schedule::interp(timesteps[0], &train);
                let last = schedule::interp(timesteps[timesteps.len() - 1], &train);
                schedule::exponential_sigmas(last, first, timesteps.len())
            }
        };
        if self.cfg.use_karras_sigmas || self.cfg.use_exponential_sigmas {
            let lo = self.cfg.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let hi = self.cfg.sigma_max.unwrap_or(sigmas[0]);
            sigmas = if self.cfg.use_karras_sigmas {
                schedule::karras_sigmas(lo, hi, n)
            } else {
                schedule::exponential_sigmas(lo, hi, n)
            };
            timesteps = sigmas
                .iter()
                .map(|&s| schedule::sigma_to_t(s, &log_sigmas))
                .collect();
        }
        self.finish(timesteps, sigmas, Some(n));
        Ok(())
    }
}

impl Scheduler for Euler {
    fn kind(&self) -> SchedulerKind {
        WHO
    }

    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let big_t = self.cfg.num_train_timesteps;
        schedule::check_steps(n, big_t, "euler")?;
        let ts =
            schedule::spaced_timesteps(self.cfg.spacing(), n, big_t, self.cfg.steps_offset, false);
        self.place(ts, n)
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        schedule::check_custom_timesteps(timesteps, self.cfg.num_train_timesteps, "euler")?;
        if self.cfg.use_karras_sigmas || self.cfg.use_exponential_sigmas {
            return Err(Error::invalid(
                "euler: custom timesteps cannot be used with use_karras_sigmas or \
                 use_exponential_sigmas (they set their own timesteps)",
            ));
        }
        if self.cfg.timestep_type == TimestepType::Continuous {
            return Err(Error::invalid(
                "euler: custom timesteps cannot be used with timestep_type = continuous",
            ));
        }
        self.place(timesteps.to_vec(), timesteps.len())
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
        self.cfg.s_churn > 0.0
    }

    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        if begin_index >= self.timesteps.len() {
            return Err(Error::invalid(format!(
                "euler: begin_index {begin_index} is past the {} timesteps",
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
        let (m, mut x) = (model_output.to_kind(kind), sample.to_kind(kind));
        let sigma = self.sigmas[i];
        let c = &self.cfg;
        let s_tmax = c.s_tmax.unwrap_or(f64::INFINITY);
        let gamma = if c.s_tmin <= sigma && sigma <= s_tmax {
            (c.s_churn / (self.sigmas.len() - 1) as f64).min(2f64.sqrt() - 1.0)
        } else {
            0.0
        };
        let sigma_hat = sigma * (gamma + 1.0);
        if gamma > 0.0 {
            let z = step_noise(WHO, noise, sample, kind)?;
            x = &x + z * c.s_noise * (sigma_hat * sigma_hat - sigma * sigma).powf(0.5);
        }
        let x0 = ve_x0(c.prediction_type, &m, &x, sigma_hat, sigma);
        let derivative = (&x - &x0) / sigma_hat;
        let dt = self.sigmas[i + 1] - sigma_hat;
        let prev = x + derivative * dt;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// log_linear: n sigmas, exp(linspace(log sigma(t_0), log sigma(t_{n-1}), n)), then 0.
    #[test]
    fn log_linear_sigmas_are_n_log_spaced_values() {
        let mut s = Euler::new(&SchedulerConfig {
            interpolation_type: InterpolationType::LogLinear,
            ..Default::default()
        })
        .unwrap();
        s.set_timesteps(10).unwrap();
        let sig = s.sigmas().unwrap().to_vec();
        assert_eq!(sig.len(), 11);
        assert_eq!(sig[10], 0.0);
        let train = s.schedule.sigmas();
        let (hi, lo) = (train[999].ln(), train[0].ln());
        for (i, &v) in sig[..10].iter().enumerate() {
            let want = (hi + (lo - hi) * i as f64 / 9.0).exp();
            assert!((v - want).abs() <= 1e-12 * want, "{i}: {v} vs {want}");
        }
    }

    #[test]
    fn steps_must_be_scheduled_and_in_range() {
        let mut s = Euler::new(&SchedulerConfig::default()).unwrap();
        for n in [0, 1001] {
            let e = s.set_timesteps(n).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "euler: num_inference_steps = {n}; expected 1..=1000 (num_train_timesteps)"
                )
            );
        }
        s.set_timesteps(2).unwrap();
        let x = Tensor::zeros([1, 1, 1, 1], (tch::Kind::Double, tch::Device::Cpu));
        for t in s.timesteps().to_vec() {
            s.step(&x, t, &x, None).unwrap();
        }
        let e = s.step(&x, 0.0, &x, None).unwrap_err().to_string();
        assert_eq!(
            e,
            "euler: the schedule of 2 timesteps is finished; call set_timesteps again"
        );
    }
}
