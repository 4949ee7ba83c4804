//! LPIPS against the `lpips` package (scripts/make_lpips_fixtures.py).

use genmodels_metrics::lpips::{Lpips, LpipsNet};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

#[test]
fn lpips_equals_the_reference_package() {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lpips.safetensors");
    let f: HashMap<String, Tensor> = Tensor::read_safetensors(&p).unwrap().into_iter().collect();
    for (net, key) in [
        (LpipsNet::Alex, "lpips_alex"),
        (LpipsNet::Vgg16, "lpips_vgg"),
    ] {
        let path = net.default_path();
        assert!(
            path.exists(),
            "{} is missing: run `cargo xtask setup`",
            path.display()
        );
        let m = Lpips::load(net, &path, Device::Cpu).unwrap();
        let d = m.distance(&f["a"], &f["b"]).unwrap();
        let err = (d.to_kind(Kind::Double) - f[key].to_kind(Kind::Double))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-5, "{key}: max absolute difference {err:.2e}");
        // identical images are at distance 0
        assert!(
            m.distance(&f["a"], &f["a"])
                .unwrap()
                .abs()
                .max()
                .double_value(&[])
                < 1e-6
        );
    }
    let m = Lpips::load(LpipsNet::Alex, &LpipsNet::Alex.default_path(), Device::Cpu).unwrap();
    assert!(m.distance(&f["a"], &f["b"].narrow(0, 0, 2)).is_err());
    assert!(m.diversity(&f["a"], 4, 2).unwrap() > 0.0);
}
