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
use genmodels_metrics::fid::{frechet_distance, FeatureStats};
use genmodels_metrics::inception::{FidInception, Tap};
use genmodels_metrics::prdc::precision_recall;
use genmodels_metrics::resize::Resize;
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the Python counterpart; returns (name, median seconds) pairs.
fn python(what: &str, repeats: usize, extra: &[&str]) -> Vec<(String, f64)> {
    let py = root().join(".venv/bin/python");
    let fid_pt = genmodels_core::assets_dir()
        .join("weights")
        .join("fid_inception_torchscript.pt");
    let out = std::process::Command::new(py)
        .arg(root().join("benches/python/metrics_bench.py"))
        .args([
            what,
            &repeats.to_string(),
            &tch::get_num_threads().to_string(),
        ])
        .args(extra)
        .env("FID_TORCHSCRIPT", fid_pt)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let line = String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .unwrap_or("{}")
                .to_string();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            v.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
                        .collect()
                })
                .unwrap_or_default()
        }
        Ok(o) => {
            eprintln!(
                "python {what} failed: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            vec![]
        }
        Err(e) => {
            eprintln!("python {what} could not start ({e}); run `cargo xtask setup`");
            vec![]
        }
    }
}

fn median_secs(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ts: Vec<f64> = (0..repeats)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(|a, b| a.total_cmp(b));
    ts[ts.len() / 2]
}

fn report(name: &str, ours: f64, theirs: &[(String, f64)]) {
    println!("\n== {name}: ours {:.4} s (median)", ours);
    for (k, v) in theirs {
        println!("   {k}: {v:.4} s  ->  ours is {:.2}x faster", v / ours);
    }
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
        .unwrap_or(5000);
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
