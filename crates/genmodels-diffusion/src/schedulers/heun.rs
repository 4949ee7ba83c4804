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
use super::schedule::TrainSchedule;
use super::sigma::{respaced_sigmas, ve_x0, SigmaState};
use super::{Scheduler, StepOutput};
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
    state: SigmaState,
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
            state: SigmaState::training_chain(WHO, schedule),
            pending: None,
        };
        let t = s.cfg.num_train_timesteps;
        let ts = s.state.spaced_timesteps(&s.cfg, t)?;
        s.place(ts, t);
        s.state.num_inference_steps = None;
        Ok(s)
    }

    fn place(&mut self, timesteps: Vec<f64>, n: usize) {
        let mut timesteps = timesteps;
        let mut sigmas = self.state.train_sigmas_at(&timesteps);
        // diffusers' HeunDiscreteScheduler has no sigma_min / sigma_max
        let (lo, hi) = (sigmas[sigmas.len() - 1], sigmas[0]);
        if let Some(respaced) = respaced_sigmas(&self.cfg, lo, hi, n) {
            timesteps = self.state.timesteps_of(&respaced);
            sigmas = respaced;
        }
        // interleave: sigmas [s0, s1, s1, ..., s_{n-1}, s_{n-1}, 0], timesteps [t0, t1, t1, ...]
        let mut sig = vec![sigmas[0]];
        for &s in &sigmas[1..] {
            sig.extend([s, s]);
        }
        let mut ts = vec![timesteps[0]];
        for &t in &timesteps[1..] {
            ts.extend([t, t]);
        }
        self.state.lay_out(ts, sig, 0.0, Some(n));
        self.pending = None;
    }
}

impl Scheduler for Heun {
    shared_scheduler_methods!(ve);

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let ts = self.state.spaced_timesteps(&self.cfg, n)?;
        self.place(ts, n);
        Ok(())
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        self.state.check_custom_timesteps(&self.cfg, timesteps)?;
        self.place(timesteps.to_vec(), timesteps.len());
        Ok(())
    }

    fn order(&self) -> usize {
        2
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        _noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        let (i, _, m, x) = self.state.step_input(model_output, timestep, sample)?;
        let sigmas = &self.state.sigmas;
        let first = self.pending.is_none();
        let (sigma, sigma_next) = if first {
            (sigmas[i], sigmas[i + 1])
        } else if i >= 1 {
            (sigmas[i - 1], sigmas[i])
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
        Ok(self.state.step_output(i, prev, x0))
    }
}
