//! DDPM ancestral sampling (Ho, Jain & Abbeel 2020, "Denoising Diffusion Probabilistic Models"),
//! as diffusers' `DDPMScheduler`: x0 from the model (Eq. 15), the posterior mean of
//! q(x_{t-1} | x_t, x0) (Eq. 7) and its variance, fixed (beta-tilde or beta, Sec. 3.2) or learned
//! (Nichol & Dhariwal 2021, Eq. 15). Skipping timesteps, the step goes from t to the next
//! timestep of the list with beta = 1 - abar_t / abar_prev.
//!
//! Reads: the beta schedule keys, `prediction_type`, `variance_type`, `clip_sample(_range)`,
//! `thresholding` (+ ratio, max), `timestep_spacing`, `steps_offset`, `rescale_betas_zero_snr`.

use super::config::{SchedulerConfig, SchedulerKind, VarianceType};
use super::schedule::{self, TrainSchedule};
use super::{
    batch_timesteps, check_model_output, check_same_shape, clip_or_threshold, per_sample,
    step_noise, vp_x0, work_kind, Scheduler, StepOutput,
};
use genmodels_core::{Error, Result};
use tch::Tensor;

const WHO: SchedulerKind = SchedulerKind::Ddpm;

/// DDPM (diffusers' `DDPMScheduler`).
#[derive(Debug)]
pub struct Ddpm {
    cfg: SchedulerConfig,
    schedule: TrainSchedule,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
}

impl Ddpm {
    /// A DDPM scheduler; before `set_timesteps` it walks the whole training chain.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let cfg = config.resolved(WHO);
        cfg.validate(WHO)?;
        let schedule = TrainSchedule::new(&cfg, false)?;
        let timesteps = (0..cfg.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(Ddpm {
            cfg,
            schedule,
            timesteps,
            num_inference_steps: None,
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

    /// The timestep after `t` in the list (-1 after the last).
    fn previous_timestep(&self, t: f64) -> Result<i64> {
        let i = self
            .timesteps
            .iter()
            .position(|&s| s == t)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "ddpm: timestep {t} is not in the schedule; call step with the values of timesteps()"
                ))
            })?;
        Ok(self.timesteps.get(i + 1).map_or(-1, |&p| p as i64))
    }
}

impl Scheduler for Ddpm {
    fn kind(&self) -> SchedulerKind {
        WHO
    }

    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let big_t = self.cfg.num_train_timesteps;
        schedule::check_steps(n, big_t, "ddpm")?;
        self.timesteps =
            schedule::spaced_timesteps(self.cfg.spacing(), n, big_t, self.cfg.steps_offset, true);
        self.num_inference_steps = Some(n);
        Ok(())
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        schedule::check_custom_timesteps(timesteps, self.cfg.num_train_timesteps, "ddpm")?;
        if let Some(t) = timesteps.iter().find(|t| t.fract() != 0.0) {
            return Err(Error::invalid(format!(
                "ddpm: custom timestep {t} is not an integer"
            )));
        }
        self.timesteps = timesteps.to_vec();
        self.num_inference_steps = Some(timesteps.len());
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn alphas_cumprod(&self) -> &[f64] {
        &self.schedule.alphas_cumprod
    }

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
        let prev_t = self.previous_timestep(t)?;
        let ac = &self.schedule.alphas_cumprod;
        let a_t = self.schedule.alphas_cumprod_int(t)?;
        let a_prev = if prev_t >= 0 {
            ac[prev_t as usize]
        } else {
            1.0
        };
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

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        vp_add_noise(WHO, &self.schedule, x0, noise, timesteps)
    }
}

/// sqrt(abar_t) x0 + sqrt(1 - abar_t) noise at integer timesteps (DDPM, DDIM).
pub(crate) fn vp_add_noise(
    who: SchedulerKind,
    schedule: &TrainSchedule,
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
) -> Result<Tensor> {
    check_same_shape("noise", who, noise, x0)?;
    let ts = batch_timesteps(timesteps, x0, who)?;
    let a = ts
        .iter()
        .map(|&t| schedule.alphas_cumprod_int(t))
        .collect::<Result<Vec<f64>>>()?;
    let sa: Vec<f64> = a.iter().map(|a| a.powf(0.5)).collect();
    let sb: Vec<f64> = a.iter().map(|a| (1.0 - a).powf(0.5)).collect();
    Ok(per_sample(&sa, x0)? * x0 + per_sample(&sb, x0)? * noise)
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
