//! # genmodels-gan
//!
//! Generative adversarial networks on the genmodels core. One file per model; each reads top
//! to bottom: config, modules, losses, train step, sampling.
//!
//! - [`dcgan`]: Radford, Metz & Chintala 2016.
//!   [`dcgan::wgan_gp_entry`]: WGAN-GP (Gulrajani et al. 2017) on the same networks.
//! - [`biggan`]: a BigGAN-style class-conditional GAN (Brock et al. 2019).
//! - [`progan`]: Progressive GAN (Karras et al. 2018).
//! - [`cyclegan`]: CycleGAN (Zhu et al. 2017) between two classes.
//! - [`stylegan`]: StyleGAN2 (Karras et al. 2020).
//! - [`gan2d`]: MLP GANs on 2-D mixtures for mode-collapse studies (plain, minibatch std, WGAN-GP).

pub mod biggan;
pub mod cyclegan;
pub mod dcgan;
pub mod gan2d;
pub mod ops;
pub mod pair;
pub mod progan;
pub mod stylegan;

use genmodels_core::model::ModelEntry;

/// The models of this family, for the `genmodels` command line.
pub fn entries() -> Vec<ModelEntry> {
    vec![
        dcgan::entry(),
        dcgan::wgan_gp_entry(),
        biggan::entry(),
        progan::entry(),
        cyclegan::entry(),
        stylegan::entry(),
        gan2d::entry(),
    ]
}

/// Labelled 28x28 grey images, as Fashion-MNIST.
#[cfg(test)]
pub(crate) fn fashion_info() -> genmodels_core::model::DataInfo {
    genmodels_core::model::DataInfo {
        example_shape: vec![1, 28, 28],
        num_classes: Some(10),
        vocab_size: None,
        vocab: None,
    }
}

/// libtorch's random generator is process-wide: the crate's tests that seed it (and those that
/// draw from it) take turns, so a seeded test sees exactly its own draws.
#[cfg(test)]
pub(crate) fn test_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
