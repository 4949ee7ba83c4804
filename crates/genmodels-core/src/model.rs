//! The contract between a family's model and the rest of the project (trainer, checkpoints,
//! command line, evaluation), and the registry through which families announce their models.

use crate::checkpoint::Checkpoint;
use crate::data::{Batch, Vocab};
use crate::optim::StepCtx;
use crate::samplers::GenerateConfig;
use crate::{Error, Result};
pub use genmodels_contracts::{Capability, ModelInfo, Output};
use std::path::Path;
use tch::{nn::VarStore, Device, Tensor};

/// Named scalar losses (and other logged numbers) of one training step, in display order.
pub type Losses = Vec<(String, f64)>;

/// What a model produces when sampled.
#[derive(Debug)]
pub enum Samples {
    /// Images `[N, C, H, W]` in [-1, 1].
    Images(Tensor),
    /// Points `[N, D]`.
    Points(Tensor),
    /// Text.
    Text(Vec<String>),
}

/// A trainable generative model. Each family writes its own step; the trainer does the rest.
pub trait Model {
    /// Registered name (`dcgan`, `wgan-gp`, ...).
    fn name(&self) -> &str;
    /// The model's config, stored in checkpoints so that a run can be rebuilt from its folder.
    fn config_json(&self) -> serde_json::Value;
    /// One optimisation step on `batch` (the model owns and steps its optimisers with `ctx`).
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses>;
    /// `n` samples from the model (in evaluation mode; no gradients).
    fn sample(&mut self, n: usize) -> Result<Samples>;
    /// Held-out losses on one batch (no update, evaluation mode); `None` when the model has no
    /// such notion. The trainer averages them over its validation batches (`val_loss`, ...).
    fn eval_step(&mut self, _batch: &Batch) -> Result<Option<Losses>> {
        Ok(None)
    }
    /// An interpolation grid `[rows * steps, C, H, W]`: each row walks from one latent to
    /// another (slerp in z, lerp in W for style models; conditional models keep one class per
    /// row). `None` when the model has no latent space to walk.
    fn interpolate(&mut self, _rows: usize, _steps: usize) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Class-conditional sampling ([`Capability::ClassConditional`]).
    fn as_class_conditional(&mut self) -> Option<&mut dyn ClassConditional> {
        None
    }
    /// Log-likelihood of images ([`Capability::Likelihood`] on an image model).
    fn as_likelihood(&mut self) -> Option<&mut dyn Likelihood> {
        None
    }
    /// Encoding and decoding ([`Capability::Reconstruction`]).
    fn as_reconstruct(&mut self) -> Option<&mut dyn Reconstruct> {
        None
    }
    /// Latent traversals of a continuous latent space ([`Capability::Traversal`]).
    fn as_traversal(&mut self) -> Option<&mut dyn Traversal> {
        None
    }
    /// A discrete codebook with a prior over its codes ([`Capability::Codebook`]).
    fn as_codebook(&mut self) -> Option<&mut dyn Codebook> {
        None
    }
    /// Image-to-image translation between two domains ([`Capability::Translation`]).
    fn as_translate(&mut self) -> Option<&mut dyn Translate> {
        None
    }
    /// Text: tokenizer, context, generation and sequence likelihood
    /// ([`Capability::TextGeneration`], and [`Capability::Likelihood`] on a text model).
    fn as_text(&mut self) -> Option<&mut dyn TextModel> {
        None
    }
    /// Sampling through a swappable noise scheduler ([`Capability::Schedulers`]).
    fn as_scheduled(&mut self) -> Option<&mut dyn ScheduledSampling> {
        None
    }
    /// An energy over inputs ([`Capability::Energy`]).
    fn as_energy(&mut self) -> Option<&mut dyn Energy> {
        None
    }
    /// The variable stores to checkpoint, by a stable name (`g`, `d`, ...).
    fn var_stores(&self) -> Vec<(&str, &VarStore)>;
    /// The store whose exponential moving average the trainer keeps (usually the generator).
    fn ema_store(&self) -> Option<&VarStore> {
        None
    }
    /// Adds optimiser state to a checkpoint.
    fn save_optimizers(&self, ckpt: &mut Checkpoint);
    /// Restores optimiser state from a checkpoint.
    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()>;
}

/// Capabilities the model answers for through its `as_*` accessors (interpolation is probed by
/// asking for a one-row walk). The registry's declared list must equal this; a test checks
/// every registered model.
pub fn probe_capabilities(model: &mut dyn Model) -> Result<Vec<Capability>> {
    let mut c = Vec::new();
    if model.as_class_conditional().is_some() {
        c.push(Capability::ClassConditional);
    }
    if tch::no_grad(|| model.interpolate(1, 2))?.is_some() {
        c.push(Capability::Interpolation);
    }
    let text_likelihood = model.as_text().is_some();
    if model.as_likelihood().is_some() || text_likelihood {
        c.push(Capability::Likelihood);
    }
    if model.as_reconstruct().is_some() {
        c.push(Capability::Reconstruction);
    }
    if model.as_traversal().is_some() {
        c.push(Capability::Traversal);
    }
    if model.as_codebook().is_some() {
        c.push(Capability::Codebook);
    }
    if model.as_translate().is_some() {
        c.push(Capability::Translation);
    }
    if text_likelihood {
        c.push(Capability::TextGeneration);
    }
    if model.as_scheduled().is_some() {
        c.push(Capability::Schedulers);
    }
    if model.as_energy().is_some() {
        c.push(Capability::Energy);
    }
    c.sort();
    Ok(c)
}

/// An energy E(x) over inputs (low on data), as energy-based models define one.
pub trait Energy {
    /// Energies `[N]` of inputs shaped as the training data (`[N, D]` points or `[N, C, H, W]`
    /// images in [-1, 1]), in evaluation mode.
    fn energy(&mut self, x: &Tensor) -> Result<Tensor>;
    /// Class logits `[N, K]` when the energy is a classifier's (JEM: E(x) = -logsumexp of
    /// them), else `None`.
    fn class_logits(&mut self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Per-example L2 norms `[N]` of the energy's gradient with respect to the input,
    /// `||d E(x) / dx||` (= `||d log p(x) / dx||`), in evaluation mode.
    fn energy_grad_norm(&mut self, x: &Tensor) -> Result<Tensor>;
    /// Runs the model's own Langevin chain (its sampler's settings, `steps` long) from `x0`
    /// (inputs shaped as the training data), moving only where `mask` (shaped as `x0`) is 1
    /// and keeping `x0` where it is 0, as inpainting does; returns `frames` snapshots
    /// `[F, N, ...]` evenly spaced over the chain, the last one its end.
    fn langevin(
        &mut self,
        x0: &Tensor,
        mask: Option<&Tensor>,
        steps: usize,
        frames: usize,
    ) -> Result<Tensor>;
    /// `n` chain starts drawn from the model's noise distribution (what fresh chains and
    /// buffer restarts begin from).
    fn chain_noise(&mut self, n: usize) -> Result<Tensor>;
}

/// Checks labels given to [`ClassConditional::sample_classes`] of a model with `classes`
/// classes: at least one, each in `0..classes`; returns how many.
pub fn check_labels(labels: &Tensor, classes: i64) -> Result<i64> {
    let n = labels.size().first().copied().unwrap_or(0);
    if n == 0 {
        return Err(Error::invalid("no labels to sample"));
    }
    let (lo, hi) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
    if lo < 0 || hi >= classes {
        return Err(Error::invalid(format!(
            "class labels from {lo} to {hi}: expected 0 to {}",
            classes - 1
        )));
    }
    Ok(n)
}

/// Sampling given class labels.
pub trait ClassConditional {
    fn num_classes(&self) -> i64;
    /// Images `[N, C, H, W]` in [-1, 1] for `labels` `[N]` (int64, on the model's device),
    /// latents truncated at `truncation` standard deviations (0: none).
    fn sample_classes(&mut self, labels: &Tensor, truncation: f64) -> Result<Tensor>;
}

/// How a diffusion model samples: which scheduler, how many network evaluations, DDIM's eta,
/// the classifier-free guidance scale.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplerChoice {
    /// A scheduler name (`ddpm`, `ddim`, `dpm-solver++`, `euler`, `euler-ancestral`, `heun`).
    pub scheduler: String,
    /// Inference steps.
    pub steps: usize,
    /// DDIM's eta (0: deterministic); `None` keeps the scheduler's default.
    #[serde(default)]
    pub eta: Option<f64>,
    /// Classifier-free guidance scale, diffusers' convention: `uncond + s (cond - uncond)`, so
    /// 0 is unconditional and 1 conditional without guidance; `None`: 1.
    #[serde(default)]
    pub guidance_scale: Option<f64>,
    /// Karras sigmas (DPM-Solver++, Euler).
    #[serde(default)]
    pub karras: bool,
}

/// Sampling through a swappable noise scheduler (diffusion models).
pub trait ScheduledSampling {
    /// The sampler `sample` uses from now on; an unknown scheduler, more steps than training
    /// steps or guidance on an unconditional model is an error.
    fn set_sampler(&mut self, choice: &SamplerChoice) -> Result<()>;
    /// The sampler `sample` uses.
    fn sampler(&self) -> SamplerChoice;
    /// A denoising trajectory of `n` samples: `(x_t, predicted x_0)` after each of `frames`
    /// evenly spaced steps, each `[frames, n, C, H, W]` in [-1, 1].
    fn trajectory(&mut self, n: usize, frames: usize) -> Result<(Tensor, Tensor)>;
}

/// The log-likelihood of images under the model.
pub trait Likelihood {
    /// The images as the likelihood is defined on them (e.g. one dynamic binarisation drawn
    /// from the global generator), from images in [-1, 1].
    fn prepare(&self, x: &Tensor) -> Result<Tensor>;
    /// How [`Likelihood::prepare`] changes the data, for reports.
    fn preparation(&self) -> String;
    /// How [`Likelihood::log_likelihood`] estimates `log p(x)` with `samples`, for reports.
    fn estimator(&self, samples: i64) -> String {
        format!("importance sampling, k = {samples}")
    }
    /// `log p(x)` per example in nats, estimated with `samples` importance samples (or exact).
    fn log_likelihood(&self, x: &Tensor, samples: i64) -> Result<Tensor>;
    /// The one-sample variational bound per example (nats), at most `log p(x)`.
    fn bound(&self, x: &Tensor) -> Result<Tensor>;
    /// Posterior means `E_q[z | x]` `[N, Z]` (their variance over the data counts the active
    /// units), when the model has a continuous posterior.
    fn posterior_means(&self, x: &Tensor) -> Result<Option<Tensor>>;
}

/// Encoding and decoding.
pub trait Reconstruct {
    /// Reconstructions of images in [-1, 1].
    fn reconstruct(&mut self, x: &Tensor) -> Result<Tensor>;
}

/// Walks along single latent dimensions.
pub trait Traversal {
    /// Number of latent dimensions.
    fn latent_dims(&self) -> i64;
    /// Per-unit activity on `x` (higher: the unit carries more information).
    fn unit_activity(&self, x: &Tensor) -> Result<Tensor>;
    /// A grid `[dims * steps, C, H, W]`: the posterior mean of `x` (one image) with each of `dims`
    /// swept over `steps` values in [-range, range].
    fn traversal(&self, x: &Tensor, dims: &[i64], steps: i64, range: f64) -> Result<Tensor>;
}

/// A discrete latent codebook and a prior over code grids.
pub trait Codebook {
    fn num_codes(&self) -> i64;
    /// Code indices `[N, L]` of images.
    fn encode_codes(&self, x: &Tensor) -> Result<Tensor>;
    /// Images from code indices.
    fn decode_codes(&self, codes: &Tensor) -> Result<Tensor>;
    /// exp(entropy of code usage) over `codes`.
    fn perplexity(&self, codes: &Tensor) -> f64;
    /// The prior's mean negative log-likelihood per code (nats) on `codes`.
    fn prior_nll(&self, codes: &Tensor) -> Result<f64>;
}

/// Translation between two image domains.
pub trait Translate {
    /// `x` translated A -> B (`forward`) or B -> A.
    fn translate(&mut self, x: &Tensor, forward: bool) -> Result<Tensor>;
}

/// A language model.
pub trait TextModel {
    /// The tokenizer stored with the weights (absent in an imported model without one).
    fn vocab(&self) -> Option<&Vocab>;
    /// Context length in tokens.
    fn block_size(&self) -> usize;
    /// Continues each prompt; `on_token(row, token)` returns true to finish that row.
    fn generate(
        &self,
        prompts: &[Vec<u32>],
        cfg: &GenerateConfig,
        on_token: &mut dyn FnMut(usize, u32) -> bool,
    ) -> Result<Vec<Vec<u32>>>;
    /// Summed next-token NLL (nats) over `tokens` and the number of predictions.
    fn sequence_nll(
        &self,
        tokens: &[u32],
        batch: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(f64, usize)>;
}

/// What a model needs to know about its data to pick a default config.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataInfo {
    /// Shape of one example: `[C, H, W]`, `[D]`, or `[block]` for text.
    pub example_shape: Vec<i64>,
    pub num_classes: Option<usize>,
    /// Vocabulary size for token data.
    pub vocab_size: Option<usize>,
    /// The tokenizer of token data, for models that store it with their weights.
    #[serde(default)]
    pub vocab: Option<crate::data::Vocab>,
}

/// A model as registered with the command line: how to make its default config for some data,
/// and how to build it from a config.
pub struct ModelEntry {
    pub name: &'static str,
    pub family: &'static str,
    pub summary: &'static str,
    /// What `sample` produces.
    pub output: Output,
    /// What the model can do beyond training and sampling (sorted; equal to what
    /// [`probe_capabilities`] finds on a built model).
    pub capabilities: &'static [Capability],
    /// How `interpolate` walks, for models with [`Capability::Interpolation`].
    pub interpolation: Option<&'static str>,
    /// The paper's defaults, adapted to the data's shape.
    pub default_config: fn(&DataInfo) -> Result<serde_json::Value>,
    /// Builds a fresh model (new weights) from a config on a device.
    pub build: fn(&serde_json::Value, Device) -> Result<Box<dyn Model>>,
}

impl ModelEntry {
    pub fn has(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }

    /// The entry as `genmodels list --json` publishes it.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            name: self.name.into(),
            family: self.family.into(),
            summary: self.summary.into(),
            output: self.output,
            capabilities: self.capabilities.to_vec(),
            interpolation: self.interpolation.map(String::from),
        }
    }
}

/// Every model a binary knows, from the family crates it links.
pub struct Registry {
    entries: Vec<ModelEntry>,
}

impl Registry {
    pub fn new(entries: Vec<ModelEntry>) -> Self {
        Registry { entries }
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// The entry named `name`, or an error listing the known models.
    pub fn find(&self, name: &str) -> Result<&ModelEntry> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            Error::invalid(format!(
                "unknown model `{name}`; known models: {}",
                self.names(|_| true).join(", ")
            ))
        })
    }

    /// Names of the entries that satisfy `keep`.
    pub fn names(&self, keep: impl Fn(&ModelEntry) -> bool) -> Vec<&'static str> {
        self.entries
            .iter()
            .filter(|e| keep(e))
            .map(|e| e.name)
            .collect()
    }

    /// The one-line error of a verb that needs `cap` from a model that lacks it, naming the
    /// models that have it.
    pub fn lacks(&self, verb: &str, cap: Capability, model: &str) -> Error {
        let with = self.names(|e| e.has(cap));
        Error::invalid(format!(
            "`{verb}` needs a model with the {cap} capability ({}); this run holds a `{model}` model",
            if with.is_empty() {
                "none is registered".to_string()
            } else {
                with.join(", ")
            }
        ))
    }
}

/// A model's config from JSON (a checkpoint's, or defaults with overrides), with the model
/// named in the error.
pub fn parse_config<T: serde::de::DeserializeOwned>(
    name: &str,
    json: &serde_json::Value,
) -> Result<T> {
    serde_json::from_value(json.clone()).map_err(|e| Error::invalid(format!("{name} config: {e}")))
}

/// `(channels, side)` of square image data, or an error naming the model and what it got.
pub fn square_image(name: &str, info: &DataInfo) -> Result<(i64, i64)> {
    match info.example_shape.as_slice() {
        &[c, h, w] if h == w => Ok((c, h)),
        &[_, h, w] => Err(Error::invalid(format!(
            "{name} needs square images, got {h}x{w}"
        ))),
        s => Err(Error::invalid(format!(
            "{name} needs image data [C, H, W], got examples of shape {s:?}"
        ))),
    }
}

/// Loads a model's weights (and optimiser state) from a checkpoint; when `use_ema` is set and
/// the checkpoint has an EMA, the averaged weights replace the live ones (for sampling).
pub fn load_model_state(
    model: &mut dyn Model,
    ckpt: &Checkpoint,
    path: &Path,
    with_optim: bool,
) -> Result<()> {
    for (name, vs) in model.var_stores() {
        ckpt.load_var_store(&format!("model/{name}"), vs, path)?;
    }
    if with_optim {
        model.load_optimizers(ckpt, path)?;
    }
    Ok(())
}

/// Applies `key=value` overrides to a JSON config (values parsed as JSON, else taken as strings);
/// a dotted key (`sampler.steps=20`) reaches into a nested object. Unknown keys are refused so
/// typos do not pass silently.
pub fn apply_overrides(config: &mut serde_json::Value, overrides: &[String]) -> Result<()> {
    for o in overrides {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("override `{o}`: expected key=value")))?;
        let mut obj = config
            .as_object_mut()
            .ok_or_else(|| Error::invalid("model config is not a JSON object"))?;
        let parts: Vec<&str> = k.split('.').collect();
        let (last, path) = parts
            .split_last()
            .ok_or_else(|| Error::invalid(format!("override `{o}`: empty key")))?;
        for (i, p) in path.iter().enumerate() {
            let here = parts[..=i].join(".");
            if !obj.contains_key(*p) {
                return Err(unknown_key(&here, obj));
            }
            obj = match obj.get_mut(*p) {
                Some(serde_json::Value::Object(inner)) => inner,
                Some(_) => {
                    return Err(Error::invalid(format!(
                        "override `{o}`: `{here}` is not an object with keys (set it whole: {here}=JSON)"
                    )))
                }
                None => return Err(Error::invalid(format!("unknown config key `{here}`"))),
            };
        }
        if !obj.contains_key(*last) {
            return Err(unknown_key(k, obj));
        }
        let val =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        obj.insert(last.to_string(), val);
    }
    Ok(())
}

fn unknown_key(k: &str, obj: &serde_json::Map<String, serde_json::Value>) -> Error {
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    Error::invalid(format!(
        "unknown config key `{k}`; the keys here are: {}",
        keys.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Range checks on model configs, so that a bad value (from `--set`, a manifest or code) is a
/// one-line error naming the model, the key, the value and what is allowed, always in the same
/// words: ``progan config: `mbstd_group` = 0, expected an integer from 1 to 1024``. Each family
/// checks its config this way before creating any network.
pub mod check {
    use crate::{Error, Result};
    use std::fmt::Display;

    /// Largest image side a config may ask for.
    pub const MAX_SIDE: i64 = 4096;
    /// Largest number of image channels.
    pub const MAX_CHANNELS: i64 = 64;
    /// Largest width: feature maps, hidden units, latent or embedding size.
    pub const MAX_WIDTH: i64 = 8192;
    /// Largest weight matrix of one layer, in elements (2^30 floats: 4 GiB).
    pub const MAX_LAYER_WEIGHTS: i64 = 1 << 30;

    /// The checks of one model's config.
    #[derive(Debug, Clone, Copy)]
    pub struct Check<'a> {
        model: &'a str,
    }

    impl<'a> Check<'a> {
        pub fn model(model: &'a str) -> Self {
            Check { model }
        }

        /// The error for `key` = `value` when `expected` was.
        pub fn error(&self, key: &str, value: impl Display, expected: impl Display) -> Error {
            Error::invalid(format!(
                "{} config: `{key}` = {value}, expected {expected}",
                self.model
            ))
        }

        /// `Ok` when `ok`, else [`Check::error`].
        pub fn ensure(
            &self,
            ok: bool,
            key: &str,
            value: impl Display,
            expected: impl Display,
        ) -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(self.error(key, value, expected))
            }
        }

        /// An integer (of any type) in `lo..=hi`.
        pub fn int<T: PartialOrd + Display>(
            &self,
            key: &str,
            value: T,
            lo: T,
            hi: T,
        ) -> Result<()> {
            let ok = value >= lo && value <= hi;
            self.ensure(
                ok,
                key,
                &value,
                format_args!("an integer from {lo} to {hi}"),
            )
        }

        /// A finite number.
        pub fn finite(&self, key: &str, value: f64) -> Result<()> {
            self.ensure(value.is_finite(), key, value, "a finite number")
        }

        /// A finite number > 0 (temperatures, epsilons).
        pub fn positive(&self, key: &str, value: f64) -> Result<()> {
            let ok = value.is_finite() && value > 0.0;
            self.ensure(ok, key, value, "a finite number > 0")
        }

        /// A finite number >= 0 (loss weights, learning rates).
        pub fn non_negative(&self, key: &str, value: f64) -> Result<()> {
            let ok = value.is_finite() && value >= 0.0;
            self.ensure(ok, key, value, "a finite number >= 0")
        }

        /// A number in [0, 1] (a probability).
        pub fn probability(&self, key: &str, value: f64) -> Result<()> {
            let ok = (0.0..=1.0).contains(&value);
            self.ensure(ok, key, value, "a number in [0, 1]")
        }

        /// A number in [0, 1) (Adam's betas, decays, dropout rates).
        pub fn fraction(&self, key: &str, value: f64) -> Result<()> {
            let ok = (0.0..1.0).contains(&value);
            self.ensure(ok, key, value, "a number in [0, 1)")
        }

        /// Adam's learning rate (>= 0; 0 freezes, as PyTorch allows) and betas (in [0, 1)),
        /// the betas under their usual keys.
        pub fn adam(&self, lr_key: &str, lr: f64, beta1: f64, beta2: f64) -> Result<()> {
            self.non_negative(lr_key, lr)?;
            self.fraction("beta1", beta1)?;
            self.fraction("beta2", beta2)
        }

        /// Image channels and side: `1..=MAX_CHANNELS` and `min_side..=max_side`.
        pub fn image(&self, channels: i64, side: i64, min_side: i64, max_side: i64) -> Result<()> {
            self.int("channels", channels, 1, MAX_CHANNELS)?;
            self.int("image_size", side, min_side, max_side)
        }

        /// The config parsed from JSON; a value of the wrong type or sign is named by its key
        /// (every config here is `#[serde(default)]`, so each key can be parsed alone to find
        /// the one at fault).
        pub fn parse<T: serde::de::DeserializeOwned>(&self, json: &serde_json::Value) -> Result<T> {
            let err = match serde_json::from_value::<T>(json.clone()) {
                Ok(cfg) => return Ok(cfg),
                Err(e) => e,
            };
            let culprit = json.as_object().and_then(|obj| {
                obj.iter().find_map(|(k, v)| {
                    let one =
                        serde_json::Value::Object([(k.clone(), v.clone())].into_iter().collect());
                    serde_json::from_value::<T>(one).err().map(|e| (k, v, e))
                })
            });
            Err(match culprit {
                Some((k, v, e)) => {
                    Error::invalid(format!("{} config: `{k}` = {v}: {e}", self.model))
                }
                None => Error::invalid(format!("{} config: {err}", self.model)),
            })
        }
    }

    /// For tests: the error of building `entry` from its default config for `info` with `key`
    /// set to `value`. Panics when the model builds, when `key` is not in the config, or when
    /// the build panics instead of returning the error.
    pub fn build_error(
        entry: &crate::model::ModelEntry,
        info: &crate::model::DataInfo,
        key: &str,
        value: serde_json::Value,
    ) -> String {
        let mut json = (entry.default_config)(info)
            .unwrap_or_else(|e| panic!("{}: default config: {e}", entry.name));
        let obj = json.as_object_mut().expect("a config is a JSON object");
        assert!(
            obj.contains_key(key),
            "{}: no config key `{key}`",
            entry.name
        );
        obj.insert(key.to_string(), value.clone());
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (entry.build)(&json, tch::Device::Cpu).map(|_| ())
        }));
        match built {
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(())) => panic!("{}: `{key}` = {value} was accepted", entry.name),
            Err(_) => panic!(
                "{}: `{key}` = {value} panicked instead of an error",
                entry.name
            ),
        }
    }

    /// For tests: each `(key, value)` set alone on the default config is refused with one line
    /// that starts ``MODEL config: `key` = ``.
    pub fn assert_rejects(
        entry: &crate::model::ModelEntry,
        info: &crate::model::DataInfo,
        cases: &[(&str, serde_json::Value)],
    ) {
        for (key, value) in cases {
            let e = build_error(entry, info, key, value.clone());
            let head = format!("{} config: `{key}` = ", entry.name);
            assert!(
                e.starts_with(&head) && !e.contains('\n'),
                "{key} = {value}: {e}"
            );
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Cfg {
            #[allow(dead_code)]
            size: i64,
            #[allow(dead_code)]
            steps: u64,
        }

        #[test]
        fn messages_name_the_model_the_key_the_value_and_the_range() {
            let c = Check::model("toy");
            let e = c.int("size", 0, 1, 8).unwrap_err().to_string();
            assert_eq!(e, "toy config: `size` = 0, expected an integer from 1 to 8");
            assert!(c.int("size", 8usize, 1, 8).is_ok());
            for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
                assert!(c.positive("lr", bad).is_err(), "{bad}");
            }
            assert!(c.non_negative("w", 0.0).is_ok() && c.non_negative("w", -0.1).is_err());
            assert!(c.probability("p", 1.0).is_ok() && c.probability("p", 1.5).is_err());
            assert!(c.fraction("beta1", 0.0).is_ok() && c.fraction("beta1", 1.0).is_err());
            assert!(c.finite("psi", -3.0).is_ok() && c.finite("psi", f64::NAN).is_err());
            let e = c.adam("lr", 1e-3, 0.5, 1.0).unwrap_err().to_string();
            assert!(
                e.contains("`beta2` = 1, expected a number in [0, 1)"),
                "{e}"
            );
        }

        #[test]
        fn parse_names_the_key_of_a_value_of_the_wrong_type_or_sign() {
            let c = Check::model("toy");
            let json = serde_json::json!({"size": 3, "steps": -1});
            let e = c.parse::<Cfg>(&json).unwrap_err().to_string();
            assert!(
                e.starts_with("toy config: `steps` = -1: invalid value"),
                "{e}"
            );
            let json = serde_json::json!({"size": "big"});
            let e = c.parse::<Cfg>(&json).unwrap_err().to_string();
            assert!(
                e.starts_with("toy config: `size` = \"big\": invalid type"),
                "{e}"
            );
            assert!(c.parse::<Cfg>(&serde_json::json!({"size": 2})).is_ok());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides() {
        let mut c = serde_json::json!({"lr": 0.1, "name": "x"});
        apply_overrides(&mut c, &["lr=0.5".into(), "name=y".into()]).unwrap();
        assert_eq!(c, serde_json::json!({"lr": 0.5, "name": "y"}));
        assert!(apply_overrides(&mut c, &["lx=1".into()])
            .unwrap_err()
            .to_string()
            .contains("lr, name"));
        assert!(apply_overrides(&mut c, &["lr".into()]).is_err());
    }

    #[test]
    fn dotted_overrides_reach_into_nested_objects_and_name_the_bad_part() {
        let mut c =
            serde_json::json!({"sampler": {"steps": 50, "scheduler": "ddim"}, "unet": null});
        apply_overrides(&mut c, &["sampler.steps=20".into()]).unwrap();
        assert_eq!(c["sampler"]["steps"], 20);
        let e = apply_overrides(&mut c, &["sampler.stepz=1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sampler.stepz") && e.contains("scheduler, steps"),
            "{e}"
        );
        let e = apply_overrides(&mut c, &["unet.x=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`unet` is not an object"), "{e}");
        let e = apply_overrides(&mut c, &["samplr.steps=1".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("samplr"), "{e}");
    }
}
