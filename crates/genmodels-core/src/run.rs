//! A run folder, made in one place: [`Run::create`] opens the data, picks the model's config,
//! seeds and builds the model and writes the manifest; [`Run::open`] reopens it for `resume`,
//! `sample` and every scoring verb; [`Run::train`] builds the batch sources (with the seeds
//! derived once, here) and drives the trainer. `train` and `resume` share all of it, so a
//! resumed run is exact by construction, not by two copies agreeing.
//!
//! The manifest (`run.json`) keeps the data spec as the user wrote it (named data resolve
//! against the asset folder of whichever machine opens the run), so a run folder copied to
//! another directory or machine resumes there.

use crate::checkpoint::{write_atomic, Checkpoint};
use crate::data::{portable_spec, recorded_spec, BatchSource, DataSpec, OpenData};
use crate::device::{device_name, seed_everything};
use crate::model::{apply_overrides, load_model_state, Model, ModelEntry, Registry};
use crate::optim::Ema;
use crate::train::{TrainSummary, Trainer, TrainerConfig};
use crate::{Error, Result};
pub use genmodels_contracts::{layout, RunLayout, RunManifest};
use std::path::Path;
use tch::Device;

/// Offset of the validation source's seed from the run's seed.
const VAL_SEED: u64 = 0x5eed;

/// Where a new run's model config comes from.
pub enum ConfigSource<'a> {
    /// The model's defaults for the data, then `key=value` overrides.
    Defaults(&'a [String]),
    /// A complete config (from a manifest: `genmodels train --config run.json`).
    Given(serde_json::Value),
}

/// A run folder and its manifest.
#[derive(Debug, Clone)]
pub struct Run {
    pub layout: RunLayout,
    pub manifest: RunManifest,
    /// The folder's lock while this process writes to it (see [`RunLock`]).
    lock: Option<std::sync::Arc<RunLock>>,
}

/// An exclusive advisory lock (`flock`) on `RUN/.lock`, held while a process trains into the
/// folder: a second `train` or `resume` of the same folder is refused, and a crashed or killed
/// process leaves nothing stuck (the kernel drops the lock with the process).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Takes the lock of `dir` or fails at once naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::io::AsRawFd;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(layout::LOCK);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "it holds RUN/.lock".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(Error::RunInUse {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(RunLock { _file: file })
    }
}

/// A run opened with its checkpoint and its model built (weights not loaded yet).
pub struct OpenedRun<'r> {
    pub run: Run,
    pub checkpoint: Checkpoint,
    pub entry: &'r ModelEntry,
    pub model: Box<dyn Model>,
}

impl Run {
    /// Creates a run in `dir`: opens `data`, takes the model's config from `config`, seeds
    /// with the trainer's seed, builds the model, and writes `run.json`. A folder that already
    /// holds a run is refused unless `force`.
    pub fn create(
        dir: &Path,
        entry: &ModelEntry,
        data: &str,
        config: ConfigSource,
        trainer: TrainerConfig,
        device: Device,
        force: bool,
    ) -> Result<(Run, Box<dyn Model>, OpenData)> {
        // The other ranks of a data-parallel run build the same model but leave the folder to
        // rank 0.
        let main = crate::dist::is_main();
        let fresh = !dir.exists();
        let lock = match main {
            true => Some(std::sync::Arc::new(RunLock::acquire(dir)?)),
            false => None,
        };
        let made = Self::prepare(dir, entry, data, config, &trainer, device, force);
        let (data, opened, config, model) = match made {
            Ok(m) => m,
            Err(e) => {
                // Refused before anything was written: leave no empty folder behind.
                drop(lock);
                if fresh && main {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(e);
            }
        };
        let layout = RunLayout::new(dir);
        let run = Run {
            layout,
            lock,
            manifest: RunManifest {
                model: entry.name.into(),
                family: entry.family.into(),
                data,
                config,
                trainer,
                device: device_name(device),
                genmodels_version: env!("CARGO_PKG_VERSION").into(),
            },
        };
        if main {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            run.write_manifest()?;
        }
        Ok((run, model, opened))
    }

    /// The checks and the model of [`Run::create`], before anything is written.
    fn prepare(
        dir: &Path,
        entry: &ModelEntry,
        data: &str,
        config: ConfigSource,
        trainer: &TrainerConfig,
        device: Device,
        force: bool,
    ) -> Result<(String, OpenData, serde_json::Value, Box<dyn Model>)> {
        if RunLayout::new(dir).has_checkpoint() && !force {
            return Err(Error::invalid(format!(
                "{d} already holds a run; continue it with `genmodels resume {d}` or start over with --force",
                d = dir.display()
            )));
        }
        let data = portable_spec(data)?;
        let opened = DataSpec::parse(&data)?.load()?;
        let config = match config {
            ConfigSource::Defaults(overrides) => {
                let mut c = (entry.default_config)(&opened.info())?;
                apply_overrides(&mut c, overrides)?;
                c
            }
            ConfigSource::Given(c) => c,
        };
        seed_everything(trainer.seed);
        let model = (entry.build)(&config, device)?;
        Ok((data, opened, config, model))
    }

    /// Opens the run in `dir`: its manifest, or for a folder without one (an imported model,
    /// a run from an older version) a manifest rebuilt from the checkpoint's metadata.
    pub fn open(dir: &Path) -> Result<Run> {
        let layout = RunLayout::new(dir);
        if !layout.has_checkpoint() {
            return Err(Error::invalid(format!(
                "{} holds no {}: not a genmodels run folder",
                dir.display(),
                layout::CHECKPOINT
            )));
        }
        let manifest = match std::fs::read_to_string(layout.manifest()) {
            Ok(text) => serde_json::from_str::<RunManifest>(&text).ok(),
            Err(_) => None,
        };
        let manifest = match manifest {
            Some(m) => m,
            None => {
                let ck = Checkpoint::load(&layout.checkpoint())?;
                let st = &ck.meta.state;
                RunManifest {
                    model: ck.meta.model.clone(),
                    family: String::new(),
                    data: recorded_spec(&st.data).unwrap_or_default(),
                    config: ck.meta.config.clone(),
                    trainer: serde_json::from_value(st.trainer.clone()).unwrap_or_default(),
                    device: String::new(),
                    genmodels_version: String::new(),
                }
            }
        };
        Ok(Run {
            layout,
            manifest,
            lock: None,
        })
    }

    /// Opens the run, its checkpoint and its model (fresh weights: load them with
    /// [`OpenedRun::load_weights`] or [`OpenedRun::load_for_sampling`]).
    pub fn open_with_model<'r>(
        dir: &Path,
        registry: &'r Registry,
        device: Device,
    ) -> Result<OpenedRun<'r>> {
        let run = Run::open(dir)?;
        let checkpoint = Checkpoint::load(&run.layout.checkpoint())?;
        let entry = registry.find(&checkpoint.meta.model)?;
        let model = (entry.build)(&checkpoint.meta.config, device)?;
        Ok(OpenedRun {
            run,
            checkpoint,
            entry,
            model,
        })
    }

    /// Takes the folder's lock for the rest of this process's use of the run (refused, naming
    /// the holder, when another process trains into it).
    pub fn lock(&mut self) -> Result<()> {
        if self.lock.is_none() && crate::dist::is_main() {
            self.lock = Some(std::sync::Arc::new(RunLock::acquire(&self.layout.dir)?));
        }
        Ok(())
    }

    /// Writes `run.json` atomically.
    pub fn write_manifest(&self) -> Result<()> {
        if !crate::dist::is_main() {
            return Ok(());
        }
        write_atomic(
            &self.layout.manifest(),
            genmodels_contracts::to_json_pretty(&self.manifest).as_bytes(),
        )
    }

    /// The run's data, tokenised with the model's own tokenizer when it has one (so a resumed
    /// text run sees the same token ids).
    pub fn open_data(&self, model: &mut dyn Model) -> Result<OpenData> {
        if self.manifest.data.is_empty() {
            return Err(Error::invalid(format!(
                "{} records no training data (an imported model); pass the data explicitly",
                self.layout.dir.display()
            )));
        }
        let vocab = model.as_text().and_then(|t| t.vocab().cloned());
        DataSpec::parse(&self.manifest.data)?.load_with_vocab(vocab.as_ref())
    }

    /// Trains `model` on `data` with the manifest's trainer settings, from scratch or from
    /// `resume_from`; `adjust` sets what each invocation chooses for itself (time budget,
    /// progress bar). The training and validation sources are made here, from the run's seed.
    pub fn train(
        &self,
        model: &mut dyn Model,
        data: &OpenData,
        device: Device,
        resume_from: Option<&Checkpoint>,
        adjust: impl FnOnce(&mut TrainerConfig),
    ) -> Result<TrainSummary> {
        let _lock = match &self.lock {
            Some(l) => Some(l.clone()),
            None if crate::dist::is_main() => {
                Some(std::sync::Arc::new(RunLock::acquire(&self.layout.dir)?))
            }
            None => None,
        };
        let mut cfg = self.manifest.trainer.clone();
        adjust(&mut cfg);
        let block = model.as_text().map(|t| t.block_size());
        let mut source = data.source(cfg.batch_size, block, cfg.seed, device)?;
        let mut val = data.val_source(cfg.batch_size, block, cfg.seed ^ VAL_SEED, device)?;
        let trainer = Trainer::new(cfg, serde_json::Value::String(self.manifest.data.clone()));
        trainer.run_with_eval(
            model,
            source.as_mut(),
            val.as_mut().map(|v| v.as_mut() as &mut dyn BatchSource),
            &self.layout.dir,
            resume_from,
        )
    }
}

impl OpenedRun<'_> {
    /// Loads the checkpoint's weights (and optimiser state when `with_optim`).
    pub fn load_weights(&mut self, with_optim: bool) -> Result<()> {
        load_model_state(
            self.model.as_mut(),
            &self.checkpoint,
            &self.run.layout.checkpoint(),
            with_optim,
        )
    }

    /// Loads the weights for sampling: the EMA when the checkpoint has one (unless `no_ema`).
    pub fn load_for_sampling(&mut self, no_ema: bool) -> Result<()> {
        self.load_weights(false)?;
        let path = self.run.layout.checkpoint();
        if !no_ema && self.checkpoint.has_prefix("ema") {
            if let Some(vs) = self.model.ema_store() {
                let mut ema = Ema::new(vs, 0.0)?;
                ema.load_state("ema", &self.checkpoint, &path)?;
                ema.copy_into_live();
            }
        }
        Ok(())
    }

    /// The registered model name.
    pub fn name(&self) -> &'static str {
        self.entry.name
    }
}
