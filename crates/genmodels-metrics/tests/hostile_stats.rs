//! Hostile FID statistics files: `FeatureStats::load` must answer a corrupt or malicious
//! statistics file with `Ok` or a one-line `Err`, never a panic. Starts from a file written by
//! `FeatureStats::save` and applies the seeded mutations of `genmodels-core/tests/mutate`
//! (safetensors header length, shapes, dtypes, offsets, dropped and renamed tensors, byte-level
//! truncations, flips and size fields). Statistics that load must give a finite FID against
//! themselves. `GENMODELS_MUTATIONS` sets the count (default 400).

#[path = "../../genmodels-core/tests/mutate/mod.rs"]
mod mutate;

use genmodels_metrics::fid::{frechet_distance, FeatureStats};
use mutate::*;
use tch::{Device, Kind, Tensor};

#[test]
fn statistics_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("stats.safetensors");
    let f = Tensor::arange(60, (Kind::Float, Device::Cpu))
        .view([12, 5])
        .sin();
    FeatureStats::from_features(&f).unwrap().save(&p).unwrap();
    let base = std::fs::read(&p).unwrap();
    let mut t = Tally::default();

    // Hand-made ones: each field wrong in turn.
    let o = (Kind::Double, Device::Cpu);
    let mu = Tensor::zeros([3], o);
    let sigma = Tensor::eye(3, o);
    let n = Tensor::from(10i64);
    let cases: Vec<(&str, Vec<(&str, Tensor)>)> = vec![
        (
            "scalar mu",
            vec![
                ("mu", Tensor::from(1.0f64)),
                ("sigma", sigma.copy()),
                ("num_samples", n.copy()),
            ],
        ),
        (
            "sigma not square",
            vec![
                ("mu", mu.copy()),
                ("sigma", Tensor::zeros([3, 2], o)),
                ("num_samples", n.copy()),
            ],
        ),
        (
            "vector num_samples",
            vec![
                ("mu", mu.copy()),
                ("sigma", sigma.copy()),
                ("num_samples", Tensor::from_slice(&[1i64, 2])),
            ],
        ),
        (
            "empty num_samples",
            vec![
                ("mu", mu.copy()),
                ("sigma", sigma.copy()),
                (
                    "num_samples",
                    Tensor::zeros([0], (Kind::Int64, Device::Cpu)),
                ),
            ],
        ),
        (
            "one sample",
            vec![
                ("mu", mu.copy()),
                ("sigma", sigma.copy()),
                ("num_samples", Tensor::from(1i64)),
            ],
        ),
        (
            "NaN sigma",
            vec![
                ("mu", mu.copy()),
                ("sigma", sigma.copy() * f64::NAN),
                ("num_samples", n.copy()),
            ],
        ),
        (
            "integer mu",
            vec![
                ("mu", Tensor::zeros([3], (Kind::Int64, Device::Cpu))),
                ("sigma", sigma.copy()),
                ("num_samples", n.copy()),
            ],
        ),
        (
            "no sigma",
            vec![("mu", mu.copy()), ("num_samples", n.copy())],
        ),
        (
            "empty mu",
            vec![
                ("mu", Tensor::zeros([0], o)),
                ("sigma", Tensor::zeros([0, 0], o)),
                ("num_samples", n.copy()),
            ],
        ),
    ];
    for (what, tensors) in &cases {
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, v)| (*k, v)).collect();
        Tensor::write_safetensors(&refs, &p).unwrap();
        t.run(
            "regression",
            || what.to_string(),
            || {
                let r = FeatureStats::load(&p).map(|_| ());
                assert!(r.is_err(), "{what} loaded");
                r
            },
        );
    }

    for i in 0..mutation_count(400) {
        let mut rng = XorShift::new(0xF1D ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9));
        let (bytes, kind) = if rng.chance(1, 3) {
            let mut b = base.clone();
            let k = mutate_bytes(&mut rng, &mut b);
            (b, k)
        } else {
            mutate_safetensors(&mut rng, &base, None)
        };
        std::fs::write(&p, &bytes).unwrap();
        t.run(
            kind,
            || format!("stats case {i}"),
            || {
                let s = FeatureStats::load(&p)?;
                let d = frechet_distance(&s, &s)?;
                assert!(d.is_finite(), "FID of loaded statistics is {d}");
                Ok::<(), genmodels_core::Error>(())
            },
        );
    }
    t.finish("FID statistics");

    // save is atomic: no temporary file is left next to the statistics.
    FeatureStats::from_features(&f).unwrap().save(&p).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["stats.safetensors".to_string()]);
    assert_peak_rss_below(2 << 30);
}
