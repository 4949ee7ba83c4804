//! DDPM ancestral sampling (Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models"),
//! as diffusers' `DDPMScheduler`: x0 from the model (Eq. 15), the posterior mean of
//! q(x_{t-1} | x_t, x0) (Eq. 7) and its variance, fixed (beta-tilde or beta, Sec. 3.2) or learned
//! (Nichol & Dhariwal 2021, Eq. 15). Skipping timesteps, the step goes from t to the next
//! timestep of the list with beta = 1 - abar_t / abar_prev.
//!
//! Reads: the beta schedule keys, `prediction_type`, `variance_type`, `clip_sample(_range)`,
//! `thresholding` (+ ratio, max), `timestep_spacing`, `steps_offset`, `rescale_betas_zero_snr`.

use super::alpha::AlphaState;
use super::config::{SchedulerConfig, SchedulerKind, VarianceType};
use super::schedule::TrainSchedule;
use super::{
    check_model_output, clip_or_threshold, step_noise, vp_x0, work_kind, Scheduler, StepOutput,
};
use genmodels_core::{Error, Result};
use tch::Tensor;

const WHO: SchedulerKind = SchedulerKind::Ddpm;

/// DDPM (diffusers' `DDPMScheduler`).
#[derive(Debug)]
pub struct Ddpm {
    cfg: SchedulerConfig,
    /// The last step goes to alphas_cumprod 1 (x0).
    state: AlphaState,
}

impl Ddpm {
    /// A DDPM scheduler; before `set_timesteps` it walks the whole training chain.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let cfg = config.resolved(WHO);
        cfg.validate(WHO)?;
        let schedule = TrainSchedule::new(&cfg, false)?;
        Ok(Ddpm {
            cfg,
            state: AlphaState::new(WHO, schedule, 1.0),
        })
    }

    fn variance_type(&self) -> VarianceType {
        self.cfg.variance_type.unwrap_or(VarianceType::FixedSmall)
    }

    fn learned(&self) -> bool {
        matches!(
            self.variance_type(),
            VarianceType::Learned | VarianceType::LearnedRange
        )
    }
}

impl Scheduler for Ddpm {
    shared_scheduler_methods!(alpha);

    fn is_stochastic(&self) -> bool {
        true
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_model_output(WHO, model_output, sample, self.learned())?;
        let kind = work_kind(sample);
        let x = sample.to_kind(kind);
        let (out, predicted_variance) = if self.learned() {
            let c = sample.size()[1];
            (
                model_output.narrow(1, 0, c).to_kind(kind),
                Some(model_output.narrow(1, c, c).to_kind(kind)),
            )
        } else {
            (model_output.to_kind(kind), None)
        };
        let t = timestep;
        let (a_t, a_prev) = self.state.step_alphas_cumprod(t)?;
        let beta_prod_t = 1.0 - a_t;
        let beta_prod_prev = 1.0 - a_prev;
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;

        // Eq. 15: x0 from the prediction
        let x0 = vp_x0(
            self.cfg.prediction_type,
            &out,
            &x,
            a_t.powf(0.5),
            beta_prod_t.powf(0.5),
        );
        let x0 = clip_or_threshold(&self.cfg, x0)?;

        // Eq. 7: the posterior mean
        let x0_coeff = a_prev.powf(0.5) * cur_beta / beta_prod_t;
        let x_coeff = cur_alpha.powf(0.5) * beta_prod_prev / beta_prod_t;
        let mut prev = &x0 * x0_coeff + &x * x_coeff;

        if t > 0.0 {
            let z = step_noise(WHO, noise, sample, kind)?;
            // beta-tilde, clamped as diffusers does since its log is taken
            let small = ((1.0 - a_prev) / (1.0 - a_t) * cur_beta).max(1e-20);
            let std: Tensor = match self.variance_type() {
                VarianceType::FixedSmall => Tensor::from(small.powf(0.5)),
                VarianceType::FixedSmallLog => Tensor::from((0.5 * small.ln()).exp()),
                VarianceType::FixedLarge => Tensor::from(cur_beta.powf(0.5)),
                // diffusers takes sqrt(log beta) here, which is NaN (issue 14569); the log
                // variance log(beta) means the standard deviation exp(0.5 log beta)
                VarianceType::FixedLargeLog => Tensor::from((0.5 * cur_beta.ln()).exp()),
                VarianceType::Learned => predicted_variance
                    .as_ref()
                    .map(|v| v.pow_tensor_scalar(0.5))
                    .ok_or_else(|| Error::invalid("ddpm: learned variance missing"))?,
                VarianceType::LearnedRange => {
                    let v = predicted_variance
                        .as_ref()
                        .ok_or_else(|| Error::invalid("ddpm: learned variance missing"))?;
                    let (min_log, max_log) = (small.ln(), cur_beta.ln());
                    let frac = (v + 1.0) / 2.0;
                    let log_var: Tensor = &frac * max_log + (1.0 - &frac) * min_log;
                    (log_var * 0.5).exp()
                }
            };
            prev = &prev + std.to_kind(kind).to_device(sample.device()) * z;
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
    use tch::{Device, Kind};

    fn zeros(shape: &[i64]) -> Tensor {
        Tensor::zeros(shape, (Kind::Double, Device::Cpu))
    }

    #[test]
    fn learned_variance_needs_twice_the_channels() {
        let mut s = Ddpm::new(&SchedulerConfig {
            variance_type: Some(VarianceType::LearnedRange),
            ..Default::default()
        })
        .unwrap();
        s.set_timesteps(10).unwrap();
        let x = zeros(&[1, 3, 4, 4]);
        let e = s
            .step(&zeros(&[1, 3, 4, 4]), 900.0, &x, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "ddpm: model output has shape [1, 3, 4, 4]; expected [1, 6, 4, 4] (a learned variance \
             doubles the channels: 3 mean + 3 variance)"
        );
        assert!(s.step(&zeros(&[1, 6, 4, 4]), 900.0, &x, None).is_ok());
        // and a fixed variance wants the sample's shape
        let mut s = Ddpm::new(&SchedulerConfig::default()).unwrap();
        let e = s
            .step(&zeros(&[1, 6, 4, 4]), 999.0, &x, None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "ddpm: model output has shape [1, 6, 4, 4]; expected [1, 3, 4, 4]"
        );
    }

    /// diffusers' `fixed_large_log` is NaN (sqrt of log beta, issue 14569); ours is the
    /// standard deviation exp(0.5 log beta) = sqrt(beta), i.e. `fixed_large`.
    #[test]
    fn fixed_large_log_is_fixed_large() {
        let run = |vt| {
            let mut s = Ddpm::new(&SchedulerConfig {
                variance_type: Some(vt),
                clip_sample: Some(false),
                ..Default::default()
            })
            .unwrap();
            s.set_timesteps(5).unwrap();
            let mut x = Tensor::from_slice(&[0.3f64, -1.2, 0.7, 2.0]).reshape([1, 1, 2, 2]);
            for (i, t) in s.timesteps().to_vec().into_iter().enumerate() {
                let z = Tensor::from_slice(&[0.5f64, -0.25, 1.0, 0.1]).reshape([1, 1, 2, 2])
                    * (i as f64 + 1.0);
                x = s.step(&(&x * 0.3), t, &x, Some(&z)).unwrap().prev_sample;
            }
            x
        };
        let (a, b) = (
            run(VarianceType::FixedLargeLog),
            run(VarianceType::FixedLarge),
        );
        assert!(a.isfinite().all().int64_value(&[]) == 1);
        assert!((a - b).abs().max().double_value(&[]) < 1e-12);
    }
}
