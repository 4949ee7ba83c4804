//! What a registered model can do. The command line's verbs and `cargo xtask eval` ask for a
//! capability, never for a model by name; `genmodels list --json` publishes these.

use serde::{Deserialize, Serialize};

/// What `sample` produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Images `[N, C, H, W]`.
    Images,
    /// Points `[N, D]` (the 2-D mixtures).
    Points,
    /// Text.
    Text,
}

/// One thing a model can do beyond training and sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Samples given class labels (`cas`, class x sample grids).
    ClassConditional,
    /// Walks between latents (`interpolate`).
    Interpolation,
    /// Scores the log-likelihood of data (`nll` for images, `perplexity` for text).
    Likelihood,
    /// Encodes and decodes data (`reconstruct`).
    Reconstruction,
    /// Sweeps single dimensions of a continuous latent space (`traverse`).
    Traversal,
    /// A discrete latent codebook, with its usage and a prior over codes (`reconstruct`).
    Codebook,
    /// Translates images between two domains (`translate`).
    Translation,
    /// Continues text prompts (`generate`).
    TextGeneration,
    /// Samples through a swappable noise scheduler (`sample --scheduler NAME --steps N`).
    Schedulers,
    /// Assigns an energy to inputs (reserved for the energy-based family).
    Energy,
    /// Edits given images: img2img, inpainting (reserved for the diffusion family).
    Editing,
}

impl Capability {
    pub const ALL: [Capability; 11] = [
        Capability::ClassConditional,
        Capability::Interpolation,
        Capability::Likelihood,
        Capability::Reconstruction,
        Capability::Traversal,
        Capability::Codebook,
        Capability::Translation,
        Capability::TextGeneration,
        Capability::Schedulers,
        Capability::Energy,
        Capability::Editing,
    ];

    /// The name used in JSON and in error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::ClassConditional => "class_conditional",
            Capability::Interpolation => "interpolation",
            Capability::Likelihood => "likelihood",
            Capability::Reconstruction => "reconstruction",
            Capability::Traversal => "traversal",
            Capability::Codebook => "codebook",
            Capability::Translation => "translation",
            Capability::TextGeneration => "text_generation",
            Capability::Schedulers => "schedulers",
            Capability::Energy => "energy",
            Capability::Editing => "editing",
        }
    }
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered model as `genmodels list --json` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub family: String,
    pub summary: String,
    pub output: Output,
    pub capabilities: Vec<Capability>,
    /// How `interpolate` walks (e.g. "slerp in z"), for models with [`Capability::Interpolation`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpolation: Option<String>,
}

impl ModelInfo {
    pub fn has(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}

/// `genmodels list --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub models: Vec<ModelInfo>,
}

impl ModelList {
    pub fn get(&self, name: &str) -> Option<&ModelInfo> {
        self.models.iter().find(|m| m.name == name)
    }
}
