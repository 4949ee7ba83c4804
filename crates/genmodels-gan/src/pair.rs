//! The generator/discriminator pair every GAN here has: two variable stores, each with its own
//! Adam, checkpointed under the names `g` and `d`.

use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::optim::{Adam, AdamConfig};
use genmodels_core::Result;
use std::path::Path;
use tch::nn::VarStore;
use tch::Device;

pub struct GanPair {
    pub g_vs: VarStore,
    pub d_vs: VarStore,
    pub opt_g: Adam,
    pub opt_d: Adam,
}

impl GanPair {
    /// Two empty stores on `device`; `build` creates the networks in them (G first, then D),
    /// and the optimisers are made afterwards over whatever trainable variables were created.
    pub fn new<T>(
        device: Device,
        adam_g: AdamConfig,
        adam_d: AdamConfig,
        build: impl FnOnce(&VarStore, &VarStore) -> Result<T>,
    ) -> Result<(Self, T)> {
        let (g_vs, d_vs) = (VarStore::new(device), VarStore::new(device));
        let nets = build(&g_vs, &d_vs)?;
        let opt_g = Adam::new(&g_vs, adam_g);
        let opt_d = Adam::new(&d_vs, adam_d);
        Ok((
            GanPair {
                g_vs,
                d_vs,
                opt_g,
                opt_d,
            },
            nets,
        ))
    }

    pub fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        vec![("g", &self.g_vs), ("d", &self.d_vs)]
    }

    pub fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.opt_g.save_state("g", ckpt);
        self.opt_d.save_state("d", ckpt);
    }

    pub fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.opt_g.load_state("g", ckpt, path)?;
        self.opt_d.load_state("d", ckpt, path)
    }
}

/// `(channels, side)` of square image data, or an error naming the model and what it got.
pub fn square_image(name: &str, info: &genmodels_core::model::DataInfo) -> Result<(i64, i64)> {
    match info.example_shape.as_slice() {
        &[c, h, w] if h == w => Ok((c, h)),
        &[_, h, w] => Err(genmodels_core::Error::invalid(format!(
            "{name} needs square images, got {h}x{w}"
        ))),
        s => Err(genmodels_core::Error::invalid(format!(
            "{name} needs image data [C, H, W], got examples of shape {s:?}"
        ))),
    }
}

/// Splits a batch of `n` into `k` equal critic minibatches (the remainder is dropped), so that
/// each critic update of WGAN-GP / BigGAN sees fresh real data, as in the papers' algorithms.
pub fn critic_chunks(x: &tch::Tensor, k: usize) -> Result<Vec<tch::Tensor>> {
    let n = x.size()[0];
    let per = n / k as i64;
    if per < 1 {
        return Err(genmodels_core::Error::invalid(format!(
            "a batch of {n} cannot feed {k} critic updates; use a batch size that is a multiple of {k}"
        )));
    }
    Ok((0..k as i64).map(|i| x.narrow(0, i * per, per)).collect())
}
