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
    InterpolationType, PredictionType, SchedulerConfig, SchedulerKind, TimestepType,
};
use super::schedule::{self, TrainSchedule};
use super::sigma::{respaced_sigmas, ve_x0, SigmaState};
use super::{step_noise, Scheduler, StepOutput};
use genmodels_core::{Error, Result};
use tch::Tensor;

const WHO: SchedulerKind = SchedulerKind::Euler;

/// Euler (diffusers' `EulerDiscreteScheduler`).
#[derive(Debug)]
pub struct Euler {
    cfg: SchedulerConfig,
    state: SigmaState,
}

/// EDM's continuous timesteps 0.25 ln(sigma).
fn continuous_timesteps(sigmas: &[f64]) -> Vec<f64> {
    sigmas.iter().map(|s| 0.25 * s.ln()).collect()
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
        // before set_timesteps diffusers ends with sigma 0 whatever final_sigmas_type says
        let mut state = SigmaState::training_chain(WHO, schedule);
        if cfg.timestep_type == TimestepType::Continuous {
            state.timesteps = continuous_timesteps(&state.sigmas[..state.timesteps.len()]);
        }
        Ok(Euler { cfg, state })
    }

    /// Sigmas at the given timesteps, then Karras / exponential respacing.
    fn place(&mut self, timesteps: Vec<f64>, n: usize) -> Result<()> {
        let mut timesteps = timesteps;
        let mut sigmas: Vec<f64> = match self.cfg.interpolation_type {
            InterpolationType::Linear => self.state.train_sigmas_at(&timesteps),
            // diffusers: exp(torch.linspace(log sigma_max_train, log sigma_min_train, n + 1)),
            // n + 1 sigmas for n timesteps; here n, between the first and last timesteps' sigmas
            InterpolationType::LogLinear => {
                let ends = self
                    .state
                    .train_sigmas_at(&[timesteps[0], timesteps[timesteps.len() - 1]]);
                schedule::exponential_sigmas(ends[1], ends[0], timesteps.len())
            }
        };
        let lo = self.cfg.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
        let hi = self.cfg.sigma_max.unwrap_or(sigmas[0]);
        if let Some(respaced) = respaced_sigmas(&self.cfg, lo, hi, n) {
            timesteps = self.state.timesteps_of(&respaced);
            sigmas = respaced;
        }
        if self.cfg.timestep_type == TimestepType::Continuous {
            timesteps = continuous_timesteps(&sigmas);
        }
        let last = self.state.final_sigma(self.cfg.final_sigmas_type);
        self.state.lay_out(timesteps, sigmas, last, Some(n));
        Ok(())
    }
}

impl Scheduler for Euler {
    shared_scheduler_methods!(ve);

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let ts = self.state.spaced_timesteps(&self.cfg, n)?;
        self.place(ts, n)
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        self.state.check_custom_timesteps(&self.cfg, timesteps)?;
        if self.cfg.timestep_type == TimestepType::Continuous {
            return Err(Error::invalid(
                "euler: custom timesteps cannot be used with timestep_type = continuous",
            ));
        }
        self.place(timesteps.to_vec(), timesteps.len())
    }

    fn is_stochastic(&self) -> bool {
        self.cfg.s_churn > 0.0
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let (i, kind, m, mut x) = self.state.step_input(model_output, timestep, sample)?;
        let sigmas = &self.state.sigmas;
        let sigma = sigmas[i];
        let c = &self.cfg;
        let s_tmax = c.s_tmax.unwrap_or(f64::INFINITY);
        let gamma = if c.s_tmin <= sigma && sigma <= s_tmax {
            (c.s_churn / (sigmas.len() - 1) as f64).min(2f64.sqrt() - 1.0)
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
        let dt = sigmas[i + 1] - sigma_hat;
        let prev = x + derivative * dt;
        Ok(self.state.step_output(i, prev, x0))
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
        let train = s.state.schedule.sigmas();
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
