//! Parity with the reference implementations, on fixtures that they computed
//! (scripts/make_metric_fixtures.py: pytorch-fid, torch-fidelity, prdc, numpy).

use genmodels_metrics::fid::fid_from_features;
use genmodels_metrics::isc::inception_score;
use genmodels_metrics::kid::{kid, KidConfig};
use genmodels_metrics::np_random::RandomState;
use genmodels_metrics::prdc::{density_coverage, precision_recall};
use std::collections::HashMap;
use tch::Tensor;

fn fixtures() -> HashMap<String, Tensor> {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics.safetensors");
    Tensor::read_safetensors(&p)
        .expect("fixture file")
        .into_iter()
        .collect()
}

fn scalar(f: &HashMap<String, Tensor>, k: &str) -> f64 {
    f[k].double_value(&[])
}

fn rel_close(got: f64, want: f64, tol: f64, what: &str) {
    let rel = (got - want).abs() / want.abs().max(1e-12);
    assert!(rel <= tol, "{what}: ours {got:.12} vs reference {want:.12} (relative difference {rel:.2e} > {tol:.0e})");
}

#[test]
fn numpy_legacy_random_state() {
    let f = fixtures();
    let perm: Vec<i64> = RandomState::new(2020)
        .permutation(1000)
        .into_iter()
        .map(|i| i as i64)
        .collect();
    assert_eq!(
        perm,
        Vec::<i64>::try_from(&f["np_permutation_2020_1000"]).unwrap()
    );
    let mut rs = RandomState::new(2020);
    let mut c = rs.choice_without_replacement(300, 100);
    c.extend(rs.choice_without_replacement(250, 100));
    let c: Vec<i64> = c.into_iter().map(|i| i as i64).collect();
    assert_eq!(c, Vec::<i64>::try_from(&f["np_choices_2020"]).unwrap());
}

#[test]
fn fid_equals_pytorch_fid() {
    let f = fixtures();
    rel_close(
        fid_from_features(&f["real"], &f["fake"]).unwrap(),
        scalar(&f, "fid"),
        1e-6,
        "FID",
    );
}

#[test]
fn kid_equals_torch_fidelity() {
    let f = fixtures();
    let k = kid(
        &f["real"],
        &f["fake"],
        &KidConfig {
            subsets: 20,
            subset_size: 100,
            ..Default::default()
        },
    )
    .unwrap();
    rel_close(k.mean, scalar(&f, "kid_mean"), 1e-9, "KID mean");
    rel_close(k.std, scalar(&f, "kid_std"), 1e-9, "KID std");
}

#[test]
fn inception_score_equals_torch_fidelity() {
    let f = fixtures();
    let s = inception_score(&f["logits"]).unwrap();
    rel_close(s.mean, scalar(&f, "isc_mean"), 1e-12, "IS mean");
    rel_close(s.std, scalar(&f, "isc_std"), 1e-9, "IS std");
}

#[test]
fn precision_recall_equal_torch_fidelity() {
    let f = fixtures();
    let (p, r) = precision_recall(&f["real"], &f["fake"], 3).unwrap();
    rel_close(p, scalar(&f, "precision"), 1e-6, "precision");
    rel_close(r, scalar(&f, "recall"), 1e-6, "recall");
}

#[test]
fn density_coverage_equal_prdc() {
    let f = fixtures();
    let (d, c) = density_coverage(&f["real"], &f["fake"], 5).unwrap();
    rel_close(d, scalar(&f, "density"), 1e-12, "density");
    rel_close(c, scalar(&f, "coverage"), 1e-12, "coverage");
}
