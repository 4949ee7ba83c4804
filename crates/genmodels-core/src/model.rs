//! The contract between a family's model and the rest of the project (trainer, checkpoints,
//! command line, evaluation), and the registry through which families announce their models.

use crate::checkpoint::Checkpoint;
use crate::data::Batch;
use crate::optim::StepCtx;
use crate::{Error, Result};
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
    /// The paper's defaults, adapted to the data's shape.
    pub default_config: fn(&DataInfo) -> Result<serde_json::Value>,
    /// Builds a fresh model (new weights) from a config on a device.
    pub build: fn(&serde_json::Value, Device) -> Result<Box<dyn Model>>,
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
/// unknown keys are refused so typos do not pass silently.
pub fn apply_overrides(config: &mut serde_json::Value, overrides: &[String]) -> Result<()> {
    let obj = config
        .as_object_mut()
        .ok_or_else(|| Error::invalid("model config is not a JSON object"))?;
    for o in overrides {
        let (k, v) = o
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("override `{o}`: expected key=value")))?;
        if !obj.contains_key(k) {
            let mut keys: Vec<&String> = obj.keys().collect();
            keys.sort();
            return Err(Error::invalid(format!(
                "unknown config key `{k}`; this model's keys are: {}",
                keys.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let val =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        obj.insert(k.to_string(), val);
    }
    Ok(())
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
}
