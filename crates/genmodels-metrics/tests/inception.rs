//! The native FID Inception and the resize conventions against the originals
//! (scripts/make_inception_fixtures.py: the TorchScript module, F.interpolate, torch-fidelity's
//! TF1 bilinear, PIL bicubic).

use genmodels_metrics::inception::{FeatureExtractor, FidInception, Tap};
use genmodels_metrics::resize::{resize, Resize};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

fn fixtures() -> HashMap<String, Tensor> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/inception.safetensors");
    Tensor::read_safetensors(&p)
        .expect("fixture file")
        .into_iter()
        .collect()
}

fn max_rel(ours: &Tensor, theirs: &Tensor) -> f64 {
    let diff = (ours.to_kind(Kind::Double) - theirs.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[]);
    diff / theirs.to_kind(Kind::Double).abs().max().double_value(&[])
}

const MODES: [(&str, Resize); 3] = [
    ("pytorch", Resize::PytorchBilinear),
    ("tf1", Resize::Tf1Bilinear),
    ("pil", Resize::PilBicubic),
];

#[test]
fn resizes_match_their_references() {
    let f = fixtures();
    for (tag, mode) in MODES {
        for (src, size, key) in [
            ("img28", 61, format!("resize_{tag}_28_61")),
            ("img64", 29, format!("resize_{tag}_64_29")),
        ] {
            let x = f[src].to_kind(Kind::Float);
            let ours = resize(&x, size, size, mode).unwrap();
            let err = (ours - &f[&key]).abs().max().double_value(&[]);
            assert!(
                err < 2e-3,
                "{key}: max abs difference {err} on a 0..255 scale"
            );
        }
    }
}

#[test]
fn features_match_the_torchscript_module() {
    let f = fixtures();
    let path = FidInception::default_path();
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup`",
        path.display()
    );
    for (tag, mode) in MODES {
        let net = FidInception::load(&path, mode, Device::Cpu).unwrap();
        let x = net.preprocess(&f["img28"].to_kind(Kind::Float)).unwrap();
        let taps = if mode == Resize::PytorchBilinear {
            vec![Tap::Block64, Tap::Block192, Tap::Block768, Tap::Pool3]
        } else {
            vec![Tap::Pool3]
        };
        let out = net.forward_taps(&x, &taps);
        let pool3 = out.last().unwrap();
        let rel = max_rel(pool3, &f[&format!("pool3_{tag}")]);
        assert!(
            rel < 1e-4,
            "pool3 in {tag} mode: relative difference {rel:.2e}"
        );
        if mode == Resize::PytorchBilinear {
            for (t, key) in out.iter().zip(["tap64", "tap192", "tap768"]) {
                let rel = max_rel(t, &f[key]);
                assert!(rel < 1e-4, "{key}: relative difference {rel:.2e}");
            }
        }
    }
}

#[test]
fn grey_images_are_repeated_and_bad_shapes_refused() {
    let path = FidInception::default_path();
    let net = FidInception::load(&path, Resize::PytorchBilinear, Device::Cpu).unwrap();
    let grey = Tensor::full([1, 1, 8, 8], 100.0, (Kind::Float, Device::Cpu));
    let rgb = grey.repeat([1, 3, 1, 1]);
    assert!(net
        .preprocess(&grey)
        .unwrap()
        .equal(&net.preprocess(&rgb).unwrap()));
    assert!(net
        .features(&Tensor::zeros([1, 2, 8, 8], (Kind::Float, Device::Cpu)))
        .is_err());
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("w.safetensors");
    Tensor::write_safetensors(
        &[("x", &Tensor::zeros([1], (Kind::Float, Device::Cpu)))],
        &bad,
    )
    .unwrap();
    assert!(
        FidInception::load(&bad, Resize::PytorchBilinear, Device::Cpu)
            .err()
            .unwrap()
            .to_string()
            .contains("missing")
    );
}
