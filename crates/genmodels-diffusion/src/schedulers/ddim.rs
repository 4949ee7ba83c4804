//! DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models"), as diffusers'
//! `DDIMScheduler`: Eq. 12 with sigma_t(eta) of Eq. 16,
//! x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma_t^2) eps + sigma_t z.
//!
//! One deliberate difference: the previous timestep is the next one of the timestep list.
//! diffusers computes it as `t - T // n`, which is right for `leading` spacing only: under
//! `linspace` (and `trailing` when n does not divide T) it steps to a timestep that is not in the
//! list (diffusers issues 12633 and 11347, open; DDPM's same bug was fixed by PR 9384). A second,
//! smaller one: sqrt(1 - abar_prev - sigma_t^2) is taken of a value clamped at 0 (with eta = 1 at
//! zero terminal SNR it is 0 exactly, and float32 rounding makes it negative: NaN in diffusers).
//! Custom timesteps are accepted (diffusers' DDIM has none).
//!
//! Reads: the beta schedule keys, `prediction_type`, `clip_sample(_range)`, `thresholding` (+
//! ratio, max), `set_alpha_to_one`, `timestep_spacing`, `steps_offset`, `rescale_betas_zero_snr`,
//! and the step options `eta`, `use_clipped_model_output`.

use super::alpha::AlphaState;
use super::config::{PredictionType, SchedulerConfig, SchedulerKind};
use super::schedule::TrainSchedule;
use super::{
    check_model_output, check_timesteps_set, clip_or_threshold, step_noise, vp_x0, work_kind,
    Scheduler, StepOutput,
};
use genmodels_core::{Error, Result};
use tch::Tensor;

const WHO: SchedulerKind = SchedulerKind::Ddim;

/// DDIM (diffusers' `DDIMScheduler`, stepping to the next timestep of the list).
#[derive(Debug)]
pub struct Ddim {
    cfg: SchedulerConfig,
    state: AlphaState,
}

impl Ddim {
    /// A DDIM scheduler; `set_timesteps` must be called before stepping.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let cfg = config.resolved(WHO);
        cfg.validate(WHO)?;
        let schedule = TrainSchedule::new(&cfg, false)?;
        let final_alpha_cumprod = if cfg.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        Ok(Ddim {
            cfg,
            state: AlphaState::new(WHO, schedule, final_alpha_cumprod),
        })
    }

    /// The DDIM eta in use.
    pub fn eta(&self) -> f64 {
        self.cfg.eta
    }

    /// Sets eta (0: deterministic DDIM, 1: DDPM-like noise).
    pub fn set_eta(&mut self, eta: f64) -> Result<()> {
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::invalid(format!(
                "ddim: eta = {eta}; expected a finite value >= 0"
            )));
        }
        self.cfg.eta = eta;
        Ok(())
    }

    /// The timestep the step from `t` goes to: the next one of the list (-1 after the last).
    pub fn previous_timestep(&self, t: f64) -> Result<i64> {
        self.state.previous_timestep(t)
    }
}

impl Scheduler for Ddim {
    shared_scheduler_methods!(alpha);

    fn is_stochastic(&self) -> bool {
        self.cfg.eta > 0.0
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_timesteps_set(WHO, self.state.num_inference_steps)?;
        check_model_output(WHO, model_output, sample, false)?;
        let kind = work_kind(sample);
        let (m, x) = (model_output.to_kind(kind), sample.to_kind(kind));
        let (a_t, a_prev) = self.state.step_alphas_cumprod(timestep)?;
        let beta_prod_t = 1.0 - a_t;
        let (sa, sb) = (a_t.powf(0.5), beta_prod_t.powf(0.5));

        // Eq. 12: x0 and eps from the prediction
        let x0 = vp_x0(self.cfg.prediction_type, &m, &x, sa, sb);
        let mut eps = match self.cfg.prediction_type {
            PredictionType::Epsilon => m.shallow_clone(),
            PredictionType::Sample => (&x - &x0 * sa) / sb,
            PredictionType::VPrediction => &m * sa + &x * sb,
        };
        let x0 = clip_or_threshold(&self.cfg, x0)?;

        // Eq. 16: sigma_t(eta)
        let variance = (1.0 - a_prev) / beta_prod_t * (1.0 - a_t / a_prev);
        let std = self.cfg.eta * variance.powf(0.5);
        if self.cfg.use_clipped_model_output {
            // GLIDE: eps re-derived from the clipped x0
            eps = (&x - &x0 * sa) / sb;
        }
        let direction = (1.0 - a_prev - std * std).max(0.0).powf(0.5);
        let mut prev = &x0 * a_prev.powf(0.5) + eps * direction;
        if self.cfg.eta > 0.0 {
            let z = step_noise(WHO, noise, sample, kind)?;
            prev = &prev + z * std;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedulers::config::TimestepSpacing;
    use tch::{Device, Kind};

    /// Trap 2: the previous timestep comes from the list. Under `linspace` with 10 steps the
    /// list is 999, 888, ..., 111, 0 and `t - T // n` would give 899, 788, ...
    #[test]
    fn previous_timestep_is_the_next_one_of_the_list() {
        for (spacing, n) in [
            (TimestepSpacing::Linspace, 10),
            (TimestepSpacing::Trailing, 7),
            (TimestepSpacing::Leading, 10),
        ] {
            let mut s = Ddim::new(&SchedulerConfig {
                timestep_spacing: Some(spacing),
                ..Default::default()
            })
            .unwrap();
            s.set_timesteps(n).unwrap();
            let ts = s.timesteps().to_vec();
            for w in ts.windows(2) {
                assert_eq!(s.previous_timestep(w[0]).unwrap(), w[1] as i64, "{spacing}");
            }
            assert_eq!(s.previous_timestep(ts[ts.len() - 1]).unwrap(), -1);
        }
        let mut s = Ddim::new(&SchedulerConfig {
            timestep_spacing: Some(TimestepSpacing::Linspace),
            ..Default::default()
        })
        .unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps()[..3], [999.0, 888.0, 777.0]);
        assert_eq!(s.previous_timestep(999.0).unwrap(), 888); // diffusers: 899
    }

    #[test]
    fn needs_set_timesteps_and_a_scheduled_timestep() {
        let mut s = Ddim::new(&SchedulerConfig::default()).unwrap();
        let x = Tensor::zeros([1, 1, 2, 2], (Kind::Double, Device::Cpu));
        let e = s.step(&x, 999.0, &x, None).unwrap_err().to_string();
        assert_eq!(
            e,
            "ddim: call set_timesteps (or set_custom_timesteps) before step"
        );
        s.set_timesteps(10).unwrap();
        let e = s.step(&x, 950.0, &x, None).unwrap_err().to_string();
        assert_eq!(
            e,
            "ddim: timestep 950 is not in the schedule; call step with the values of timesteps()"
        );
    }

    /// eta = 1 at zero terminal SNR in float32: 1 - abar_prev - sigma^2 rounds below 0 (diffusers
    /// takes its square root: NaN); clamped here.
    #[test]
    fn eta_one_at_zero_terminal_snr_stays_finite_in_float32() {
        let mut s = Ddim::new(&SchedulerConfig {
            rescale_betas_zero_snr: true,
            prediction_type: PredictionType::VPrediction,
            timestep_spacing: Some(TimestepSpacing::Trailing),
            eta: 1.0,
            ..Default::default()
        })
        .unwrap();
        s.set_timesteps(10).unwrap();
        tch::manual_seed(0);
        let mut x = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        for t in s.timesteps().to_vec() {
            x = s.step(&(&x * 0.5), t, &x, None).unwrap().prev_sample;
        }
        assert_eq!(x.kind(), Kind::Float);
        assert!(x.isfinite().all().int64_value(&[]) == 1);
    }
}
