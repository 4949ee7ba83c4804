//! What every verb shares: the registry, opening a run, progress bars, JSON reports.

use anyhow::{Context, Result};
use genmodels_core::device::device_from_env_or;
use genmodels_core::model::{Capability, Registry};
use genmodels_core::run::{OpenedRun, Run};
use std::path::Path;

/// Every model the command line knows, from every family crate. Adding a family is one line
/// here; adding a model is one line in its family's `entries()`.
pub fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut all = genmodels_gan::entries();
        all.extend(genmodels_transformer::entries());
        all.extend(genmodels_vae::entries());
        all.extend(genmodels_diffusion::entries());
        all.extend(genmodels_ebm::entries());
        Registry::new(all)
    })
}

/// Which weights a verb runs with.
#[derive(Clone, Copy)]
pub enum Weights {
    /// The trained weights as they are.
    Raw,
    /// The EMA when the checkpoint keeps one (unless `no_ema`), for sampling.
    Sampling { no_ema: bool },
}

/// Opens a run folder on the `--device` choice with its model built and its weights loaded.
pub fn open_run(
    run_dir: &Path,
    device_choice: Option<&str>,
    weights: Weights,
) -> Result<(OpenedRun<'static>, tch::Device)> {
    let device = device(device_choice)?;
    let mut run = Run::open_with_model(run_dir, registry(), device)?;
    match weights {
        Weights::Raw => run.load_weights(false)?,
        Weights::Sampling { no_ema } => run.load_for_sampling(no_ema)?,
    }
    Ok((run, device))
}

/// A capability the verb needs, or the one-line error naming the models that have it.
pub fn need<'a, T: ?Sized>(
    capability: Option<&'a mut T>,
    verb: &str,
    c: Capability,
    model: &str,
) -> Result<&'a mut T> {
    capability.ok_or_else(|| registry().lacks(verb, c, model).into())
}

/// The device named by `--device` (else `$GENMODELS_DEVICE`, else the best available).
pub fn device(choice: Option<&str>) -> Result<tch::Device> {
    Ok(device_from_env_or(choice)?)
}

/// A progress bar on stderr.
pub fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>24} [{elapsed_precise}] {bar:30} {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b
}

/// Progress bars for a pipeline of named stages: a new bar whenever the stage changes.
#[derive(Default)]
pub struct StageBars {
    current: Option<(String, indicatif::ProgressBar)>,
}

impl StageBars {
    pub fn update(&mut self, stage: &str, done: usize, total: usize) {
        if self.current.as_ref().is_none_or(|(s, _)| s != stage) {
            self.finish();
            self.current = Some((stage.to_string(), bar(total as u64, stage)));
        }
        if let Some((_, b)) = &self.current {
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    }

    pub fn finish(&mut self) {
        if let Some((_, b)) = self.current.take() {
            b.finish();
        }
    }
}

/// Writes a report contract as pretty JSON.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, genmodels_contracts::to_json_pretty(value))
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates the folder an output file goes into.
pub fn parent_dir(out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Parses a duration such as `90`, `90s`, `10m` or `1.5h` into seconds.
pub fn parse_duration(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}`: use s, m or h (e.g. 90s, 10m)"
            ))
        }
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * mult),
        _ => Err(format!(
            "`{s}` is not a duration: expected a non-negative number with s, m or h (e.g. 10m)"
        )),
    }
}

/// The first `n` examples of `ds` as batches of at most `per`, on `device`.
pub fn first_batches(
    ds: &dyn genmodels_core::data::Dataset,
    n: usize,
    per: usize,
    device: tch::Device,
) -> Result<Vec<genmodels_core::data::Batch>> {
    let n = n.min(ds.len());
    (0..n)
        .step_by(per.max(1))
        .map(|start| {
            let idx: Vec<usize> = (start..(start + per).min(n)).collect();
            Ok(genmodels_core::data::DataLoader::collate(ds, &idx, device)?)
        })
        .collect()
}
