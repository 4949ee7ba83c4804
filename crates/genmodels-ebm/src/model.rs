//! One energy-based model, with the objective as a setting:
//!
//! - **IGEBM** (Du & Mordatch 2019, "Implicit Generation and Generalization in Energy-Based
//!   Models"): contrastive divergence `E(x+) - E(x-)` between data and short-run SGLD samples
//!   from the replay buffer, plus the L2 regulariser on energy magnitudes
//!   `alpha (E(x+)^2 + E(x-)^2)` (alpha 1 in `openai/ebm_code_release`), spectral norm, Swish,
//!   Adam(lr, beta1 0, beta2 0.999). Class-conditional with `conditional`: `E(x, y) = -f(x)[y]`,
//!   negatives keep the label of their buffer slot.
//! - **JEM** (Grathwohl et al. 2020, "Your Classifier is Secretly an Energy Based Model"): a
//!   classifier `f(x)` whose logsumexp is the negative energy, `E(x) = -logsumexp_y f(x)[y]`,
//!   trained on `CE(f(x+), y) + E(x+) - E(x-)` with data noise 0.03, buffer 10k, reinit 0.05,
//!   20 SGLD steps of size 1 with noise 0.01, Adam 1e-4.
//!
//! - **classifier**: the same network trained on cross-entropy alone (no sampling), the
//!   baseline JEM is compared with (`--set objective=classifier`).
//!
//! Not ported: IGEBM's KL term of the sampler (`zero_kl = False` in its code, a later addition
//! of Du et al. 2021) and JEM's per-class buffers for conditional sampling.

use crate::buffer::ReplayBuffer;
use crate::net::{Activation, EnergyNet};
use crate::sgld::SgldConfig;
use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::Batch;
use genmodels_core::model::check::{Check, MAX_WIDTH};
use genmodels_core::model::{
    Capability, ClassConditional, DataInfo, Energy, Losses, Model, ModelEntry, Output, Samples,
};
use genmodels_core::optim::{Adam, AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// The training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Contrastive divergence plus the energy-magnitude penalty.
    Igebm,
    /// Cross-entropy of the classifier plus contrastive divergence of its logsumexp.
    Jem,
    /// Cross-entropy alone, no sampling: the plain classifier of the same network, JEM's
    /// baseline (its logsumexp is still read as an energy for OOD scores).
    Classifier,
}

/// Where `sample` starts its chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Slots of the replay buffer (the persistent chains training left there).
    Buffer,
    /// Fresh uniform noise.
    Noise,
}

/// Settings of an energy-based model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EbmConfig {
    /// Shape of one example: `[D]` points or `[C, H, W]` images.
    pub shape: Vec<i64>,
    /// Classes of the data (0: unlabelled); the net's heads with `jem` or `conditional`.
    pub classes: i64,
    pub objective: Objective,
    /// Class-conditional energy `E(x, y) = -f(x)[y]` (IGEBM's conditional models).
    pub conditional: bool,
    /// Base width of the energy net (channels of its first stage, or hidden units on points).
    pub width: i64,
    pub activation: Activation,
    pub spectral_norm: bool,
    /// The training chains.
    pub sgld: SgldConfig,
    pub buffer_size: i64,
    /// Share of chains restarted from fresh noise.
    pub reinit: f64,
    /// Fresh noise is uniform on [-init_range, init_range] (1 for images in [-1, 1]).
    pub init_range: f64,
    /// Standard deviation of Gaussian noise added to the data (JEM: 0.03).
    pub data_noise: f64,
    /// Weight of the energy-magnitude penalty E(x+)^2 + E(x-)^2 (IGEBM: 1).
    pub l2: f64,
    /// Where `sample` starts, and how many SGLD steps it runs (0: `sgld.steps`).
    pub sample_from: Start,
    pub sample_steps: usize,
    /// SGLD steps of class-conditional sampling (`E(x, y) = -f(x)[y]`, chains started from
    /// the buffer), for models whose net has a head per class.
    pub class_sample_steps: usize,
    /// Divergence monitor: a mean energy of data or samples above this in magnitude stops
    /// training with an error naming the step (the last checkpoint stays the good one).
    pub max_energy: f64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
}

impl Default for EbmConfig {
    /// IGEBM on Fashion-MNIST-shaped images.
    fn default() -> Self {
        EbmConfig {
            shape: vec![1, 28, 28],
            classes: 0,
            objective: Objective::Igebm,
            conditional: false,
            width: 32,
            activation: Activation::Swish,
            spectral_norm: true,
            sgld: SgldConfig::igebm(),
            buffer_size: 10_000,
            reinit: 0.05,
            init_range: 1.0,
            data_noise: 0.0,
            l2: 1.0,
            sample_from: Start::Buffer,
            sample_steps: 0,
            class_sample_steps: 100,
            max_energy: 1e4,
            lr: 3e-4,
            beta1: 0.0,
            beta2: 0.999,
        }
    }
}

impl EbmConfig {
    /// JEM's settings (`train_wrn_ebm.py`) on our convolutional energy, plus IGEBM's L2
    /// penalty on energy magnitudes at weight 0.1, which JEM does not have: on Fashion-MNIST
    /// (batch 64, seed 0, docs/results.md) JEM's own settings diverged at step ~525 (the
    /// samples' mean energy went from 35 to 2700 in 50 steps), the same run with the
    /// penalty did not (both in docs/results.md). `--set l2=0` gives JEM's objective exactly.
    pub fn jem(classes: i64) -> Self {
        EbmConfig {
            classes,
            objective: Objective::Jem,
            activation: Activation::LeakyRelu,
            spectral_norm: false,
            sgld: SgldConfig::default(),
            data_noise: 0.03,
            l2: 0.1,
            lr: 1e-4,
            beta1: 0.9,
            ..Default::default()
        }
    }

    /// An energy on 2-D points (ring8, grid25): an MLP, chains started over the mixtures'
    /// extent, noise (0.01) below the modes' widths (0.02, 0.05). Measured on ring8 (10k steps
    /// of 128): step 0.1 put 89 % of the samples within 3 sigma of a mode, step 0.01 (chains
    /// too slow to follow the energy) 11 %.
    pub fn points() -> Self {
        EbmConfig {
            shape: vec![2],
            width: 128,
            spectral_norm: false,
            sgld: SgldConfig {
                steps: 20,
                step_size: 0.1,
                noise: 0.01,
                grad_clip: 0.0,
                noise_first: false,
                clamp: false,
            },
            init_range: 5.0,
            l2: 0.1,
            lr: 1e-3,
            beta1: 0.9,
            ..Default::default()
        }
    }

    /// The net's outputs.
    pub fn heads(&self) -> i64 {
        if self.objective != Objective::Igebm || self.conditional {
            self.classes
        } else {
            1
        }
    }

    pub fn validate(&self, model: &str) -> Result<()> {
        let c = Check::model(model);
        match self.shape.as_slice() {
            [d] => c.int("shape", *d, 1, MAX_WIDTH)?,
            [ch, h, w] => {
                c.image(*ch, *h, 8, 1024)?;
                c.ensure(
                    h == w,
                    "shape",
                    format!("{:?}", self.shape),
                    "square images",
                )?;
            }
            _ => {
                return Err(c.error(
                    "shape",
                    format!("{:?}", self.shape),
                    "[D] points or [C, H, W] images",
                ))
            }
        }
        c.int("classes", self.classes, 0, 100_000)?;
        if self.heads() > 1 || self.objective != Objective::Igebm || self.conditional {
            c.ensure(
                self.classes >= 2,
                "classes",
                self.classes,
                "at least 2 (JEM and conditional energies need labelled data)",
            )?;
        }
        c.int("width", self.width, 1, MAX_WIDTH / 4)?;
        self.sgld.validate(&c, "sgld.")?;
        c.int("buffer_size", self.buffer_size, 1, 10_000_000)?;
        c.probability("reinit", self.reinit)?;
        c.positive("init_range", self.init_range)?;
        c.non_negative("data_noise", self.data_noise)?;
        c.non_negative("l2", self.l2)?;
        c.int("sample_steps", self.sample_steps, 0, 100_000)?;
        c.int("class_sample_steps", self.class_sample_steps, 1, 100_000)?;
        c.positive("max_energy", self.max_energy)?;
        c.adam("lr", self.lr, self.beta1, self.beta2)
    }
}

/// An energy-based model with its replay buffer and optimiser.
pub struct Ebm {
    pub cfg: EbmConfig,
    name: &'static str,
    vs: VarStore,
    buffer_vs: VarStore,
    pub net: EnergyNet,
    pub buffer: ReplayBuffer,
    opt: Adam,
    device: Device,
}

/// The energy from the net's outputs `[N, heads]`: `-f` with one head, `-f[y]` given labels,
/// else `-logsumexp f`.
pub fn energy_from(out: &Tensor, y: Option<&Tensor>) -> Tensor {
    if out.size()[1] == 1 {
        return -out.squeeze_dim(1);
    }
    match y {
        Some(y) => -out.gather(1, &y.unsqueeze(1), false).squeeze_dim(1),
        None => -out.logsumexp([1i64].as_slice(), false),
    }
}

impl Ebm {
    pub fn new(name: &'static str, cfg: EbmConfig, device: Device) -> Result<Self> {
        cfg.validate(name)?;
        let vs = VarStore::new(device);
        let net = EnergyNet::new(
            vs.root() / "f",
            &cfg.shape,
            cfg.width,
            cfg.heads(),
            cfg.activation,
            cfg.spectral_norm,
        );
        let opt = Adam::new(&vs, AdamConfig::new(cfg.lr, cfg.beta1, cfg.beta2));
        let buffer_vs = VarStore::new(device);
        let labelled = if cfg.conditional { cfg.classes } else { 0 };
        let buffer = ReplayBuffer::new(
            &buffer_vs.root(),
            cfg.buffer_size,
            &cfg.shape,
            labelled,
            cfg.reinit,
            cfg.init_range,
        );
        Ok(Ebm {
            cfg,
            name,
            vs,
            buffer_vs,
            net,
            buffer,
            opt,
            device,
        })
    }

    /// Energies of `x` (given labels for a conditional energy), in train or eval mode.
    pub fn energy_t(&self, x: &Tensor, y: Option<&Tensor>, train: bool) -> Tensor {
        energy_from(&self.net.forward(x, train), y)
    }

    /// Runs chains from `x0` for `steps` (labels for a conditional energy) in eval mode.
    pub fn chains(&self, x0: &Tensor, y: Option<&Tensor>, steps: usize) -> Result<(Tensor, f64)> {
        let cfg = SgldConfig {
            steps,
            ..self.cfg.sgld.clone()
        };
        cfg.run(x0, &|x| self.energy_t(x, y, false))
    }

    /// `n` uniform starts on [-init_range, init_range], as the buffer's fresh ones.
    fn noise(&self, n: i64) -> Tensor {
        let mut shape = vec![n];
        shape.extend_from_slice(&self.cfg.shape);
        (Tensor::rand(shape.as_slice(), (Kind::Float, self.device)) * 2.0 - 1.0)
            * self.cfg.init_range
    }

    /// Images are shown and scored in the data range; points are left as they are.
    fn in_range(&self, x: Tensor) -> Tensor {
        if self.cfg.shape.len() == 3 {
            x.clamp(-1.0, 1.0)
        } else {
            x
        }
    }

    fn check_batch(&self, x: &Tensor) -> Result<()> {
        if x.size()[1..] != self.cfg.shape[..] {
            return Err(Error::invalid(format!(
                "{} configured for examples of shape {:?}, got a batch of {:?}",
                self.name,
                self.cfg.shape,
                x.size()
            )));
        }
        Ok(())
    }
}

impl Model for Ebm {
    fn name(&self) -> &str {
        self.name
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    /// Negatives by SGLD from the buffer (their ends stored back), then one Adam step on the
    /// objective.
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        self.check_batch(&batch.x)?;
        let n = batch.x.size()[0];
        let labels = batch.y.as_ref().map(|y| y.to_device(self.device));
        if self.cfg.heads() > 1 && labels.is_none() {
            return Err(Error::invalid(format!(
                "{} needs labelled data (its energy is a classifier's), the batch has no labels",
                self.name
            )));
        }
        let mut x_pos = batch.x.to_device(self.device);
        if self.cfg.data_noise > 0.0 {
            x_pos = &x_pos + Tensor::randn_like(&x_pos) * self.cfg.data_noise;
        }
        if self.cfg.objective == Objective::Classifier {
            let y = labels.as_ref().expect("checked above");
            let out = self.net.forward(&x_pos, true);
            let ce = out.cross_entropy_for_logits(y);
            let acc = out
                .argmax(1, false)
                .eq_tensor(y)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
            self.opt.backward_step(&ce, ctx);
            return Ok(vec![
                ("loss".to_string(), ce.double_value(&[])),
                ("ce".to_string(), ce.double_value(&[])),
                ("acc".to_string(), acc),
            ]);
        }
        let draw = self.buffer.draw(n);
        let (x_neg, grad_norm) = self
            .chains(&draw.x0, draw.y.as_ref(), self.cfg.sgld.steps)
            .map_err(|e| Error::invalid(format!("step {}: {e}", ctx.step)))?;
        self.buffer.store(&draw, &x_neg);
        let out_pos = self.net.forward(&x_pos, true);
        let out_neg = self.net.forward(&x_neg, true);
        let y_pos = if self.cfg.conditional {
            labels.as_ref()
        } else {
            None
        };
        let e_pos = energy_from(&out_pos, y_pos);
        let e_neg = energy_from(&out_neg, draw.y.as_ref());
        let cd = e_pos.mean(Kind::Float) - e_neg.mean(Kind::Float);
        let mut loss = &cd
            + (e_pos.square().mean(Kind::Float) + e_neg.square().mean(Kind::Float)) * self.cfg.l2;
        let mut extra = Vec::new();
        if self.cfg.objective == Objective::Jem {
            let y = labels.as_ref().expect("checked above");
            let ce = out_pos.cross_entropy_for_logits(y);
            let acc = out_pos
                .argmax(1, false)
                .eq_tensor(y)
                .to_kind(Kind::Float)
                .mean(Kind::Float);
            extra.push(("ce".to_string(), ce.double_value(&[])));
            extra.push(("acc".to_string(), acc.double_value(&[])));
            loss += ce;
        }
        let (ep, en) = (
            e_pos.mean(Kind::Float).double_value(&[]),
            e_neg.mean(Kind::Float).double_value(&[]),
        );
        for (what, v) in [("data", ep), ("samples", en)] {
            if !v.is_finite() || v.abs() > self.cfg.max_energy {
                return Err(Error::invalid(format!(
                    "{} diverged at step {}: the mean energy of the {what} is {v} (monitor \
                     `max_energy` = {}); lower lr or sgld.step_size, or raise l2",
                    self.name, ctx.step, self.cfg.max_energy
                )));
            }
        }
        self.opt.backward_step(&loss, ctx);
        let mut out = vec![
            ("loss".to_string(), loss.double_value(&[])),
            ("cd".to_string(), cd.double_value(&[])),
            ("e_data".to_string(), ep),
            ("e_samples".to_string(), en),
            ("sgld_grad".to_string(), grad_norm),
        ];
        out.extend(extra);
        Ok(out)
    }

    /// Chains from the buffer (or noise) run `sample_steps` further on the energy (the
    /// marginal over classes for conditional ones).
    fn sample(&mut self, n: usize) -> Result<Samples> {
        let n = n as i64;
        let x0 = match self.cfg.sample_from {
            Start::Buffer => {
                let idx = Tensor::randint(self.buffer.len(), [n], (Kind::Int64, self.device));
                self.buffer.x.index_select(0, &idx)
            }
            Start::Noise => self.noise(n),
        };
        let steps = if self.cfg.sample_steps > 0 {
            self.cfg.sample_steps
        } else {
            self.cfg.sgld.steps
        };
        let cfg = SgldConfig {
            steps,
            ..self.cfg.sgld.clone()
        };
        let (x, _) = cfg.run(&x0, &|x| self.energy_t(x, None, false))?;
        Ok(if self.cfg.shape.len() == 3 {
            Samples::Images(self.in_range(x))
        } else {
            Samples::Points(x)
        })
    }

    fn as_energy(&mut self) -> Option<&mut dyn Energy> {
        Some(self)
    }

    fn as_class_conditional(&mut self) -> Option<&mut dyn ClassConditional> {
        if self.cfg.heads() > 1 {
            Some(self)
        } else {
            None
        }
    }

    fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        vec![("ebm", &self.vs), ("buffer", &self.buffer_vs)]
    }

    fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.opt.save_state("ebm", ckpt);
    }

    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.opt.load_state("ebm", ckpt, path)
    }
}

impl ClassConditional for Ebm {
    fn num_classes(&self) -> i64 {
        self.cfg.heads()
    }

    /// Chains from random buffer slots run `class_sample_steps` on `E(x, y) = -f(x)[y]`;
    /// `truncation` has no meaning here and is ignored.
    fn sample_classes(&mut self, labels: &Tensor, _truncation: f64) -> Result<Tensor> {
        let k = self.num_classes();
        let n = genmodels_core::model::check_labels(labels, k)?;
        let y = labels.to_device(self.device).to_kind(Kind::Int64);
        let idx = Tensor::randint(self.buffer.len(), [n], (Kind::Int64, self.device));
        let x0 = self.buffer.x.index_select(0, &idx);
        let (x, _) = self.chains(&x0, Some(&y), self.cfg.class_sample_steps)?;
        Ok(self.in_range(x))
    }
}

impl Energy for Ebm {
    fn energy(&mut self, x: &Tensor) -> Result<Tensor> {
        self.check_batch(x)?;
        Ok(tch::no_grad(|| {
            self.energy_t(&x.to_device(self.device), None, false)
        }))
    }

    fn energy_grad_norm(&mut self, x: &Tensor) -> Result<Tensor> {
        self.check_batch(x)?;
        Ok(tch::with_grad(|| {
            let xg = x.to_device(self.device).detach().set_requires_grad(true);
            let e = self.energy_t(&xg, None, false).sum(Kind::Float);
            let g = Tensor::run_backward(&[e], &[&xg], false, false).remove(0);
            g.flatten(1, -1).norm_scalaropt_dim(2, [1], false)
        }))
    }

    /// The chain of `sample` (the model's SGLD settings, on the marginal energy of a
    /// conditional model) with its step count and a mask.
    fn langevin(
        &mut self,
        x0: &Tensor,
        mask: Option<&Tensor>,
        steps: usize,
        frames: usize,
    ) -> Result<Tensor> {
        self.check_batch(x0)?;
        let cfg = SgldConfig {
            steps,
            ..self.cfg.sgld.clone()
        };
        let mask = mask.map(|m| m.to_device(self.device));
        let (xs, _) = cfg.run_frames(&x0.to_device(self.device), mask.as_ref(), frames, &|x| {
            self.energy_t(x, None, false)
        })?;
        Ok(self.in_range(Tensor::stack(&xs, 0)))
    }

    fn chain_noise(&mut self, n: usize) -> Result<Tensor> {
        Ok(self.noise(n as i64))
    }

    fn class_logits(&mut self, x: &Tensor) -> Result<Option<Tensor>> {
        self.check_batch(x)?;
        if self.cfg.heads() == 1 {
            return Ok(None);
        }
        Ok(Some(tch::no_grad(|| {
            self.net.forward(&x.to_device(self.device), false)
        })))
    }
}

fn image_or_points(name: &str, info: &DataInfo, points: bool) -> Result<Vec<i64>> {
    let s = info.example_shape.clone();
    match (points, s.as_slice()) {
        (true, [2]) => Ok(s),
        (true, _) => Err(Error::invalid(format!(
            "{name} needs 2-D points (ring8, grid25), got examples of shape {s:?}"
        ))),
        (false, _) => {
            genmodels_core::model::square_image(name, info)?;
            Ok(s)
        }
    }
}

fn config_for(
    name: &str,
    info: &DataInfo,
    base: EbmConfig,
    points: bool,
) -> Result<serde_json::Value> {
    let cfg = EbmConfig {
        shape: image_or_points(name, info, points)?,
        classes: info.num_classes.map_or(0, |k| k as i64),
        ..base
    };
    cfg.validate(name)?;
    Ok(serde_json::to_value(cfg)?)
}

/// IGEBM on images.
pub fn igebm_entry() -> ModelEntry {
    ModelEntry {
        name: "igebm",
        family: "ebm",
        output: Output::Images,
        capabilities: &[Capability::Energy],
        interpolation: None,
        summary: "IGEBM (Du & Mordatch 2019): conv energy with spectral norm and Swish, short-run SGLD from a 10k replay buffer (5 % noise restarts), CD + L2 energy penalty; conditional=true for E(x, y)",
        default_config: |info| config_for("igebm", info, EbmConfig::default(), false),
        build: |json, device| Ok(Box::new(Ebm::new("igebm", Check::model("igebm").parse(json)?, device)?)),
    }
}

/// JEM on labelled images.
pub fn jem_entry() -> ModelEntry {
    ModelEntry {
        name: "jem",
        family: "ebm",
        output: Output::Images,
        capabilities: &[Capability::ClassConditional, Capability::Energy],
        interpolation: None,
        summary: "JEM (Grathwohl et al. 2020): a classifier whose logsumexp is the negative energy, CE + CD with 20-step SGLD (step 1, noise 0.01) from a replay buffer, data noise 0.03, an L2 energy penalty of 0.1 for stability",
        default_config: |info| {
            let k = info.num_classes.unwrap_or(0) as i64;
            config_for("jem", info, EbmConfig::jem(k), false)
        },
        build: |json, device| Ok(Box::new(Ebm::new("jem", Check::model("jem").parse(json)?, device)?)),
    }
}

/// An energy on 2-D points.
pub fn points_entry() -> ModelEntry {
    ModelEntry {
        name: "ebm2d",
        family: "ebm",
        output: Output::Points,
        capabilities: &[Capability::Energy],
        interpolation: None,
        summary: "MLP energy on 2-D points (ring8/grid25) trained by CD with SGLD from a replay buffer: the learned energy as a heat map",
        default_config: |info| config_for("ebm2d", info, EbmConfig::points(), true),
        build: |json, device| Ok(Box::new(Ebm::new("ebm2d", Check::model("ebm2d").parse(json)?, device)?)),
    }
}
