//! Metrics on folders of PNG files, as users call them, against the reference command-line
//! tools on the same folders (fixture: `scripts/make_folder_fixtures.py`, which ran
//! `python -m pytorch_fid`, torch-fidelity's `fidelity` and `prdc` on folders with these
//! very pixels): 28x28 grey, 64x64 RGB and 299x299 RGB images, each read at its own size.
//!
//! The tolerances are those in `docs/metrics.md` ("Folders"); measured agreement was FID
//! within 6e-7 relative, KID 2e-6 (its std 2e-5), IS 2e-9, precision, recall, density and
//! coverage equal (up to torch-fidelity's float32).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn genmodels(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_genmodels"))
        .args(args)
        .env_remove("GENMODELS_DEVICE")
        .output()
        .expect("run genmodels")
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../genmodels-metrics/tests/fixtures")
}

/// The 32-bit LCG of the fixture script: `n` values in 0..255.
fn lcg(seed: u32, n: usize) -> Vec<i64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 24) as i64
        })
        .collect()
}

/// The fixture script's `folder_images`, pixel for pixel: an 8x8 grid of LCG values
/// upsampled by exact integer bilinear interpolation, plus +-15 of LCG noise.
fn folder_images(side: usize, grey: bool, count: usize, which: i64) -> Vec<Vec<Vec<u8>>> {
    let chans = if grey { 1 } else { 3 };
    let g = 8usize;
    let d = (side - 1) as i64;
    let pos: Vec<i64> = (0..side as i64).map(|p| p * (g as i64 - 1)).collect();
    let i0: Vec<usize> = pos.iter().map(|p| (p / d) as usize).collect();
    let r: Vec<i64> = pos.iter().map(|p| p % d).collect();
    let i1: Vec<usize> = i0.iter().map(|i| (i + 1).min(g - 1)).collect();
    (0..count)
        .map(|k| {
            (0..chans)
                .map(|c| {
                    let seed = (1000003 * (which + 1) + 7919 * k as i64 + 104729 * c as i64) as u32;
                    let grid = lcg(seed, g * g);
                    let noise = lcg(seed ^ 0x5BD1E995, side * side);
                    let mut plane = vec![0u8; side * side];
                    for y in 0..side {
                        for x in 0..side {
                            let (ry, rx) = (r[y], r[x]);
                            let v = |a: usize, b: usize| grid[a * g + b];
                            let num = v(i0[y], i0[x]) * (d - ry) * (d - rx)
                                + v(i0[y], i1[x]) * (d - ry) * rx
                                + v(i1[y], i0[x]) * ry * (d - rx)
                                + v(i1[y], i1[x]) * ry * rx;
                            let val = num / (d * d) + noise[y * side + x] % 31 - 15 + 40 * which;
                            plane[y * side + x] = val.clamp(0, 255) as u8;
                        }
                    }
                    plane
                })
                .collect()
        })
        .collect()
}

fn write_folder(dir: &Path, side: usize, grey: bool, count: usize, which: i64) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, img) in folder_images(side, grey, count, which).iter().enumerate() {
        let path = dir.join(format!("{k:04}.png"));
        let s = side as u32;
        if grey {
            image::GrayImage::from_raw(s, s, img[0].clone())
                .unwrap()
                .save(path)
                .unwrap();
        } else {
            let rgb: Vec<u8> = img[0]
                .iter()
                .zip(&img[1])
                .zip(&img[2])
                .flat_map(|((r, g), b)| [*r, *g, *b])
                .collect();
            image::RgbImage::from_raw(s, s, rgb)
                .unwrap()
                .save(path)
                .unwrap();
        }
    }
}

/// The fixture's stand-in 1008-way head (the asset has none): Knuth's multiplicative hash.
fn standin(index: u64) -> f32 {
    let h = (index.wrapping_mul(2654435761)) & 0xFFFF_FFFF;
    (((h >> 8) as f64 / (1u64 << 24) as f64 - 0.5) * 0.1) as f32
}

/// The asset's FID Inception weights plus the stand-in head, as one safetensors file.
fn weights_with_head(dir: &Path) -> PathBuf {
    let asset = genmodels_core::assets_dir()
        .join("weights")
        .join("fid_inception.safetensors");
    let mut named = tch::Tensor::read_safetensors(&asset).expect("FID Inception asset");
    let w: Vec<f32> = (0..1008u64 * 2048).map(standin).collect();
    let b: Vec<f32> = (0..1008u64).map(|i| standin(i + (1 << 21))).collect();
    named.push((
        "fc.weight".into(),
        tch::Tensor::from_slice(&w).reshape([1008, 2048]),
    ));
    named.push(("fc.bias".into(), tch::Tensor::from_slice(&b)));
    let out = dir.join("with_head.safetensors");
    tch::Tensor::write_safetensors(&named, &out).unwrap();
    out
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn close(what: &str, ours: f64, theirs: f64, tol: f64) {
    eprintln!(
        "{what}: ours {ours}, reference {theirs}, relative {:.1e}",
        rel(ours, theirs)
    );
    assert!(
        rel(ours, theirs) <= tol,
        "{what}: ours {ours}, reference {theirs} (relative {:.2e} > {tol:e})",
        rel(ours, theirs)
    );
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("no number `{k}` in {v}"))
}

#[test]
fn folders_score_as_pytorch_fid_torch_fidelity_and_prdc_score_them() {
    let fx = json(&fixtures().join("folders.json"));
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cache = cache.to_str().unwrap();
    let head = weights_with_head(tmp.path());
    let head = head.to_str().unwrap();
    for set in fx["sets"].as_array().unwrap() {
        let name = set["name"].as_str().unwrap();
        let side = set["side"].as_u64().unwrap() as usize;
        let grey = set["grey"].as_bool().unwrap();
        let count = set["count"].as_u64().unwrap() as usize;
        let (a, b) = (
            tmp.path().join(name).join("A"),
            tmp.path().join(name).join("B"),
        );
        write_folder(&a, side, grey, count, 0);
        write_folder(&b, side, grey, count, 1);
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

        // pytorch-fid: `python -m pytorch_fid --save-stats A a.npz`, then `a.npz B`
        let npz = tmp.path().join(format!("{name}-A.npz"));
        let npz = npz.to_str().unwrap();
        let out = ok(&genmodels(&["fid", "--save-stats", a, npz]));
        assert!(
            out.contains(&format!(
                "{count} images, 3x{side}x{side}, at their own size"
            )),
            "{out}"
        );
        let fid_json = tmp.path().join(format!("{name}-fid.json"));
        ok(&genmodels(&[
            "fid",
            npz,
            b,
            "--json",
            fid_json.to_str().unwrap(),
        ]));
        let r = json(&fid_json);
        close(
            &format!("{name}: FID (pytorch-fid)"),
            f(&r, "fid"),
            set["pytorch_fid"].as_f64().unwrap(),
            1e-5,
        );
        assert_eq!(r["resize"], "pytorch-bilinear");
        // pool3 means of A against pytorch-fid's own activations
        let stats = tch::Tensor::read_npz(npz).unwrap();
        let mu = &stats.iter().find(|(k, _)| k == "mu").unwrap().1;
        for (i, want) in set["pytorch_fid_mu_A_head"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let got = mu.double_value(&[i as i64]);
            let want = want.as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-4 * want.abs().max(0.05),
                "{name}: mu[{i}] ours {got}, pytorch-fid {want}"
            );
        }

        // torch-fidelity (tf1 bilinear resize) and prdc, in one full `metrics` run
        let m_json = tmp.path().join(format!("{name}-metrics.json"));
        let half = (count / 2).to_string();
        ok(&genmodels(&[
            "metrics",
            "--real",
            a,
            "--fake",
            b,
            "-n",
            "100000",
            "--resize",
            "tf1-bilinear",
            "--inception-weights",
            head,
            "--kid-subset-size",
            &half,
            "--cache",
            cache,
            "--json",
            m_json.to_str().unwrap(),
        ]));
        let m = json(&m_json);
        let tf = &set["torch_fidelity"];
        close(
            &format!("{name}: FID (torch-fidelity)"),
            f(&m, "fid"),
            f(tf, "frechet_inception_distance"),
            1e-5,
        );
        close(
            &format!("{name}: KID"),
            f(&m, "kid_mean"),
            f(tf, "kernel_inception_distance_mean"),
            1e-4,
        );
        close(
            &format!("{name}: KID std"),
            f(&m, "kid_std"),
            f(tf, "kernel_inception_distance_std"),
            1e-3,
        );
        let is = &m["inception_score"];
        close(
            &format!("{name}: IS"),
            f(is, "mean"),
            f(tf, "inception_score_mean"),
            1e-6,
        );
        // the same counts of neighbours (torch-fidelity reports them in float32)
        for k in ["precision", "recall"] {
            close(&format!("{name}: {k}"), f(&m, k), f(tf, k), 1e-7);
        }
        let p = &set["prdc"];
        for k in ["density", "coverage"] {
            close(&format!("{name}: {k} (prdc)"), f(&m, k), f(p, k), 1e-9);
        }
        // every default that changes numbers is in the JSON
        let inputs = &m["inputs"];
        assert!(
            inputs["real"]
                .as_str()
                .unwrap()
                .contains(&format!("{side}x{side}, at their own size")),
            "{inputs}"
        );
        assert_eq!(inputs["resize"], "tf1-bilinear");

        if let Some(stats64) = set["stats64"].as_str() {
            // pytorch-fid's own .npz read by us, and ours written for it: both ways
            let theirs = fixtures().join(stats64);
            let out = ok(&genmodels(&[
                "fid",
                "--dims",
                "64",
                theirs.to_str().unwrap(),
                b,
            ]));
            let fid: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix("FID:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            close(
                &format!("{name}: FID --dims 64 from pytorch-fid's .npz"),
                fid,
                set["pytorch_fid_dims64_npz_vs_B"].as_f64().unwrap(),
                1e-4,
            );
            let ours = tmp.path().join("ours64.npz");
            ok(&genmodels(&[
                "fid",
                "--dims",
                "64",
                "--save-stats",
                a,
                ours.to_str().unwrap(),
            ]));
            let load = |p: &Path| {
                let v = tch::Tensor::read_npz(p).unwrap();
                let get = |k: &str| v.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
                (get("mu"), get("sigma"))
            };
            let ((m1, s1), (m2, s2)) = (load(&ours), load(&theirs));
            let dm = (&m1 - &m2).abs().max().double_value(&[]);
            let ds = (&s1 - &s2).abs().max().double_value(&[]);
            let scale = s2.abs().max().double_value(&[]);
            assert!(dm < 1e-4, "{name}: mu differs by {dm}");
            assert!(
                ds < 1e-4 * scale,
                "{name}: sigma differs by {ds} (max {scale})"
            );
        }
    }
}

#[test]
fn torch_fidelity_flags_give_its_keys_and_only_the_chosen_metrics() {
    let fx = json(&fixtures().join("folders.json"));
    let set = fx["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "rgb64")
        .unwrap();
    let count = set["count"].as_u64().unwrap() as usize;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("A"), tmp.path().join("B"));
    write_folder(&a, 64, false, count, 0);
    write_folder(&b, 64, false, count, 1);
    let head = weights_with_head(tmp.path());
    let out = tmp.path().join("fidelity.json");
    let half = (count / 2).to_string();
    let o = genmodels(&[
        "metrics",
        "--input1",
        b.to_str().unwrap(),
        "--input2",
        a.to_str().unwrap(),
        "--fid",
        "--kid",
        "--isc",
        "--prc",
        "--resize",
        "tf1-bilinear",
        "--inception-weights",
        head.to_str().unwrap(),
        "--kid-subset-size",
        &half,
        "--json",
        out.to_str().unwrap(),
    ]);
    let stdout = ok(&o);
    let r = json(&out);
    let tf = &set["torch_fidelity"];
    for (k, tol) in [
        ("frechet_inception_distance", 1e-5),
        ("kernel_inception_distance_mean", 1e-4),
        ("inception_score_mean", 1e-6),
        ("precision", 1e-7),
        ("recall", 1e-7),
        ("f_score", 1e-7),
    ] {
        close(k, f(&r, k), f(tf, k), tol);
        assert!(
            stdout.contains(k),
            "{k} missing from the printed scores:\n{stdout}"
        );
    }
    // only what was asked for
    let o = genmodels(&[
        "metrics",
        "--input1",
        b.to_str().unwrap(),
        "--isc",
        "--inception-weights",
        head.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    let r = json(&out);
    assert!(r.get("inception_score_mean").is_some(), "{r}");
    assert!(r.get("frechet_inception_distance").is_none(), "{r}");
    // the asset has no head: --isc without one says how to get it, in one line
    let o = genmodels(&["metrics", "--input1", b.to_str().unwrap(), "--isc"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--inception-weights") && err.trim().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn folders_with_two_sizes_or_no_images_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("mixed");
    std::fs::create_dir(&a).unwrap();
    image::RgbImage::new(32, 32).save(a.join("a.png")).unwrap();
    image::RgbImage::new(40, 40).save(a.join("b.png")).unwrap();
    let b = tmp.path().join("b");
    write_folder(&b, 28, true, 4, 0);
    let o = genmodels(&["fid", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("b.png") && err.contains("40x40") && err.trim().lines().count() == 1,
        "{err}"
    );
    let o = genmodels(&["fid", b.to_str().unwrap(), "/no/such/folder"]);
    assert_eq!(o.status.code(), Some(2));
    let o = genmodels(&[
        "fid",
        "--dims",
        "100",
        b.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("64, 192, 768 or 2048"), "{err}");
    let bad = tmp.path().join("bad.npz");
    std::fs::write(&bad, b"not a zip").unwrap();
    let o = genmodels(&["fid", bad.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.npz") && err.contains("mu, sigma"),
        "{err}"
    );
}
