//! Import of Hugging Face GPT-2 checkpoints (`config.json` + `model.safetensors`, as written by
//! `save_pretrained`). GPT-2 stores its linear layers as `Conv1D` with weights `[in, out]`; ours
//! are `[out, in]`, so those are transposed. Names are GPT-2's already (optionally under
//! `transformer.`); the causal-mask buffers (`attn.bias`, `attn.masked_bias`) are skipped.

use crate::gpt::{Gpt, GptConfig, MlpKind, NormKind, Positions};
use genmodels_core::data::Vocab;
use genmodels_core::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// The GPT config equal to a GPT-2 `config.json`.
pub fn config_from_hf(json: &serde_json::Value) -> Result<GptConfig> {
    let get = |k: &str| -> Result<i64> {
        json.get(k)
            .and_then(|v| v.as_i64())
            .ok_or_else(|| Error::invalid(format!("GPT-2 config.json: missing integer `{k}`")))
    };
    if let Some(m) = json.get("model_type").and_then(|v| v.as_str()) {
        if m != "gpt2" {
            return Err(Error::invalid(format!(
                "config.json is for model_type `{m}`; only `gpt2` checkpoints are supported"
            )));
        }
    }
    let act = json
        .get("activation_function")
        .and_then(|v| v.as_str())
        .unwrap_or("gelu_new");
    let mlp = match act {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => MlpKind::GeluTanh,
        "gelu" => MlpKind::Gelu,
        other => {
            return Err(Error::invalid(format!(
                "GPT-2 activation `{other}` is not supported (gelu_new or gelu)"
            )))
        }
    };
    Ok(GptConfig {
        vocab_size: get("vocab_size")?,
        block_size: get("n_positions")?,
        n_layer: get("n_layer")?,
        n_head: get("n_head")?,
        n_embd: get("n_embd")?,
        dropout: 0.0,
        bias: true,
        positions: Positions::Learned,
        norm: NormKind::LayerNorm,
        norm_eps: json
            .get("layer_norm_epsilon")
            .and_then(|v| v.as_f64())
            .unwrap_or(1e-5),
        mlp,
        tie_weights: json
            .get("tie_word_embeddings")
            .and_then(|v| v.as_bool())
            .unwrap_or(true),
        ..Default::default()
    })
}

/// Loads a GPT-2 folder (`config.json`, `model.safetensors`, optional `tokenizer.json`) into
/// a new store on `device`.
pub fn load_gpt2(dir: &Path, device: Device) -> Result<(Gpt, VarStore)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::bad_data(&cfg_path, e.to_string()))?;
    let mut cfg = config_from_hf(&json)?;
    let tok_path = dir.join("tokenizer.json");
    if tok_path.exists() {
        let t = std::fs::read_to_string(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
        cfg.vocab = Some(Vocab::from_tokenizer_json(t)?);
    }
    let weights = dir.join("model.safetensors");
    let vs = VarStore::new(device);
    let gpt = Gpt::new(vs.root(), cfg)?;
    let tensors = Tensor::read_safetensors(&weights)
        .map_err(|e| Error::bad_data(&weights, format!("not a safetensors file: {e}")))?;
    let mut vars = vs.variables();
    let mut filled = BTreeSet::new();
    let mut unexpected = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in tensors {
            let n = name.strip_prefix("transformer.").unwrap_or(&name);
            if n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias") {
                continue;
            }
            let conv1d = n.ends_with(".weight")
                && (n.contains(".c_attn.") || n.contains(".c_proj.") || n.contains(".c_fc."));
            let t = if conv1d { t.tr() } else { t };
            let Some(dst) = vars.get_mut(n) else {
                // A tied checkpoint may still carry lm_head.weight (equal to wte); skip it.
                if n == "lm_head.weight" && !vars.contains_key("lm_head.weight") {
                    continue;
                }
                unexpected.push(n.to_string());
                continue;
            };
            if dst.size() != t.size() {
                return Err(Error::bad_data(
                    &weights,
                    format!("`{n}` has shape {:?}, expected {:?}", t.size(), dst.size()),
                ));
            }
            dst.copy_(&t.to_kind(Kind::Float));
            filled.insert(n.to_string());
        }
        Ok(())
    })?;
    let missing: Vec<&String> = vars.keys().filter(|k| !filled.contains(*k)).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(Error::bad_data(
            &weights,
            format!("not a GPT-2 checkpoint of this config: missing {missing:?}, unexpected {unexpected:?}"),
        ));
    }
    Ok((gpt, vs))
}
/// Imports a GPT-2 folder as a run folder `out` (a checkpoint of the registered `gpt` model,
/// without training state), so every text verb works on it. Returns the imported config.
pub fn import_as_run(dir: &Path, out: &Path) -> Result<GptConfig> {
    use genmodels_core::checkpoint::{Checkpoint, TrainState};
    let (gpt, vs) = load_gpt2(dir, Device::Cpu)?;
    let config = serde_json::to_value(&gpt.cfg)?;
    let mut ck = Checkpoint::new(crate::gpt::entry().name, config, TrainState::default());
    ck.add_var_store("model/gpt", &vs);
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    ck.save(&genmodels_core::run::RunLayout::new(out).checkpoint())?;
    Ok(gpt.cfg)
}
