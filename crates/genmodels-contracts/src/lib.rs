//! # genmodels-contracts
//!
//! What the `genmodels` binary writes and its drivers (`cargo xtask eval`, a user's scripts)
//! read, as typed structs: a renamed field is a compile error on both sides, not a silent NaN.
//! This crate depends on serde alone, so `xtask` can use it without linking libtorch.
//!
//! - [`layout`]: the files of a run folder;
//! - [`run`]: the run manifest (`run.json`), the trainer settings and one `train.jsonl` line;
//! - [`capability`]: what a registered model can do, as `genmodels list --json` publishes it;
//! - [`reports`]: the JSON every scoring verb writes (`metrics`, `nll`, `perplexity`,
//!   `reconstruct`, `cas`, mode coverage).

pub mod capability;
pub mod layout;
pub mod reports;
pub mod run;

pub use capability::{Capability, ModelInfo, Output};
pub use layout::RunLayout;
pub use run::{LogLine, LrSchedule, RunManifest, TrainerConfig};

/// A contract value that does not parse (a schedule string, a report file).
#[derive(Debug, Clone, PartialEq)]
pub struct ContractError(pub String);

impl std::fmt::Display for ContractError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ContractError {}

/// Reads a report or manifest written by the binary, naming the file when it does not parse.
pub fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<T, ContractError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ContractError(format!("reading {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        ContractError(format!(
            "{} does not hold the expected {}: {e}",
            path.display(),
            short_type_name::<T>()
        ))
    })
}

/// Writes a contract value as pretty JSON.
pub fn to_json_pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into())
}

fn short_type_name<T>() -> &'static str {
    let n = std::any::type_name::<T>();
    n.rsplit("::").next().unwrap_or(n)
}
