//! # genmodels-gan
//!
//! Generative adversarial networks on the genmodels core. One file per model; each reads top
//! to bottom: config, modules, losses, train step, sampling.
//!
//! - [`dcgan`]: Radford, Metz & Chintala 2016.

pub mod dcgan;

use genmodels_core::model::ModelEntry;

/// The models of this family, for the `genmodels` command line.
pub fn entries() -> Vec<ModelEntry> {
    vec![dcgan::entry()]
}
