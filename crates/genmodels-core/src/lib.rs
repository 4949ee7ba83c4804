//! # genmodels-core
//!
//! The shared ground of the genmodels families: device choice and seeding ([`device`]),
//! datasets and loaders ([`data`]), losses ([`losses`]), samplers ([`samplers`]), optimisers
//! with saveable state, schedules and EMA ([`optim`]), checkpoints ([`checkpoint`]), the
//! [`model::Model`] contract and the [`train::Trainer`], and image output ([`image_io`]).
//!
//! The data path: dataset -> batches -> `Model::train_step` -> `Trainer` (progress, logging,
//! EMA, NaN guard, checkpoints) -> checkpoint -> `Model::sample` -> metrics.

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod dist;
mod error;
pub mod image_io;
pub mod layers;
pub mod losses;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod run;
pub mod samplers;
pub mod train;

pub use error::{Error, Result};
pub use genmodels_contracts as contracts;
pub use tch;

use std::path::PathBuf;

/// Environment variable naming the asset folder (datasets and converted weights).
pub const ASSETS_ENV: &str = "GENMODELS_ASSETS";

/// The asset folder: `$GENMODELS_ASSETS`, else `assets/` at the root of this workspace (where
/// `cargo xtask setup` puts them).
pub fn assets_dir() -> PathBuf {
    match std::env::var_os(ASSETS_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("..")
            .join("assets"),
    }
}
