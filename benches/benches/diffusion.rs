//! Diffusion benchmarks (issue 13), each beside the same work in PyTorch from Python measured in
//! the same run (benches/python/models_bench.py as a worker, same thread count), on the
//! identical network: our `UNet2D` with `UNet2DConfig::small(1, 28, None)` (levels of 32, 64,
//! 64 channels, DownBlock2D / AttnDownBlock2D / DownBlock2D, 2 layers per block, 8 groups,
//! dropout 0.1; 1.62 M parameters), and diffusers' `UNet2DModel` built from the `config.json`
//! our model writes (target/bench/unet-small/config.json); the parameter counts are compared.
//!
//! - one DDPM training step (the `ddpm` model's `train_step`: t uniform, x_t by the DDPM
//!   schedule, the simple epsilon loss, Adam 2e-4) at batch 64 of 1x28x28, vs the same step with
//!   `DDPMScheduler.add_noise` and `torch.optim.Adam` (eager; with Adam(fused=True); with that
//!   and the UNet through `torch.compile`);
//! - DDIM sampling with 50 steps (eta 0) of a batch of 16 (the `ddpm` model's sampler, DDIM-50
//!   by default) vs diffusers' `DDIMScheduler` (defaults, the same as our `SchedulerConfig`'s)
//!   in DDIMPipeline's loop (eager; the UNet through `torch.compile`).
//!
//! Target (issue 13): ours at most 0.8x the eager time, i.e. ratio Python / ours >= 1.25.
//! Rounds as in `benches/models.rs`; criterion's own timing of these (seconds per call) runs
//! only with `GENMODELS_BENCH_CRITERION` set.
//!
//! `cargo bench -p genmodels-benches --bench diffusion`.

use criterion::{criterion_group, criterion_main, Criterion};
use genmodels_benches::{compare, criterion_timing, finish, root, selected, with_python, Spec};
use genmodels_core::data::Batch;
use genmodels_core::model::Model;
use genmodels_core::optim::StepCtx;
use genmodels_diffusion::ddpm::{Ddpm, DdpmConfig};
use serde_json::json;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const SCRIPT: &str = "models_bench.py";
const TARGET: f64 = 1.25;
const SIDE: i64 = 28;

/// A `ddpm` model with the default config (the small U-Net for 1x28x28, DDIM-50 sampling),
/// and the diffusers `config.json` of its U-Net written for the Python side.
fn model() -> (Ddpm, PathBuf, i64) {
    tch::manual_seed(0);
    let cfg = DdpmConfig {
        channels: 1,
        image_size: SIDE,
        ..Default::default()
    };
    let unet = cfg.unet_config();
    let m = Ddpm::new("ddpm", cfg, Device::Cpu).expect("ddpm");
    let dir = root().join("target/bench/unet-small");
    std::fs::create_dir_all(&dir).expect("target/bench");
    let path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&unet.to_diffusers_json().expect("config json"))
        .expect("config json");
    std::fs::write(&path, text + "\n").expect("writing the U-Net config");
    let params: i64 = m
        .var_stores()
        .iter()
        .flat_map(|(_, vs)| vs.trainable_variables())
        .map(|t| t.numel() as i64)
        .sum();
    (m, path, params)
}

fn check_params(ours: i64, setup: &serde_json::Value) {
    match setup["params"].as_i64() {
        Some(p) if p == ours => println!("   parameters: {ours} on both sides"),
        Some(p) => println!(
            "   warning: parameter counts differ: ours {ours}, diffusers {p} (not the same network)"
        ),
        None => println!("   parameters: ours {ours} (no Python count)"),
    }
}

fn unet_train_step(c: &mut Criterion) {
    if !selected("unet_train_step") {
        return;
    }
    let (mut m, config, params) = model();
    let x = Tensor::rand([64, 1, SIDE, SIDE], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let batch = Batch { x, y: None };
    let ctx = StepCtx::default();
    let spec = Spec {
        name: "DDPM training step, UNet2D small (1.62 M), batch 64 of 1x28x28, Adam",
        what: "unet_train_step",
        args: json!({"config": config, "batch": 64, "side": SIDE}),
        repeats: 3,
        targets: &[("diffusers UNet2DModel step, eager", TARGET)],
    };
    let result = with_python(SCRIPT, &[], |py| {
        compare(py, &spec, || {
            m.train_step(&batch, &ctx).expect("step");
        })
    });
    check_params(params, &result.setup);
    if criterion_timing(true) {
        let mut g = c.benchmark_group("diffusion");
        g.sample_size(10);
        g.bench_function("unet_train_step_b64", |b| {
            b.iter(|| m.train_step(&batch, &ctx).expect("step"))
        });
        g.finish();
    }
}

fn ddim_sample(c: &mut Criterion) {
    if !selected("ddim_sample") {
        return;
    }
    let (mut m, config, params) = model();
    let n = 16;
    let spec = Spec {
        name: "DDIM-50 sampling, UNet2D small (1.62 M), batch 16 of 1x28x28",
        what: "ddim_sample",
        args: json!({"config": config, "batch": n, "side": SIDE, "steps": 50}),
        repeats: 1,
        targets: &[("diffusers DDIMScheduler loop, eager", TARGET)],
    };
    let result = with_python(SCRIPT, &[], |py| {
        compare(py, &spec, || {
            m.sample(n).expect("sample");
        })
    });
    check_params(params, &result.setup);
    if criterion_timing(true) {
        let mut g = c.benchmark_group("diffusion");
        g.sample_size(10);
        g.bench_function("ddim50_sample_b16", |b| {
            b.iter(|| m.sample(n).expect("sample"))
        });
        g.finish();
    }
}

fn done(_: &mut Criterion) {
    finish(SCRIPT);
}

criterion_group!(benches, unet_train_step, ddim_sample, done);
criterion_main!(benches);
