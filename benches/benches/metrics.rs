//! Metric benchmarks, each printed beside its Python counterpart measured in the same run
//! (benches/python/metrics_bench.py with the project's .venv, same thread count):
//!
//! - FID distance from 10k x 2048 features' statistics vs pytorch-fid (scipy `sqrtm`) and
//!   torch-fidelity (`eigvals`);
//! - FID Inception feature extraction (batch 50 at 299x299) vs the TorchScript module;
//! - precision/recall (k = 3) on N x N x 2048 features vs torch-fidelity.
//!
//! Each comparison runs `rounds()` rounds of ours and Python back to back and records the ratio
//! of each round (genmodels_benches::compare); targets: FID distance 8x pytorch-fid and 2.5x
//! torch-fidelity, feature extraction and precision/recall at least 1x.
//!
//! `cargo bench -p genmodels-benches --bench metrics`; `GENMODELS_BENCH_PRC_N` sets N (default
//! 5000; 2000 with `GENMODELS_BENCH_QUICK`).

use criterion::{criterion_group, criterion_main, Criterion};
use genmodels_benches::{compare, finish, selected, with_python, Spec};
use genmodels_metrics::fid::{frechet_distance, FeatureStats};
use genmodels_metrics::inception::{FidInception, Tap};
use genmodels_metrics::prdc::precision_recall;
use genmodels_metrics::resize::Resize;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

const SCRIPT: &str = "metrics_bench.py";

fn versus(
    name: &str,
    what: &str,
    args: Value,
    repeats: usize,
    targets: &[(&str, f64)],
    ours: impl FnMut(),
) {
    let fid_pt = genmodels_core::assets_dir()
        .join("weights")
        .join("fid_inception_torchscript.pt");
    let spec = Spec {
        name,
        what,
        args,
        repeats,
        targets,
    };
    with_python(SCRIPT, &[("FID_TORCHSCRIPT", fid_pt)], |py| {
        compare(py, &spec, ours)
    });
}

fn stats(seed: i64) -> FeatureStats {
    tch::manual_seed(seed);
    let x = Tensor::randn([10_000, 2048], (Kind::Float, Device::Cpu));
    let _ = x.narrow(1, 0, 1024).g_mul_scalar_(2.0);
    FeatureStats::from_features(&x).expect("stats")
}

fn fid_distance(c: &mut Criterion) {
    if !selected("fid_distance") {
        return;
    }
    let (a, b) = (stats(1), stats(2));
    versus(
        "FID distance, 2048-d statistics of 10k samples",
        "fid_distance",
        json!({}),
        1,
        &[
            ("pytorch-fid (scipy sqrtm)", 8.0),
            ("torch-fidelity (eigvals)", 2.5),
        ],
        || {
            frechet_distance(&a, &b).expect("fid");
        },
    );
    let mut g = c.benchmark_group("fid");
    g.sample_size(10);
    g.bench_function("frechet_distance_2048", |bch| {
        bch.iter(|| frechet_distance(&a, &b).expect("fid"))
    });
    g.finish();
}

fn inception(c: &mut Criterion) {
    if !selected("inception") {
        return;
    }
    let path = FidInception::default_path();
    let Ok(net) = FidInception::load(&path, Resize::PytorchBilinear, Device::Cpu) else {
        eprintln!(
            "skipping the Inception bench: {} missing (run `cargo xtask setup`)",
            path.display()
        );
        return;
    };
    let x = Tensor::randn([50, 3, 299, 299], (Kind::Float, Device::Cpu));
    versus(
        "FID Inception features, batch 50 at 299x299",
        "inception",
        json!({}),
        1,
        &[("TorchScript FID Inception, batch 50", 1.0)],
        || {
            net.forward_taps(&x, &[Tap::Pool3]);
        },
    );
    let mut g = c.benchmark_group("inception");
    g.sample_size(10);
    g.bench_function("pool3_batch50", |bch| {
        bch.iter(|| net.forward_taps(&x, &[Tap::Pool3]))
    });
    g.finish();
}

fn prc(c: &mut Criterion) {
    if !selected("prc") {
        return;
    }
    let n: i64 = std::env::var("GENMODELS_BENCH_PRC_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var_os("GENMODELS_BENCH_QUICK").is_some() {
            2000
        } else {
            5000
        });
    tch::manual_seed(0);
    let a = Tensor::randn([n, 2048], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, 2048], (Kind::Float, Device::Cpu));
    let reference = format!("torch-fidelity precision/recall {n}x{n}x2048");
    versus(
        &format!("precision/recall, {n}x{n}x2048"),
        "prc",
        json!({ "n": n }),
        1,
        &[(reference.as_str(), 1.0)],
        || {
            precision_recall(&a, &b, 3).expect("prc");
        },
    );
    let mut g = c.benchmark_group("prc");
    g.sample_size(10);
    g.bench_function("precision_recall", |bch| {
        bch.iter(|| precision_recall(&a, &b, 3).expect("prc"))
    });
    g.finish();
}

fn done(_: &mut Criterion) {
    finish(SCRIPT);
}

criterion_group!(benches, fid_distance, inception, prc, done);
criterion_main!(benches);
