//! # genmodels-transformer
//!
//! Autoregressive text generation on the genmodels core.
//!
//! - [`gpt`]: a GPT decoder (Radford et al. 2018/2019) in nanoGPT's shape, with the common
//!   modern options (rotary positions, RMSNorm, SwiGLU), KV-cached generation with the usual
//!   sampling filters, perplexity, and import of Hugging Face GPT-2 checkpoints.

pub mod generate;
pub mod gpt;
pub mod gpt2_import;

use genmodels_core::model::ModelEntry;

/// The models of this family, for the `genmodels` command line.
pub fn entries() -> Vec<ModelEntry> {
    vec![gpt::entry(), gpt::mini_entry()]
}
