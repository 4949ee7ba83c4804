//! The generator/discriminator pair every GAN here has: two variable stores, each with its own
//! Adam, checkpointed under the names `g` and `d`.

use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::optim::{Adam, AdamConfig, Frozen};
use genmodels_core::Result;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Tensor};

pub struct GanPair {
    pub g_vs: VarStore,
    pub d_vs: VarStore,
    pub opt_g: Adam,
    pub opt_d: Adam,
    /// D's trainable parameters (handles to the same tensors), for [`GanPair::freeze_d`].
    d_params: Vec<Tensor>,
}

/// The four [`Model`](genmodels_core::model::Model) methods every GAN delegates to its
/// `pair` field (stores, G's EMA, both optimisers), written once. Use inside `impl Model`.
macro_rules! delegate_to_pair {
    () => {
        fn var_stores(&self) -> Vec<(&str, &tch::nn::VarStore)> {
            self.pair.var_stores()
        }
        fn ema_store(&self) -> Option<&tch::nn::VarStore> {
            Some(&self.pair.g_vs)
        }
        fn save_optimizers(&self, ckpt: &mut genmodels_core::checkpoint::Checkpoint) {
            self.pair.save_optimizers(ckpt)
        }
        fn load_optimizers(
            &mut self,
            ckpt: &genmodels_core::checkpoint::Checkpoint,
            path: &std::path::Path,
        ) -> genmodels_core::Result<()> {
            self.pair.load_optimizers(ckpt, path)
        }
    };
}
pub(crate) use delegate_to_pair;

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
        let d_params = d_vs.trainable_variables();
        Ok((
            GanPair {
                g_vs,
                d_vs,
                opt_g,
                opt_d,
                d_params,
            },
            nets,
        ))
    }

    /// Stops D's parameters from requiring gradients until the guard is dropped. For the G
    /// update: its backward pass still flows through D to G, but no longer computes D's weight
    /// gradients, which the next D update would clear unused (about a third of D's backward
    /// work). Same G update, bit for bit; the reference implementations of CycleGAN
    /// (`set_requires_grad(netD, False)`) and StyleGAN2-ADA (`requires_grad_` per phase) do the
    /// same.
    pub fn freeze_d(&self) -> Frozen {
        Frozen::tensors(&self.d_params)
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

/// `(channels, side)` of square image data (the core's check, re-exported for the family).
pub use genmodels_core::model::square_image;

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

#[cfg(test)]
mod tests {
    use super::*;
    use genmodels_core::optim::AdamConfig;
    use tch::{nn, nn::Module, Kind};

    /// Freezing D leaves G's gradients exactly as they were, computes none for D, and D is
    /// trainable again once the guard is gone.
    #[test]
    fn freezing_d_changes_nothing_but_d_gradients() {
        let _g = crate::test_lock();
        tch::manual_seed(0);
        let (pair, (g, d)) = GanPair::new(
            Device::Cpu,
            AdamConfig::default(),
            AdamConfig::default(),
            |gv, dv| {
                Ok((
                    nn::linear(gv.root() / "g", 4, 6, Default::default()),
                    nn::seq()
                        .add(nn::linear(dv.root() / "d0", 6, 8, Default::default()))
                        .add_fn(|x| x.tanh())
                        .add(nn::linear(dv.root() / "d1", 8, 1, Default::default())),
                ))
            },
        )
        .unwrap();
        let z = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
        let g_grads = |freeze: bool| {
            let frozen = freeze.then(|| pair.freeze_d());
            let loss = d.forward(&g.forward(&z)).sum(Kind::Float);
            let mut params = pair.g_vs.trainable_variables();
            params.extend(pair.d_vs.trainable_variables());
            let refs: Vec<&Tensor> = params.iter().collect();
            let grads = Tensor::run_backward(&[loss], &refs[..2], false, false);
            let d_needs_grad = pair.d_vs.trainable_variables()[0].requires_grad();
            drop(frozen);
            (grads, d_needs_grad)
        };
        let (plain, d_plain) = g_grads(false);
        let (frozen, d_frozen) = g_grads(true);
        assert!(d_plain && !d_frozen);
        for (a, b) in plain.iter().zip(&frozen) {
            assert!(a.equal(b), "G gradient changed: {a} vs {b}");
        }
        assert!(pair
            .d_vs
            .trainable_variables()
            .iter()
            .all(|p| p.requires_grad()));
    }
}
