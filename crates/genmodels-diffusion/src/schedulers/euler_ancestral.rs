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
use super::schedule::TrainSchedule;
use super::sigma::{ve_x0, SigmaState};
use super::{step_noise, Scheduler, StepOutput};
use genmodels_core::Result;
use tch::Tensor;

const WHO: SchedulerKind = SchedulerKind::EulerAncestral;

/// Euler ancestral (diffusers' `EulerAncestralDiscreteScheduler`).
#[derive(Debug)]
pub struct EulerAncestral {
    cfg: SchedulerConfig,
    state: SigmaState,
}

impl EulerAncestral {
    /// An Euler-ancestral scheduler; before `set_timesteps` its schedule is the training chain.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let cfg = config.resolved(WHO);
        cfg.validate(WHO)?;
        let schedule = TrainSchedule::new(&cfg, true)?;
        Ok(EulerAncestral {
            cfg,
            state: SigmaState::training_chain(WHO, schedule),
        })
    }
}

impl Scheduler for EulerAncestral {
    shared_scheduler_methods!(ve);

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let ts = self.state.spaced_timesteps(&self.cfg, n)?;
        let sigmas = self.state.train_sigmas_at(&ts);
        self.state.lay_out(ts, sigmas, 0.0, Some(n));
        Ok(())
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
        let (i, kind, m, x) = self.state.step_input(model_output, timestep, sample)?;
        let sigma = self.state.sigmas[i];
        let x0 = ve_x0(self.cfg.prediction_type, &m, &x, sigma, sigma);
        let (from, to) = (sigma, self.state.sigmas[i + 1]);
        let up = (to * to * (from * from - to * to) / (from * from)).powf(0.5);
        let down = (to * to - up * up).powf(0.5);
        let derivative = (&x - &x0) / sigma;
        let z = step_noise(WHO, noise, sample, kind)?;
        let prev = x + derivative * (down - sigma) + z * up;
        Ok(self.state.step_output(i, prev, x0))
    }
}
