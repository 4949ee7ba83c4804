//! Metric benchmarks, each printed beside its Python counterpart measured in the same run
//! (benches/python/metrics_bench.py with the project's .venv, same thread count):
//!
//! - FID distance from 10k x 2048 features' statistics vs pytorch-fid (scipy `sqrtm`) and
//!   torch-fidelity (`eigvals`);
//! - FID Inception feature extraction (batch 50 at 299x299) vs the TorchScript module;
//! - precision/recall (k = 3) on N x N x 2048 features vs torch-fidelity.
//!
//! `cargo bench -p genmodels-benches --bench metrics`; `GENMODELS_BENCH_PRC_N` sets N (default 5000).

use criterion::{criterion_group, criterion_main, Criterion};
use genmodels_benches::{median_secs, report};
use genmodels_metrics::fid::{frechet_distance, FeatureStats};
use genmodels_metrics::inception::{FidInception, Tap};
use genmodels_metrics::prdc::precision_recall;
use genmodels_metrics::resize::Resize;
use tch::{Device, Kind, Tensor};

fn python(what: &str, repeats: usize, extra: &[&str]) -> Vec<(String, f64)> {
    let fid_pt = genmodels_core::assets_dir()
        .join("weights")
        .join("fid_inception_torchscript.pt");
    genmodels_benches::python(
        "metrics_bench.py",
        what,
        repeats,
        extra,
        &[("FID_TORCHSCRIPT", fid_pt)],
    )
}

fn stats(seed: i64) -> FeatureStats {
    tch::manual_seed(seed);
    let x = Tensor::randn([10_000, 2048], (Kind::Float, Device::Cpu));
    let _ = x.narrow(1, 0, 1024).g_mul_scalar_(2.0);
    FeatureStats::from_features(&x).expect("stats")
}

fn fid_distance(c: &mut Criterion) {
    let (a, b) = (stats(1), stats(2));
    let ours = median_secs(5, || {
        frechet_distance(&a, &b).expect("fid");
    });
    report(
        "FID distance, 2048-d statistics of 10k samples",
        ours,
        &python("fid_distance", 3, &[]),
    );
    let mut g = c.benchmark_group("fid");
    g.sample_size(10);
    g.bench_function("frechet_distance_2048", |bch| {
        bch.iter(|| frechet_distance(&a, &b).expect("fid"))
    });
    g.finish();
}

fn inception(c: &mut Criterion) {
    let path = FidInception::default_path();
    let Ok(net) = FidInception::load(&path, Resize::PytorchBilinear, Device::Cpu) else {
        eprintln!(
            "skipping the Inception bench: {} missing (run `cargo xtask setup`)",
            path.display()
        );
        return;
    };
    let x = Tensor::randn([50, 3, 299, 299], (Kind::Float, Device::Cpu));
    let ours = median_secs(3, || {
        net.forward_taps(&x, &[Tap::Pool3]);
    });
    report(
        "FID Inception features, batch 50 at 299x299",
        ours,
        &python("inception", 3, &[]),
    );
    let mut g = c.benchmark_group("inception");
    g.sample_size(10);
    g.bench_function("pool3_batch50", |bch| {
        bch.iter(|| net.forward_taps(&x, &[Tap::Pool3]))
    });
    g.finish();
}

fn prc(c: &mut Criterion) {
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
    let ours = median_secs(3, || {
        precision_recall(&a, &b, 3).expect("prc");
    });
    report(
        &format!("precision/recall, {n}x{n}x2048"),
        ours,
        &python("prc", 3, &[&n.to_string()]),
    );
    let mut g = c.benchmark_group("prc");
    g.sample_size(10);
    g.bench_function("precision_recall", |bch| {
        bch.iter(|| precision_recall(&a, &b, 3).expect("prc"))
    });
    g.finish();
}

criterion_group!(benches, fid_distance, inception, prc);
criterion_main!(benches);
