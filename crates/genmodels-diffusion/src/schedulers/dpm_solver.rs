//! DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
//! Diffusion Probabilistic Models", arXiv 2211.01095), 2M by default, as diffusers'
//! `DPMSolverMultistepScheduler`; also its orders 1 and 3, the `heun` second-order form, the SDE
//! variant, and the original DPM-Solver (arXiv 2206.00927) as `algorithm_type`s.
//!
//! The solver works in lambda = log(alpha_t / sigma_t) with alpha_t = 1 / sqrt(1 + s^2),
//! sigma_t = s alpha_t for the schedule's sigma s. Each step converts the model output to the data
//! prediction x0 (DPM-Solver++) or to eps (DPM-Solver), keeps the last `solver_order` of them and
//! applies the multistep update of that order (lowered at the first steps and, for short
//! schedules, the last ones).
//!
//! Differences from diffusers: a learned-variance output keeps its first C channels for a
//! C-channel sample (diffusers keeps channels `:3`, right for RGB only); `add_noise` before
//! `set_timesteps` uses the sigma of the timestep (diffusers indexes its ascending sigmas with the
//! position in its descending timesteps, i.e. the sigma of T-1-t); a timestep outside the schedule
//! is an error (diffusers falls back to the last sigma).
//!
//! Reads: the beta schedule keys, `prediction_type`, `thresholding` (+ ratio, max),
//! `solver_order`, `algorithm_type`, `solver_type`, `lower_order_final`, `euler_at_final`,
//! `final_sigmas_type`, `lambda_min_clipped`, `use_karras_sigmas`, `use_exponential_sigmas`,
//! `variance_type` (`learned*`), `timestep_spacing`, `steps_offset`, `rescale_betas_zero_snr`.

use super::config::{
    AlgorithmType, BetaSchedule, FinalSigmasType, PredictionType, SchedulerConfig, SchedulerKind,
    SolverType, TimestepSpacing, VarianceType,
};
use super::schedule::{self, TrainSchedule};
use super::sigma::{alpha_sigma, respaced_sigmas, SigmaState};
use super::{
    check_model_output, check_timesteps_set, step_noise, threshold_sample, vp_x0, work_kind,
    Scheduler, StepOutput,
};
use genmodels_core::{Error, Result};
use tch::Tensor;

const WHO: SchedulerKind = SchedulerKind::DpmSolverPlusPlus;

/// DPM-Solver++ / DPM-Solver multistep (diffusers' `DPMSolverMultistepScheduler`).
#[derive(Debug)]
pub struct DpmSolver {
    cfg: SchedulerConfig,
    state: SigmaState,
    /// The last `solver_order` converted model outputs, oldest first.
    model_outputs: Vec<Option<Tensor>>,
    lower_order_nums: usize,
}

impl DpmSolver {
    /// A DPM-Solver++ scheduler; `set_timesteps` must be called before stepping.
    pub fn new(config: &SchedulerConfig) -> Result<Self> {
        let cfg = config.resolved(WHO);
        cfg.validate(WHO)?;
        if !(1..=3).contains(&cfg.solver_order) {
            return Err(Error::invalid(format!(
                "dpm-solver++: solver_order = {}; expected 1, 2 or 3",
                cfg.solver_order
            )));
        }
        let plus = matches!(
            cfg.algorithm_type,
            AlgorithmType::DpmSolverPlusPlus | AlgorithmType::SdeDpmSolverPlusPlus
        );
        if cfg.solver_order == 3 && cfg.algorithm_type == AlgorithmType::SdeDpmSolver {
            return Err(Error::invalid(
                "dpm-solver++: solver_order = 3 has no sde-dpmsolver update; expected 1 or 2",
            ));
        }
        if !plus && cfg.final_sigmas_type == FinalSigmasType::Zero {
            return Err(Error::invalid(format!(
                "dpm-solver++: final_sigmas_type = zero needs algorithm_type dpmsolver++ or \
                 sde-dpmsolver++ (got {}); use final_sigmas_type = sigma_min",
                cfg.algorithm_type
            )));
        }
        let schedule = TrainSchedule::new(&cfg, true)?;
        Ok(DpmSolver {
            model_outputs: (0..cfg.solver_order).map(|_| None).collect(),
            cfg,
            // before set_timesteps: the training chain, for add_noise
            state: SigmaState::training_chain(WHO, schedule),
            lower_order_nums: 0,
        })
    }

    fn is_plus_plus(&self) -> bool {
        matches!(
            self.cfg.algorithm_type,
            AlgorithmType::DpmSolverPlusPlus | AlgorithmType::SdeDpmSolverPlusPlus
        )
    }

    fn is_sde(&self) -> bool {
        matches!(
            self.cfg.algorithm_type,
            AlgorithmType::SdeDpmSolver | AlgorithmType::SdeDpmSolverPlusPlus
        )
    }

    fn learned_variance(&self) -> bool {
        matches!(
            self.cfg.variance_type,
            Some(VarianceType::Learned | VarianceType::LearnedRange)
        )
    }

    /// The last training timestep used: lambda below `lambda_min_clipped` is cut off.
    fn last_timestep(&self) -> usize {
        let ac = &self.state.schedule.alphas_cumprod;
        // lambda_t = log(alpha_t) - log(sigma_t) decreases in t: count, from the end, those below
        let clipped = ac
            .iter()
            .rev()
            .map(|a| a.sqrt().ln() - (1.0 - a).sqrt().ln())
            .take_while(|&l| l < self.cfg.lambda_min_clipped)
            .count();
        ac.len() - clipped
    }

    /// Lays out the schedule and resets the multistep state.
    fn finish_schedule(&mut self, timesteps: Vec<f64>, sigmas: Vec<f64>) {
        let last = self.state.final_sigma(self.cfg.final_sigmas_type);
        let n = timesteps.len();
        self.state.lay_out(timesteps, sigmas, last, Some(n));
        self.model_outputs = (0..self.cfg.solver_order).map(|_| None).collect();
        self.lower_order_nums = 0;
    }

    /// The model output as the solver's variable: x0 (DPM-Solver++) or eps (DPM-Solver).
    fn convert(&self, m: &Tensor, x: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha, sigma) = alpha_sigma(self.state.sigmas[i]);
        let p = self.cfg.prediction_type;
        if self.is_plus_plus() {
            let x0 = vp_x0(p, m, x, alpha, sigma);
            if self.cfg.thresholding {
                return threshold_sample(
                    &x0,
                    self.cfg.dynamic_thresholding_ratio,
                    self.cfg.sample_max_value,
                );
            }
            Ok(x0)
        } else {
            let eps = match p {
                PredictionType::Epsilon => m.shallow_clone(),
                PredictionType::Sample => (x - m * alpha) / sigma,
                PredictionType::VPrediction => m * alpha + x * sigma,
            };
            if self.cfg.thresholding {
                let x0 = (x - &eps * sigma) / alpha;
                let x0 = threshold_sample(
                    &x0,
                    self.cfg.dynamic_thresholding_ratio,
                    self.cfg.sample_max_value,
                )?;
                return Ok((x - x0 * alpha) / sigma);
            }
            Ok(eps)
        }
    }

    /// The lambdas and (alpha, sigma) at sigma indices `idx`.
    fn points(&self, idx: &[usize]) -> Vec<(f64, f64, f64)> {
        idx.iter()
            .map(|&i| {
                let (a, s) = alpha_sigma(self.state.sigmas[i]);
                (a, s, a.ln() - s.ln())
            })
            .collect()
    }

    fn first_order(&self, m0: &Tensor, x: &Tensor, i: usize, z: Option<&Tensor>) -> Tensor {
        let p = self.points(&[i + 1, i]);
        let ((alpha_t, sigma_t, lambda_t), (alpha_s, sigma_s, lambda_s)) = (p[0], p[1]);
        let h = lambda_t - lambda_s;
        match (self.cfg.algorithm_type, z) {
            (AlgorithmType::SdeDpmSolverPlusPlus, Some(z)) => {
                x * (sigma_t / sigma_s * (-h).exp())
                    + m0 * (alpha_t * (1.0 - (-2.0 * h).exp()))
                    + z * (sigma_t * (1.0 - (-2.0 * h).exp()).powf(0.5))
            }
            (AlgorithmType::SdeDpmSolver, Some(z)) => {
                x * (alpha_t / alpha_s) - m0 * (2.0 * sigma_t * (h.exp() - 1.0))
                    + z * (sigma_t * ((2.0 * h).exp() - 1.0).powf(0.5))
            }
            (AlgorithmType::DpmSolver, _) | (AlgorithmType::SdeDpmSolver, None) => {
                x * (alpha_t / alpha_s) - m0 * (sigma_t * (h.exp() - 1.0))
            }
            _ => x * (sigma_t / sigma_s) - m0 * (alpha_t * ((-h).exp() - 1.0)),
        }
    }

    fn second_order(&self, ms: &[&Tensor; 2], x: &Tensor, i: usize, z: Option<&Tensor>) -> Tensor {
        let p = self.points(&[i + 1, i, i - 1]);
        let ((alpha_t, sigma_t, lambda_t), (alpha_s0, sigma_s0, lambda_s0), (_, _, lambda_s1)) =
            (p[0], p[1], p[2]);
        let [m0, m1] = *ms;
        let (h, h0) = (lambda_t - lambda_s0, lambda_s0 - lambda_s1);
        let r0 = h0 / h;
        let d0 = m0;
        let d1 = (m0 - m1) * (1.0 / r0);
        let mid = self.cfg.solver_type == SolverType::Midpoint;
        match (self.cfg.algorithm_type, z) {
            (AlgorithmType::SdeDpmSolverPlusPlus, Some(z)) => {
                let e = 1.0 - (-2.0 * h).exp();
                let c1 = if mid {
                    0.5 * (alpha_t * e)
                } else {
                    alpha_t * ((1.0 - (-2.0 * h).exp()) / (-2.0 * h) + 1.0)
                };
                x * (sigma_t / sigma_s0 * (-h).exp())
                    + d0 * (alpha_t * e)
                    + d1 * c1
                    + z * (sigma_t * e.powf(0.5))
            }
            (AlgorithmType::SdeDpmSolver, Some(z)) => {
                let c1 = if mid {
                    sigma_t * (h.exp() - 1.0)
                } else {
                    2.0 * (sigma_t * ((h.exp() - 1.0) / h - 1.0))
                };
                x * (alpha_t / alpha_s0) - d0 * (2.0 * (sigma_t * (h.exp() - 1.0))) - d1 * c1
                    + z * (sigma_t * ((2.0 * h).exp() - 1.0).powf(0.5))
            }
            (AlgorithmType::DpmSolver, _) | (AlgorithmType::SdeDpmSolver, None) => {
                let c1 = if mid {
                    0.5 * (sigma_t * (h.exp() - 1.0))
                } else {
                    sigma_t * ((h.exp() - 1.0) / h - 1.0)
                };
                x * (alpha_t / alpha_s0) - d0 * (sigma_t * (h.exp() - 1.0)) - d1 * c1
            }
            _ => {
                if mid {
                    x * (sigma_t / sigma_s0)
                        - d0 * (alpha_t * ((-h).exp() - 1.0))
                        - d1 * (0.5 * (alpha_t * ((-h).exp() - 1.0)))
                } else {
                    x * (sigma_t / sigma_s0) - d0 * (alpha_t * ((-h).exp() - 1.0))
                        + d1 * (alpha_t * (((-h).exp() - 1.0) / h + 1.0))
                }
            }
        }
    }

    fn third_order(&self, ms: &[&Tensor; 3], x: &Tensor, i: usize, z: Option<&Tensor>) -> Tensor {
        let p = self.points(&[i + 1, i, i - 1, i - 2]);
        let (alpha_t, sigma_t, lambda_t) = p[0];
        let (alpha_s0, sigma_s0, lambda_s0) = p[1];
        let (lambda_s1, lambda_s2) = (p[2].2, p[3].2);
        let [m0, m1, m2] = *ms;
        let (h, h0, h1) = (
            lambda_t - lambda_s0,
            lambda_s0 - lambda_s1,
            lambda_s1 - lambda_s2,
        );
        let (r0, r1) = (h0 / h, h1 / h);
        let d0 = m0;
        let d1_0 = (m0 - m1) * (1.0 / r0);
        let d1_1 = (m1 - m2) * (1.0 / r1);
        let d1 = &d1_0 + (&d1_0 - &d1_1) * (r0 / (r0 + r1));
        let d2 = (&d1_0 - &d1_1) * (1.0 / (r0 + r1));
        match (self.cfg.algorithm_type, z) {
            (AlgorithmType::SdeDpmSolverPlusPlus, Some(z)) => {
                let e = 1.0 - (-2.0 * h).exp();
                x * (sigma_t / sigma_s0 * (-h).exp())
                    + d0 * (alpha_t * e)
                    + d1 * (alpha_t * (e / (-2.0 * h) + 1.0))
                    + d2 * (alpha_t * ((e - 2.0 * h) / (2.0 * h).powi(2) - 0.5))
                    + z * (sigma_t * e.powf(0.5))
            }
            (AlgorithmType::DpmSolver, _) | (AlgorithmType::SdeDpmSolver, _) => {
                x * (alpha_t / alpha_s0)
                    - d0 * (sigma_t * (h.exp() - 1.0))
                    - d1 * (sigma_t * ((h.exp() - 1.0) / h - 1.0))
                    - d2 * (sigma_t * ((h.exp() - 1.0 - h) / h.powi(2) - 0.5))
            }
            _ => {
                x * (sigma_t / sigma_s0) - d0 * (alpha_t * ((-h).exp() - 1.0))
                    + d1 * (alpha_t * (((-h).exp() - 1.0) / h + 1.0))
                    - d2 * (alpha_t * (((-h).exp() - 1.0 + h) / h.powi(2) - 0.5))
            }
        }
    }

    /// The sigmas of the spaced (or custom) timesteps, or the Karras / exponential ones with
    /// their timesteps.
    fn sigma_schedule(&self, timesteps: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
        let train = self.state.schedule.sigmas();
        let (lo, hi) = (train[0], train[train.len() - 1]);
        match respaced_sigmas(&self.cfg, lo, hi, n) {
            Some(sigmas) => {
                // diffusers rounds Karras timesteps except for the cosine schedule, and then
                // casts them to int64 (truncation)
                let round = self.cfg.use_karras_sigmas
                    && self.cfg.beta_schedule != BetaSchedule::SquaredcosCapV2;
                let ts = self
                    .state
                    .timesteps_of(&sigmas)
                    .into_iter()
                    .map(|t| if round { t.round_ties_even() } else { t }.trunc())
                    .collect();
                (ts, sigmas)
            }
            None => {
                let sigmas = self.state.train_sigmas_at(&timesteps);
                (timesteps, sigmas)
            }
        }
    }
}

impl Scheduler for DpmSolver {
    shared_scheduler_methods!(sigma);

    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let big_t = self.cfg.num_train_timesteps;
        schedule::check_steps(n, big_t, WHO.as_str())?;
        let last = self.last_timestep();
        let timesteps: Vec<f64> = match self.cfg.spacing() {
            TimestepSpacing::Linspace => {
                let mut v = schedule::np_linspace(0.0, last as f64 - 1.0, n + 1);
                v.iter_mut().for_each(|x| *x = x.round_ties_even());
                v.reverse();
                v.pop();
                v
            }
            TimestepSpacing::Leading => {
                let ratio = last / (n + 1);
                (1..=n)
                    .rev()
                    .map(|k| (k * ratio + self.cfg.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => {
                let ratio = big_t as f64 / n as f64;
                schedule::np_arange(last as f64, 0.0, -ratio)
                    .into_iter()
                    .map(|x| x.round_ties_even() - 1.0)
                    .collect()
            }
        };
        if timesteps.is_empty() || timesteps.iter().any(|&t| t < 0.0) {
            return Err(Error::invalid(format!(
                "dpm-solver++: {n} steps below lambda_min_clipped = {} leave no valid timestep \
                 (last usable training timestep {last})",
                self.cfg.lambda_min_clipped
            )));
        }
        let (ts, sigmas) = self.sigma_schedule(timesteps, n);
        self.finish_schedule(ts, sigmas);
        Ok(())
    }

    fn set_custom_timesteps(&mut self, timesteps: &[f64]) -> Result<()> {
        self.state.check_custom_timesteps(&self.cfg, timesteps)?;
        schedule::check_integer_timesteps(timesteps, WHO.as_str())?;
        let sigmas = self.state.train_sigmas_at(timesteps);
        self.finish_schedule(timesteps.to_vec(), sigmas);
        Ok(())
    }

    fn is_stochastic(&self) -> bool {
        self.is_sde()
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: f64,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<StepOutput> {
        check_timesteps_set(WHO, self.state.num_inference_steps)?;
        let learned = self.learned_variance() && model_output.size().get(1) != sample.size().get(1);
        check_model_output(WHO, model_output, sample, learned)?;
        let kind = work_kind(sample);
        let x = sample.to_kind(kind);
        let m = if learned {
            model_output.narrow(1, 0, sample.size()[1])
        } else {
            model_output.shallow_clone()
        }
        .to_kind(kind);
        let i = self.state.index_at(timestep)?;
        let n = self.state.timesteps.len();
        let order = self.cfg.solver_order;
        let lower_order_final = i == n - 1
            && (self.cfg.euler_at_final
                || (self.cfg.lower_order_final && n < 15)
                || self.cfg.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = i + 2 == n && self.cfg.lower_order_final && n < 15;

        let converted = self.convert(&m, &x, i)?;
        self.model_outputs.rotate_left(1);
        if let Some(last) = self.model_outputs.last_mut() {
            *last = Some(converted.shallow_clone());
        }
        let z = if self.is_sde() {
            Some(step_noise(WHO, noise, sample, kind)?)
        } else {
            None
        };
        let get = |k: usize| -> Result<&Tensor> {
            self.model_outputs[order - k]
                .as_ref()
                .ok_or_else(|| Error::invalid("dpm-solver++: missing a previous model output"))
        };
        let prev = if order == 1 || self.lower_order_nums < 1 || lower_order_final {
            self.first_order(&converted, &x, i, z.as_ref())
        } else if order == 2 || self.lower_order_nums < 2 || lower_order_second {
            self.second_order(&[get(1)?, get(2)?], &x, i, z.as_ref())
        } else {
            self.third_order(&[get(1)?, get(2)?, get(3)?], &x, i, z.as_ref())
        };
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        let x0 = if self.is_plus_plus() {
            converted
        } else {
            let (alpha, sigma) = alpha_sigma(self.state.sigmas[i]);
            (&x - converted * sigma) / alpha
        };
        Ok(self.state.step_output(i, prev, x0))
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &Tensor) -> Result<Tensor> {
        self.state.vp_add_noise(x0, noise, timesteps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// diffusers keeps channels `:3` of a learned-variance output; ours keeps the first C of 2C:
    /// with C = 2 the result is the epsilon scheduler's on the first half.
    #[test]
    fn learned_variance_drops_the_second_half_of_the_channels() {
        let base = SchedulerConfig::default();
        let learned = SchedulerConfig {
            variance_type: Some(VarianceType::LearnedRange),
            ..base.clone()
        };
        let (mut a, mut b) = (
            DpmSolver::new(&base).unwrap(),
            DpmSolver::new(&learned).unwrap(),
        );
        a.set_timesteps(6).unwrap();
        b.set_timesteps(6).unwrap();
        let mut xa = Tensor::from_slice(&[0.5f64, -1.0, 2.0, 0.1]).reshape([1, 2, 1, 2]);
        let mut xb = xa.copy();
        for t in a.timesteps().to_vec() {
            let eps = &xa * 0.2 + 0.05;
            let var = Tensor::full([1, 2, 1, 2], 0.3, (Kind::Double, Device::Cpu));
            xa = a.step(&eps, t, &xa, None).unwrap().prev_sample;
            let out = Tensor::cat(&[&xb * 0.2 + 0.05, var], 1);
            xb = b.step(&out, t, &xb, None).unwrap().prev_sample;
        }
        assert!((xa - xb).abs().max().double_value(&[]) < 1e-14);
    }

    /// Before set_timesteps, add_noise is the forward process at the timestep's own sigma
    /// (diffusers reads its ascending sigmas at the position in its descending timesteps).
    #[test]
    fn add_noise_before_set_timesteps_uses_the_timesteps_sigma() {
        let s = DpmSolver::new(&SchedulerConfig::default()).unwrap();
        let x0 = Tensor::ones([3, 1, 1, 1], (Kind::Double, Device::Cpu));
        let noise = Tensor::full([3, 1, 1, 1], 2.0, (Kind::Double, Device::Cpu));
        let ts = Tensor::from_slice(&[10i64, 500, 990]);
        let got: Vec<f64> =
            Vec::try_from(s.add_noise(&x0, &noise, &ts).unwrap().flatten(0, -1)).unwrap();
        for (g, t) in got.iter().zip([10usize, 500, 990]) {
            let a = s.alphas_cumprod()[t];
            let want = a.sqrt() + 2.0 * (1.0 - a).sqrt();
            assert!((g - want).abs() < 1e-12, "t={t}: {g} vs {want}");
        }
    }

    #[test]
    fn bad_combinations_are_errors() {
        let e = DpmSolver::new(&SchedulerConfig {
            solver_order: 4,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(e, "dpm-solver++: solver_order = 4; expected 1, 2 or 3");
        let e = DpmSolver::new(&SchedulerConfig {
            algorithm_type: AlgorithmType::DpmSolver,
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("final_sigmas_type = zero needs algorithm_type"),
            "{e}"
        );
        let mut s = DpmSolver::new(&SchedulerConfig {
            use_karras_sigmas: true,
            ..Default::default()
        })
        .unwrap();
        assert!(s.set_custom_timesteps(&[900.0, 500.0]).is_err());
    }
}
