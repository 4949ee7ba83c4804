//! The files of a run folder. Every reader and writer of a run goes through these names.

use std::path::{Path, PathBuf};

/// The checkpoint: weights, optimiser state, EMA, config and training state.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// One JSON line per logged step ([`crate::LogLine`]).
pub const LOG: &str = "train.jsonl";
/// The run manifest ([`crate::RunManifest`]): how the run was made, enough to make it again.
pub const MANIFEST: &str = "run.json";
/// Held (flock) by the process training into the folder.
pub const LOCK: &str = ".lock";
/// Sample grids written during training.
pub const SAMPLES: &str = "samples";

/// A run folder and the paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLayout {
    pub dir: PathBuf,
}

impl RunLayout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunLayout { dir: dir.into() }
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join(CHECKPOINT)
    }
    pub fn log(&self) -> PathBuf {
        self.dir.join(LOG)
    }
    pub fn manifest(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }
    pub fn samples(&self) -> PathBuf {
        self.dir.join(SAMPLES)
    }
    /// Whether the folder holds a checkpoint (a run that can be resumed or sampled).
    pub fn has_checkpoint(&self) -> bool {
        self.checkpoint().exists()
    }
    pub fn path(&self) -> &Path {
        &self.dir
    }
}
