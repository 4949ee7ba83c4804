//! Adam / AdamW written on tensors so that their moments can be saved in checkpoints (libtorch's
//! C++ optimisers keep their state out of reach of the Rust bindings), plus gradient clipping,
//! learning-rate schedules and the EMA of weights.

use crate::checkpoint::Checkpoint;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

/// Adam hyper-parameters (Kingma & Ba 2015); `decoupled` gives AdamW (Loshchilov & Hutter 2019).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled: bool,
}

impl Default for AdamConfig {
    /// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

impl AdamConfig {
    pub fn new(lr: f64, beta1: f64, beta2: f64) -> Self {
        AdamConfig {
            lr,
            beta1,
            beta2,
            ..Default::default()
        }
    }
}

/// What the trainer hands each optimiser step: the schedule's learning-rate factor and the
/// gradient-clipping threshold.
#[derive(Debug, Clone, Copy)]
pub struct StepCtx {
    /// Step index (0-based) being taken.
    pub step: u64,
    /// Multiplier applied to every optimiser's base learning rate at this step.
    pub lr_scale: f64,
    /// Clip the global gradient norm of each optimiser's parameters to this value.
    pub grad_clip: Option<f64>,
}

impl Default for StepCtx {
    fn default() -> Self {
        StepCtx {
            step: 0,
            lr_scale: 1.0,
            grad_clip: None,
        }
    }
}

/// Adam over the trainable variables of one [`VarStore`], its moments addressable by name.
pub struct Adam {
    pub cfg: AdamConfig,
    names: Vec<String>,
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Per parameter: whether weight decay applies (all by default).
    decay: Vec<bool>,
    steps: i64,
    /// Use ATen's fused Adam kernel when it is compiled in (default); `false` takes the
    /// elementwise tensor operations (same update, within float rounding).
    pub fused: bool,
    /// Whether the current gradients were already averaged over the data-parallel ranks.
    averaged: std::cell::Cell<bool>,
}

impl Adam {
    /// Adam over every trainable variable of `vs` (sorted by name, so state names are stable).
    pub fn new(vs: &VarStore, cfg: AdamConfig) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let exp_avg = named.iter().map(|(_, p)| p.zeros_like()).collect();
        let exp_avg_sq = named.iter().map(|(_, p)| p.zeros_like()).collect();
        let (names, params): (Vec<String>, Vec<Tensor>) = named.into_iter().unzip();
        let decay = vec![true; names.len()];
        Adam {
            cfg,
            names,
            params,
            exp_avg,
            exp_avg_sq,
            decay,
            steps: 0,
            fused: true,
            averaged: std::cell::Cell::new(false),
        }
    }

    /// Restricts weight decay to the parameters for which `f(name, tensor)` holds (nanoGPT
    /// decays matrices and embeddings, `dim() >= 2`, and leaves biases and norm gains alone).
    pub fn with_decay_filter(mut self, f: impl Fn(&str, &Tensor) -> bool) -> Self {
        self.decay = self
            .names
            .iter()
            .zip(&self.params)
            .map(|(n, p)| f(n, p))
            .collect();
        self
    }

    /// Number of updates taken.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// Clears the gradients (PyTorch's `zero_grad(set_to_none=True)`, its default): the next
    /// backward pass stores its gradients instead of adding them to zeroed buffers.
    pub fn zero_grad(&mut self) {
        self.averaged.set(false);
        for p in &mut self.params {
            crate::ops::clear_grad(p);
        }
    }

    /// Global L2 norm of the gradients, then scaled down to `max_norm` if above it (as
    /// `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        self.average_gradients();
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| p.grad())
                .filter(|g| g.defined())
                .collect();
            if grads.is_empty() {
                return 0.0;
            }
            let sq: Vec<Tensor> = grads
                .iter()
                .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float))
                .collect();
            let total = Tensor::stack(&sq, 0)
                .sum(Kind::Float)
                .sqrt()
                .double_value(&[]);
            let coef = max_norm / (total + 1e-6);
            if coef < 1.0 {
                for g in &grads {
                    let mut g = g.shallow_clone();
                    let _ = g.g_mul_scalar_(coef);
                }
            }
            total
        })
    }

    /// In a data-parallel run, averages the current gradients over the ranks (once per
    /// backward pass: [`Adam::clip_grad_norm`] and [`Adam::step`] both call it, the second call
    /// does nothing). A lone process has nothing to do.
    pub fn average_gradients(&self) {
        if !self.averaged.replace(true) {
            crate::dist::average_gradients(&self.params);
        }
    }

    /// One update with the gradients currently in the parameters; parameters without a
    /// gradient are skipped (as in torch.optim.Adam). In a data-parallel run the gradients are
    /// first averaged over the ranks.
    pub fn step(&mut self, lr_scale: f64) {
        self.average_gradients();
        self.averaged.set(false);
        self.steps += 1;
        let c = self.cfg;
        let lr = c.lr * lr_scale;
        if self.fused && self.fused_step(lr) {
            return;
        }
        let bc1 = 1.0 - c.beta1.powi(self.steps as i32);
        let bc2 = 1.0 - c.beta2.powi(self.steps as i32);
        tch::no_grad(|| {
            for (((p, m), v), &decay) in self
                .params
                .iter_mut()
                .zip(&mut self.exp_avg)
                .zip(&mut self.exp_avg_sq)
                .zip(&self.decay)
            {
                let wd = if decay { c.weight_decay } else { 0.0 };
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = if wd != 0.0 && !c.decoupled {
                    &g + &*p * wd
                } else {
                    g
                };
                if wd != 0.0 && c.decoupled {
                    let _ = p.g_mul_scalar_(1.0 - lr * wd);
                }
                let _ = m.lerp_(&g, 1.0 - c.beta1);
                let _ = v.g_mul_scalar_(c.beta2);
                let _ = v.addcmul_(&(&g * (1.0 - c.beta2)), &g);
                if lr == 0.0 {
                    // Moments still advance (as in torch), the parameters stay.
                    continue;
                }
                // p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), folding the step size into the
                // denominator in place: two temporaries per parameter instead of four.
                let mut denom = v.sqrt();
                let _ = denom.g_div_scalar_(bc2.sqrt());
                let _ = denom.g_add_scalar_(c.eps);
                let _ = denom.g_mul_scalar_(-bc1 / lr);
                let _ = p.addcdiv_(&*m, &denom);
            }
        });
    }

    /// The update through ATen's fused kernel, one call per group of parameters that share a
    /// weight decay; `false` when the kernel is not compiled in or cannot take these tensors
    /// (then nothing was changed).
    fn fused_step(&mut self, lr: f64) -> bool {
        let c = self.cfg;
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
        // The kernel takes float tensors of one device and dtype (f32 here; f64 would also do).
        let Some(first) = self.params.first() else {
            return true;
        };
        let (device, kind) = (first.device(), first.kind());
        if !matches!(device, tch::Device::Cpu | tch::Device::Cuda(_))
            || !matches!(kind, Kind::Float | Kind::Double)
            || self.params.iter().zip(&grads).any(|(p, g)| {
                p.device() != device || p.kind() != kind || (g.defined() && g.kind() != kind)
            })
        {
            return false;
        }
        let step = Tensor::from(self.steps as f32).to_device(device);
        for decay in [true, false] {
            let wd = if decay { c.weight_decay } else { 0.0 };
            let mut sel: [Vec<&Tensor>; 4] = Default::default();
            for (i, g) in grads.iter().enumerate() {
                if self.decay[i] == decay && g.defined() {
                    sel[0].push(&self.params[i]);
                    sel[1].push(g);
                    sel[2].push(&self.exp_avg[i]);
                    sel[3].push(&self.exp_avg_sq[i]);
                }
            }
            if sel[0].is_empty() {
                continue;
            }
            let steps = vec![&step; sel[0].len()];
            let args = crate::ops::FusedAdamArgs {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                weight_decay: wd,
                eps: c.eps,
                decoupled: c.decoupled,
            };
            if !crate::ops::fused_adam(&sel[0], &sel[1], &sel[2], &sel[3], &steps, args) {
                return false;
            }
        }
        true
    }

    /// zero_grad, backward, optional clipping, step: the usual sequence for one loss.
    pub fn backward_step(&mut self, loss: &Tensor, ctx: &StepCtx) {
        self.zero_grad();
        loss.backward();
        if let Some(max) = ctx.grad_clip {
            self.clip_grad_norm(max);
        }
        self.step(ctx.lr_scale);
    }

    /// Adds this optimiser's moments and step count to a checkpoint under `optim/<name>/`.
    pub fn save_state(&self, name: &str, ckpt: &mut Checkpoint) {
        for ((pn, m), v) in self.names.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            ckpt.tensors.insert(
                format!("optim/{name}/{pn}/exp_avg"),
                m.to_device(tch::Device::Cpu),
            );
            ckpt.tensors.insert(
                format!("optim/{name}/{pn}/exp_avg_sq"),
                v.to_device(tch::Device::Cpu),
            );
        }
        ckpt.tensors
            .insert(format!("optim/{name}/steps"), Tensor::from(self.steps));
    }

    /// Restores moments and step count saved by [`Adam::save_state`].
    pub fn load_state(&mut self, name: &str, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        let mut problems = Vec::new();
        for ((pn, m), v) in self
            .names
            .iter()
            .zip(&mut self.exp_avg)
            .zip(&mut self.exp_avg_sq)
        {
            for (suffix, dst) in [("exp_avg", &mut *m), ("exp_avg_sq", &mut *v)] {
                let key = format!("optim/{name}/{pn}/{suffix}");
                match ckpt.tensors.get(&key) {
                    Some(t) if t.size() == dst.size() => tch::no_grad(|| dst.copy_(t)),
                    Some(t) => problems.push(format!(
                        "`{key}`: shape {:?} in the file, {:?} in the model",
                        t.size(),
                        dst.size()
                    )),
                    None => problems.push(format!("missing tensor `{key}`")),
                }
            }
        }
        match ckpt.tensors.get(&format!("optim/{name}/steps")) {
            Some(t) => self.steps = t.int64_value(&[]),
            None => problems.push(format!("missing tensor `optim/{name}/steps`")),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::CheckpointMismatch {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}

/// Parameters taken out of autograd for as long as this guard lives: a network that a loss
/// passes through but that this update must not train (D during a GAN's G update) then costs
/// no weight gradients. The parameters require gradients again when the guard is dropped.
#[must_use = "the parameters are trainable again as soon as the guard is dropped"]
pub struct Frozen(Vec<Tensor>);

impl Frozen {
    /// Freezes every trainable variable of `vs`.
    pub fn store(vs: &VarStore) -> Self {
        Self::tensors(&vs.trainable_variables())
    }

    /// Freezes these tensors (handles to the same storage are kept, not copies).
    pub fn tensors(params: &[Tensor]) -> Self {
        for p in params {
            let _ = p.set_requires_grad(false);
        }
        Frozen(params.iter().map(|p| p.shallow_clone()).collect())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = p.set_requires_grad(true);
        }
    }
}

/// Learning-rate schedules (the serialisable contract lives in `genmodels-contracts`).
pub use genmodels_contracts::LrSchedule;

/// Exponential moving average of a store's floating-point variables:
/// `ema = decay * ema + (1 - decay) * w` after every step for trained weights; buffers follow
/// the live values.
pub struct Ema {
    pub decay: f64,
    names: Vec<String>,
    live: Vec<Tensor>,
    shadow: Vec<Tensor>,
}

impl Ema {
    pub fn new(vs: &VarStore, decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&decay) {
            return Err(Error::invalid(format!(
                "EMA decay must be in [0, 1), got {decay}"
            )));
        }
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.is_floating_point())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let shadow = named.iter().map(|(_, t)| t.detach().copy()).collect();
        let (names, live) = named.into_iter().unzip();
        Ok(Ema {
            decay,
            names,
            live,
            shadow,
        })
    }

    /// Averages the trained weights; buffers (batch-norm statistics, power-iteration vectors,
    /// step counters: variables without gradients) are copied, as StyleGAN's and timm's EMAs do.
    pub fn update(&mut self) {
        tch::no_grad(|| {
            for (s, w) in self.shadow.iter_mut().zip(&self.live) {
                if w.requires_grad() {
                    let _ = s.lerp_(w, 1.0 - self.decay);
                } else {
                    s.copy_(w);
                }
            }
        });
    }

    /// Runs `f` with the averaged weights swapped into the live variables, then restores them.
    pub fn with_averaged<T>(&self, f: impl FnOnce() -> T) -> T {
        let backup: Vec<Tensor> = self.live.iter().map(|t| t.detach().copy()).collect();
        self.copy_into_live();
        let out = f();
        tch::no_grad(|| {
            for (w, b) in self.live.iter().zip(&backup) {
                let mut w = w.shallow_clone();
                w.copy_(b);
            }
        });
        out
    }

    /// Overwrites the live variables with the averages (for sampling from a loaded model).
    pub fn copy_into_live(&self) {
        tch::no_grad(|| {
            for (w, s) in self.live.iter().zip(&self.shadow) {
                let mut w = w.shallow_clone();
                w.copy_(s);
            }
        });
    }

    pub fn save_state(&self, prefix: &str, ckpt: &mut Checkpoint) {
        for (n, s) in self.names.iter().zip(&self.shadow) {
            ckpt.tensors
                .insert(format!("{prefix}/{n}"), s.to_device(tch::Device::Cpu));
        }
    }

    pub fn load_state(&mut self, prefix: &str, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        let mut problems = Vec::new();
        for (n, s) in self.names.iter().zip(&mut self.shadow) {
            let key = format!("{prefix}/{n}");
            match ckpt.tensors.get(&key) {
                Some(t) if t.size() == s.size() => tch::no_grad(|| s.copy_(t)),
                Some(t) => problems.push(format!(
                    "`{key}`: shape {:?} in the file, {:?} in the model",
                    t.size(),
                    s.size()
                )),
                None => problems.push(format!("missing tensor `{key}`")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::CheckpointMismatch {
                path: path.to_path_buf(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Two Adam steps on f(w) = sum(w^2) against values computed by hand from the update rule
    /// (and checked against torch.optim.Adam / AdamW in Python).
    #[test]
    fn adam_matches_pytorch_update() {
        for (decoupled, expect) in [
            (false, [0.998_000_026f64, -1.998_000_026]),
            (true, [0.997_979_999, -1.997_959_971]),
        ] {
            let vs = VarStore::new(Device::Cpu);
            let w = vs
                .root()
                .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]));
            let mut opt = Adam::new(
                &vs,
                AdamConfig {
                    lr: 1e-3,
                    weight_decay: if decoupled { 0.01 } else { 0.0 },
                    decoupled,
                    ..Default::default()
                },
            );
            for _ in 0..2 {
                let loss = w.square().sum(Kind::Float);
                opt.backward_step(&loss, &StepCtx::default());
            }
            let got: Vec<f64> = Vec::<f32>::try_from(&w)
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect();
            for (g, e) in got.iter().zip(expect) {
                assert!(
                    (g - e).abs() < 1e-6,
                    "decoupled={decoupled}: {got:?} vs {expect:?}"
                );
            }
        }
    }

    /// The fused kernel and the elementwise path give the same trajectory: Adam and AdamW,
    /// a decay filter (two kernel calls), a learning rate of zero and a parameter that gets no
    /// gradient (skipped: it and its moments stay as they were).
    #[test]
    fn fused_and_elementwise_updates_agree() {
        let run = |fused: bool, decoupled: bool| {
            tch::manual_seed(3);
            let vs = VarStore::new(Device::Cpu);
            let a = vs.root().randn("a", &[5, 7], 0.0, 1.0);
            let b = vs.root().randn("b", &[7], 0.0, 1.0);
            let idle = vs.root().randn("idle", &[3], 0.0, 1.0);
            let cfg = AdamConfig {
                lr: 1e-2,
                weight_decay: 0.1,
                decoupled,
                ..AdamConfig::new(1e-2, 0.5, 0.99)
            };
            let mut opt = Adam::new(&vs, cfg).with_decay_filter(|_, t| t.dim() >= 2);
            opt.fused = fused;
            let x = Tensor::randn([4, 5], (Kind::Float, Device::Cpu));
            for step in 0..4 {
                let loss = (x.matmul(&a) + &b).tanh().square().sum(Kind::Float);
                opt.zero_grad();
                loss.backward();
                opt.step(if step == 2 { 0.0 } else { 1.0 });
            }
            assert!(!idle.grad().defined());
            let state: Vec<Tensor> = opt
                .params
                .iter()
                .chain(&opt.exp_avg)
                .chain(&opt.exp_avg_sq)
                .map(|t| t.detach().copy())
                .collect();
            state
        };
        assert!(
            crate::ops::native_ops(),
            "the fused kernel is not compiled in"
        );
        for decoupled in [false, true] {
            let (f, e) = (run(true, decoupled), run(false, decoupled));
            for (i, (x, y)) in f.iter().zip(&e).enumerate() {
                let diff = (x - y).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-5,
                    "decoupled={decoupled}: tensor {i} differs by {diff}"
                );
            }
            // The idle parameter (sorted between a and b) and its zero moments are untouched.
            assert!(f[2].abs().sum(Kind::Float).double_value(&[]) > 0.0);
            assert_eq!(f[5].abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[3.0f32, 4.0]));
        let opt = Adam::new(&vs, AdamConfig::default());
        (w.square().sum(Kind::Float) * 0.5).backward();
        let n = opt.clip_grad_norm(1.0);
        assert!((n - 5.0).abs() < 1e-5);
        let g = w.grad();
        assert!((g.norm().double_value(&[]) - 1.0).abs() < 1e-4);
    }

    #[test]
    fn schedules() {
        let c = LrSchedule::parse("cosine:10:110:0.1").unwrap();
        assert!((c.factor(0) - 0.1).abs() < 1e-12);
        assert!((c.factor(9) - 1.0).abs() < 1e-12);
        assert!((c.factor(10) - 1.0).abs() < 1e-12);
        assert!((c.factor(60) - 0.55).abs() < 1e-12);
        assert!((c.factor(500) - 0.1).abs() < 1e-12);
        assert_eq!(LrSchedule::parse("linear:0:10").unwrap().factor(5), 0.5);
        assert!(LrSchedule::parse("cosine:x").is_err());
        assert!(LrSchedule::parse("exp").is_err());
    }

    #[test]
    fn ema_tracks_and_swaps() {
        let vs = VarStore::new(Device::Cpu);
        let mut w = vs.root().var_copy("w", &Tensor::from_slice(&[0.0f32]));
        let buf = vs.root().zeros_no_train("running", &[1]);
        let mut ema = Ema::new(&vs, 0.5).unwrap();
        tch::no_grad(|| w.copy_(&Tensor::from_slice(&[1.0f32])));
        let _ = tch::no_grad(|| buf.shallow_clone().fill_(7.0));
        ema.update();
        let inside = ema.with_averaged(|| (w.double_value(&[0]), buf.double_value(&[0])));
        // Weights are averaged, buffers follow the live value.
        assert_eq!(inside, (0.5, 7.0));
        assert_eq!(w.double_value(&[0]), 1.0);
        assert!(Ema::new(&vs, 1.5).is_err());
    }
}
