//! `genmodels train` and `genmodels resume`: both go through [`Run`], which makes the data
//! sources, seeds and trainer in one place.

use crate::common::{device, parse_duration, registry};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_core::data::DATA_HELP;
use genmodels_core::optim::LrSchedule;
use genmodels_core::run::{ConfigSource, Run, RunManifest};
use genmodels_core::train::{TrainSummary, TrainerConfig};
use std::path::PathBuf;

#[derive(Args)]
pub struct TrainArgs {
    /// Model name (see `genmodels list`); not with --config.
    #[arg(required_unless_present = "config")]
    model: Option<String>,
    /// Training data; not with --config.
    #[arg(long, help = format!("Training data: {DATA_HELP}"), required_unless_present = "config")]
    data: Option<String>,
    /// Make the run described by a manifest (another run's `run.json`): same model, config,
    /// data and trainer settings. The options below that shape a run may not be combined with it.
    #[arg(long, conflicts_with_all = ["model", "data", "overrides", "steps", "batch_size", "seed", "lr_schedule", "ema", "grad_clip"])]
    config: Option<PathBuf>,
    /// Run folder to create.
    #[arg(long)]
    out: PathBuf,
    /// Optimisation steps.
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda, cuda:N or auto (default: $GENMODELS_DEVICE, else auto).
    #[arg(long)]
    device: Option<String>,
    /// Model config overrides, e.g. --set lr=1e-4 --set z_dim=64.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Learning-rate schedule: constant, warmup:W, cosine:W:TOTAL[:MIN], linear:W:TOTAL.
    #[arg(long)]
    lr_schedule: Option<String>,
    /// Keep an EMA of the generator's weights with this decay (e.g. 0.999).
    #[arg(long)]
    ema: Option<f64>,
    /// Clip each optimiser's global gradient norm.
    #[arg(long)]
    grad_clip: Option<f64>,
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 500)]
    sample_every: u64,
    #[arg(long, default_value_t = 64)]
    sample_count: usize,
    /// Reproducible kernels (slower on GPUs).
    #[arg(long)]
    deterministic: bool,
    /// Validation every this many steps, for models that evaluate (text); 0: never.
    #[arg(long, default_value_t = 250)]
    eval_every: u64,
    /// Batches per validation.
    #[arg(long, default_value_t = 20)]
    eval_batches: usize,
    /// Stop as diverged when a loss's magnitude passes this (NaN and infinity always stop).
    #[arg(long, default_value_t = 1e10)]
    divergence_limit: f64,
    #[command(flatten)]
    session: Session,
    /// Start over even if the folder already holds a run.
    #[arg(long)]
    force: bool,
}

/// What each invocation of `train` or `resume` sets for itself (not stored in the run).
#[derive(Args)]
pub struct Session {
    /// Stop after this much training time (e.g. 90s, 10m, 1h), with a checkpoint; `resume`
    /// continues.
    #[arg(long, value_parser = parse_duration)]
    time_budget: Option<f64>,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Train data-parallel in N local processes (rank 0 writes the run), as `torchrun
    /// --nproc-per-node N --no-python genmodels ...` would; each process takes --batch-size / N
    /// rows of every batch and one thread unless OMP_NUM_THREADS or --threads says otherwise.
    #[arg(long, value_name = "N")]
    pub nproc: Option<usize>,
    /// How long a data-parallel collective (or the start-up rendezvous) may wait for the
    /// other processes before the run stops with an error (e.g. 60s, 5m).
    #[arg(long, value_parser = parse_duration, default_value = "300s")]
    pub dist_timeout: f64,
}

impl Session {
    /// Joins the data-parallel group when torchrun (or `--nproc`) started this process as one
    /// of several workers.
    fn join(&self) -> Result<()> {
        let n = genmodels_core::dist::init_from_env(std::time::Duration::from_secs_f64(
            self.dist_timeout,
        ))?;
        if n > 1 && genmodels_core::dist::is_main() {
            eprintln!("data-parallel: {n} processes (c10d Gloo)");
        }
        Ok(())
    }

    fn apply(&self, cfg: &mut TrainerConfig) {
        cfg.time_budget_s = self.time_budget;
        cfg.progress = !self.no_progress;
    }
}

#[derive(Args)]
pub struct ResumeArgs {
    /// The run folder written by `genmodels train`.
    run_dir: PathBuf,
    /// New total number of steps (default: the run's own).
    #[arg(long)]
    steps: Option<u64>,
    /// cpu, cuda, cuda:N or auto (default: $GENMODELS_DEVICE, else auto).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    session: Session,
}

pub fn train(a: TrainArgs) -> Result<()> {
    if let Some(n) = a.session.nproc {
        return crate::cmd::launch::launch(n, a.session.dist_timeout);
    }
    a.session.join()?;
    let reg = registry();
    let device = device(a.device.as_deref())?;
    let (entry, data, config, trainer) = match &a.config {
        Some(path) => {
            let m: RunManifest = genmodels_contracts::read_json(path)?;
            let entry = reg.find(&m.model)?;
            (entry, m.data, ConfigSource::Given(m.config), m.trainer)
        }
        None => {
            let (Some(model), Some(data)) = (&a.model, &a.data) else {
                bail!("give MODEL and --data, or --config run.json");
            };
            let trainer = TrainerConfig {
                steps: a.steps.unwrap_or(5000),
                seed: a.seed.unwrap_or(0),
                batch_size: a.batch_size.unwrap_or(64),
                log_every: a.log_every,
                checkpoint_every: a.checkpoint_every,
                sample_every: a.sample_every,
                sample_count: a.sample_count,
                ema_decay: a.ema,
                grad_clip: a.grad_clip,
                lr_schedule: LrSchedule::parse(a.lr_schedule.as_deref().unwrap_or("constant"))?,
                progress: true,
                deterministic: a.deterministic,
                eval_every: a.eval_every,
                eval_batches: a.eval_batches,
                divergence_limit: a.divergence_limit,
                time_budget_s: None,
            };
            (
                reg.find(model)?,
                data.clone(),
                ConfigSource::Defaults(&a.overrides),
                trainer,
            )
        }
    };
    let (run, mut model, data) =
        Run::create(&a.out, entry, &data, config, trainer, device, a.force)?;
    let s = run.train(model.as_mut(), &data, device, None, |c| a.session.apply(c))?;
    let total = run.manifest.trainer.steps;
    if !genmodels_core::dist::is_main() {
        return Ok(());
    }
    println!(
        "trained {} for {} steps in {:.1}s{}; checkpoint {}",
        entry.name,
        s.steps,
        s.elapsed_s,
        budget_note(&s, total),
        s.checkpoint.display()
    );
    Ok(())
}

pub fn resume(a: ResumeArgs) -> Result<()> {
    if let Some(n) = a.session.nproc {
        return crate::cmd::launch::launch(n, a.session.dist_timeout);
    }
    a.session.join()?;
    let reg = registry();
    let device = device(a.device.as_deref())?;
    let mut opened = Run::open_with_model(&a.run_dir, reg, device)?;
    opened.run.lock()?;
    if let Some(s) = a.steps {
        opened.run.manifest.trainer.steps = s;
        opened.run.write_manifest()?;
    }
    let data = opened.run.open_data(opened.model.as_mut())?;
    let s = opened.run.train(
        opened.model.as_mut(),
        &data,
        device,
        Some(&opened.checkpoint),
        |c| a.session.apply(c),
    )?;
    if !genmodels_core::dist::is_main() {
        return Ok(());
    }
    println!(
        "resumed {} to step {} ({:.1}s in all){}; checkpoint {}",
        opened.name(),
        s.steps,
        s.elapsed_s,
        budget_note(&s, opened.run.manifest.trainer.steps),
        s.checkpoint.display()
    );
    Ok(())
}

fn budget_note(s: &TrainSummary, total: u64) -> String {
    if s.completed {
        String::new()
    } else {
        format!(" (time budget spent; {total} planned, `genmodels resume` continues)")
    }
}
