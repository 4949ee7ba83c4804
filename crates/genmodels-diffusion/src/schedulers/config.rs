//! The scheduler configuration, as diffusers writes it in `scheduler/scheduler_config.json`.
//!
//! One struct serves every scheduler (diffusers' schedulers share most keys): a scheduler reads
//! the keys it knows and ignores the others, as diffusers does, so the config of one scheduler
//! can be handed to another (`EulerDiscreteScheduler.from_config(pipe.scheduler.config)`).
//! Unknown keys are ignored; missing keys take diffusers' default *for the scheduler that reads
//! them* (the few that differ between schedulers are `Option`s here, filled in by
//! [`SchedulerConfig::resolved`]). Every name (beta schedule, prediction type, ...) is checked:
//! a bad one is a one-line error naming it and listing the accepted ones.

use genmodels_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// A closed set of names read from a config or the command line: `FromStr`, `Display` and serde
/// through the name; unknown names are an error listing the accepted ones.
macro_rules! names {
    ($(#[$meta:meta])* $name:ident, $what:literal {
        $($(#[$vmeta:meta])* $var:ident = $s:literal $(| $alias:literal)*,)+
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $var,)+
        }

        impl $name {
            /// The accepted names (aliases aside).
            pub const NAMES: &'static [&'static str] = &[$($s),+];

            /// The canonical name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $s,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s $(| $alias)* => Ok($name::$var),)+
                    _ => Err(unknown_name($what, s, Self::NAMES)),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(|e: Error| serde::de::Error::custom(e.to_string()))
            }
        }
    };
}

/// The one-line error for a name outside a closed set.
pub(crate) fn unknown_name(what: &str, value: &str, expected: &[&str]) -> Error {
    Error::invalid(format!(
        "unknown {what} `{value}`; expected one of: {}",
        expected.join(", ")
    ))
}

names! {
    /// The schedulers, by the names the CLI and [`super::scheduler_by_name`] take.
    SchedulerKind, "scheduler" {
        /// [`super::Ddpm`]: ancestral sampling of Ho et al. 2020.
        Ddpm = "ddpm",
        /// [`super::Ddim`]: Song et al. 2021.
        Ddim = "ddim",
        /// [`super::DpmSolver`]: DPM-Solver++ multistep (2M by default), Lu et al. 2022.
        DpmSolverPlusPlus = "dpm-solver++" | "dpmsolver++",
        /// [`super::Euler`]: Karras et al. 2022, Algorithm 2.
        Euler = "euler",
        /// [`super::EulerAncestral`]: k-diffusion's `sample_euler_ancestral`.
        EulerAncestral = "euler-ancestral",
        /// [`super::Heun`]: Karras et al. 2022, Algorithm 1 (two model evaluations per step).
        Heun = "heun",
    }
}

impl SchedulerKind {
    /// diffusers' class names (`_class_name` of `scheduler_config.json`), in [`Self::NAMES`] order.
    pub const DIFFUSERS_CLASSES: &'static [&'static str] = &[
        "DDPMScheduler",
        "DDIMScheduler",
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "HeunDiscreteScheduler",
    ];

    /// The scheduler of a diffusers class name.
    pub fn from_diffusers_class(class: &str) -> Result<Self> {
        let i = Self::DIFFUSERS_CLASSES
            .iter()
            .position(|c| *c == class)
            .ok_or_else(|| {
                unknown_name("diffusers scheduler class", class, Self::DIFFUSERS_CLASSES)
            })?;
        Self::NAMES[i].parse()
    }
}

names! {
    /// How the betas of the forward process are laid out over the training timesteps.
    BetaSchedule, "beta_schedule" {
        /// Linear from `beta_start` to `beta_end` (Ho et al. 2020, Sec. 4).
        Linear = "linear",
        /// Linear in sqrt(beta), squared (latent diffusion / Stable Diffusion).
        ScaledLinear = "scaled_linear",
        /// The cosine schedule of Nichol & Dhariwal 2021, Eq. 17, betas capped at 0.999.
        SquaredcosCapV2 = "squaredcos_cap_v2",
        /// A sigmoid over [-6, 6] scaled into [beta_start, beta_end] (GeoDiff).
        Sigmoid = "sigmoid",
    }
}

names! {
    /// What the model predicts.
    PredictionType, "prediction_type" {
        /// The noise epsilon (Ho et al. 2020).
        Epsilon = "epsilon",
        /// The clean sample x0.
        Sample = "sample",
        /// v = sqrt(alphas_cumprod) eps - sqrt(1 - alphas_cumprod) x0 (Salimans & Ho 2022, Sec. 4).
        VPrediction = "v_prediction",
    }
}

names! {
    /// How the inference timesteps are picked (Table 2 of Lin et al. 2023, arXiv 2305.08891).
    TimestepSpacing, "timestep_spacing" {
        /// `k * (T // n) + steps_offset`, k = n-1..0.
        Leading = "leading",
        /// `round(T - k * T / n) - 1`, k = 0..n-1: starts at T-1.
        Trailing = "trailing",
        /// `linspace(0, T-1, n)`, reversed.
        Linspace = "linspace",
    }
}

names! {
    /// The variance of DDPM's reverse step (Ho et al. 2020 Sec. 3.2; Nichol & Dhariwal 2021 Sec. 3.1).
    VarianceType, "variance_type" {
        /// The posterior variance beta-tilde.
        FixedSmall = "fixed_small",
        /// beta-tilde, through its log.
        FixedSmallLog = "fixed_small_log",
        /// beta_t.
        FixedLarge = "fixed_large",
        /// beta_t, through its log (GLIDE's "max_log").
        FixedLargeLog = "fixed_large_log",
        /// The model's second half of channels is the variance.
        Learned = "learned",
        /// The model's second half of channels, v in [-1, 1], interpolates the log variance between
        /// beta-tilde and beta_t (Nichol & Dhariwal 2021, Eq. 15).
        LearnedRange = "learned_range",
    }
}

names! {
    /// DPM-Solver's formulation (Lu et al. 2022a, 2022b).
    AlgorithmType, "algorithm_type" {
        /// DPM-Solver++: solves for the data prediction (arXiv 2211.01095).
        DpmSolverPlusPlus = "dpmsolver++",
        /// The stochastic (SDE) variant of DPM-Solver++.
        SdeDpmSolverPlusPlus = "sde-dpmsolver++",
        /// The original DPM-Solver: solves for the noise prediction (arXiv 2206.00927).
        DpmSolver = "dpmsolver",
        /// The stochastic variant of DPM-Solver.
        SdeDpmSolver = "sde-dpmsolver",
    }
}

names! {
    /// The second-order multistep formula of DPM-Solver.
    SolverType, "solver_type" {
        /// The midpoint form (the default; "usually better").
        Midpoint = "midpoint",
        /// The Heun form.
        Heun = "heun",
    }
}

names! {
    /// The sigma the last step goes to.
    FinalSigmasType, "final_sigmas_type" {
        /// 0: the last step returns the model's data prediction.
        Zero = "zero",
        /// The training schedule's smallest sigma.
        SigmaMin = "sigma_min",
    }
}

names! {
    /// How Euler places sigmas at the inference timesteps.
    InterpolationType, "interpolation_type" {
        /// Linear interpolation of the training sigmas at the timesteps.
        Linear = "linear",
        /// Log-linear spacing between the first and last timesteps' sigmas.
        LogLinear = "log_linear",
    }
}

names! {
    /// What Euler hands the model as the timestep.
    TimestepType, "timestep_type" {
        /// The (possibly fractional) training timestep.
        Discrete = "discrete",
        /// 0.25 * ln(sigma) (EDM's c_noise; with v-prediction only).
        Continuous = "continuous",
    }
}

/// The configuration of every scheduler: diffusers' `scheduler_config.json` keys, plus the step
/// options diffusers passes to `step()` (`eta`, `use_clipped_model_output`, `s_churn`, ...),
/// which live here so that a boxed scheduler carries them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// Training timesteps T.
    pub num_train_timesteps: usize,
    /// First beta (default 1e-4; Heun: 0.00085).
    pub beta_start: Option<f64>,
    /// Last beta (default 0.02; Heun: 0.012).
    pub beta_end: Option<f64>,
    /// The beta schedule.
    pub beta_schedule: BetaSchedule,
    /// Betas given directly (length T): overrides `beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// What the model predicts.
    pub prediction_type: PredictionType,
    /// Timestep spacing (DDPM, DDIM: `leading`; the others: `linspace`).
    pub timestep_spacing: Option<TimestepSpacing>,
    /// Added to `leading` timesteps (Stable Diffusion: 1).
    pub steps_offset: usize,
    /// Rescale the betas to zero terminal SNR (Lin et al. 2023, Algorithm 1); needs v-prediction.
    pub rescale_betas_zero_snr: bool,
    /// Clip the predicted x0 to `[-clip_sample_range, clip_sample_range]` (DDPM, DDIM: true; Heun: false).
    pub clip_sample: Option<bool>,
    /// See `clip_sample`.
    pub clip_sample_range: f64,
    /// Dynamic thresholding of the predicted x0 (Saharia et al. 2022, Sec. 2.3); wins over clipping.
    pub thresholding: bool,
    /// The quantile of |x0| dynamic thresholding clips at.
    pub dynamic_thresholding_ratio: f64,
    /// The largest threshold of dynamic thresholding.
    pub sample_max_value: f64,
    /// DDPM's variance (default `fixed_small`); for DPM-Solver only `learned*` matters (the
    /// model output's second half of channels is then dropped).
    pub variance_type: Option<VarianceType>,
    /// DDIM: alphas_cumprod before the first timestep is 1 (else alphas_cumprod\[0\]).
    pub set_alpha_to_one: bool,
    /// DPM-Solver order: 1, 2 (2M, the default) or 3.
    pub solver_order: usize,
    /// DPM-Solver formulation.
    pub algorithm_type: AlgorithmType,
    /// DPM-Solver second-order formula.
    pub solver_type: SolverType,
    /// DPM-Solver: lower the order at the last steps of short (< 15 step) schedules.
    pub lower_order_final: bool,
    /// DPM-Solver: first order at the last step.
    pub euler_at_final: bool,
    /// DPM-Solver, Euler: the sigma the last step goes to.
    pub final_sigmas_type: FinalSigmasType,
    /// DPM-Solver: timesteps whose lambda = log(alpha / sigma) is below this are not used (cosine
    /// schedule: -5.1). Written `-Infinity` by diffusers.
    #[serde(
        serialize_with = "ser_extended_f64",
        deserialize_with = "de_extended_f64"
    )]
    pub lambda_min_clipped: f64,
    /// Karras et al. 2022 (Eq. 5, rho = 7) sigmas (DPM-Solver, Euler, Heun).
    pub use_karras_sigmas: bool,
    /// Log-uniform sigmas (DPM-Solver, Euler, Heun).
    pub use_exponential_sigmas: bool,
    /// Beta-distributed sigmas (not supported: an error when true).
    pub use_beta_sigmas: bool,
    /// Lu lambdas (not supported: an error when true).
    pub use_lu_lambdas: bool,
    /// Flow-matching sigmas (not supported: an error when true).
    pub use_flow_sigmas: bool,
    /// Dynamic shifting (not supported: an error when true).
    pub use_dynamic_shifting: bool,
    /// Euler with Karras / exponential sigmas: the smallest sigma (default: the schedule's).
    pub sigma_min: Option<f64>,
    /// Euler with Karras / exponential sigmas: the largest sigma (default: the schedule's).
    pub sigma_max: Option<f64>,
    /// Euler: how sigmas are placed at the timesteps.
    pub interpolation_type: InterpolationType,
    /// Euler: discrete timesteps, or EDM's continuous 0.25 ln(sigma) (v-prediction only).
    pub timestep_type: TimestepType,
    /// DDIM's eta (0: deterministic DDIM; 1: DDPM-like). A `step()` argument in diffusers.
    pub eta: f64,
    /// DDIM: re-derive epsilon from the clipped x0. A `step()` argument in diffusers.
    pub use_clipped_model_output: bool,
    /// Euler churn (Karras et al. 2022, Algorithm 2); 0 is deterministic. A `step()` argument in diffusers.
    pub s_churn: f64,
    /// Euler churn applies for sigma in [s_tmin, s_tmax].
    pub s_tmin: f64,
    /// See `s_tmin`; `None` is infinity.
    pub s_tmax: Option<f64>,
    /// Euler churn noise scale.
    pub s_noise: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: None,
            beta_end: None,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: None,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            clip_sample: None,
            clip_sample_range: 1.0,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            variance_type: None,
            set_alpha_to_one: true,
            solver_order: 2,
            algorithm_type: AlgorithmType::DpmSolverPlusPlus,
            solver_type: SolverType::Midpoint,
            lower_order_final: true,
            euler_at_final: false,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            use_dynamic_shifting: false,
            sigma_min: None,
            sigma_max: None,
            interpolation_type: InterpolationType::Linear,
            timestep_type: TimestepType::Discrete,
            eta: 0.0,
            use_clipped_model_output: false,
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: None,
            s_noise: 1.0,
        }
    }
}

impl SchedulerConfig {
    /// Parses a `scheduler_config.json` text (diffusers' `-Infinity` / `Infinity` / `NaN` included).
    pub fn from_json_str(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(&quote_non_finite(text))
            .map_err(|e| Error::invalid(format!("scheduler config: {e}")))?;
        Self::from_json_value(v)
    }

    /// Reads a `scheduler_config.json` file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text).map_err(|e| Error::bad_data(path, e.to_string()))
    }

    /// From an already parsed JSON object.
    pub fn from_json_value(v: serde_json::Value) -> Result<Self> {
        serde_json::from_value(v).map_err(|e| Error::invalid(format!("scheduler config: {e}")))
    }

    /// The config with the keys whose default depends on the scheduler filled in with
    /// diffusers' default for `kind`.
    pub fn resolved(&self, kind: SchedulerKind) -> SchedulerConfig {
        let mut c = self.clone();
        let heun = kind == SchedulerKind::Heun;
        c.beta_start
            .get_or_insert(if heun { 0.00085 } else { 1e-4 });
        c.beta_end.get_or_insert(if heun { 0.012 } else { 0.02 });
        c.timestep_spacing.get_or_insert(match kind {
            SchedulerKind::Ddpm | SchedulerKind::Ddim => TimestepSpacing::Leading,
            _ => TimestepSpacing::Linspace,
        });
        c.clip_sample
            .get_or_insert(matches!(kind, SchedulerKind::Ddpm | SchedulerKind::Ddim));
        if kind == SchedulerKind::Ddpm {
            c.variance_type.get_or_insert(VarianceType::FixedSmall);
        }
        c
    }

    /// The timestep spacing (after [`Self::resolved`]).
    pub(crate) fn spacing(&self) -> TimestepSpacing {
        self.timestep_spacing.unwrap_or(TimestepSpacing::Linspace)
    }

    /// Whether x0 is clipped (after [`Self::resolved`]).
    pub(crate) fn clips(&self) -> bool {
        self.clip_sample.unwrap_or(false)
    }

    /// Checks the values every scheduler relies on; one line per problem.
    pub(crate) fn validate(&self, kind: SchedulerKind) -> Result<()> {
        let t = self.num_train_timesteps;
        if t < 2 {
            return Err(Error::invalid(format!(
                "num_train_timesteps = {t}; expected at least 2"
            )));
        }
        if self.steps_offset >= t {
            return Err(Error::invalid(format!(
                "steps_offset = {} must be below num_train_timesteps = {t}",
                self.steps_offset
            )));
        }
        for (name, v) in [("beta_start", self.beta_start), ("beta_end", self.beta_end)] {
            if let Some(v) = v {
                if !(0.0..1.0).contains(&v) {
                    return Err(Error::invalid(format!(
                        "{name} = {v}; expected a value in [0, 1)"
                    )));
                }
            }
        }
        if let Some(b) = &self.trained_betas {
            if b.len() != t {
                return Err(Error::invalid(format!(
                    "trained_betas has {} values; expected num_train_timesteps = {t}",
                    b.len()
                )));
            }
        }
        if self.clip_sample_range.is_nan() || self.clip_sample_range <= 0.0 {
            return Err(Error::invalid(format!(
                "clip_sample_range = {}; expected a positive value",
                self.clip_sample_range
            )));
        }
        if !(self.dynamic_thresholding_ratio > 0.0 && self.dynamic_thresholding_ratio <= 1.0) {
            return Err(Error::invalid(format!(
                "dynamic_thresholding_ratio = {}; expected a value in (0, 1]",
                self.dynamic_thresholding_ratio
            )));
        }
        if self.sample_max_value.is_nan() || self.sample_max_value <= 0.0 {
            return Err(Error::invalid(format!(
                "sample_max_value = {}; expected a positive value",
                self.sample_max_value
            )));
        }
        if self.rescale_betas_zero_snr && self.prediction_type == PredictionType::Epsilon {
            return Err(Error::invalid(
                "rescale_betas_zero_snr = true with prediction_type = epsilon: at zero terminal SNR \
                 x0 = (x - sqrt(1 - alphas_cumprod) eps) / sqrt(alphas_cumprod) divides by 0 at the \
                 first step (diffusers issue 3851); use prediction_type v_prediction or sample",
            ));
        }
        if self.rescale_betas_zero_snr && kind == SchedulerKind::Heun {
            return Err(Error::invalid(
                "rescale_betas_zero_snr = true: heun has no zero-terminal-SNR mode (its first sigma \
                 would be infinite); use euler, euler-ancestral, dpm-solver++, ddim or ddpm",
            ));
        }
        if !(self.eta >= 0.0 && self.eta.is_finite()) {
            return Err(Error::invalid(format!(
                "eta = {}; expected a finite value >= 0",
                self.eta
            )));
        }
        if !(self.s_churn >= 0.0 && self.s_noise.is_finite()) {
            return Err(Error::invalid(format!(
                "s_churn = {}, s_noise = {}; expected s_churn >= 0 and a finite s_noise",
                self.s_churn, self.s_noise
            )));
        }
        for (name, v) in [("sigma_min", self.sigma_min), ("sigma_max", self.sigma_max)] {
            if let Some(v) = v {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(Error::invalid(format!(
                        "{name} = {v}; expected a finite positive value"
                    )));
                }
            }
        }
        for (name, on) in [
            ("use_beta_sigmas", self.use_beta_sigmas),
            ("use_lu_lambdas", self.use_lu_lambdas),
            ("use_flow_sigmas", self.use_flow_sigmas),
            ("use_dynamic_shifting", self.use_dynamic_shifting),
        ] {
            if on {
                return Err(Error::invalid(format!(
                    "{name} = true is not supported by genmodels' schedulers; supported sigma \
                     schedules: use_karras_sigmas, use_exponential_sigmas"
                )));
            }
        }
        if self.use_karras_sigmas && self.use_exponential_sigmas {
            return Err(Error::invalid(
                "use_karras_sigmas and use_exponential_sigmas are both true; expected at most one",
            ));
        }
        Ok(())
    }
}

/// diffusers writes non-finite floats as the bare JavaScript tokens `-Infinity`, `Infinity` and
/// `NaN`, which are not JSON: quote them (outside strings) so that they parse as strings.
pub(crate) fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
            out.push(c);
            rest = &rest[1..];
            continue;
        }
        let token = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| rest.starts_with(t));
        match token {
            Some(t) => {
                out.push('"');
                out.push_str(t);
                out.push('"');
                rest = &rest[t.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

fn ser_extended_f64<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("NaN")
    } else if *v > 0.0 {
        s.serialize_str("Infinity")
    } else {
        s.serialize_str("-Infinity")
    }
}

fn de_extended_f64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
        Null(()),
    }
    match Num::deserialize(d)? {
        Num::F(v) => Ok(v),
        Num::Null(()) => Ok(f64::NEG_INFINITY),
        Num::S(s) => match s.as_str() {
            "-Infinity" | "-inf" => Ok(f64::NEG_INFINITY),
            "Infinity" | "inf" => Ok(f64::INFINITY),
            _ => Err(serde::de::Error::custom(format!(
                "`{s}` is not a number; expected a number, -Infinity or Infinity"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_one_line_errors_listing_the_accepted_ones() {
        let e = SchedulerConfig::from_json_str(r#"{"beta_schedule": "cosine"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown beta_schedule `cosine`")
                && e.contains("linear, scaled_linear, squaredcos_cap_v2, sigmoid"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        for (json, want) in [
            (
                r#"{"prediction_type": "flow_prediction"}"#,
                "unknown prediction_type `flow_prediction`; expected one of: epsilon, sample, v_prediction",
            ),
            (
                r#"{"timestep_spacing": "uniform"}"#,
                "unknown timestep_spacing `uniform`; expected one of: leading, trailing, linspace",
            ),
            (
                r#"{"variance_type": "big"}"#,
                "unknown variance_type `big`; expected one of: fixed_small, fixed_small_log",
            ),
            (
                r#"{"algorithm_type": "deis"}"#,
                "unknown algorithm_type `deis`; expected one of: dpmsolver++",
            ),
        ] {
            let e = SchedulerConfig::from_json_str(json).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = "cosine".parse::<BetaSchedule>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown beta_schedule `cosine`; expected one of: linear, scaled_linear, squaredcos_cap_v2, sigmoid"
        );
    }

    #[test]
    fn diffusers_json_with_infinity_unknown_keys_and_nulls() {
        let text = r#"{
          "_class_name": "DPMSolverMultistepScheduler",
          "_diffusers_version": "0.42.1",
          "lambda_min_clipped": -Infinity,
          "note": "a string with -Infinity and \"NaN\" inside",
          "trained_betas": null,
          "variance_type": null,
          "sigma_min": null,
          "flow_shift": 1.0,
          "clip_sample_range": 2
        }"#;
        let c = SchedulerConfig::from_json_str(text).unwrap();
        assert_eq!(c.lambda_min_clipped, f64::NEG_INFINITY);
        assert_eq!(c.variance_type, None);
        assert_eq!(c.clip_sample_range, 2.0);
        // round trip through our own JSON
        let back = SchedulerConfig::from_json_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let c = SchedulerConfig::from_json_str(r#"{"lambda_min_clipped": -5.1}"#).unwrap();
        assert_eq!(c.lambda_min_clipped, -5.1);
    }

    #[test]
    fn defaults_follow_the_scheduler_that_reads_them() {
        let c = SchedulerConfig::default();
        let ddpm = c.resolved(SchedulerKind::Ddpm);
        assert_eq!(ddpm.timestep_spacing, Some(TimestepSpacing::Leading));
        assert_eq!(ddpm.clip_sample, Some(true));
        assert_eq!(ddpm.variance_type, Some(VarianceType::FixedSmall));
        let heun = c.resolved(SchedulerKind::Heun);
        assert_eq!(
            (heun.beta_start, heun.beta_end),
            (Some(0.00085), Some(0.012))
        );
        assert_eq!(heun.timestep_spacing, Some(TimestepSpacing::Linspace));
        assert_eq!(heun.clip_sample, Some(false));
        let euler = c.resolved(SchedulerKind::Euler);
        assert_eq!(euler.variance_type, None);
        // a value that is set is kept
        let c = SchedulerConfig {
            timestep_spacing: Some(TimestepSpacing::Trailing),
            ..Default::default()
        };
        assert_eq!(
            c.resolved(SchedulerKind::Ddim).timestep_spacing,
            Some(TimestepSpacing::Trailing)
        );
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let cases: Vec<(SchedulerConfig, &str)> = vec![
            (
                SchedulerConfig {
                    num_train_timesteps: 0,
                    ..Default::default()
                },
                "num_train_timesteps = 0; expected at least 2",
            ),
            (
                SchedulerConfig {
                    beta_end: Some(1.5),
                    ..Default::default()
                },
                "beta_end = 1.5; expected a value in [0, 1)",
            ),
            (
                SchedulerConfig {
                    trained_betas: Some(vec![0.1; 3]),
                    ..Default::default()
                },
                "trained_betas has 3 values; expected num_train_timesteps = 1000",
            ),
            (
                SchedulerConfig {
                    use_beta_sigmas: true,
                    ..Default::default()
                },
                "use_beta_sigmas = true is not supported",
            ),
            (
                SchedulerConfig {
                    rescale_betas_zero_snr: true,
                    ..Default::default()
                },
                "rescale_betas_zero_snr = true with prediction_type = epsilon",
            ),
        ];
        for (c, want) in cases {
            let e = c.validate(SchedulerKind::Ddpm).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
