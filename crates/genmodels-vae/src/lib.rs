//! # genmodels-vae
//!
//! Variational autoencoders on the genmodels core.
//!
//! - [`vae`]: VAE (Kingma & Welling 2014), beta-VAE (Higgins et al. 2017) and IWAE (Burda et
//!   al. 2016): one model with the bound as a setting, the importance-sampled log-likelihood,
//!   active units and latent traversals.
//! - [`vaegan`]: VAE-GAN (Larsen et al. 2016), reconstruction measured in a discriminator's
//!   features.
//! - [`vqvae`]: VQ-VAE (van den Oord et al. 2017) with an EMA codebook and a GPT prior over
//!   its codes.

pub mod vae;
pub mod vaegan;
pub mod vqvae;

use genmodels_core::model::{DataInfo, ModelEntry};
use genmodels_core::Result;

/// A model's default config for square image data `[C, H, H]`: `make(C, H)` once `validate`
/// accepts it, or an error that names the model and the shape or the value it got.
pub(crate) fn image_config<T: serde::Serialize>(
    info: &DataInfo,
    name: &str,
    make: impl FnOnce(i64, i64) -> T,
    validate: impl FnOnce(&T) -> Result<()>,
) -> Result<serde_json::Value> {
    let (c, h) = genmodels_core::model::square_image(name, info)?;
    let cfg = make(c, h);
    validate(&cfg)?;
    Ok(serde_json::to_value(cfg)?)
}

/// The models of this family, for the `genmodels` command line.
pub fn entries() -> Vec<ModelEntry> {
    vec![
        vae::vae_entry(),
        vae::beta_vae_entry(),
        vae::iwae_entry(),
        vqvae::entry(),
        vaegan::entry(),
    ]
}

/// 28x28 grey images, as Fashion-MNIST.
#[cfg(test)]
pub(crate) fn fashion_info() -> DataInfo {
    DataInfo {
        example_shape: vec![1, 28, 28],
        num_classes: Some(10),
        vocab_size: None,
        vocab: None,
    }
}

/// libtorch's random generator is process-wide: the crate's tests that seed it take turns.
#[cfg(test)]
pub(crate) fn test_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
