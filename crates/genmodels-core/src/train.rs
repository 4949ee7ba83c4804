//! The one trainer every family uses: it pulls batches, calls the model's step, guards against
//! NaN/Inf, keeps an EMA, logs JSONL, draws a progress bar, writes sample grids and checkpoints,
//! and resumes exactly.
//!
//! Exact resume: the random draws of step `k` come from a generator seeded with
//! `step_seed(seed, k)` and the batch of step `k` is a function of `(seed, k)`, so a run resumed
//! from a checkpoint at step `k` reproduces an uninterrupted run bit for bit (on the same
//! device and thread count), with only weights, optimiser moments and EMA in the checkpoint.

use crate::checkpoint::{Checkpoint, TrainState};
use crate::data::BatchSource;
use crate::device::{set_deterministic, step_seed};
use crate::dist;
use crate::image_io::{save_grid, save_scatter};
use crate::model::{load_model_state, Losses, Model, Samples};
use crate::optim::{Ema, StepCtx};
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes Ctrl-C (SIGINT) and SIGTERM stop training at the end of the current step, after
/// writing a checkpoint, so an interrupted run loses nothing and `resume` picks it up. Call
/// once from a binary; a second signal exits at once.
pub fn install_stop_handler() -> Result<()> {
    ctrlc::set_handler(|| {
        if STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this step; a checkpoint will be written (signal again to quit at once)");
    })
    .map_err(|e| Error::invalid(format!("cannot install the signal handler: {e}")))
}

/// Trainer settings (the serialisable contract lives in `genmodels-contracts`).
pub use genmodels_contracts::TrainerConfig;

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The step the run stands at (the configured total unless the time budget stopped it).
    pub steps: u64,
    /// False when the time budget stopped the run before its configured total.
    #[serde(default = "yes")]
    pub completed: bool,
    pub elapsed_s: f64,
    pub last_losses: Losses,
    pub checkpoint: PathBuf,
}

fn yes() -> bool {
    true
}

/// The run's files as the loop writes them.
struct Disk {
    checkpoint: PathBuf,
    /// The JSONL log (rank 0's file; a sink on the other ranks of a data-parallel run).
    log: Box<dyn Write>,
    /// Step of the checkpoint on disk (None before the first one).
    kept: Option<u64>,
}

/// Runs the training loop.
pub struct Trainer {
    pub cfg: TrainerConfig,
    /// Recorded in checkpoints so `resume` can rebuild the data source.
    pub data_spec: serde_json::Value,
}

fn fmt_losses(l: &Losses) -> String {
    l.iter()
        .map(|(k, v)| format!("{k} {v:.4}"))
        .collect::<Vec<_>>()
        .join("  ")
}

impl Trainer {
    pub fn new(cfg: TrainerConfig, data_spec: serde_json::Value) -> Self {
        Trainer { cfg, data_spec }
    }

    fn make_checkpoint(
        &self,
        model: &dyn Model,
        ema: Option<&Ema>,
        step: u64,
        elapsed: f64,
    ) -> Checkpoint {
        let state = TrainState {
            step,
            seed: self.cfg.seed,
            elapsed_s: elapsed,
            trainer: serde_json::to_value(&self.cfg).unwrap_or_default(),
            data: self.data_spec.clone(),
        };
        let mut ck = Checkpoint::new(model.name(), model.config_json(), state);
        for (name, vs) in model.var_stores() {
            ck.add_var_store(&format!("model/{name}"), vs);
        }
        model.save_optimizers(&mut ck);
        if let Some(e) = ema {
            e.save_state("ema", &mut ck);
        }
        ck
    }

    /// Writes the checkpoint of `step` atomically, unless the weights have become NaN or
    /// infinite: then the run stops with the step and the tensor named, the last good
    /// checkpoint (`kept`) left as it was.
    fn save_checkpoint(
        &self,
        model: &dyn Model,
        ema: Option<&Ema>,
        step: u64,
        elapsed: f64,
        disk: &mut Disk,
    ) -> Result<()> {
        let ck = self.make_checkpoint(model, ema, step, elapsed);
        if let Some(name) = ck.first_non_finite() {
            let name = format!("weight tensor {name}");
            let line = serde_json::json!({"step": step, "error": format!("{name} is not finite")});
            let _ = writeln!(disk.log, "{line}");
            return Err(Error::NonFinite {
                step,
                name,
                value: f64::NAN,
                kept: disk.kept,
            });
        }
        ck.save(&disk.checkpoint)?;
        disk.kept = Some(step);
        Ok(())
    }

    /// Writes samples of `model` (EMA weights when kept) to `path` (PNG grid, scatter or text).
    pub fn write_samples(
        model: &mut dyn Model,
        ema: Option<&Ema>,
        n: usize,
        path_stem: &Path,
    ) -> Result<PathBuf> {
        let samples = match ema {
            Some(e) => e.with_averaged(|| model.sample(n))?,
            None => model.sample(n)?,
        };
        write_samples_to(&samples, path_stem)
    }

    /// Trains `model` on `source` into `run_dir`, from scratch or from `resume_from`.
    pub fn run(
        &self,
        model: &mut dyn Model,
        source: &mut dyn BatchSource,
        run_dir: &Path,
        resume_from: Option<&Checkpoint>,
    ) -> Result<TrainSummary> {
        self.run_with_eval(model, source, None, run_dir, resume_from)
    }

    /// Mean of the model's `eval_step` losses over the first `eval_batches` batches of `val`,
    /// names prefixed with `val_`; `None` when the model does not evaluate.
    pub fn evaluate(
        model: &mut dyn Model,
        val: &mut dyn BatchSource,
        batches: usize,
    ) -> Result<Option<Losses>> {
        let mut sum: Losses = Vec::new();
        for i in 0..batches.max(1) {
            let b = val.batch_at(i as u64)?;
            let Some(l) = tch::no_grad(|| model.eval_step(&b))? else {
                return Ok(None);
            };
            if sum.is_empty() {
                sum = l.iter().map(|(k, _)| (format!("val_{k}"), 0.0)).collect();
            }
            for (s, (_, v)) in sum.iter_mut().zip(l) {
                s.1 += v;
            }
        }
        let n = batches.max(1) as f64;
        Ok(Some(sum.into_iter().map(|(k, v)| (k, v / n)).collect()))
    }

    /// [`Trainer::run`] with a validation source, evaluated every `eval_every` steps and at the end.
    pub fn run_with_eval(
        &self,
        model: &mut dyn Model,
        source: &mut dyn BatchSource,
        mut val: Option<&mut dyn BatchSource>,
        run_dir: &Path,
        resume_from: Option<&Checkpoint>,
    ) -> Result<TrainSummary> {
        let cfg = &self.cfg;
        if cfg.steps == 0 {
            return Err(Error::invalid("steps must be positive"));
        }
        let rd = genmodels_contracts::RunLayout::new(run_dir);
        // In a data-parallel run only rank 0 writes the folder (log, samples, checkpoints).
        let main = dist::is_main();
        let world = dist::world_size();
        if main {
            std::fs::create_dir_all(rd.samples()).map_err(|e| Error::io(rd.samples(), e))?;
        }
        set_deterministic(cfg.deterministic);
        let mut ema = match (cfg.ema_decay, model.ema_store()) {
            (Some(d), Some(vs)) => Some(Ema::new(vs, d)?),
            (Some(_), None) => {
                return Err(Error::invalid(format!(
                    "model {} keeps no EMA store; drop --ema",
                    model.name()
                )))
            }
            _ => None,
        };
        let ck_path = rd.checkpoint();
        let (start, mut elapsed) = match resume_from {
            Some(ck) => {
                load_model_state(model, ck, &ck_path, true)?;
                if let Some(e) = ema.as_mut() {
                    e.load_state("ema", ck, &ck_path)?;
                }
                if main {
                    truncate_log(&rd.log(), ck.meta.state.step)?;
                }
                (ck.meta.state.step, ck.meta.state.elapsed_s)
            }
            None => {
                if main {
                    let _ = std::fs::remove_file(rd.log());
                }
                (0, 0.0)
            }
        };
        // Every rank starts from rank 0's weights, buffers, optimiser state and EMA.
        dist::sync_start(model, ema.as_mut())?;
        if start >= cfg.steps {
            return Err(Error::invalid(format!(
                "the run is already at step {start} of {}; ask for more steps to continue",
                cfg.steps
            )));
        }
        let log: Box<dyn Write> = if main {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(rd.log())
                    .map_err(|e| Error::io(rd.log(), e))?,
            )
        } else {
            Box::new(std::io::sink())
        };
        let bar = if cfg.progress && main {
            let b = ProgressBar::new(cfg.steps);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_position(start);
            b
        } else {
            ProgressBar::hidden()
        };
        let procs = if world > 1 {
            format!(
                " in {world} processes (global batch {}, {} rows each)",
                cfg.batch_size,
                cfg.batch_size / world
            )
        } else {
            String::new()
        };
        bar.println(format!(
            "training {} on {} from step {start}{procs}",
            model.name(),
            source.describe()
        ));
        let t0 = Instant::now();
        let base_elapsed = elapsed;
        let mut last = Losses::new();
        let mut end = cfg.steps;
        let mut disk = Disk {
            checkpoint: ck_path.clone(),
            log,
            // The step of the checkpoint on disk: what a divergence leaves behind.
            kept: resume_from.map(|c| c.meta.state.step),
        };
        for step in start..cfg.steps {
            crate::rng::begin_step(step_seed(cfg.seed, step));
            dist::sync_buffers(model)?;
            let batch = dist::shard(source.batch_at(step)?)?;
            let ctx = StepCtx {
                step,
                lr_scale: cfg.lr_schedule.factor(step),
                grad_clip: cfg.grad_clip,
            };
            let stepped = model.train_step(&batch, &ctx);
            crate::rng::end_step();
            let mut losses = stepped?;
            let done = step + 1;
            // Whether to stop after this step: the time budget or a signal, on any rank; the
            // ranks also agree on the logged losses (their mean), so they stop together.
            let flags = [
                cfg.time_budget_s
                    .is_some_and(|b| done != cfg.steps && t0.elapsed().as_secs_f64() >= b),
                STOP.load(std::sync::atomic::Ordering::SeqCst) && done != cfg.steps,
            ];
            let [out_of_time, interrupted] = dist::agree_step(&mut losses, flags)?;
            if let Some((name, v)) = losses.iter().find(|(_, v)| !v.is_finite()) {
                bar.abandon_with_message("stopped: non-finite loss");
                let line = serde_json::json!({"step": step + 1, "error": format!("{name} is {v}")});
                let _ = writeln!(disk.log, "{line}");
                return Err(Error::NonFinite {
                    step: step + 1,
                    name: name.clone(),
                    value: *v,
                    kept: disk.kept,
                });
            }
            if let Some((name, v)) = losses.iter().find(|(_, v)| v.abs() > cfg.divergence_limit) {
                bar.abandon_with_message("stopped: diverged");
                let line = serde_json::json!({"step": step + 1, "error": format!("{name} is {v:e}: diverged")});
                let _ = writeln!(disk.log, "{line}");
                return Err(Error::Diverged {
                    step: step + 1,
                    name: name.clone(),
                    value: *v,
                    limit: cfg.divergence_limit,
                    kept: disk.kept,
                });
            }
            if let Some(e) = ema.as_mut() {
                e.update();
            }
            let mut evaluated = false;
            if let Some(v) = val.as_deref_mut().filter(|_| main) {
                if cfg.eval_every > 0
                    && (done % cfg.eval_every == 0 || done == cfg.steps || out_of_time)
                {
                    if let Some(vl) = Self::evaluate(model, v, cfg.eval_batches)? {
                        bar.println(format!("step {done}: {}", fmt_losses(&vl)));
                        losses.extend(vl);
                        evaluated = true;
                    }
                }
            }
            elapsed = base_elapsed + t0.elapsed().as_secs_f64();
            bar.set_position(done);
            bar.set_message(fmt_losses(&losses));
            if done % cfg.log_every.max(1) == 0 || done == cfg.steps || evaluated || out_of_time {
                let mut obj = serde_json::Map::new();
                obj.insert("step".into(), done.into());
                obj.insert("time_s".into(), elapsed.into());
                obj.insert("lr_scale".into(), ctx.lr_scale.into());
                for (k, v) in &losses {
                    obj.insert(k.clone(), (*v).into());
                }
                writeln!(disk.log, "{}", serde_json::Value::Object(obj))
                    .map_err(|e| Error::io(rd.log(), e))?;
            }
            if main && cfg.sample_every > 0 && done % cfg.sample_every == 0 && done != cfg.steps {
                Self::write_samples(
                    model,
                    ema.as_ref(),
                    cfg.sample_count,
                    &rd.samples().join(format!("step_{done:07}")),
                )?;
            }
            if done % cfg.checkpoint_every.max(1) == 0 && done != cfg.steps {
                dist::check_in_sync(model)?;
                if main {
                    self.save_checkpoint(model, ema.as_ref(), done, elapsed, &mut disk)?;
                }
            }
            last = losses;
            if out_of_time {
                end = done;
                break;
            }
            if interrupted {
                dist::check_in_sync(model)?;
                if main {
                    self.save_checkpoint(model, ema.as_ref(), done, elapsed, &mut disk)?;
                }
                bar.abandon_with_message(format!("interrupted at step {done}; checkpoint written"));
                return Err(Error::Interrupted {
                    step: done,
                    checkpoint: ck_path,
                });
            }
        }
        dist::check_in_sync(model)?;
        if main {
            self.save_checkpoint(model, ema.as_ref(), end, elapsed, &mut disk)?;
            Self::write_samples(
                model,
                ema.as_ref(),
                cfg.sample_count,
                &rd.samples().join(format!("step_{end:07}")),
            )?;
        }
        // The other ranks return once rank 0's checkpoint is on disk.
        dist::barrier()?;
        if end == cfg.steps {
            bar.finish_with_message(fmt_losses(&last));
        } else {
            bar.abandon_with_message(format!(
                "time budget spent at step {end} of {}; checkpoint written, `genmodels resume` continues",
                cfg.steps
            ));
        }
        Ok(TrainSummary {
            steps: end,
            completed: end == cfg.steps,
            elapsed_s: elapsed,
            last_losses: last,
            checkpoint: ck_path,
        })
    }
}

/// Writes samples next to `stem`: `stem.png` (grid or scatter) or `stem.txt`.
pub fn write_samples_to(samples: &Samples, stem: &Path) -> Result<PathBuf> {
    match samples {
        Samples::Images(t) => {
            let p = stem.with_extension("png");
            let nrow = (t.size()[0] as f64).sqrt().ceil() as i64;
            save_grid(t, nrow.max(1), 2, &p)?;
            Ok(p)
        }
        Samples::Points(t) => {
            let p = stem.with_extension("png");
            let lim = (t.abs().max().double_value(&[]) * 1.1).clamp(1.0, 10.0);
            save_scatter(t, None, lim, 400, &p)?;
            Ok(p)
        }
        Samples::Text(v) => {
            let p = stem.with_extension("txt");
            crate::checkpoint::write_atomic(&p, v.join("\n---\n").as_bytes())?;
            Ok(p)
        }
    }
}

/// Drops log lines past `step` (they belong to the part of a run that a resume replays).
fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    crate::checkpoint::write_atomic(path, out.as_bytes())
}
