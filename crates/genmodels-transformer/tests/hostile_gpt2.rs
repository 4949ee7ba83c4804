//! Hostile GPT-2 folders: `load_gpt2` must answer a corrupt or malicious `config.json`,
//! `model.safetensors` or `tokenizer.json` with `Ok` or a one-line `Err`, never a panic, and
//! never allocate what the config merely claims (n_embd = 2^31 and the like).
//!
//! Starts from the tiny fixture (`tests/fixtures/gpt2-tiny`) plus a small trained
//! `tokenizer.json`, applies seeded mutations with the engine of
//! `genmodels-core/tests/mutate` (config values set to 0, -1, 2^31, 2^63, u64::MAX, 1e308, wrong
//! types, removed keys; safetensors header length, shapes, dtypes, offsets, dropped and renamed
//! tensors; byte-level truncations, flips and size fields), and loads each folder inside
//! `catch_unwind`. A model that loads must run a forward pass. `GENMODELS_MUTATIONS` sets the
//! mutations per file (default 400); run with `--nocapture` for the tallies.

#[path = "../../genmodels-core/tests/mutate/mod.rs"]
mod mutate;

use genmodels_core::data::Vocab;
use genmodels_transformer::gpt2_import::load_gpt2;
use mutate::*;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny")
}

fn load_and_run(dir: &Path) -> genmodels_core::Result<()> {
    let (gpt, _vs) = load_gpt2(dir, Device::Cpu)?;
    let t = gpt.cfg.block_size.min(4);
    let ids = Tensor::from_slice(&[0i64, 1, 2, 3][..t as usize]).view([1, t]);
    let logits = tch::no_grad(|| gpt.forward(&ids, false))?;
    assert_eq!(logits.size(), vec![1, t, gpt.cfg.vocab_size]);
    Ok(())
}

#[test]
fn gpt2_folders_never_panic() {
    // Tiny tensors: one intra-op thread avoids OpenMP spinning against other processes.
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let weights = std::fs::read(fixture().join("model.safetensors")).unwrap();
    // A tokenizer of at most the fixture's 97 tokens would need a BPE under 257; the import
    // only requires the tokenizer to fit vocab_size, so train one and raise vocab_size to fit
    // when the tokenizer is part of a case.
    let text = "the whale and the sea, the ship and the sea.\n".repeat(40);
    let tok = Vocab::train_bpe(&text, 260).unwrap().bpe;
    let write = |cfg: &str, w: &[u8], tok: Option<&str>| {
        std::fs::write(d.join("config.json"), cfg).unwrap();
        std::fs::write(d.join("model.safetensors"), w).unwrap();
        match tok {
            Some(t) => std::fs::write(d.join("tokenizer.json"), t).unwrap(),
            None => {
                let _ = std::fs::remove_file(d.join("tokenizer.json"));
            }
        }
    };
    write(&config, &weights, None);
    load_and_run(d).unwrap();

    let mut t = Tally::default();
    // The reported ones: absurd sizes in config.json must be refused before anything is
    // allocated for them.
    let cfg_value: serde_json::Value = serde_json::from_str(&config).unwrap();
    for (key, v) in [
        ("n_embd", serde_json::json!(1u64 << 31)),
        ("n_embd", serde_json::json!(1 << 16)),
        ("vocab_size", serde_json::json!(1u64 << 31)),
        ("vocab_size", serde_json::json!(1 << 20)),
        ("n_positions", serde_json::json!(1u64 << 40)),
        ("n_positions", serde_json::json!(1 << 20)),
        ("n_layer", serde_json::json!(100_000)),
        ("n_layer", serde_json::json!(4000)),
        ("n_head", serde_json::json!(0)),
        ("n_embd", serde_json::json!(-32)),
        ("n_inner", serde_json::json!(7)),
    ] {
        let mut c = cfg_value.clone();
        c[key] = v.clone();
        write(&c.to_string(), &weights, None);
        t.run(
            "regression",
            || format!("{key} = {v}"),
            || {
                let r = load_and_run(d);
                assert!(r.is_err(), "{key} = {v} loaded");
                r
            },
        );
    }

    let n = mutation_count(400);
    for i in 0..3 * n {
        let mut rng = XorShift::new(0x6A72 ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9));
        let (cfg, w, tk, kind): (String, Vec<u8>, Option<String>, String) = match i % 3 {
            0 => {
                let mut c = cfg_value.clone();
                let kind = if rng.chance(1, 4) {
                    let s = mutate_number_text(&mut rng, &config);
                    (s, "config number text")
                } else if rng.chance(1, 5) {
                    let mut b = config.clone().into_bytes();
                    let k = mutate_bytes(&mut rng, &mut b);
                    (String::from_utf8_lossy(&b).into_owned(), k)
                } else {
                    let k = mutate_json(&mut rng, &mut c);
                    (c.to_string(), k)
                };
                (kind.0, weights.clone(), None, format!("config: {}", kind.1))
            }
            1 => {
                let (w, k) = if rng.chance(1, 3) {
                    let mut b = weights.clone();
                    let k = mutate_bytes(&mut rng, &mut b);
                    (b, k)
                } else {
                    mutate_safetensors(&mut rng, &weights, None)
                };
                (config.clone(), w, None, format!("weights: {k}"))
            }
            _ => {
                let mut c = cfg_value.clone();
                c["vocab_size"] = serde_json::json!(300);
                let (tk, k) = if rng.chance(1, 3) {
                    let mut b = tok.clone().into_bytes();
                    let k = mutate_bytes(&mut rng, &mut b);
                    (String::from_utf8_lossy(&b).into_owned(), k)
                } else {
                    let mut v: serde_json::Value = serde_json::from_str(&tok).unwrap();
                    let k = mutate_json(&mut rng, &mut v);
                    (v.to_string(), k)
                };
                // The weights do not fit vocab_size 300: those cases end at the weights,
                // after the tokenizer is read and checked.
                (
                    c.to_string(),
                    weights.clone(),
                    Some(tk),
                    format!("tokenizer: {k}"),
                )
            }
        };
        write(&cfg, &w, tk.as_deref());
        t.run(&kind, || format!("GPT-2 case {i}"), || load_and_run(d));
    }
    t.finish("GPT-2 import");
    assert_peak_rss_below(2 << 30);
}
