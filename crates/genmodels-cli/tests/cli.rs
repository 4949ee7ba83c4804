//! The `genmodels` binary end to end on tiny data: train, resume, sample, list, and the
//! one-line errors with exit code 2.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{bin, ok, write_idx};

fn genmodels(args: &[&str]) -> Output {
    bin().args(args).output().expect("run genmodels")
}

#[test]
fn train_resume_sample_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, 32, 8);
    let run = tmp.path().join("run");
    let (d, r) = (
        format!("idx:{}", data.display()),
        run.to_str().unwrap().to_string(),
    );
    let tiny = [
        "--set",
        "ngf=4",
        "--set",
        "ndf=4",
        "--set",
        "z_dim=8",
        "--batch-size",
        "8",
        "--no-progress",
        "--device",
        "cpu",
    ];
    let mut args = vec![
        "train",
        "dcgan",
        "--data",
        &d,
        "--out",
        &r,
        "--steps",
        "4",
        "--sample-count",
        "4",
        "--checkpoint-every",
        "2",
    ];
    args.extend(tiny);
    ok(&genmodels(&args));
    assert!(run.join("checkpoint.safetensors").exists());
    assert!(run.join("samples").join("step_0000004.png").exists());
    // training again into the same folder is refused
    let again = genmodels(&args);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("genmodels resume"));
    ok(&genmodels(&[
        "resume",
        &r,
        "--steps",
        "6",
        "--no-progress",
        "--device",
        "cpu",
    ]));
    let log = std::fs::read_to_string(run.join("train.jsonl")).unwrap();
    assert!(log.lines().last().unwrap().contains("\"step\":6"), "{log}");
    let out = tmp.path().join("samples");
    ok(&genmodels(&[
        "sample",
        &r,
        "-n",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    assert!(out.join("sample_00004.png").exists() && out.join("overview/grid.png").exists());
    // the sample folder scores as a folder of images: nothing else in it
    let n = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(n, 5);
    let img = image::open(out.join("sample_00000.png")).unwrap();
    assert_eq!((img.width(), img.height()), (8, 8));
}

#[test]
fn bad_input_gives_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let bad_idx = tmp.path().join("bad");
    std::fs::create_dir(&bad_idx).unwrap();
    std::fs::write(
        bad_idx.join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0],
    )
    .unwrap();
    std::fs::write(
        bad_idx.join("train-labels-idx1-ubyte"),
        [0u8, 0, 8, 1, 0, 0, 0, 0],
    )
    .unwrap();
    let out = tmp.path().join("r");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "train".into(),
                "nosuchmodel".into(),
                "--data".into(),
                "ring8".into(),
                "--out".into(),
                out.display().to_string(),
            ],
            "unknown model",
        ),
        (
            vec![
                "train".into(),
                "dcgan".into(),
                "--data".into(),
                "/no/such/thing".into(),
                "--out".into(),
                out.display().to_string(),
            ],
            "unknown data",
        ),
        (
            vec![
                "train".into(),
                "dcgan".into(),
                "--data".into(),
                format!("idx:{}", bad_idx.display()),
                "--out".into(),
                out.display().to_string(),
            ],
            "IDX header truncated",
        ),
        (
            vec![
                "train".into(),
                "dcgan".into(),
                "--data".into(),
                "ring8".into(),
                "--out".into(),
                out.display().to_string(),
            ],
            "needs image data",
        ),
        (
            vec![
                "sample".into(),
                tmp.path().display().to_string(),
                "--out".into(),
                out.display().to_string(),
            ],
            "not a genmodels run folder",
        ),
        (
            vec![
                "train".into(),
                "dcgan".into(),
                "--data".into(),
                "ring8".into(),
                "--out".into(),
                out.display().to_string(),
                "--lr-schedule".into(),
                "exp".into(),
            ],
            "unknown schedule",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = genmodels(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected `{needle}` in {err}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: more than one line: {err}"
        );
    }
    let o = genmodels(&["train"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn list_names_the_models() {
    let o = genmodels(&["list"]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("dcgan"));
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_resume_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, 32, 8);
    let run = tmp.path().join("run");
    let d = format!("idx:{}", data.display());
    let child = Command::new(env!("CARGO_BIN_EXE_genmodels"))
        .args([
            "train",
            "dcgan",
            "--data",
            &d,
            "--out",
            run.to_str().unwrap(),
            "--steps",
            "100000",
            "--log-every",
            "1",
        ])
        .args([
            "--set",
            "ngf=4",
            "--set",
            "ndf=4",
            "--set",
            "z_dim=8",
            "--batch-size",
            "8",
            "--no-progress",
            "--device",
            "cpu",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let log = run.join("train.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&log)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 3
    {
        assert!(t0.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("interrupted at step"), "{err}");
    let step: u64 = err
        .split("interrupted at step ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("step in message");
    assert!(step >= 3);
    let target = (step + 2).to_string();
    ok(&genmodels(&[
        "resume",
        run.to_str().unwrap(),
        "--steps",
        &target,
        "--no-progress",
        "--device",
        "cpu",
    ]));
    let last = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(last.contains(&format!("\"step\":{target}")), "{last}");
}

fn fails_with(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn gpt_trains_on_text_generates_scores_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("whale.txt");
    std::fs::write(
        &text,
        "Call me Ishmael. Some years ago, never mind how long precisely, I thought I would sail about a little.\n"
            .repeat(20),
    )
    .unwrap();
    let run = tmp.path().join("gpt");
    let (d, r) = (
        format!("text:{}:bpe=300", text.display()),
        run.to_str().unwrap().to_string(),
    );
    let tiny = [
        "--set",
        "n_layer=1",
        "--set",
        "n_head=2",
        "--set",
        "n_embd=16",
        "--set",
        "block_size=16",
        "--batch-size",
        "4",
        "--no-progress",
        "--device",
        "cpu",
        "--eval-every",
        "5",
        "--eval-batches",
        "2",
    ];
    let mut args = vec![
        "train", "gpt-mini", "--data", &d, "--out", &r, "--steps", "10",
    ];
    args.extend(tiny);
    ok(&genmodels(&args));
    let log = std::fs::read_to_string(run.join("train.jsonl")).unwrap();
    assert_eq!(log.matches("val_loss").count(), 2, "{log}");
    ok(&genmodels(&[
        "resume",
        &r,
        "--steps",
        "12",
        "--no-progress",
        "--device",
        "cpu",
    ]));
    let o = genmodels(&[
        "generate", &r, "--prompt", "Call me", "-n", "12", "--seed", "3", "--device", "cpu",
    ]);
    ok(&o);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.starts_with("Call me"), "{out}");
    let again = genmodels(&[
        "generate",
        &r,
        "--prompt",
        "Call me",
        "-n",
        "12",
        "--seed",
        "3",
        "--no-cache",
        "--device",
        "cpu",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        out,
        "cache and recomputation differ"
    );
    let batch = genmodels(&[
        "generate",
        &r,
        "--prompt",
        "Call",
        "--prompt",
        "Some years",
        "--num-samples",
        "2",
        "-n",
        "5",
        "--top-k",
        "5",
        "--top-p",
        "0.9",
        "--repetition-penalty",
        "1.2",
        "--stop",
        ".",
        "--device",
        "cpu",
    ]);
    ok(&batch);
    assert_eq!(
        String::from_utf8_lossy(&batch.stdout)
            .matches("--- sample")
            .count(),
        4
    );
    let p = genmodels(&["perplexity", &r, "--device", "cpu"]);
    ok(&p);
    let ps = String::from_utf8_lossy(&p.stdout);
    assert!(
        ps.contains("perplexity") && ps.contains("bits per character"),
        "{ps}"
    );
    fails_with(
        &genmodels(&["generate", &r, "--top-p", "1.5", "--device", "cpu"]),
        "top-p",
    );
    fails_with(
        &genmodels(&["generate", &r, "--prompt", "", "--device", "cpu"]),
        "no tokens",
    );
    fails_with(
        &genmodels(&["generate", tmp.path().to_str().unwrap()]),
        "not a genmodels run",
    );
}

#[test]
fn imported_gpt2_generates() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../genmodels-transformer/tests/fixtures/gpt2-tiny");
    let out = tmp.path().join("gpt2");
    let o = genmodels(&[
        "import-gpt2",
        fixture.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("2 layers x 4 heads x 32"));
    // No tokenizer.json in the fixture: generation from text says what is missing.
    fails_with(
        &genmodels(&["generate", out.to_str().unwrap(), "--device", "cpu"]),
        "tokenizer",
    );
    fails_with(
        &genmodels(&[
            "import-gpt2",
            tmp.path().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        "config.json",
    );
}

#[test]
fn biggan_trains_and_cas_compares_with_real_data() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, 40, 8);
    let run = tmp.path().join("bg");
    let (d, r) = (
        format!("idx:{}", data.display()),
        run.to_str().unwrap().to_string(),
    );
    ok(&genmodels(&[
        "train",
        "biggan",
        "--data",
        &d,
        "--out",
        &r,
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--set",
        "g_ch=4",
        "--set",
        "d_ch=4",
        "--set",
        "z_dim=8",
        "--set",
        "shared_dim=4",
        "--no-progress",
        "--device",
        "cpu",
        "--sample-count",
        "20",
    ]));
    let json = tmp.path().join("cas.json");
    let o = genmodels(&[
        "cas",
        &r,
        "--real",
        &d,
        "--test",
        &d,
        "-n",
        "20",
        "--epochs",
        "1",
        "--mix",
        "--json",
        json.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    ok(&o);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for k in ["cas", "real_baseline", "real_plus_generated"] {
        let x = v[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{k} = {x}");
    }
    let grid = tmp.path().join("interp.png");
    ok(&genmodels(&[
        "interpolate",
        &r,
        "--out",
        grid.to_str().unwrap(),
        "--rows",
        "3",
        "--steps",
        "4",
        "--device",
        "cpu",
    ]));
    let img = image::open(&grid).unwrap();
    assert_eq!((img.width(), img.height()), (4 * 10 + 2, 3 * 10 + 2));
    // Unlabelled or unconditional: clear errors.
    let dc = tmp.path().join("dc");
    ok(&genmodels(&[
        "train",
        "dcgan",
        "--data",
        &d,
        "--out",
        dc.to_str().unwrap(),
        "--steps",
        "1",
        "--batch-size",
        "8",
        "--set",
        "ngf=4",
        "--set",
        "ndf=4",
        "--set",
        "z_dim=8",
        "--no-progress",
        "--device",
        "cpu",
    ]));
    fails_with(
        &genmodels(&["cas", dc.to_str().unwrap(), "--device", "cpu"]),
        "class_conditional capability (biggan, ddpm-cond, jem)",
    );
}

#[test]
fn cyclegan_trains_on_two_classes_and_translates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, 40, 16);
    let run = tmp.path().join("cg");
    let (d, r) = (
        format!("idx:{}@7,9", data.display()),
        run.to_str().unwrap().to_string(),
    );
    ok(&genmodels(&[
        "train",
        "cyclegan",
        "--data",
        &d,
        "--out",
        &r,
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--set",
        "ngf=4",
        "--set",
        "ndf=4",
        "--set",
        "n_res=1",
        "--no-progress",
        "--device",
        "cpu",
    ]));
    let out = tmp.path().join("translated");
    let a = format!("idx:{}@7", data.display());
    ok(&genmodels(&[
        "translate",
        &r,
        "--data",
        &a,
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);
    fails_with(
        &genmodels(&[
            "train",
            "cyclegan",
            "--data",
            &format!("idx:{}@7,12", data.display()),
            "--out",
            &r,
            "--force",
            "--no-progress",
        ]),
        "class 12",
    );
}

#[test]
fn vae_family_trains_scores_likelihood_and_traverses() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, 32, 8);
    let d = format!("idx:{}", data.display());
    for model in ["vae", "beta-vae", "iwae"] {
        let run = tmp.path().join(model);
        let r = run.to_str().unwrap().to_string();
        ok(&genmodels(&[
            "train",
            model,
            "--data",
            &d,
            "--out",
            &r,
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--set",
            "hidden=16",
            "--set",
            "z_dim=4",
            "--set",
            "k=3",
            "--no-progress",
            "--device",
            "cpu",
            "--sample-count",
            "4",
        ]));
        let json = tmp.path().join(format!("{model}-nll.json"));
        let o = genmodels(&[
            "nll",
            &r,
            "--data",
            &d,
            "-n",
            "10",
            "-k",
            "20",
            "--json",
            json.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        ok(&o);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let (nll, nelbo) = (
            v["nll_nats"].as_f64().unwrap(),
            v["negative_elbo_nats"].as_f64().unwrap(),
        );
        // The importance-sampled NLL sits below the one-sample negative ELBO (up to noise);
        // both are positive.
        assert!(nll > 0.0 && nelbo > 0.0 && nll < nelbo + 1.0, "{v}");
        assert_eq!(v["n"], 10);
        // The binarised test set and the bound do not change with the number of importance
        // samples (they are drawn before and apart from them).
        let json2 = tmp.path().join(format!("{model}-nll2.json"));
        ok(&genmodels(&[
            "nll",
            &r,
            "--data",
            &d,
            "-n",
            "10",
            "-k",
            "3",
            "--json",
            json2.to_str().unwrap(),
            "--device",
            "cpu",
        ]));
        let v2: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json2).unwrap()).unwrap();
        assert_eq!(
            v2["negative_elbo_nats"], v["negative_elbo_nats"],
            "{v} {v2}"
        );
        assert_ne!(v2["nll_nats"], v["nll_nats"]);
        let png = tmp.path().join(format!("{model}-trav.png"));
        ok(&genmodels(&[
            "traverse",
            &r,
            "--data",
            &d,
            "--out",
            png.to_str().unwrap(),
            "--rows",
            "3",
            "--steps",
            "5",
            "--device",
            "cpu",
        ]));
        assert!(png.exists());
    }
    // A folder without a run is refused; so is a dimension the model does not have.
    let o = genmodels(&["nll", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let r = tmp.path().join("vae");
    let o = genmodels(&[
        "traverse",
        r.to_str().unwrap(),
        "--data",
        &d,
        "--out",
        "x.png",
        "--dims",
        "9",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("out of range"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn vqvae_and_vaegan_train_sample_and_reconstruct() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, 32, 8);
    let d = format!("idx:{}", data.display());
    let run = tmp.path().join("vq");
    let r = run.to_str().unwrap().to_string();
    ok(&genmodels(&[
        "train",
        "vqvae",
        "--data",
        &d,
        "--out",
        &r,
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--set",
        "hidden=8",
        "--set",
        "res_hidden=4",
        "--set",
        "codes=8",
        "--set",
        "code_dim=4",
        "--set",
        "prior_start=2",
        "--set",
        "prior_layers=1",
        "--set",
        "prior_embd=16",
        "--log-every",
        "1",
        "--no-progress",
        "--device",
        "cpu",
        "--sample-count",
        "4",
    ]));
    let log = std::fs::read_to_string(run.join("train.jsonl")).unwrap();
    assert!(
        log.contains("prior_nll") && log.contains("recon_mse"),
        "{log}"
    );
    let json = tmp.path().join("rec.json");
    let png = tmp.path().join("rec.png");
    ok(&genmodels(&[
        "reconstruct",
        &r,
        "--data",
        &d,
        "-n",
        "16",
        "--out",
        png.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["reconstruction_mse"].as_f64().unwrap() > 0.0);
    let ppl = v["codebook"]["codebook_perplexity"].as_f64().unwrap();
    assert!((1.0..=8.0).contains(&ppl), "{v}");
    assert!(v["codebook"]["prior_nll_nats_per_code"].as_f64().unwrap() > 0.0);
    assert!(png.exists());
    // VAE-GAN: trains, reconstructs
    let run2 = tmp.path().join("vaegan");
    let r2 = run2.to_str().unwrap().to_string();
    ok(&genmodels(&[
        "train",
        "vaegan",
        "--data",
        &d,
        "--out",
        &r2,
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--set",
        "width=4",
        "--set",
        "hidden=8",
        "--set",
        "z_dim=4",
        "--no-progress",
        "--device",
        "cpu",
        "--sample-count",
        "4",
    ]));
    ok(&genmodels(&[
        "reconstruct",
        &r2,
        "--data",
        &d,
        "-n",
        "8",
        "--device",
        "cpu",
    ]));
    let out = tmp.path().join("samples");
    ok(&genmodels(&[
        "sample",
        &r,
        "-n",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    assert!(out.join("sample_00002.png").exists());
}

/// The model names the registry publishes.
fn registered_names() -> Vec<String> {
    let o = genmodels(&["list", "--json"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn list_json_publishes_families_and_capabilities() {
    let o = genmodels(&["list", "--json"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let find = |n: &str| {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == n)
            .cloned()
            .unwrap()
    };
    let b = find("biggan");
    assert_eq!(b["family"], "gan");
    assert!(b["capabilities"]
        .as_array()
        .unwrap()
        .contains(&"class_conditional".into()));
    assert_eq!(find("gpt")["output"], "text");
    assert!(find("vqvae")["capabilities"]
        .as_array()
        .unwrap()
        .contains(&"codebook".into()));
}

/// No verb and no eval measurement chooses its behaviour by a model's name: outside test
/// modules, the sources of the command line and of xtask hold no registered model name as a
/// string literal (names live in the family crates' registries and in xtask's recipe file).
#[test]
fn no_model_name_dispatch_in_the_binaries() {
    let names = registered_names();
    assert!(names.len() >= 10, "{names:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    let mut stack = vec![
        root.join("crates/genmodels-cli/src"),
        root.join("xtask/src"),
    ];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    assert!(files.len() > 10, "{files:?}");
    let mut hits = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if text.contains("#![cfg(test)]") {
            continue; // a test-only module file
        }
        let code = text.split("#[cfg(test)]").next().unwrap();
        for n in &names {
            if code.contains(&format!("\"{n}\"")) {
                hits.push(format!("{}: \"{n}\"", f.display()));
            }
        }
    }
    assert!(hits.is_empty(), "model names in the binaries: {hits:?}");
}

#[test]
fn a_copied_run_resumes_from_another_folder_and_asset_folder_and_its_manifest_remakes_it() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let digits = assets.join("digits.csv.gz");
    assert!(digits.exists(), "run `cargo xtask setup` first");
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let args = [
        "train",
        "dcgan",
        "--data",
        "digits",
        "--out",
        r,
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--set",
        "ngf=4",
        "--set",
        "ndf=4",
        "--set",
        "z_dim=8",
        "--sample-count",
        "4",
        "--log-every",
        "1",
        "--checkpoint-every",
        "2",
        "--no-progress",
        "--device",
        "cpu",
        "--threads",
        "1",
    ];
    ok(&genmodels(&args));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    // The data as written, not the asset path it resolved to.
    assert_eq!(manifest["data"], "digits", "{manifest}");
    // Copy the run elsewhere and give it an asset folder of its own (the original is not used).
    let moved = tmp.path().join("elsewhere/run");
    std::fs::create_dir_all(&moved).unwrap();
    for e in std::fs::read_dir(&run).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, moved.join(p.file_name().unwrap())).unwrap();
        }
    }
    let other_assets = tmp.path().join("assets2");
    std::fs::create_dir(&other_assets).unwrap();
    std::fs::copy(&digits, other_assets.join("digits.csv.gz")).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_genmodels"))
        .args([
            "resume",
            moved.to_str().unwrap(),
            "--steps",
            "6",
            "--no-progress",
        ])
        .args(["--device", "cpu", "--threads", "1"])
        .env("GENMODELS_ASSETS", &other_assets)
        .env_remove("GENMODELS_DEVICE")
        .output()
        .unwrap();
    ok(&o);
    let log = std::fs::read_to_string(moved.join("train.jsonl")).unwrap();
    assert!(log.lines().last().unwrap().contains("\"step\":6"), "{log}");
    // Without the data the error names it.
    let o = Command::new(env!("CARGO_BIN_EXE_genmodels"))
        .args([
            "resume",
            moved.to_str().unwrap(),
            "--steps",
            "8",
            "--no-progress",
        ])
        .env("GENMODELS_ASSETS", tmp.path().join("empty"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("digits"));
    // `train --config run.json` remakes the run: the same losses at every step.
    let again = tmp.path().join("again");
    ok(&genmodels(&[
        "train",
        "--config",
        run.join("run.json").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        "--no-progress",
        "--device",
        "cpu",
        "--threads",
        "1",
    ]));
    let strip = |t: String| -> Vec<String> {
        t.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("time_s");
                v.to_string()
            })
            .collect()
    };
    let first = strip(std::fs::read_to_string(run.join("train.jsonl")).unwrap());
    let remade = strip(std::fs::read_to_string(again.join("train.jsonl")).unwrap());
    assert_eq!(first, remade);
    // A manifest cannot be combined with options that would change the run.
    let o = genmodels(&[
        "train",
        "--config",
        run.join("run.json").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
        "--steps",
        "9",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn ddpm_trains_samples_with_any_scheduler_and_refuses_bad_sampler_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, 16, 8);
    let d = format!("idx:{}", data.display());
    let run = tmp.path().join("ddpm");
    let r = run.to_str().unwrap().to_string();
    ok(&genmodels(&[
        "train",
        "ddpm-cond",
        "--data",
        &d,
        "--out",
        &r,
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--sample-every",
        "0",
        "--sample-count",
        "4",
        "--ema",
        "0.9",
        "--set",
        "sampler.steps=2",
        "--set",
        "scheduler.variance_type=learned_range",
        "--no-progress",
        "--device",
        "cpu",
    ]));
    // the variational bound through `nll` (learned variance, EMA weights)
    let json = tmp.path().join("nll.json");
    let o = genmodels(&[
        "nll",
        &r,
        "--data",
        &d,
        "-n",
        "4",
        "-k",
        "3",
        "--ema",
        "--json",
        json.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    ok(&o);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["bits_per_dim"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["estimator"]
        .as_str()
        .unwrap()
        .contains("variational bound"));
    assert_eq!(v["ema"], true);
    // CAS with a guided sampler keeps its generated images as a folder with a class grid
    let gen = tmp.path().join("cas-samples");
    ok(&genmodels(&[
        "cas",
        &r,
        "--real",
        &d,
        "--test",
        &d,
        "-n",
        "20",
        "--epochs",
        "1",
        "--scheduler",
        "ddim",
        "--steps",
        "2",
        "--guidance",
        "3",
        "--save-samples",
        gen.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    let pngs = std::fs::read_dir(&gen)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, 20);
    let grid = image::open(gen.join("overview/grid.png")).unwrap();
    assert_eq!(grid.width(), 10 * 10 + 2, "one class per column");
    let out = tmp.path().join("s");
    let o = genmodels(&[
        "sample",
        &r,
        "-n",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--scheduler",
        "dpm-solver++",
        "--steps",
        "3",
        "--karras",
        "--guidance",
        "2",
        "--trajectory",
        "--device",
        "cpu",
    ]);
    ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("dpm-solver++ with 3 steps") && stdout.contains("guidance 2"),
        "{stdout}"
    );
    assert!(out.join("overview/trajectory.png").exists());
    let sample = |extra: &[&str]| {
        let mut args = vec!["sample", &r, "-n", "2", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        genmodels(&args)
    };
    fails_with(&sample(&["--scheduler", "ddlm"]), "ddlm");
    fails_with(&sample(&["--steps", "5000"]), "1 to 1000");
    fails_with(&sample(&["--eta", "3"]), "--eta 3");
    // a GAN run has no scheduler to swap
    let gan = tmp.path().join("gan");
    ok(&genmodels(&[
        "train",
        "dcgan",
        "--data",
        &d,
        "--out",
        gan.to_str().unwrap(),
        "--steps",
        "1",
        "--batch-size",
        "8",
        "--no-progress",
        "--device",
        "cpu",
    ]));
    fails_with(
        &genmodels(&[
            "sample",
            gan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--scheduler",
            "ddim",
        ]),
        "schedulers capability (ddpm, ddpm-cond)",
    );
}

#[test]
fn guidance_on_an_unconditional_diffusion_model_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, 8, 8);
    let run = tmp.path().join("ddpm");
    let r = run.to_str().unwrap().to_string();
    ok(&genmodels(&[
        "train",
        "ddpm",
        "--data",
        &format!("idx:{}", data.display()),
        "--out",
        &r,
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--sample-every",
        "0",
        "--set",
        "sampler.steps=2",
        "--no-progress",
        "--device",
        "cpu",
    ]));
    let out = tmp.path().join("s");
    fails_with(
        &genmodels(&[
            "sample",
            &r,
            "--out",
            out.to_str().unwrap(),
            "--guidance",
            "3",
        ]),
        "needs a class-conditional model",
    );
}

#[test]
fn a_diffusers_unet_folder_imports_as_a_run_that_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../genmodels-diffusion/tests/fixtures/unet_uncond_attn");
    let run = tmp.path().join("imported");
    let o = genmodels(&[
        "import-diffusers",
        fixture.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("3x8x8") && stdout.contains("`ddpm`"),
        "{stdout}"
    );
    let out = tmp.path().join("s");
    ok(&genmodels(&[
        "sample",
        run.to_str().unwrap(),
        "-n",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--scheduler",
        "euler",
        "--steps",
        "3",
        "--device",
        "cpu",
    ]));
    assert!(out.join("overview/grid.png").exists());
    // a folder whose weights lack a tensor: one line naming it
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::copy(fixture.join("config.json"), broken.join("config.json")).unwrap();
    let w =
        tch::Tensor::read_safetensors(fixture.join("diffusion_pytorch_model.safetensors")).unwrap();
    let kept: Vec<(String, tch::Tensor)> = w
        .into_iter()
        .filter(|(k, _)| k != "conv_in.weight")
        .collect();
    tch::Tensor::write_safetensors(&kept, broken.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    fails_with(
        &genmodels(&[
            "import-diffusers",
            broken.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ]),
        "conv_in.weight",
    );
}

#[test]
fn energy_models_train_and_answer_ood_calibration_and_energy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_idx(&data, 32, 8);
    let d = format!("idx:{}", data.display());
    let tiny = [
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--set",
        "width=4",
        "--set",
        "buffer_size=16",
        "--set",
        "sgld.steps=2",
        "--no-progress",
        "--device",
        "cpu",
        "--sample-count",
        "4",
    ];
    for model in ["jem", "igebm"] {
        let run = tmp.path().join(model);
        let r = run.to_str().unwrap().to_string();
        ok(&genmodels(
            &[&["train", model, "--data", &d, "--out", &r], &tiny[..]].concat(),
        ));
        let json = tmp.path().join(format!("{model}-ood.json"));
        let invert = format!("invert:{d}");
        ok(&genmodels(&[
            "ood",
            &r,
            "--in",
            &d,
            "--out-data",
            "noise",
            "--out-data",
            &invert,
            "-n",
            "20",
            "--json",
            json.to_str().unwrap(),
            "--device",
            "cpu",
        ]));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{v}");
        for row in rows {
            for key in ["auroc_log_px", "auroc_grad_norm"] {
                let a = row[key].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&a), "{key}: {row}");
            }
            // Only a classifier's energy has a softmax.
            assert_eq!(
                row["auroc_max_softmax"].is_null(),
                model == "igebm",
                "{row}"
            );
        }
        let cal = tmp.path().join(format!("{model}-cal.json"));
        let png = tmp.path().join(format!("{model}-cal.png"));
        let o = genmodels(&[
            "calibration",
            &r,
            "--data",
            &d,
            "-n",
            "32",
            "--out",
            png.to_str().unwrap(),
            "--json",
            cal.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        if model == "jem" {
            ok(&o);
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&cal).unwrap()).unwrap();
            let ece = v["ece"].as_f64().unwrap();
            assert!(
                (0.0..=1.0).contains(&ece) && v["bins"].as_array().unwrap().len() == 15,
                "{v}"
            );
            assert!(png.exists());
        } else {
            fails_with(&o, "no class logits");
        }
        // Inpainting by Langevin: a grid and PSNR per recorded step.
        let lj = tmp.path().join(format!("{model}-langevin.json"));
        let lpng = tmp.path().join(format!("{model}-langevin.png"));
        let restore = |extra: &[&str]| {
            genmodels(
                &[
                    &[
                        "langevin",
                        &r,
                        "--data",
                        &d,
                        "-n",
                        "4",
                        "--steps",
                        "6",
                        "--frames",
                        "3",
                        "--out",
                        lpng.to_str().unwrap(),
                        "--json",
                        lj.to_str().unwrap(),
                        "--device",
                        "cpu",
                    ][..],
                    extra,
                ]
                .concat(),
            )
        };
        ok(&restore(&["--corrupt", "mask:center", "--lpips", "none"]));
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&lj).unwrap()).unwrap();
        let rest = &v["restoration"];
        assert_eq!(rest["free_fraction"], 0.25, "{v}");
        let steps: Vec<_> = rest["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [2, 4, 6], "{v}");
        assert!(rest["psnr_restored_db"].as_f64().unwrap().is_finite() && lpng.exists());
        // 8 x 8 images are too small for VGG's last taps; a bad corruption is named.
        fails_with(&restore(&["--corrupt", "mask:center"]), "at least 16 x 16");
        fails_with(
            &restore(&["--corrupt", "blur:3"]),
            "unknown --corrupt `blur:3`",
        );
        // Chains from noise, no data.
        ok(&genmodels(&[
            "langevin",
            &r,
            "-n",
            "3",
            "--steps",
            "4",
            "--frames",
            "2",
            "--out",
            lpng.to_str().unwrap(),
            "--device",
            "cpu",
        ]));
        // The heat map is for 2-D energies.
        let o = genmodels(&[
            "energy",
            &r,
            "--out",
            png.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        fails_with(&o, "not a mixture");
    }
    let run = tmp.path().join("ebm2d");
    let r = run.to_str().unwrap().to_string();
    ok(&genmodels(&[
        "train",
        "ebm2d",
        "--data",
        "ring8",
        "--out",
        &r,
        "--steps",
        "20",
        "--batch-size",
        "32",
        "--set",
        "width=8",
        "--set",
        "buffer_size=64",
        "--no-progress",
        "--device",
        "cpu",
        "--sample-count",
        "4",
    ]));
    let png = tmp.path().join("map.png");
    let json = tmp.path().join("map.json");
    ok(&genmodels(&[
        "energy",
        &r,
        "--out",
        png.to_str().unwrap(),
        "-n",
        "50",
        "--size",
        "32",
        "--temperature",
        "0.5",
        "--json",
        json.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let mass = v["density_mass_near_modes"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&mass) && v["temperature"] == 0.5,
        "{v}"
    );
    assert!(png.exists() && tmp.path().join("map-samples.png").exists());
    let o = genmodels(&[
        "energy",
        &r,
        "--out",
        png.to_str().unwrap(),
        "--temperature",
        "0",
    ]);
    fails_with(&o, "--temperature");
}
