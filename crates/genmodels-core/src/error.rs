//! One error type for the core crate. Every message names the file, shape or value that was
//! wrong and what was expected.

use std::path::PathBuf;

/// Errors raised by `genmodels-core`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file whose content is not what its format requires.
    #[error("{path}: {msg}")]
    BadData { path: PathBuf, msg: String },
    /// A checkpoint that does not fit the model it is loaded into; every mismatch is listed.
    #[error("checkpoint {path} does not fit the model:\n  {}", .problems.join("\n  "))]
    CheckpointMismatch {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// A loss (or the weights) that became NaN or infinite.
    #[error(
        "step {step}: `{name}` is {value} (not finite); stopping without writing a checkpoint{}",
        match kept { Some(k) => format!(" (the last good checkpoint, of step {k}, is kept)"), None => String::new() }
    )]
    NonFinite {
        step: u64,
        name: String,
        value: f64,
        /// The step of the checkpoint left on disk, if any.
        kept: Option<u64>,
    },
    /// A loss whose magnitude passed the trainer's divergence limit.
    #[error(
        "step {step}: `{name}` is {value:.3e}, past the divergence limit {limit:.0e}: the run diverged; stopping without writing a checkpoint{}",
        match kept { Some(k) => format!(" (the last good checkpoint, of step {k}, is kept)"), None => String::new() }
    )]
    Diverged {
        step: u64,
        name: String,
        value: f64,
        limit: f64,
        kept: Option<u64>,
    },
    /// Another process holds the run folder.
    #[error(
        "{dir} is in use by another genmodels process ({holder}); wait for it to finish or stop it"
    )]
    RunInUse { dir: PathBuf, holder: String },
    /// Training stopped by a signal after writing a checkpoint.
    #[error("interrupted at step {step}; checkpoint written to {checkpoint} (continue with `genmodels resume`)")]
    Interrupted { step: u64, checkpoint: PathBuf },
    /// A bad argument or configuration value.
    #[error("{0}")]
    Invalid(String),
    /// An error raised by libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A JSON (de)serialisation error.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<genmodels_contracts::ContractError> for Error {
    fn from(e: genmodels_contracts::ContractError) -> Self {
        Error::Invalid(e.0)
    }
}

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error tied to the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A format error in a data file.
    pub fn bad_data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadData {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An invalid argument.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
}
