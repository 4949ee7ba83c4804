//! Model step benchmarks, each beside the same model in PyTorch from Python measured in the
//! same run (benches/python/models_bench.py as a worker, same thread count), with the reference
//! first and then what a speed-minded PyTorch user adds (fused optimisers, `torch.compile`):
//!
//! - one DCGAN training step at batch 64 on 28x28 (D then G, Adam 2e-4 / 0.5) vs the PyTorch
//!   DCGAN example's step on the same networks (the reference), vs that step given the two
//!   things ours does differently (Adam(fused=True), D frozen during the G update), and vs that
//!   through `torch.compile`;
//! - one StyleGAN2 training step at batch 32 on 28x28 (the `stylegan2` entry with fmap 64 / 16,
//!   as trained in docs/results.md; D then G with style mixing, a step without the lazy R1,
//!   i.e. 15 of every 16) vs the same networks and step in PyTorch with D frozen during the G
//!   update as both reference implementations do: with grouped modulated convolutions
//!   (rosinality's; the reference), with StyleGAN2-ADA's unfused ones (ours), unfused with
//!   Adam(fused=True), and that through `torch.compile`;
//! - one IWAE training step (k = 5, batch 100, the IWAE paper's MLPs, dynamic binarisation) vs
//!   the same networks, bound and Adam in PyTorch (eager; compiled with fused Adam);
//! - one VAE training step (the `vae` default networks, ELBO, batch 128) vs the same in PyTorch
//!   (eager; compiled with fused Adam);
//! - the importance-sampled test NLL of 100 images with K = 500 (a tenth of the protocol's
//!   5000 per image, the same work per sample) vs the same estimator in PyTorch, eager and with
//!   each decoder pass through `torch.compile`;
//! - one VQ-VAE autoencoder step (batch 64, straight-through, commitment, EMA codebook) vs the
//!   same networks and update in PyTorch (eager; compiled with fused Adam);
//! - one JEM training step (batch 64, the `jem` default network and chain: 20 SGLD steps from
//!   the replay buffer, then CE + CD) vs the same step in PyTorch (eager; compiled network
//!   with fused Adam);
//! - one GPT training step in nanoGPT's CPU configuration (4 x 4 x 128, context 64, batch 12,
//!   AdamW, clipping at 1.0) vs a nanoGPT-style model and loop (eager; compiled with fused AdamW);
//! - batch-1 generation of 200 tokens with the KV cache (4 x 4 x 128, context 256, sampling at
//!   temperature 1) vs `transformers`' `generate` on the same GPT-2 shape, vs a plain PyTorch
//!   decoding loop with a preallocated KV cache on the same weights, and vs that loop with a
//!   static cache through `torch.compile`.
//!
//! The diffusion workloads are in `benches/diffusion.rs`. Each comparison runs `rounds()` rounds
//! (7; 3 with `GENMODELS_BENCH_QUICK`; `GENMODELS_BENCH_ROUNDS` to choose) of ours and every
//! Python variant back to back and records the ratio of each round (genmodels_benches::compare);
//! `GENMODELS_BENCH_ONLY=dcgan,gpt` picks workloads by name.
//!
//! `cargo bench -p genmodels-benches --bench models`.

use criterion::{criterion_group, criterion_main, Criterion};
use genmodels_benches::{compare, finish, selected, with_python, Spec};
use genmodels_core::data::Batch;
use genmodels_core::model::Likelihood;
use genmodels_core::model::Model;
use genmodels_core::optim::StepCtx;
use genmodels_core::samplers::LogitsProcessor;
use genmodels_ebm::model::{Ebm, EbmConfig};
use genmodels_gan::dcgan::{Dcgan, DcganConfig};
use genmodels_gan::stylegan::{StyleGan, StyleGanConfig};
use genmodels_transformer::generate::{generate, GenerateConfig};
use genmodels_transformer::gpt::{GptConfig, GptModel, MlpKind};
use genmodels_vae::vae::{Activation, Objective, Vae, VaeConfig};
use genmodels_vae::vqvae::{VqVae, VqVaeConfig};
use serde_json::json;
use tch::{Device, Kind, Tensor};

const VOCAB: i64 = 96;
const SCRIPT: &str = "models_bench.py";

/// Times ours against the Python variants of `what` (see the module documentation).
fn versus(name: &str, what: &str, repeats: usize, targets: &[(&str, f64)], ours: impl FnMut()) {
    versus_args(name, what, json!({}), repeats, targets, ours)
}

fn dcgan_step(c: &mut Criterion) {
    if !selected("dcgan_step") {
        return;
    }
    tch::manual_seed(0);
    let mut m = Dcgan::new(DcganConfig::default(), Device::Cpu).expect("dcgan");
    let x = Tensor::rand([64, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let batch = Batch { x, y: None };
    let ctx = StepCtx::default();
    versus(
        "DCGAN training step, batch 64, 28x28",
        "dcgan_step",
        10,
        &[("pytorch dcgan step", 1.11)],
        || {
            m.train_step(&batch, &ctx).expect("step");
        },
    );
    let mut g = c.benchmark_group("dcgan");
    g.sample_size(10);
    g.bench_function("train_step_b64", |b| {
        b.iter(|| m.train_step(&batch, &ctx).expect("step"))
    });
    g.finish();
}

fn stylegan2_step(c: &mut Criterion) {
    if !selected("stylegan2_step") {
        return;
    }
    tch::manual_seed(0);
    let cfg = StyleGanConfig {
        fmap_max: 64,
        fmap_min: 16,
        ..Default::default()
    };
    let mut m = StyleGan::new(cfg, Device::Cpu).expect("stylegan2");
    let x = Tensor::rand([32, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let batch = Batch { x, y: None };
    // step 1: not a lazy-R1 step (those are the steps divisible by r1_every = 16)
    let ctx = StepCtx {
        step: 1,
        ..Default::default()
    };
    versus(
        "StyleGAN2 training step, batch 32, 28x28 (fmap 64/16, no R1 this step)",
        "stylegan2_step",
        10,
        &[("pytorch stylegan2 step", 1.11)],
        || {
            m.train_step(&batch, &ctx).expect("step");
        },
    );
    let mut g = c.benchmark_group("stylegan2");
    g.sample_size(10);
    g.bench_function("train_step_b32", |b| {
        b.iter(|| m.train_step(&batch, &ctx).expect("step"))
    });
    g.finish();
}

fn gpt_step(c: &mut Criterion) {
    if !selected("gpt_step") {
        return;
    }
    tch::manual_seed(0);
    let cfg = GptConfig {
        vocab_size: VOCAB,
        ..GptConfig::cpu_mini()
    };
    let mut m = GptModel::new("gpt-mini", cfg, Device::Cpu).expect("gpt");
    let x = Tensor::randint(VOCAB, [12, 64], (Kind::Int64, Device::Cpu));
    let y = Tensor::randint(VOCAB, [12, 64], (Kind::Int64, Device::Cpu));
    let batch = Batch { x, y: Some(y) };
    let ctx = StepCtx {
        grad_clip: Some(1.0),
        ..Default::default()
    };
    versus(
        "GPT training step, nanoGPT CPU config (4x4x128, block 64, batch 12)",
        "gpt_step",
        20,
        &[("pytorch nanoGPT step", 1.11)],
        || {
            m.train_step(&batch, &ctx).expect("step");
        },
    );
    let mut g = c.benchmark_group("gpt");
    g.sample_size(20);
    g.bench_function("train_step_cpu_mini", |b| {
        b.iter(|| m.train_step(&batch, &ctx).expect("step"))
    });
    g.finish();
}

fn gpt_generate(c: &mut Criterion) {
    if !selected("gpt_generate") {
        return;
    }
    tch::manual_seed(0);
    let cfg = GptConfig {
        vocab_size: VOCAB,
        block_size: 256,
        n_layer: 4,
        n_head: 4,
        n_embd: 128,
        mlp: MlpKind::GeluTanh,
        ..Default::default()
    };
    let m = GptModel::new("gpt", cfg, Device::Cpu).expect("gpt");
    let gen = GenerateConfig {
        max_new_tokens: 200,
        processor: LogitsProcessor::default(),
        use_cache: true,
    };
    let prompt = vec![vec![1u32]];
    let run = || {
        generate(&m.gpt, &prompt, &gen, |_, _| false).expect("generate");
    };
    versus(
        "GPT generation, batch 1, 200 new tokens with KV cache (4x4x128); time ratio = tokens/s ratio",
        "gpt_generate",
        5,
        &[("transformers generate", 1.5)],
        run,
    );
    let mut g = c.benchmark_group("gpt");
    g.sample_size(10);
    g.bench_function("generate_200_tokens", |b| b.iter(run));
    g.finish();
}

fn iwae_step(c: &mut Criterion) {
    if !selected("iwae_step") {
        return;
    }
    tch::manual_seed(0);
    let cfg = VaeConfig {
        objective: Objective::Iwae,
        k: 5,
        ..VaeConfig::iwae_paper()
    };
    let mut m = Vae::new("iwae", cfg, Device::Cpu).expect("iwae");
    // Intensities in [-1, 1]; the model binarises them afresh at every step.
    let x = Tensor::rand([100, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let batch = Batch { x, y: None };
    let ctx = StepCtx::default();
    versus(
        "IWAE training step, k = 5, batch 100, MLP 784-200-200-50",
        "iwae_step",
        20,
        &[],
        || {
            m.train_step(&batch, &ctx).expect("step");
        },
    );
    let mut g = c.benchmark_group("iwae");
    g.sample_size(20);
    g.bench_function("train_step_k5_b100", |b| {
        b.iter(|| m.train_step(&batch, &ctx).expect("step"))
    });
    g.finish();
}

/// The Python side's description of a VAE configuration (benches/python/models_bench.py).
fn vae_args(cfg: &VaeConfig) -> serde_json::Value {
    json!({
        "hidden": cfg.hidden,
        "layers": cfg.hidden_layers,
        "z": cfg.z_dim,
        "activation": match cfg.activation {
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
        },
        "adam_eps": cfg.adam_eps,
    })
}

/// Ours against the Python workload `what` (with `args`) in the same run, round by round.
fn versus_args(
    name: &str,
    what: &str,
    args: serde_json::Value,
    repeats: usize,
    targets: &[(&str, f64)],
    ours: impl FnMut(),
) {
    let spec = Spec {
        name,
        what,
        args,
        repeats,
        targets,
    };
    with_python(SCRIPT, &[], |py| compare(py, &spec, ours));
}

fn vae_step(c: &mut Criterion) {
    if !selected("vae_step") {
        return;
    }
    tch::manual_seed(0);
    let cfg = VaeConfig::default();
    let mut args = vae_args(&cfg);
    args["batch"] = json!(128);
    let mut m = Vae::new("vae", cfg, Device::Cpu).expect("vae");
    let x = Tensor::rand([128, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let batch = Batch { x, y: None };
    let ctx = StepCtx::default();
    versus_args(
        "VAE training step (ELBO), batch 128, the vae default networks",
        "vae_step",
        args,
        20,
        &[],
        || {
            m.train_step(&batch, &ctx).expect("step");
        },
    );
    let mut g = c.benchmark_group("vae");
    g.sample_size(20);
    g.bench_function("train_step_b128", |b| {
        b.iter(|| m.train_step(&batch, &ctx).expect("step"))
    });
    g.finish();
}

fn vae_nll(c: &mut Criterion) {
    if !selected("vae_nll") {
        return;
    }
    tch::manual_seed(0);
    let cfg = VaeConfig::default();
    let mut args = vae_args(&cfg);
    args["n"] = json!(100);
    args["k"] = json!(500);
    let m = Vae::new("vae", cfg, Device::Cpu).expect("vae");
    let x = Tensor::rand([100, 784], (Kind::Float, Device::Cpu)).bernoulli();
    let run = || {
        let ll = Likelihood::log_likelihood(&m, &x, 500).expect("nll");
        std::hint::black_box(ll.mean(Kind::Float).double_value(&[]));
    };
    versus_args(
        "importance-sampled NLL, 100 images x K = 500 samples, the vae default networks",
        "vae_nll",
        args,
        5,
        &[],
        run,
    );
    let mut g = c.benchmark_group("vae");
    g.sample_size(10);
    g.bench_function("nll_100_images_k500", |b| b.iter(run));
    g.finish();
}

fn vqvae_step(c: &mut Criterion) {
    if !selected("vqvae_step") {
        return;
    }
    tch::manual_seed(0);
    let mut m = VqVae::new(VqVaeConfig::default(), Device::Cpu).expect("vqvae");
    let x = Tensor::rand([64, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let batch = Batch { x, y: None };
    let ctx = StepCtx::default();
    versus(
        "VQ-VAE autoencoder step, batch 64, EMA codebook of 128 x 16",
        "vqvae_step",
        10,
        &[],
        || {
            m.train_step(&batch, &ctx).expect("step");
        },
    );
    let mut g = c.benchmark_group("vqvae");
    g.sample_size(10);
    g.bench_function("train_step_b64", |b| {
        b.iter(|| m.train_step(&batch, &ctx).expect("step"))
    });
    g.finish();
}

fn jem_step(c: &mut Criterion) {
    if !selected("jem_step") {
        return;
    }
    tch::manual_seed(0);
    let cfg = EbmConfig::jem(10);
    let args = json!({"batch": 64, "steps": cfg.sgld.steps, "width": cfg.width, "l2": cfg.l2});
    let mut m = Ebm::new("jem", cfg, Device::Cpu).expect("jem");
    let x = Tensor::rand([64, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let y = Tensor::randint(10, [64], (Kind::Int64, Device::Cpu));
    let batch = Batch { x, y: Some(y) };
    let ctx = StepCtx::default();
    versus_args(
        "JEM training step, batch 64: 20 SGLD steps from the replay buffer, then CE + CD",
        "jem_step",
        args,
        5,
        &[],
        || {
            m.train_step(&batch, &ctx).expect("step");
        },
    );
    let mut g = c.benchmark_group("jem");
    g.sample_size(10);
    g.bench_function("train_step_b64", |b| {
        b.iter(|| m.train_step(&batch, &ctx).expect("step"))
    });
    g.finish();
}

fn done(_: &mut Criterion) {
    finish(SCRIPT);
}

criterion_group!(
    benches,
    dcgan_step,
    stylegan2_step,
    iwae_step,
    vae_step,
    vae_nll,
    vqvae_step,
    jem_step,
    gpt_step,
    gpt_generate,
    done
);
criterion_main!(benches);
