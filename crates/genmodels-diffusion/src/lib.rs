//! Diffusion models for genmodels.
//!
//! - [`schedulers`]: one [`schedulers::Scheduler`] contract (as diffusers' schedulers keep it)
//!   and the samplers DDPM, DDIM, DPM-Solver++ (2M), Euler, Euler ancestral and Heun.
//! - [`ddpm`]: DDPM and its class-conditional variant with classifier-free guidance, on the
//!   core trainer.
//! - [`unet`]: diffusers' `UNet2DModel` with its block structure and parameter names.
//! - [`vlb`]: the variational bound (bits per dimension, and Improved DDPM's hybrid loss).

pub mod ddpm;
pub mod schedulers;
pub mod unet;
pub mod vlb;

/// The models of this family, for the `genmodels` command line.
pub fn entries() -> Vec<genmodels_core::model::ModelEntry> {
    vec![ddpm::ddpm_entry(), ddpm::ddpm_cond_entry()]
}
