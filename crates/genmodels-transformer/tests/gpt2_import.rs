//! GPT-2 import against Hugging Face `transformers` (fixture from scripts/make_gpt2_fixtures.py).

use genmodels_core::samplers::LogitsProcessor;
use genmodels_transformer::generate::{generate, GenerateConfig};
use genmodels_transformer::gpt2_import::load_gpt2;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny")
}

fn expected(name: &str) -> Tensor {
    let all = Tensor::read_safetensors(fixture().join("expected.safetensors")).unwrap();
    all.into_iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn logits_match_transformers_within_1e_4() {
    let (gpt, _vs) = load_gpt2(&fixture(), Device::Cpu).unwrap();
    let ids = expected("ids");
    let ours = tch::no_grad(|| gpt.forward(&ids, false)).unwrap();
    let theirs = expected("logits");
    let err = (&ours - &theirs).abs().max().double_value(&[]);
    let scale = theirs.abs().max().double_value(&[]);
    assert!(
        err <= 1e-4 * scale.max(1.0),
        "max |diff| {err} (logit scale {scale})"
    );
}

#[test]
fn greedy_generation_is_identical_token_for_token() {
    let (gpt, _vs) = load_gpt2(&fixture(), Device::Cpu).unwrap();
    let prompt: Vec<i64> = Vec::try_from(expected("prompt").view([-1])).unwrap();
    let want: Vec<i64> = Vec::try_from(expected("greedy").view([-1])).unwrap();
    let prompt: Vec<u32> = prompt.iter().map(|&t| t as u32).collect();
    for use_cache in [true, false] {
        let cfg = GenerateConfig {
            max_new_tokens: want.len(),
            processor: LogitsProcessor {
                temperature: 0.0,
                ..Default::default()
            },
            use_cache,
        };
        let got = generate(&gpt, std::slice::from_ref(&prompt), &cfg, |_, _| false).unwrap();
        let got: Vec<i64> = got[0].iter().map(|&t| t as i64).collect();
        assert_eq!(got, want, "use_cache = {use_cache}");
    }
}

#[test]
fn a_wrong_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_gpt2(dir.path(), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
    std::fs::copy(
        fixture().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    // Weights of another shape: a checkpoint whose wte is too small.
    let bad = Tensor::zeros([3, 32], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(
        &[("wte.weight", &bad)],
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let err = load_gpt2(dir.path(), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("wte.weight") && err.contains("shape"), "{err}");
}
