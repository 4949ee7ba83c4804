//! Heun's second-order sampler (Karras et al. 2022, Algorithm 1 without churn), as diffusers'
//! `HeunDiscreteScheduler`. Each step evaluates the model twice: the timestep list repeats every
//! inner timestep ([t0, t1, t1, ..., t_{n-1}, t_{n-1}], 2n - 1 evaluations), the first visit of a
//! pair takes the Euler step and the second corrects it with the average slope. The last step,
//! to sigma 0, is a plain Euler step.
//!
//! Reads: the beta schedule keys (its default betas are 0.00085 .. 0.012), `prediction_type`,
//! `use_karras_sigmas`, `use_exponential_sigmas`, `clip_sample(_range)`, `timestep_spacing`,
//! `steps_offset`.

use super::config::{SchedulerConfig, SchedulerKind};
use super::euler::{ve_add_noise, ve_init_noise_sigma, ve_x0};
use super::schedule::{self, TrainSchedule};
use super::{check_model_output, sigma_velocity, work_kind, Scheduler, StepIndex, StepOutput};
use genmodels_core::{Error, Result};
use tch::Tensor;

const WHO: SchedulerKind = SchedulerKind::Heun;

/// What the first half of a Heun step leaves for the second.
#[derive(Debug)]
struct Pending {
    derivative: Tensor,
    dt: f64,
    sample: Tensor,
}

/// Heun (diffusers' `HeunDiscreteScheduler`).
#[derive(Debug)]
pub struct Heun {
    cfg: SchedulerConfig,
    schedule: TrainSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
    pending: Option<Pending>,
}

impl Heun {
    /// A Heun scheduler; like diffusers', it starts with the full training schedule laid out.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let cfg = config.resolved(WHO);
        cfg.validate(WHO)?;
        let schedule = TrainSchedule::new(&cfg, false)?;
        let mut s = Heun {
            cfg,
            schedule,
            timesteps: vec![],
            sigmas: vec![],
            num_inference_steps: None,
            index: StepIndex::default(),
            pending: None,
        };
        let t = s.cfg.num_train_timesteps;
        let ts = schedule::spaced_timesteps(s.cfg.spacing(), t, t, s.cfg.steps_offset, false);
        s.place(ts, t);
        s.num_inference_steps = None;
        Ok(s)
    }

    fn place(&mut self, timesteps: Vec<f64>, n: usize) {
        let train = self.schedule.sigmas();
        let log_sigmas: Vec<f64> = train.iter().map(|s| s.ln()).collect();
        let mut timesteps = timesteps;
        let mut sigmas: Vec<f64> = timesteps
            .iter()
            .map(|&t| schedule::interp(t, &train))
            .collect();
        if self.cfg.use_karras_sigmas || self.cfg.use_exponential_sigmas {
            // diffusers' HeunDiscreteScheduler has no sigma_min / sigma_max
            let (lo, hi) = (sigmas[sigmas.len() - 1], sigmas[0]);
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
        // interleave: sigmas [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0], timesteps [t0, t1, t1, ...]
        let mut sig = vec![sigmas[0]];
        for &s in &sigmas[1..] {
            sig.extend([s, s]);
        }
        sig.push(0.0);
        let mut ts = vec![timesteps[0]];
        for &t in &timesteps[1..] {
            ts.extend([t, t]);
        }
        self.sigmas = sig;
        self.timesteps = ts;
        self.num_inference_steps = Some(n);
        self.index = StepIndex::default();
        self.pending = None;
    }
}

impl Scheduler for Heun {
    fn kind(&self) -> SchedulerKind {
        WHO
    }

    fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let big_t = self.cfg.num_train_timesteps;
        schedule::check_steps(n, big_t, "heun")?;
        let ts =
            schedule::spaced_timesteps(self.cfg.spacing(), n, big_t, self.cfg.steps_offset, false);
        self.place(ts, n);
        Ok(())
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        schedule::check_custom_timesteps(timesteps, self.cfg.num_train_timesteps, "heun")?;
        if self.cfg.use_karras_sigmas || self.cfg.use_exponential_sigmas {
            return Err(Error::invalid(
                "heun: custom timesteps cannot be used with use_karras_sigmas or \
                 use_exponential_sigmas (they set their own timesteps)",
            ));
        }
        self.place(timesteps.to_vec(), timesteps.len());
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn order(&self) -> usize {
        2
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

    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        if begin_index >= self.timesteps.len() {
            return Err(Error::invalid(format!(
                "heun: begin_index {begin_index} is past the {} timesteps",
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
        _noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_model_output(WHO, model_output, sample, false)?;
        let i = self.index.at(&self.timesteps, timestep, WHO)?;
        let kind = work_kind(sample);
        let (m, x) = (model_output.to_kind(kind), sample.to_kind(kind));
        let first = self.pending.is_none();
        let (sigma, sigma_next) = if first {
            (self.sigmas[i], self.sigmas[i + 1])
        } else if i >= 1 {
            (self.sigmas[i - 1], self.sigmas[i])
        } else {
            return Err(Error::invalid("heun: a second-order step at index 0"));
        };
        // gamma = 0: sigma_hat = sigma
        let sigma_input = if first { sigma } else { sigma_next };
        let mut x0 = ve_x0(self.cfg.prediction_type, &m, &x, sigma_input, sigma_input);
        if self.cfg.clips() {
            x0 = x0.clamp(-self.cfg.clip_sample_range, self.cfg.clip_sample_range);
        }
        let prev = match self.pending.take() {
            None => {
                let derivative = (&x - &x0) / sigma;
                let dt = sigma_next - sigma;
                let prev = &x + &derivative * dt;
                // kept for the correction (after the last step, to sigma 0, it is never used)
                self.pending = Some(Pending {
                    derivative,
                    dt,
                    sample: x,
                });
                prev
            }
            Some(p) => {
                let d = (&x - &x0) / sigma_next;
                let derivative = (p.derivative + d) / 2.0;
                p.sample + derivative * p.dt
            }
        };
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
