//! GPT decoder properties on tiny configs: causality, KV cache = recomputation (also for
//! left-padded batches), every parameter learns, the loss is the cross-entropy, checkpoints.

use genmodels_core::checkpoint::{Checkpoint, TrainState};
use genmodels_core::data::{Batch, Vocab};
use genmodels_core::model::{load_model_state, Model, Samples};
use genmodels_core::optim::StepCtx;
use genmodels_core::samplers::LogitsProcessor;
use genmodels_transformer::generate::{generate, GenerateConfig, TextStream};
use genmodels_transformer::gpt::{Gpt, GptConfig, GptModel, KvCache, MlpKind, NormKind, Positions};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// libtorch's generator is process-wide; tests that seed it take turns.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn tiny(positions: Positions, norm: NormKind, mlp: MlpKind) -> GptConfig {
    GptConfig {
        vocab_size: 23,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        positions,
        norm,
        mlp,
        ..Default::default()
    }
}

fn variants() -> Vec<GptConfig> {
    vec![
        tiny(Positions::Learned, NormKind::LayerNorm, MlpKind::Gelu),
        tiny(Positions::Rotary, NormKind::RmsNorm, MlpKind::SwiGlu),
        GptConfig {
            bias: false,
            tie_weights: false,
            ..tiny(Positions::Learned, NormKind::RmsNorm, MlpKind::GeluTanh)
        },
    ]
}

fn model(cfg: GptConfig) -> (Gpt, VarStore) {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let g = Gpt::new(vs.root(), cfg).unwrap();
    (g, vs)
}

fn ids(b: i64, t: i64, v: i64) -> Tensor {
    Tensor::randint(v, [b, t], (Kind::Int64, Device::Cpu))
}

#[test]
fn changing_a_future_token_changes_no_past_logit() {
    let _rng = rng_lock();
    for cfg in variants() {
        let (g, _vs) = model(cfg.clone());
        let x = ids(2, 12, cfg.vocab_size);
        let a = g.forward(&x, false).unwrap();
        let y = x.copy();
        let _ = y
            .get(0)
            .get(7)
            .fill_((x.int64_value(&[0, 7]) + 1) % cfg.vocab_size);
        let b = g.forward(&y, false).unwrap();
        let past = (a.narrow(1, 0, 7) - b.narrow(1, 0, 7))
            .abs()
            .max()
            .double_value(&[]);
        let now = (a.get(0).get(7) - b.get(0).get(7))
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(past, 0.0, "{cfg:?}");
        assert!(now > 1e-6, "the changed position must see its own token");
    }
}

#[test]
fn kv_cache_equals_full_recomputation() {
    let _rng = rng_lock();
    for cfg in variants() {
        let (g, _vs) = model(cfg.clone());
        let x = ids(3, 14, cfg.vocab_size);
        let full = tch::no_grad(|| g.forward(&x, false)).unwrap();
        let mut cache = KvCache::default();
        let mut parts =
            vec![tch::no_grad(|| g.forward_cached(&x.narrow(1, 0, 5), &mut cache, None)).unwrap()];
        for t in 5..14 {
            parts.push(
                tch::no_grad(|| g.forward_cached(&x.narrow(1, t, 1), &mut cache, None)).unwrap(),
            );
        }
        let inc = Tensor::cat(&parts, 1);
        let d = (&inc - &full).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{cfg:?}: {d}");
    }
}

#[test]
fn a_left_padded_row_gets_the_logits_it_gets_alone() {
    let _rng = rng_lock();
    for cfg in variants() {
        let (g, _vs) = model(cfg.clone());
        let long = ids(1, 9, cfg.vocab_size);
        let short = ids(1, 4, cfg.vocab_size);
        let pad = Tensor::zeros([1, 5], (Kind::Int64, Device::Cpu));
        let batch = Tensor::cat(
            &[
                long.shallow_clone(),
                Tensor::cat(&[pad, short.shallow_clone()], 1),
            ],
            0,
        );
        let valid = Tensor::cat(
            &[
                Tensor::ones([1, 9], (Kind::Bool, Device::Cpu)),
                Tensor::cat(
                    &[
                        Tensor::zeros([1, 5], (Kind::Bool, Device::Cpu)),
                        Tensor::ones([1, 4], (Kind::Bool, Device::Cpu)),
                    ],
                    1,
                ),
            ],
            0,
        );
        let mut cache = KvCache::default();
        let both = tch::no_grad(|| g.forward_cached(&batch, &mut cache, Some(&valid))).unwrap();
        assert!(bool::try_from(both.isfinite().all()).unwrap());
        let alone = tch::no_grad(|| g.forward(&short, false)).unwrap();
        let d = (both.get(1).narrow(0, 5, 4) - alone.get(0))
            .abs()
            .max()
            .double_value(&[]);
        assert!(d < 1e-5, "{cfg:?}: {d}");
        // One more token each, through the cache, still agrees.
        let next = ids(2, 1, cfg.vocab_size);
        let step = tch::no_grad(|| g.forward_cached(&next, &mut cache, None)).unwrap();
        let alone2 =
            tch::no_grad(|| g.forward(&Tensor::cat(&[short, next.get(1).view([1, 1])], 1), false))
                .unwrap();
        let d2 = (step.get(1).get(0) - alone2.get(0).get(4))
            .abs()
            .max()
            .double_value(&[]);
        assert!(d2 < 1e-5, "{cfg:?}: {d2}");
    }
}

#[test]
fn generation_with_and_without_cache_agree_and_batched_prompts_match_single_ones() {
    let _rng = rng_lock();
    let cfg = tiny(Positions::Rotary, NormKind::RmsNorm, MlpKind::SwiGlu);
    let (g, _vs) = model(cfg);
    let greedy = |use_cache, n| GenerateConfig {
        max_new_tokens: n,
        processor: LogitsProcessor {
            temperature: 0.0,
            ..Default::default()
        },
        use_cache,
    };
    let prompts = vec![vec![1, 2, 3, 4, 5, 6], vec![7, 8]];
    // 30 new tokens pass the context of 16, exercising the sliding window too.
    let a = generate(&g, &prompts, &greedy(true, 8), |_, _| false).unwrap();
    let b = generate(&g, &prompts, &greedy(false, 8), |_, _| false).unwrap();
    assert_eq!(a, b);
    for (i, p) in prompts.iter().enumerate() {
        let alone = generate(&g, std::slice::from_ref(p), &greedy(true, 8), |_, _| false).unwrap();
        assert_eq!(alone[0], a[i], "row {i}");
    }
    let long = generate(&g, &prompts, &greedy(true, 30), |_, _| false).unwrap();
    assert_eq!(long[0].len(), 30);
    // Stopping a row early through the callback.
    let stopped = generate(&g, &prompts, &greedy(true, 8), |row, _| row == 1).unwrap();
    assert_eq!(stopped[1].len(), 1);
    assert_eq!(stopped[0], a[0]);
    // Same seed, same draws.
    let sampled = |seed| {
        tch::manual_seed(seed);
        let c = GenerateConfig {
            max_new_tokens: 10,
            processor: LogitsProcessor {
                temperature: 1.0,
                top_k: Some(5),
                top_p: Some(0.9),
                repetition_penalty: Some(1.3),
            },
            use_cache: true,
        };
        generate(&g, &prompts, &c, |_, _| false).unwrap()
    };
    assert_eq!(sampled(4), sampled(4));
    assert!(generate(&g, &[vec![]], &greedy(true, 2), |_, _| false).is_err());
    assert!(generate(&g, &[vec![99]], &greedy(true, 2), |_, _| false)
        .unwrap_err()
        .to_string()
        .contains("outside"));
}

#[test]
fn every_parameter_learns_and_the_loss_is_the_cross_entropy() {
    let _rng = rng_lock();
    for cfg in variants() {
        tch::manual_seed(1);
        let mut m = GptModel::new("gpt", cfg.clone(), Device::Cpu).unwrap();
        let x = ids(4, 10, cfg.vocab_size);
        let y = ids(4, 10, cfg.vocab_size);
        let logits = m.gpt.forward(&x, false).unwrap();
        let by_formula = -logits
            .log_softmax(-1, Kind::Float)
            .gather(2, &y.unsqueeze(-1), false)
            .mean(Kind::Float)
            .double_value(&[]);
        let before: Vec<(String, Tensor)> =
            m.vs.variables()
                .into_iter()
                .map(|(k, v)| (k, v.copy()))
                .collect();
        let l = m
            .train_step(
                &Batch {
                    x: x.shallow_clone(),
                    y: Some(y.shallow_clone()),
                },
                &StepCtx::default(),
            )
            .unwrap();
        assert!(
            (l[0].1 - by_formula).abs() < 1e-5,
            "{} vs {by_formula}",
            l[0].1
        );
        let after = m.vs.variables();
        for (k, v) in before {
            let moved = (&after[&k] - v).abs().max().double_value(&[]);
            assert!(moved > 0.0, "{k} did not change");
        }
        let ev = m.eval_step(&Batch { x, y: Some(y) }).unwrap().unwrap();
        assert_eq!(ev[0].0, "loss");
        let bad = m.train_step(
            &Batch {
                x: Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)),
                y: None,
            },
            &StepCtx::default(),
        );
        assert!(bad.unwrap_err().to_string().contains("targets"));
    }
}

#[test]
fn too_long_inputs_and_bad_configs_are_clear_errors() {
    let _rng = rng_lock();
    let (g, _vs) = model(tiny(Positions::Learned, NormKind::LayerNorm, MlpKind::Gelu));
    let err = g.forward(&ids(1, 17, 23), false).unwrap_err().to_string();
    assert!(err.contains("context length 16"), "{err}");
    let bad = GptConfig {
        n_embd: 15,
        ..tiny(Positions::Learned, NormKind::LayerNorm, MlpKind::Gelu)
    };
    assert!(Gpt::new(VarStore::new(Device::Cpu).root(), bad)
        .unwrap_err()
        .to_string()
        .contains("multiple of n_head"));
}

#[test]
fn checkpoint_round_trip_keeps_the_tokenizer_and_the_samples() {
    let _rng = rng_lock();
    let vocab = Vocab::chars_of("call me ishmael.\n");
    let cfg = GptConfig {
        vocab_size: vocab.size() as i64,
        vocab: Some(vocab.clone()),
        ..tiny(Positions::Rotary, NormKind::LayerNorm, MlpKind::Gelu)
    };
    let mut m = GptModel::new("gpt", cfg, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.safetensors");
    let mut ck = Checkpoint::new("gpt", m.config_json(), TrainState::default());
    for (name, vs) in m.var_stores() {
        ck.add_var_store(&format!("model/{name}"), vs);
    }
    m.save_optimizers(&mut ck);
    ck.save(&p).unwrap();
    let back = Checkpoint::load(&p).unwrap();
    let mut m2 =
        (genmodels_transformer::gpt::entry().build)(&back.meta.config, Device::Cpu).unwrap();
    load_model_state(m2.as_mut(), &back, &p, true).unwrap();
    tch::manual_seed(3);
    let Samples::Text(a) = m.sample(2).unwrap() else {
        panic!()
    };
    tch::manual_seed(3);
    let Samples::Text(b) = m2.sample(2).unwrap() else {
        panic!()
    };
    assert_eq!(a, b);
    assert!(a[0].chars().all(|c| "call me ishmael.\n".contains(c)));
}

#[test]
fn text_stream_holds_back_incomplete_characters() {
    let _rng = rng_lock();
    let mut s = TextStream::default();
    assert_eq!(s.push("ab"), "ab");
    assert_eq!(s.push("abc\u{FFFD}"), "c");
    assert_eq!(s.push("abcü"), "ü");
    assert_eq!(s.push("abcü"), "");
}
