//! Import of Hugging Face GPT-2 checkpoints (`config.json` + `model.safetensors`, as written by
//! `save_pretrained`). GPT-2 stores its linear layers as `Conv1D` with weights `[in, out]`; ours
//! are `[out, in]`, so those are transposed. Names are GPT-2's already (optionally under
//! `transformer.`); the causal-mask buffers (`attn.bias`, `attn.masked_bias`) are skipped.

use crate::gpt::{Gpt, GptConfig, MlpKind, NormKind, Positions};
use genmodels_core::checkpoint::read_safetensors;
use genmodels_core::data::limits::{torch_error_line, MAX_TENSOR_ELEMENTS};
use genmodels_core::data::Vocab;
use genmodels_core::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind};

/// Largest `vocab_size`, `n_positions` and `n_embd` a `config.json` may give.
pub const MAX_GPT2_DIM: i64 = 1 << 20;

/// Largest `n_layer` a `config.json` may give.
pub const MAX_GPT2_LAYERS: i64 = 1 << 12;

/// The GPT config equal to a GPT-2 `config.json`.
pub fn config_from_hf(json: &serde_json::Value) -> Result<GptConfig> {
    hf_config(json).map_err(|m| Error::invalid(format!("GPT-2 config.json: {m}")))
}

fn hf_config(json: &serde_json::Value) -> std::result::Result<GptConfig, String> {
    let get = |k: &str, max: i64| -> std::result::Result<i64, String> {
        let v = json
            .get(k)
            .ok_or_else(|| format!("missing integer `{k}`"))?;
        v.as_i64()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("`{k}` is {v}, expected an integer from 1 to {max}"))
    };
    if !json.is_object() {
        return Err("expected a JSON object".into());
    }
    if let Some(m) = json.get("model_type") {
        if m.as_str() != Some("gpt2") {
            return Err(format!(
                "model_type is {m}; only `gpt2` checkpoints are supported"
            ));
        }
    }
    let act = match json.get("activation_function") {
        None | Some(serde_json::Value::Null) => "gelu_new",
        Some(v) => v
            .as_str()
            .ok_or_else(|| format!("activation_function is {v}, expected a string"))?,
    };
    let mlp = match act {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => MlpKind::GeluTanh,
        "gelu" => MlpKind::Gelu,
        other => {
            return Err(format!(
                "activation `{other}` is not supported (gelu_new or gelu)"
            ))
        }
    };
    let (vocab_size, block_size, n_embd) = (
        get("vocab_size", MAX_GPT2_DIM)?,
        get("n_positions", MAX_GPT2_DIM)?,
        get("n_embd", MAX_GPT2_DIM)?,
    );
    let n_layer = get("n_layer", MAX_GPT2_LAYERS)?;
    let n_head = get("n_head", n_embd)?;
    if let Some(v) = json.get("n_inner").filter(|v| !v.is_null()) {
        if v.as_i64() != Some(4 * n_embd) {
            return Err(format!(
                "n_inner is {v}; only GPT-2's 4 * n_embd = {} is supported",
                4 * n_embd
            ));
        }
    }
    // The largest tensors: the embeddings and the MLP matrices.
    for (what, a, b) in [
        ("wte (vocab_size x n_embd)", vocab_size, n_embd),
        ("wpe (n_positions x n_embd)", block_size, n_embd),
        ("c_fc (n_embd x 4 n_embd)", n_embd, 4 * n_embd),
    ] {
        if a.checked_mul(b)
            .is_none_or(|n| n as u64 > MAX_TENSOR_ELEMENTS as u64)
        {
            return Err(format!(
                "{what} would be {a} x {b}, more than {MAX_TENSOR_ELEMENTS} elements"
            ));
        }
    }
    let norm_eps = match json.get("layer_norm_epsilon") {
        None | Some(serde_json::Value::Null) => 1e-5,
        Some(v) => v
            .as_f64()
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or_else(|| format!("layer_norm_epsilon is {v}, expected a positive number"))?,
    };
    let tie_weights = match json.get("tie_word_embeddings") {
        None | Some(serde_json::Value::Null) => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("tie_word_embeddings is {v}, expected true or false"))?,
    };
    Ok(GptConfig {
        vocab_size,
        block_size,
        n_layer,
        n_head,
        n_embd,
        dropout: 0.0,
        bias: true,
        positions: Positions::Learned,
        norm: NormKind::LayerNorm,
        norm_eps,
        mlp,
        tie_weights,
        ..Default::default()
    })
}

/// Parameters of the GPT-2 a config describes (learned positions, biases, LayerNorm, a 4x MLP),
/// overflow-checked; `None` past `u64`.
fn gpt2_parameters(c: &GptConfig) -> Option<u64> {
    let (v, p, e, l) = (
        c.vocab_size as u64,
        c.block_size as u64,
        c.n_embd as u64,
        c.n_layer as u64,
    );
    let ve = v.checked_mul(e)?;
    let per_layer = e.checked_mul(e)?.checked_mul(12)?.checked_add(13 * e)?;
    ve.checked_mul(if c.tie_weights { 1 } else { 2 })?
        .checked_add(p.checked_mul(e)?)?
        .checked_add(l.checked_mul(per_layer)?)?
        .checked_add(2 * e)
}

/// GPT-2's causal-mask buffers, which are not parameters.
fn is_mask_buffer(n: &str) -> bool {
    n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias")
}

/// Names of at most ten items, then how many more.
fn some_names(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > 10 {
        out.push_str(&format!(" and {} more", names.len() - 10));
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

/// Loads a GPT-2 folder (`config.json`, `model.safetensors`, optional `tokenizer.json`) into
/// a new store on `device`. The weights are read (with every header field checked) before the
/// model is built, and a config that describes more parameters than the file holds is refused,
/// so an absurd `config.json` cannot make us allocate more than the weights file's own size.
pub fn load_gpt2(dir: &Path, device: Device) -> Result<(Gpt, VarStore)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::bad_data(&cfg_path, format!("not JSON ({e})")))?;
    let mut cfg = hf_config(&json).map_err(|m| Error::bad_data(&cfg_path, m))?;
    let tok_path = dir.join("tokenizer.json");
    if tok_path.exists() {
        let v = Vocab::from_tokenizer_file(&tok_path)?;
        if v.size() as i64 > cfg.vocab_size {
            return Err(Error::bad_data(
                &tok_path,
                format!(
                    "{} tokens, but config.json has vocab_size {}",
                    v.size(),
                    cfg.vocab_size
                ),
            ));
        }
        cfg.vocab = Some(v);
    }
    let weights = dir.join("model.safetensors");
    let (_, tensors) = read_safetensors(&weights)?;
    let mut params = 0u64;
    let mut problems = Vec::new();
    for (name, t) in &tensors {
        let n = name.strip_prefix("transformer.").unwrap_or(name);
        if is_mask_buffer(n) || (cfg.tie_weights && n == "lm_head.weight") {
            continue;
        }
        if !t.is_floating_point() {
            problems.push(format!("`{n}` is {:?}, expected floating point", t.kind()));
        }
        params = params.saturating_add(t.numel() as u64);
    }
    for (n, want) in [
        ("wte.weight", [cfg.vocab_size, cfg.n_embd]),
        ("wpe.weight", [cfg.block_size, cfg.n_embd]),
    ] {
        let t = tensors
            .get(n)
            .or_else(|| tensors.get(&format!("transformer.{n}")));
        if let Some(t) = t.filter(|t| t.size() != want) {
            problems.push(format!("`{n}` has shape {:?}, expected {want:?}", t.size()));
        }
    }
    if !problems.is_empty() {
        return Err(Error::bad_data(&weights, some_names(&problems)));
    }
    let want = gpt2_parameters(&cfg).unwrap_or(u64::MAX);
    if want > params {
        return Err(Error::bad_data(
            &weights,
            format!(
                "holds {params} parameters but config.json describes a GPT-2 of {want} ({} layers, n_embd {}, vocab {}, {} positions): they do not belong together",
                cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size
            ),
        ));
    }
    let vs = VarStore::new(device);
    let gpt = Gpt::new(vs.root(), cfg).map_err(|e| Error::bad_data(&cfg_path, e.to_string()))?;
    let mut vars = vs.variables();
    let mut filled = BTreeSet::new();
    let mut unexpected = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in tensors {
            let n = name.strip_prefix("transformer.").unwrap_or(&name);
            if is_mask_buffer(n) {
                continue;
            }
            let conv1d = n.ends_with(".weight")
                && (n.contains(".c_attn.") || n.contains(".c_proj.") || n.contains(".c_fc."));
            let Some(dst) = vars.get_mut(n) else {
                // A tied checkpoint may still carry lm_head.weight (equal to wte); skip it.
                if n == "lm_head.weight" && !vars.contains_key("lm_head.weight") {
                    continue;
                }
                unexpected.push(n.to_string());
                continue;
            };
            let torch = |e: tch::TchError| {
                Error::bad_data(&weights, format!("`{n}`: {}", torch_error_line(&e)))
            };
            let t = if conv1d && t.dim() == 2 {
                t.f_tr().map_err(torch)?
            } else {
                t
            };
            if dst.size() != t.size() {
                return Err(Error::bad_data(
                    &weights,
                    format!("`{n}` has shape {:?}, expected {:?}", t.size(), dst.size()),
                ));
            }
            dst.f_copy_(&t.f_to_kind(Kind::Float).map_err(torch)?)
                .map_err(torch)?;
            filled.insert(n.to_string());
        }
        Ok(())
    })?;
    let missing: Vec<String> = vars
        .keys()
        .filter(|k| !filled.contains(*k))
        .cloned()
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(Error::bad_data(
            &weights,
            format!(
                "not a GPT-2 checkpoint of this config: missing {}; unexpected {}",
                some_names(&missing),
                some_names(&unexpected)
            ),
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
