//! How a run was made (`run.json`), the trainer settings it stores, and one line of its log.

use crate::ContractError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Learning-rate schedules, as a factor of the base rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Linear warm-up over `warmup` steps, then constant.
    Warmup { warmup: u64 },
    /// Linear warm-up, then cosine decay to `min_factor` at `total` steps (nanoGPT's schedule).
    Cosine {
        warmup: u64,
        total: u64,
        min_factor: f64,
    },
    /// Linear warm-up, then linear decay to zero at `total` steps.
    Linear { warmup: u64, total: u64 },
}

impl LrSchedule {
    /// Factor at `step` (0-based).
    pub fn factor(&self, step: u64) -> f64 {
        let warm = |w: u64| {
            if w > 0 && step < w {
                (step + 1) as f64 / w as f64
            } else {
                1.0
            }
        };
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Warmup { warmup } => warm(warmup),
            LrSchedule::Cosine {
                warmup,
                total,
                min_factor,
            } => {
                if step < warmup {
                    return warm(warmup);
                }
                if step >= total {
                    return min_factor;
                }
                let r = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                min_factor + 0.5 * (1.0 + (std::f64::consts::PI * r).cos()) * (1.0 - min_factor)
            }
            LrSchedule::Linear { warmup, total } => {
                if step < warmup {
                    return warm(warmup);
                }
                (1.0 - (step - warmup) as f64 / (total - warmup).max(1) as f64).max(0.0)
            }
        }
    }

    /// Parses `constant`, `warmup:W`, `cosine:W:TOTAL[:MIN]`, `linear:W:TOTAL`.
    pub fn parse(s: &str) -> Result<Self, ContractError> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize| -> Result<u64, ContractError> {
            parts
                .get(i)
                .ok_or_else(|| ContractError(format!("schedule `{s}`: missing field {i}")))?
                .parse()
                .map_err(|_| {
                    ContractError(format!("schedule `{s}`: field {i} is not a whole number"))
                })
        };
        match parts[0] {
            "constant" => Ok(LrSchedule::Constant),
            "warmup" => Ok(LrSchedule::Warmup { warmup: num(1)? }),
            "cosine" => Ok(LrSchedule::Cosine {
                warmup: num(1)?,
                total: num(2)?,
                min_factor: match parts.get(3) {
                    Some(m) => m.parse().map_err(|_| {
                        ContractError(format!("schedule `{s}`: bad minimum factor"))
                    })?,
                    None => 0.1,
                },
            }),
            "linear" => Ok(LrSchedule::Linear {
                warmup: num(1)?,
                total: num(2)?,
            }),
            _ => Err(ContractError(format!(
                "unknown schedule `{s}`: expected constant, warmup:W, cosine:W:TOTAL[:MIN] or linear:W:TOTAL"
            ))),
        }
    }
}

/// Trainer settings; stored in the checkpoint and the manifest so `resume` needs only the run
/// folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainerConfig {
    /// Total optimisation steps.
    pub steps: u64,
    pub seed: u64,
    /// Examples per batch (used to build the data source; recorded for `resume`).
    pub batch_size: usize,
    /// Write a JSONL log line every this many steps.
    pub log_every: u64,
    /// Write a checkpoint every this many steps (and always at the end).
    pub checkpoint_every: u64,
    /// Write a sample grid every this many steps (0: only at the end).
    pub sample_every: u64,
    /// Images in each sample grid.
    pub sample_count: usize,
    /// Keep an EMA of the model's `ema_store` with this decay.
    pub ema_decay: Option<f64>,
    /// Clip each optimiser's global gradient norm.
    pub grad_clip: Option<f64>,
    pub lr_schedule: LrSchedule,
    /// Draw a progress bar (on stderr).
    pub progress: bool,
    /// No cuDNN autotuning, reproducible cuBLAS (slower on GPUs).
    pub deterministic: bool,
    /// Evaluate on the validation batches every this many steps (0: never); needs a
    /// validation source and a model with an `eval_step`.
    pub eval_every: u64,
    /// Validation batches per evaluation (the same batches every time, so curves compare).
    pub eval_batches: usize,
    /// A logged loss whose magnitude passes this counts as divergence: the run stops, naming
    /// the step and the loss, and keeps the last good checkpoint (as for a NaN).
    pub divergence_limit: f64,
    /// Stop (with a checkpoint, samples and a log line) once this many seconds of training have
    /// passed in this invocation; `resume` continues. Not stored: each invocation sets its own.
    #[serde(skip)]
    pub time_budget_s: Option<f64>,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        TrainerConfig {
            steps: 1000,
            seed: 0,
            batch_size: 64,
            log_every: 10,
            checkpoint_every: 500,
            sample_every: 500,
            sample_count: 64,
            ema_decay: None,
            grad_clip: None,
            lr_schedule: LrSchedule::Constant,
            progress: true,
            deterministic: false,
            eval_every: 0,
            eval_batches: 20,
            divergence_limit: 1e10,
            time_budget_s: None,
        }
    }
}

/// `run.json`: everything that made a run, so that `genmodels train --config run.json` makes
/// it again. The data spec is kept as the user wrote it (`fashion-mnist`, not the path it
/// resolved to), so a run folder moved to another machine reopens its data from that
/// machine's asset folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// Registered model name.
    pub model: String,
    #[serde(default)]
    pub family: String,
    /// The data spec as given (`fashion-mnist`, `idx:/abs/dir`, `moby-dick:bpe`); relative
    /// paths are made absolute when the run is created.
    pub data: String,
    /// The model's full config (defaults for the data, then the `--set` overrides).
    pub config: serde_json::Value,
    pub trainer: TrainerConfig,
    /// The device the run was created on (informational: `resume --device` may differ).
    #[serde(default)]
    pub device: String,
    /// The genmodels version that created the run.
    #[serde(default)]
    pub genmodels_version: String,
}

/// One line of `train.jsonl`: the step, the training time so far, the learning-rate factor
/// and the model's named values (losses, diagnostics, `val_*` after an evaluation). A run
/// that stopped on a non-finite loss ends with a line that carries `error` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub step: u64,
    #[serde(default)]
    pub time_s: f64,
    #[serde(default)]
    pub lr_scale: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}

impl LogLine {
    /// Parses every well-formed line of a log (a half-written last line is skipped).
    pub fn parse_log(text: &str) -> Vec<LogLine> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<LogLine>(l).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_refuse() {
        assert_eq!(LrSchedule::parse("constant").unwrap(), LrSchedule::Constant);
        assert_eq!(
            LrSchedule::parse("cosine:10:100").unwrap(),
            LrSchedule::Cosine {
                warmup: 10,
                total: 100,
                min_factor: 0.1
            }
        );
        assert!(LrSchedule::parse("exp")
            .unwrap_err()
            .0
            .contains("unknown schedule"));
        let c = LrSchedule::parse("cosine:10:110:0").unwrap();
        assert!((c.factor(0) - 0.1).abs() < 1e-12);
        assert!((c.factor(60) - 0.5).abs() < 1e-12);
        assert_eq!(c.factor(500), 0.0);
    }

    #[test]
    fn log_lines_keep_named_values_and_errors() {
        let text = "{\"step\":1,\"time_s\":0.5,\"lr_scale\":1.0,\"d_loss\":0.7}\n\
                    {\"step\":2,\"error\":\"g_loss is NaN\"}\n{\"step\":";
        let lines = LogLine::parse_log(text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].values["d_loss"], 0.7);
        assert_eq!(lines[1].error.as_deref(), Some("g_loss is NaN"));
        let back = serde_json::to_string(&lines[0]).unwrap();
        assert_eq!(serde_json::from_str::<LogLine>(&back).unwrap(), lines[0]);
    }
}
