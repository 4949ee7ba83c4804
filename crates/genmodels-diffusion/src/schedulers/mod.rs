//! Noise schedulers at numerical parity with Hugging Face diffusers.
//!
//! One contract, [`Scheduler`], as diffusers' schedulers keep it: `set_timesteps`,
//! `scale_model_input`, `step`, `add_noise`, `get_velocity`, `init_noise_sigma`. A pipeline written
//! against `Box<dyn Scheduler>` runs every sampler, multistep (DPM-Solver++, which keeps the
//! previous model outputs) and two-evaluation (Heun, whose timestep list repeats each inner
//! timestep, as diffusers' does) ones included:
//!
//! ```no_run
//! # use genmodels_diffusion::schedulers::{scheduler_by_name, SchedulerConfig};
//! # use tch::{Kind, Tensor, Device};
//! # fn unet(x: &Tensor, _t: f64) -> Tensor { x.shallow_clone() }
//! # fn main() -> genmodels_core::Result<()> {
//! let mut s = scheduler_by_name("dpm-solver++", &SchedulerConfig::default())?;
//! s.set_timesteps(20)?;
//! let mut x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu)) * s.init_noise_sigma();
//! for t in s.timesteps().to_vec() {
//!     let eps = unet(&s.scale_model_input(&x, t)?, t);
//!     x = s.step(&eps, t, &x, None)?.prev_sample;
//! }
//! # Ok(()) }
//! ```
//!
//! Where diffusers is wrong we differ, say so next to the code, and test ours against the
//! formula (tests/scheduler_parity.rs, and the unit tests):
//! - DDIM's previous timestep is the next one of the list, not `t - T // n` (diffusers issues
//!   12633, 11347: wrong under `linspace`, and `trailing` when n does not divide T);
//! - DDPM's `fixed_large_log` noise scale is exp(0.5 log beta), not sqrt(log beta) (NaN; issue 14569);
//! - Euler's `log_linear` lays n sigmas over n timesteps (diffusers n + 1, ending at sigma_min);
//! - `get_velocity` of the sigma schedulers uses the sigma of the timestep (diffusers' Euler reads
//!   alphas_cumprod at the timestep's position in the schedule);
//! - DPM-Solver keeps the first C channels of a 2C-channel learned-variance output (diffusers: the
//!   first 3), and its `add_noise` before `set_timesteps` uses the timestep's sigma (diffusers
//!   reads its ascending sigmas at the position in its descending timesteps);
//! - DDIM clamps 1 - abar_prev - sigma^2 at 0 before its square root (NaN in float32 otherwise);
//! - a timestep that is not in the schedule is an error (DPM-Solver falls back to the last
//!   sigma); the schedule's first timestep is index 0 even when it repeats (diffusers then runs
//!   off its sigmas: cosine + Karras in float32).
//!
//! Extensions: every beta schedule (`sigmoid` included) works with every scheduler, Euler
//! ancestral takes `prediction_type = sample`, DDIM takes custom timesteps, and configs that
//! diffusers accepts but genmodels cannot honour (beta / Lu / flow sigmas, epsilon at zero
//! terminal SNR, Heun at zero terminal SNR) are refused with one line rather than ignored.
//! Schedules are computed in float64 (diffusers: float32); tensors keep their kind (half
//! precision is computed in float32).

#[macro_use]
mod delegate;
mod alpha;
mod config;
mod ddim;
mod ddpm;
mod dpm_solver;
mod euler;
mod euler_ancestral;
mod heun;
pub mod schedule;
mod sigma;

pub use config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, InterpolationType, PredictionType,
    SchedulerConfig, SchedulerKind, SolverType, TimestepSpacing, TimestepType, VarianceType,
};
pub use ddim::Ddim;
pub use ddpm::Ddpm;
pub use dpm_solver::DpmSolver;
pub use euler::Euler;
pub use euler_ancestral::EulerAncestral;
pub use heun::Heun;

use genmodels_core::{Error, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// What one `step` returns.
#[derive(Debug)]
pub struct StepOutput {
    /// The sample at the next (lower-noise) point of the schedule: the next step's input.
    pub prev_sample: Tensor,
    /// The scheduler's prediction of the clean sample x0 at this step (after clipping or
    /// thresholding); for DPM-Solver++ the data prediction it keeps for its multistep update.
    pub pred_original_sample: Tensor,
}

/// The scheduler contract: what pipelines, training loops and the CLI call. Timesteps are
/// `f64` (Euler-type schedules with Karras sigmas have fractional ones); the model is handed the
/// values of [`Scheduler::timesteps`] in order.
pub trait Scheduler: Send {
    /// Which scheduler this is.
    fn kind(&self) -> SchedulerKind;

    /// The configuration in use (scheduler-dependent defaults filled in).
    fn config(&self) -> &SchedulerConfig;

    /// Lays out `num_inference_steps` timesteps (1..=num_train_timesteps) and resets the state
    /// kept between steps.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// Uses the given strictly decreasing training timesteps instead (DDPM, DDIM, DPM-Solver++,
    /// Euler and Heun; an error for the others).
    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        let _ = timesteps;
        Err(Error::invalid(format!(
            "{}: custom timesteps are not supported; schedulers that take them: ddpm, ddim, \
             dpm-solver++, euler, heun",
            self.kind()
        )))
    }

    /// The timesteps to hand the model, in order: one per model evaluation (Heun: 2n - 1 of
    /// them for n steps). Before `set_timesteps`: the full training chain.
    fn timesteps(&self) -> &[f64];

    /// The number of inference steps set (`None` before `set_timesteps`).
    fn num_inference_steps(&self) -> Option<usize>;

    /// Model evaluations per step of the underlying solver (Heun: 2; as diffusers' `order`).
    fn order(&self) -> usize {
        1
    }

    /// The standard deviation of the initial noise: the pipeline starts from `randn * this`.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// alphas_cumprod over the training timesteps.
    fn alphas_cumprod(&self) -> &[f64];

    /// The sigmas of the current schedule (one per model evaluation, plus the final one), for
    /// the schedulers that step in sigma (DPM-Solver++, Euler, Euler ancestral, Heun).
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    /// Whether `step` consumes noise (so that a caller can feed recorded noise).
    fn is_stochastic(&self) -> bool {
        false
    }

    /// Starts the schedule at index `begin_index` of [`Scheduler::timesteps`] (img2img); without
    /// it the first `step` finds its place from the timestep it is given.
    fn set_begin_index(&mut self, begin_index: usize) -> Result<()> {
        let _ = begin_index;
        Ok(())
    }

    /// The model input at timestep `t` (identity for DDPM/DDIM/DPM-Solver; `x / sqrt(sigma^2 + 1)`
    /// for the Euler-type schedulers).
    fn scale_model_input(&mut self, sample: &Tensor, timestep: f64) -> Result<Tensor> {
        let _ = timestep;
        Ok(sample.shallow_clone())
    }

    /// One reverse step from `sample` at `timestep` given the model's output there. `noise`
    /// (the shape of `sample`) is used by the stochastic samplers; `None` draws it from tch's
    /// generator (`tch::manual_seed`).
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput>;

    /// The forward process at `timesteps` (one per batch element, or one for all).
    fn add_noise(
        &self,
        original_samples: &Tensor,
        noise: &Tensor,
        timesteps: &Tensor,
    ) -> Result<Tensor>;

    /// The v-prediction target sqrt(alphas_cumprod) noise - sqrt(1 - alphas_cumprod) sample
    /// (Salimans & Ho 2022) at `timesteps`.
    fn get_velocity(&self, sample: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        let ts = batch_timesteps(timesteps, sample, self.kind())?;
        let ac = self.alphas_cumprod();
        let a = ts
            .iter()
            .map(|&t| schedule::alphas_cumprod_at(ac, t))
            .collect::<Result<Vec<f64>>>()?;
        check_same_shape("noise", self.kind(), noise, sample)?;
        let sa: Vec<f64> = a.iter().map(|a| a.powf(0.5)).collect();
        let sb: Vec<f64> = a.iter().map(|a| (1.0 - a).powf(0.5)).collect();
        Ok(per_sample(&sa, sample)? * noise - per_sample(&sb, sample)? * sample)
    }
}

/// A scheduler by name (`ddpm`, `ddim`, `dpm-solver++` or `dpmsolver++`, `euler`,
/// `euler-ancestral`, `heun`) with a config; unknown names are an error listing these.
pub fn scheduler_by_name(name: &str, config: &SchedulerConfig) -> Result<Box<dyn Scheduler>> {
    build_scheduler(name.parse()?, config)
}

/// A scheduler of a kind with a config.
pub fn build_scheduler(
    kind: SchedulerKind,
    config: &SchedulerConfig,
) -> Result<Box<dyn Scheduler>> {
    Ok(match kind {
        SchedulerKind::Ddpm => Box::new(Ddpm::new(config)?),
        SchedulerKind::Ddim => Box::new(Ddim::new(config)?),
        SchedulerKind::DpmSolverPlusPlus => Box::new(DpmSolver::new(config)?),
        SchedulerKind::Euler => Box::new(Euler::new(config)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestral::new(config)?),
        SchedulerKind::Heun => Box::new(Heun::new(config)?),
    })
}

/// The scheduler a diffusers `scheduler_config.json` describes (its `_class_name` picks the kind).
pub fn scheduler_from_diffusers_config(path: impl AsRef<Path>) -> Result<Box<dyn Scheduler>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let build = || -> Result<Box<dyn Scheduler>> {
        let cfg = SchedulerConfig::from_json_str(&text)?;
        let v: serde_json::Value = serde_json::from_str(&config::quote_non_finite(&text))
            .map_err(|e| Error::invalid(format!("scheduler config: {e}")))?;
        let class = v
            .get("_class_name")
            .and_then(|c| c.as_str())
            .ok_or_else(|| Error::invalid("no `_class_name` naming the diffusers scheduler"))?;
        build_scheduler(SchedulerKind::from_diffusers_class(class)?, &cfg)
    };
    build().map_err(|e| Error::bad_data(path, e.to_string()))
}

// ---- shared pieces of the schedulers ------------------------------------------------------
// (the state the schedulers of a family share is in `sigma.rs`, DPM-Solver++ and the Euler
// types, and `alpha.rs`, DDPM and DDIM; the trait methods that only delegate to it, in
// `delegate.rs`)

/// The kind computations run in: half precision is upcast to float32 (as diffusers does for its
/// Euler and DPM-Solver steps); float32 and float64 stay.
pub(crate) fn work_kind(t: &Tensor) -> Kind {
    match t.kind() {
        Kind::Half | Kind::BFloat16 => Kind::Float,
        k => k,
    }
}

/// `what` must have the shape and device of `sample`.
pub(crate) fn check_same_shape(
    what: &str,
    who: SchedulerKind,
    t: &Tensor,
    sample: &Tensor,
) -> Result<()> {
    if t.size() != sample.size() {
        return Err(Error::invalid(format!(
            "{who}: {what} has shape {:?}; expected the sample's shape {:?}",
            t.size(),
            sample.size()
        )));
    }
    check_same_device(what, who, t, sample)
}

/// `what` must be on the device of `sample`.
fn check_same_device(what: &str, who: SchedulerKind, t: &Tensor, sample: &Tensor) -> Result<()> {
    if t.device() != sample.device() {
        return Err(Error::invalid(format!(
            "{who}: {what} is on {:?}; expected the sample's device {:?}",
            t.device(),
            sample.device()
        )));
    }
    Ok(())
}

/// The model output must have the sample's shape (or, with a learned variance, twice its channels).
pub(crate) fn check_model_output(
    who: SchedulerKind,
    model_output: &Tensor,
    sample: &Tensor,
    learned_variance: bool,
) -> Result<()> {
    let (m, s) = (model_output.size(), sample.size());
    if s.len() < 2 {
        return Err(Error::invalid(format!(
            "{who}: sample has shape {s:?}; expected [batch, channels, ...]"
        )));
    }
    let mut want = s.clone();
    if learned_variance {
        want[1] *= 2;
    }
    if m != want {
        let why = if learned_variance {
            format!(
                " (a learned variance doubles the channels: {} mean + {} variance)",
                s[1], s[1]
            )
        } else {
            String::new()
        };
        return Err(Error::invalid(format!(
            "{who}: model output has shape {m:?}; expected {want:?}{why}"
        )));
    }
    check_same_device("model output", who, model_output, sample)
}

/// The step's noise: the one given (checked), else drawn from tch's generator.
pub(crate) fn step_noise(
    who: SchedulerKind,
    noise: Option<&Tensor>,
    sample: &Tensor,
    kind: Kind,
) -> Result<Tensor> {
    match noise {
        Some(n) => {
            check_same_shape("noise", who, n, sample)?;
            Ok(n.to_kind(kind))
        }
        None => Ok(sample.to_kind(kind).randn_like()),
    }
}

/// Dynamic thresholding (Saharia et al. 2022, Sec. 2.3): per sample, s = the `ratio` quantile
/// of |x0| clamped to [1, max]; x0 is clipped to [-s, s] and divided by s.
pub(crate) fn threshold_sample(x: &Tensor, ratio: f64, max: f64) -> Result<Tensor> {
    let shape = x.size();
    let kind = x.kind();
    let xf = match kind {
        Kind::Float | Kind::Double => x.shallow_clone(),
        _ => x.to_kind(Kind::Float),
    };
    let flat = xf.f_reshape([shape[0], -1])?;
    let s = flat
        .abs()
        .f_quantile_scalar(ratio, 1, false, "linear")?
        .clamp(1.0, max)
        .unsqueeze(1);
    let neg = -&s;
    let out = flat.clamp_tensor(Some(&neg), Some(&s)) / &s;
    Ok(out.f_reshape(shape)?.to_kind(kind))
}

/// Per-sample coefficients as a tensor broadcasting over `like`'s non-batch dimensions.
pub(crate) fn per_sample(coefs: &[f64], like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![coefs.len() as i64];
    shape.extend(std::iter::repeat_n(1, like.dim().saturating_sub(1)));
    Ok(Tensor::from_slice(coefs)
        .f_reshape(shape)?
        .to_device(like.device())
        .to_kind(work_kind(like)))
}

/// The timesteps of `add_noise` / `get_velocity` as numbers: one per batch element, or one.
pub(crate) fn batch_timesteps(
    timesteps: &Tensor,
    sample: &Tensor,
    who: SchedulerKind,
) -> Result<Vec<f64>> {
    let ts: Vec<f64> = Vec::try_from(
        &timesteps
            .flatten(0, -1)
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Double),
    )?;
    let batch = sample.size().first().copied().unwrap_or(0) as usize;
    if ts.len() != batch && ts.len() != 1 {
        return Err(Error::invalid(format!(
            "{who}: {} timesteps for a batch of {batch}; expected {batch} or 1",
            ts.len()
        )));
    }
    Ok(ts)
}

/// `step` needs the schedule of `set_timesteps` / `set_custom_timesteps` (DDIM, DPM-Solver++).
pub(crate) fn check_timesteps_set(
    who: SchedulerKind,
    num_inference_steps: Option<usize>,
) -> Result<()> {
    if num_inference_steps.is_none() {
        return Err(Error::invalid(format!(
            "{who}: call set_timesteps (or set_custom_timesteps) before step"
        )));
    }
    Ok(())
}

/// The x0 a prediction implies at a VP point x = alpha x0 + sigma eps (alpha^2 + sigma^2 = 1).
pub(crate) fn vp_x0(
    p: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha: f64,
    sigma: f64,
) -> Tensor {
    match p {
        PredictionType::Epsilon => (sample - model_output * sigma) / alpha,
        PredictionType::Sample => model_output.shallow_clone(),
        PredictionType::VPrediction => sample * alpha - model_output * sigma,
    }
}

/// Clips (or dynamically thresholds) a predicted x0 as the config asks.
pub(crate) fn clip_or_threshold(cfg: &SchedulerConfig, x0: Tensor) -> Result<Tensor> {
    if cfg.thresholding {
        threshold_sample(&x0, cfg.dynamic_thresholding_ratio, cfg.sample_max_value)
    } else if cfg.clips() {
        Ok(x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range))
    } else {
        Ok(x0)
    }
}
