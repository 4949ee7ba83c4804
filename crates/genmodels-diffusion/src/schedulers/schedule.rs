//! The training noise schedule (betas, alphas_cumprod, sigmas) and the numerics the schedulers
//! share, written to give the values numpy / torch give in diffusers (`np.linspace`,
//! `torch.linspace`, `np.arange`, `np.round` (half to even), `np.interp`, `_sigma_to_t`).

use super::config::{BetaSchedule, SchedulerConfig, SchedulerKind, TimestepSpacing};
use genmodels_core::{Error, Result};

/// The forward process of a scheduler: betas and their cumulative products over the T
/// training timesteps.
#[derive(Debug, Clone)]
pub struct TrainSchedule {
    /// beta_t, t = 0..T.
    pub betas: Vec<f64>,
    /// alphas_cumprod\[t\] = prod_{s <= t} (1 - beta_s).
    pub alphas_cumprod: Vec<f64>,
}

impl TrainSchedule {
    /// The schedule of a (resolved) config. `clamp_terminal`: the k-diffusion-style schedulers
    /// (DPM-Solver, Euler) set a zero terminal alphas_cumprod to 2^-24, as diffusers does, so that
    /// the first sigma is finite.
    pub fn new(cfg: &SchedulerConfig, clamp_terminal: bool) -> Result<Self> {
        let t = cfg.num_train_timesteps;
        let mut betas = match &cfg.trained_betas {
            Some(b) => b.clone(),
            None => {
                let start = cfg.beta_start.unwrap_or(1e-4);
                let end = cfg.beta_end.unwrap_or(0.02);
                match cfg.beta_schedule {
                    BetaSchedule::Linear => torch_linspace(start, end, t),
                    BetaSchedule::ScaledLinear => torch_linspace(start.powf(0.5), end.powf(0.5), t)
                        .into_iter()
                        .map(|b| b * b)
                        .collect(),
                    BetaSchedule::SquaredcosCapV2 => cosine_betas(t, 0.999),
                    BetaSchedule::Sigmoid => torch_linspace(-6.0, 6.0, t)
                        .into_iter()
                        .map(|x| sigmoid(x) * (end - start) + start)
                        .collect(),
                }
            }
        };
        if let Some((i, b)) = betas
            .iter()
            .enumerate()
            .find(|(_, b)| !(0.0..1.0).contains(*b))
        {
            return Err(Error::invalid(format!(
                "beta[{i}] = {b}; every beta must lie in [0, 1)"
            )));
        }
        if cfg.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut alphas_cumprod = Vec::with_capacity(t);
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        if clamp_terminal && cfg.rescale_betas_zero_snr {
            if let Some(last) = alphas_cumprod.last_mut() {
                *last = 2f64.powi(-24);
            }
        }
        Ok(TrainSchedule {
            betas,
            alphas_cumprod,
        })
    }

    /// T.
    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// Whether the schedule is empty (never, for a validated config).
    pub fn is_empty(&self) -> bool {
        self.alphas_cumprod.is_empty()
    }

    /// sigma_t = sqrt((1 - alphas_cumprod) / alphas_cumprod), increasing in t.
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).powf(0.5))
            .collect()
    }

    /// alphas_cumprod at an integer training timestep (DDPM, DDIM).
    pub fn alphas_cumprod_int(&self, t: f64) -> Result<f64> {
        let i = int_timestep(t, self.len())?;
        Ok(self.alphas_cumprod[i])
    }
}

/// alphas_cumprod at a training timestep, linearly interpolated for a fractional one.
pub fn alphas_cumprod_at(alphas_cumprod: &[f64], t: f64) -> Result<f64> {
    let n = alphas_cumprod.len();
    if n == 0 || !(t >= 0.0 && t <= (n - 1) as f64) {
        return Err(Error::invalid(format!(
            "timestep {t} is outside the training schedule [0, {}]",
            n.saturating_sub(1)
        )));
    }
    Ok(interp(t, alphas_cumprod))
}

/// An integer timestep in [0, T) as an index.
pub(crate) fn int_timestep(t: f64, train_timesteps: usize) -> Result<usize> {
    if t.fract() != 0.0 || !(t >= 0.0 && t < train_timesteps as f64) {
        return Err(Error::invalid(format!(
            "timestep {t}: expected an integer in [0, {}]",
            train_timesteps - 1
        )));
    }
    Ok(t as usize)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The cosine schedule of Nichol & Dhariwal 2021 (Eq. 17, s = 0.008), betas capped at
/// `max_beta`: beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta), with *float* time i/T
/// (integer division here gives 999 zero betas: the bug of candle and diffusers-rs).
pub fn cosine_betas(num_timesteps: usize, max_beta: f64) -> Vec<f64> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..num_timesteps)
        .map(|i| {
            let t1 = i as f64 / num_timesteps as f64;
            let t2 = (i + 1) as f64 / num_timesteps as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta)
        })
        .collect()
}

/// Rescales betas to zero terminal SNR (Lin et al. 2023, arXiv 2305.08891, Algorithm 1):
/// sqrt(alphas_cumprod) is shifted so its last value is 0 and scaled so its first is unchanged.
pub fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let mut sqrt_ab: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let (first, last) = match (sqrt_ab.first(), sqrt_ab.last()) {
        (Some(&f), Some(&l)) => (f, l),
        _ => return betas.to_vec(),
    };
    for v in sqrt_ab.iter_mut() {
        *v -= last;
        *v *= first / (first - last);
    }
    let ab: Vec<f64> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    for w in ab.windows(2) {
        out.push(1.0 - w[1] / w[0]);
    }
    out
}

/// `torch.linspace(start, end, steps)` (its CPU kernel fills the second half from the end).
pub fn torch_linspace(start: f64, end: f64, steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f64;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f64
            } else {
                end - step * (steps - i - 1) as f64
            }
        })
        .collect()
}

/// `np.linspace(start, stop, num)`.
pub fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => vec![],
        1 => vec![start],
        _ => {
            let div = (num - 1) as f64;
            let step = (stop - start) / div;
            (0..num)
                .map(|i| {
                    if i == num - 1 {
                        stop
                    } else if step == 0.0 {
                        i as f64 / div * (stop - start) + start
                    } else {
                        i as f64 * step + start
                    }
                })
                .collect()
        }
    }
}

/// `np.arange(start, stop, step)` for floats.
pub fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if len.is_nan() || len <= 0.0 {
        return vec![];
    }
    (0..len as usize).map(|i| start + i as f64 * step).collect()
}

/// `np.interp(x, arange(len(fp)), fp)`.
pub fn interp(x: f64, fp: &[f64]) -> f64 {
    let n = fp.len();
    if n == 0 {
        return f64::NAN;
    }
    if x.is_nan() {
        return x;
    }
    if x <= 0.0 {
        return fp[0];
    }
    if x >= (n - 1) as f64 {
        return fp[n - 1];
    }
    let j = x.floor() as usize;
    let slope = fp[j + 1] - fp[j];
    let r = slope * (x - j as f64) + fp[j];
    if r.is_nan() {
        let r2 = slope * (x - (j + 1) as f64) + fp[j + 1];
        if r2.is_nan() && fp[j] == fp[j + 1] {
            return fp[j];
        }
        return r2;
    }
    r
}

/// diffusers' `_sigma_to_t`: the fractional training timestep of `sigma`, by linear
/// interpolation in log sigma between the two neighbouring training sigmas.
pub fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let n = log_sigmas.len();
    if n < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    // argmax of cumsum(log_sigma - log_sigmas >= 0): the last index at or below log_sigma
    let (mut cum, mut best, mut arg) = (0usize, 0usize, 0usize);
    for (i, l) in log_sigmas.iter().enumerate() {
        if log_sigma - l >= 0.0 {
            cum += 1;
        }
        if cum > best {
            best = cum;
            arg = i;
        }
    }
    let low_idx = arg.min(n - 2);
    let high_idx = low_idx + 1;
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. 2022, Eq. 5 (rho = 7): n sigmas from `sigma_max` down to `sigma_min`.
pub fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// n log-uniform sigmas from `sigma_max` down to `sigma_min` (k-diffusion's `get_sigmas_exponential`).
pub fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(sigma_max.ln(), sigma_min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// Checks a number of inference steps against the training timesteps.
pub(crate) fn check_steps(n: usize, train_timesteps: usize, who: &str) -> Result<()> {
    if n == 0 || n > train_timesteps {
        return Err(Error::invalid(format!(
            "{who}: num_inference_steps = {n}; expected 1..={train_timesteps} (num_train_timesteps)"
        )));
    }
    Ok(())
}

/// The inference timesteps of DDPM, DDIM, Euler, Euler ancestral and Heun (descending).
/// `round_linspace`: DDPM and DDIM round `linspace` timesteps to integers; the Euler-type
/// schedulers keep them fractional.
pub(crate) fn spaced_timesteps(
    spacing: TimestepSpacing,
    n: usize,
    train_timesteps: usize,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    let t = train_timesteps;
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v = np_linspace(0.0, (t - 1) as f64, n);
            if round_linspace {
                v.iter_mut().for_each(|x| *x = x.round_ties_even());
            }
            v.reverse();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = t / n;
            (0..n)
                .rev()
                .map(|k| (k * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = t as f64 / n as f64;
            np_arange(t as f64, 0.0, -ratio)
                .into_iter()
                .map(|x| x.round_ties_even() - 1.0)
                .collect()
        }
    }
}

/// The `n` inference timesteps of a config's spacing (see [`spaced_timesteps`]), after checking
/// `n` against the training timesteps.
pub(crate) fn inference_timesteps(
    cfg: &SchedulerConfig,
    n: usize,
    who: SchedulerKind,
    round_linspace: bool,
) -> Result<Vec<f64>> {
    let big_t = cfg.num_train_timesteps;
    check_steps(n, big_t, who.as_str())?;
    Ok(spaced_timesteps(
        cfg.spacing(),
        n,
        big_t,
        cfg.steps_offset,
        round_linspace,
    ))
}

/// Checks custom timesteps: non-empty, finite, strictly decreasing, inside [0, T).
pub(crate) fn check_custom_timesteps(ts: &[f64], train_timesteps: usize, who: &str) -> Result<()> {
    if ts.is_empty() {
        return Err(Error::invalid(format!(
            "{who}: custom timesteps are empty; expected at least one"
        )));
    }
    for (i, &t) in ts.iter().enumerate() {
        if !(t >= 0.0 && t < train_timesteps as f64) {
            return Err(Error::invalid(format!(
                "{who}: custom timestep {t} is outside [0, {}]",
                train_timesteps - 1
            )));
        }
        if i > 0 && t >= ts[i - 1] {
            return Err(Error::invalid(format!(
                "{who}: custom timesteps must be strictly decreasing; {} is followed by {t}",
                ts[i - 1]
            )));
        }
    }
    Ok(())
}

/// Custom timesteps of the schedulers that index alphas_cumprod with them (DDPM, DDIM,
/// DPM-Solver++) must be integers.
pub(crate) fn check_integer_timesteps(ts: &[f64], who: &str) -> Result<()> {
    if let Some(t) = ts.iter().find(|t| t.fract() != 0.0) {
        return Err(Error::invalid(format!(
            "{who}: custom timestep {t} is not an integer"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trap 1: the cosine schedule in float time (Nichol & Dhariwal 2021, Eq. 17), not the
    /// integer-division version of candle and diffusers-rs (999 zero betas, then 0.999).
    #[test]
    fn cosine_schedule_matches_the_closed_form_in_float_time() {
        let cfg = SchedulerConfig {
            beta_schedule: BetaSchedule::SquaredcosCapV2,
            ..Default::default()
        };
        let s = TrainSchedule::new(&cfg, false).unwrap();
        let big_t = 1000.0;
        let f = |t: f64| {
            ((t / big_t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        for (t, (&b, &ab)) in s.betas.iter().zip(&s.alphas_cumprod).enumerate() {
            let t = t as f64;
            let want_beta = (1.0 - f(t + 1.0) / f(t)).min(0.999);
            assert!(
                (b - want_beta).abs() < 1e-12,
                "beta[{t}] = {b}, want {want_beta}"
            );
            // alphas_cumprod telescopes to abar(t+1) / abar(0) until the cap bites
            if t < 990.0 {
                let want = f(t + 1.0) / f(0.0);
                assert!(
                    (ab - want).abs() < 1e-9 * want.max(1e-3),
                    "abar[{t}] = {ab}, want {want}"
                );
            }
        }
        assert_eq!(s.betas.iter().filter(|&&b| b == 0.0).count(), 0);
        assert!(
            (s.betas[0] - 4.13e-5).abs() < 1e-6,
            "first beta {}",
            s.betas[0]
        );
        assert_eq!(s.betas[999], 0.999);
        assert!(s.betas.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero_and_keeps_the_first_value() {
        let cfg = SchedulerConfig {
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: Some(0.00085),
            beta_end: Some(0.012),
            ..Default::default()
        };
        let plain = TrainSchedule::new(&cfg, false).unwrap();
        let zero = TrainSchedule::new(
            &SchedulerConfig {
                rescale_betas_zero_snr: true,
                prediction_type: super::super::PredictionType::VPrediction,
                ..cfg.clone()
            },
            false,
        )
        .unwrap();
        assert_eq!(zero.alphas_cumprod[999], 0.0);
        assert!((zero.alphas_cumprod[0] - plain.alphas_cumprod[0]).abs() < 1e-15);
        // Algorithm 1: sqrt(abar) is an affine map of the original one
        let (a0, at) = (
            plain.alphas_cumprod[0].sqrt(),
            plain.alphas_cumprod[999].sqrt(),
        );
        for t in [1, 250, 500, 998] {
            let want = (plain.alphas_cumprod[t].sqrt() - at) * a0 / (a0 - at);
            assert!((zero.alphas_cumprod[t].sqrt() - want).abs() < 1e-12);
        }
    }

    #[test]
    fn numpy_helpers() {
        assert_eq!(np_linspace(0.0, 999.0, 4), vec![0.0, 333.0, 666.0, 999.0]);
        assert_eq!(
            np_arange(1000.0, 0.0, -250.0),
            vec![1000.0, 750.0, 500.0, 250.0]
        );
        assert_eq!(interp(2.5, &[0.0, 1.0, 2.0, 4.0]), 3.0);
        assert_eq!(interp(-1.0, &[5.0, 6.0]), 5.0);
        assert_eq!(interp(9.0, &[5.0, 6.0]), 6.0);
        assert_eq!(2.5f64.round_ties_even(), 2.0);
        let ls: Vec<f64> = [0.1f64, 0.2, 0.4, 0.8].iter().map(|s| s.ln()).collect();
        assert!((sigma_to_t(0.2, &ls) - 1.0).abs() < 1e-12);
        assert!((sigma_to_t((0.2f64 * 0.4).sqrt(), &ls) - 1.5).abs() < 1e-12);
        assert_eq!(sigma_to_t(0.01, &ls), 0.0);
        assert_eq!(sigma_to_t(5.0, &ls), 3.0);
        assert_eq!(
            spaced_timesteps(TimestepSpacing::Leading, 4, 1000, 1, true),
            vec![751.0, 501.0, 251.0, 1.0]
        );
        assert_eq!(
            spaced_timesteps(TimestepSpacing::Trailing, 4, 1000, 0, true),
            vec![999.0, 749.0, 499.0, 249.0]
        );
    }
}
