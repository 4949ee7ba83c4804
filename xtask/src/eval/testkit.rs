//! Test fixtures: a `genmodels list --json` as the CLI prints it, every report as a typed
//! value, and a fake `genmodels` binary (a shell script honouring the contracts) so the
//! orchestration runs without libtorch.
#![cfg(test)]

use genmodels_contracts::capability::ModelList;
use genmodels_contracts::reports::{
    Calibration, CalibrationBin, CalibrationReport, CodebookScores, DomainScores,
    ImageMetricsReport, LangevinReport, Memorisation, ModeCoverage, ModeReport, NllReport,
    OodReport, OodRow, PerplexityReport, ReconstructReport, Restoration, RestorationFrame,
};
use genmodels_contracts::{RunManifest, TrainerConfig};
use std::path::{Path, PathBuf};

/// A `genmodels list --json` for the models of the recipe file.
pub const LIST: &str = include_str!("testdata/models.json");

pub fn list() -> ModelList {
    super::genmodels::parse_model_list(LIST).unwrap()
}

pub fn image_report(fid: f64, network: &str) -> ImageMetricsReport {
    ImageMetricsReport {
        fid,
        kid_mean: 1.234,
        kid_std: 0.1,
        kid_subset_size: 1000,
        precision: 0.5,
        recall: 0.25,
        density: 1.0,
        coverage: 0.75,
        num_real: 5000,
        num_fake: 5000,
        feature_network: network.into(),
        inception_score: None,
        inputs: Default::default(),
        domain: Some(DomainScores {
            domain_fid: fid,
            domain_is_mean: 8.0,
            domain_is_std: 0.1,
            class_kl: 0.01,
            class_histogram: vec![0.1; 10],
            domain_feature_network: network.into(),
        }),
        memorisation: Some(Memorisation {
            near_copy_share: 0.01,
            threshold: 3.0,
            fake_median: 6.0,
            heldout_median: 5.5,
        }),
    }
}

pub fn nll() -> NllReport {
    NllReport {
        model: "vae".into(),
        data: "fashion-mnist:test".into(),
        n: 2000,
        k: 5000,
        seed: 0,
        nll_nats: 238.904,
        nll_standard_error: 1.0,
        bits_per_dim: 0.4,
        negative_elbo_nats: 245.0,
        active_units: Some(9),
        z_dim: Some(50),
        unit_activity: vec![],
        preparation: "dynamic binarisation".into(),
        estimator: "importance sampling, k = 5000".into(),
        ema: false,
        test_set_sha256: String::new(),
    }
}

/// A diffusion model's `nll --ema` report: a variational bound, no latent units.
pub fn nll_bound() -> NllReport {
    NllReport {
        model: "ddpm".into(),
        n: 200,
        k: 20,
        nll_nats: 2345.678,
        bits_per_dim: 4.3164,
        negative_elbo_nats: 2400.0,
        active_units: None,
        z_dim: None,
        preparation: "8-bit pixels in [-1, 1], no dequantisation".into(),
        estimator: "variational bound (an upper bound on -log p(x))".into(),
        ema: true,
        ..nll()
    }
}

pub fn reconstruct(codebook: bool) -> ReconstructReport {
    ReconstructReport {
        model: "vae".into(),
        data: "fashion-mnist:test".into(),
        n: 10000,
        reconstruction_mse: 0.06701,
        codebook: codebook.then_some(CodebookScores {
            codebook_perplexity: 97.04,
            codes: 128,
            prior_nll_nats_per_code: 3.1234,
            codes_per_image: 49,
        }),
    }
}

pub fn modes() -> ModeReport {
    ModeReport {
        coverage: ModeCoverage {
            modes: 25,
            modes_covered: 21,
            high_quality_share: 0.02,
            kl_to_uniform: 0.406,
            counts: vec![1; 25],
        },
        num_samples: 2500,
        min_count: 3,
        centers: vec![[0.0, 1.0]; 25],
        mode_std: 0.05,
    }
}

pub fn perplexity() -> PerplexityReport {
    PerplexityReport {
        tokens: 119030,
        loss_nats_per_token: 1.85,
        perplexity: 6.4,
        bits_per_token: 2.678,
        bits_per_char: 2.678,
        split: "val".into(),
    }
}

/// The model of the energy reports below.
const ENERGY_MODEL: &str = "jem";

/// `langevin`'s report: chains from noise, or (`corrupt`) a restoration.
pub fn langevin(corrupt: Option<&str>) -> LangevinReport {
    LangevinReport {
        model: ENERGY_MODEL.into(),
        chains: 8,
        steps: if corrupt.is_some() { 60 } else { 200 },
        seed: 0,
        chain_seconds: 3.2,
        ms_per_step_per_image: 2.0,
        threads: 2,
        device: "Cpu".into(),
        restoration: corrupt.map(|c| Restoration {
            data: "fashion-mnist:test".into(),
            corrupt: c.into(),
            free_fraction: 0.25,
            psnr_corrupted_db: 13.1,
            lpips_corrupted: Some(0.2875),
            psnr_mean_fill_db: Some(15.08),
            psnr_restored_db: 16.5,
            lpips_restored: Some(0.15),
            lpips_net: Some("vgg16".into()),
            frames: vec![RestorationFrame {
                step: 60,
                psnr_db: 16.5,
                lpips: Some(0.15),
            }],
        }),
        grid: "grid.png".into(),
    }
}

pub fn ood() -> OodReport {
    OodReport {
        model: ENERGY_MODEL.into(),
        in_data: "fashion-mnist:test".into(),
        n: 500,
        mean_log_px: 3.0,
        rows: vec![
            OodRow {
                out_data: "mnist-5k".into(),
                n: 500,
                auroc_log_px: 0.8123,
                auroc_max_softmax: Some(0.7),
                auroc_grad_norm: 0.6,
                mean_log_px: 1.0,
            },
            OodRow {
                out_data: "noise".into(),
                n: 500,
                auroc_log_px: 1.0,
                auroc_max_softmax: None,
                auroc_grad_norm: 0.99,
                mean_log_px: -5.0,
            },
        ],
    }
}

pub fn calibration() -> CalibrationReport {
    CalibrationReport {
        model: ENERGY_MODEL.into(),
        data: "fashion-mnist:test".into(),
        n: 2000,
        calibration: Calibration {
            ece: 0.0312,
            accuracy: 0.8765,
            bins: vec![CalibrationBin {
                lo: 0.0,
                hi: 1.0,
                count: 2000,
                confidence: 0.9,
                accuracy: 0.8765,
            }],
        },
    }
}

pub fn manifest(steps: u64) -> RunManifest {
    RunManifest {
        model: "gpt-mini".into(),
        family: "transformer".into(),
        data: "moby-dick".into(),
        config: serde_json::json!({"n_layer": 4}),
        trainer: TrainerConfig {
            steps,
            ..Default::default()
        },
        device: "cpu".into(),
        genmodels_version: "0.1.0".into(),
    }
}

/// Writes a fake `genmodels` into `dir`: a shell script that answers every verb eval uses
/// as the contracts say (a run folder for `train`, the reports for `--json`, a few files for
/// `sample`; `nll --ema` a diffusion bound), copying the fixtures above. `codebook`: the reconstruct report has codebook
/// scores.
pub fn fake_genmodels(dir: &Path, codebook: bool) -> PathBuf {
    let fx = dir.join("fixtures");
    std::fs::create_dir_all(&fx).unwrap();
    let put = |name: &str, text: String| std::fs::write(fx.join(name), text).unwrap();
    put("list.json", LIST.into());
    put(
        "run.json",
        genmodels_contracts::to_json_pretty(&manifest(1000)),
    );
    put(
        "metrics.json",
        genmodels_contracts::to_json_pretty(&image_report(21.2, "classifier")),
    );
    put("modes.json", genmodels_contracts::to_json_pretty(&modes()));
    put("nll.json", genmodels_contracts::to_json_pretty(&nll()));
    put(
        "nll-bound.json",
        genmodels_contracts::to_json_pretty(&nll_bound()),
    );
    put(
        "reconstruct.json",
        genmodels_contracts::to_json_pretty(&reconstruct(codebook)),
    );
    put(
        "perplexity.json",
        genmodels_contracts::to_json_pretty(&perplexity()),
    );
    put(
        "chains.json",
        genmodels_contracts::to_json_pretty(&langevin(None)),
    );
    put(
        "restore.json",
        genmodels_contracts::to_json_pretty(&langevin(Some("mask:center"))),
    );
    put("ood.json", genmodels_contracts::to_json_pretty(&ood()));
    put(
        "calibration.json",
        genmodels_contracts::to_json_pretty(&calibration()),
    );
    put("pic.png", "not really a PNG; eval only copies it".into());
    let script = format!(
        r#"#!/usr/bin/env bash
set -eu
FX='{fx}'
if [ "$1" = --threads ]; then shift 2; fi
verb=$1; shift
arg() {{ local k=$1; shift; while [ $# -gt 1 ]; do if [ "$1" = "$k" ]; then echo "$2"; return; fi; shift; done; }}
json=$(arg --json "$@"); out=$(arg --out "$@"); real=$(arg --real "$@")
case $verb in
  list) cat "$FX/list.json" ;;
  train)
    mkdir -p "$out"; echo x > "$out/checkpoint.safetensors"; cp "$FX/run.json" "$out/run.json"
    printf '%s\n' '{{"step":10,"time_s":1.0,"lr_scale":1.0,"loss":2.0}}' \
      '{{"step":20,"time_s":2.5,"lr_scale":1.0,"loss":1.0,"val_loss":1.5}}' > "$out/train.jsonl" ;;
  resume) printf '%s\n' '{{"step":30,"time_s":4.0,"lr_scale":1.0,"loss":0.9}}' >> "$1/train.jsonl" ;;
  classifier) echo x > "$out" ;;
  sample) mkdir -p "$out/overview"; cp "$FX/pic.png" "$out/overview/grid.png"; printf '0.1,0.2\n1.0,1.0\n' > "$out/points.csv" ;;
  interpolate) cp "$FX/pic.png" "$out" ;;
  translate) mkdir -p "$out" ;;
  metrics)
    fake=$(arg --fake "$@")
    if [ "$real" = grid25 ]; then cp "$FX/modes.json" "$json"
    elif [[ $fake == folder:*/sweep/* ]]; then
      # a sweep point: FID 100/K + 0.5, one more for the second scheduler
      k=${{fake##*-}}; v=$((100 / k)); if [[ $fake == */sweep/dpm* ]]; then v=$((v + 1)); fi
      sed "s/\"fid\": 21.2,/\"fid\": $v.5,/" "$FX/metrics.json" > "$json"
    else cp "$FX/metrics.json" "$json"; fi ;;
  reconstruct) cp "$FX/pic.png" "$out"; cp "$FX/reconstruct.json" "$json" ;;
  nll) if [[ " $* " == *" --ema "* ]]; then cp "$FX/nll-bound.json" "$json"; else cp "$FX/nll.json" "$json"; fi ;;
  perplexity) cp "$FX/perplexity.json" "$json" ;;
  langevin) cp "$FX/pic.png" "$out"
    if [ -n "$(arg --corrupt "$@")" ]; then cp "$FX/restore.json" "$json"; else cp "$FX/chains.json" "$json"; fi ;;
  ood) cp "$FX/ood.json" "$json" ;;
  calibration) cp "$FX/pic.png" "$out"; cp "$FX/calibration.json" "$json" ;;
  generate) echo "Call me Ishmael. Some years ago" ;;
  *) echo "fake genmodels: no verb $verb" >&2; exit 2 ;;
esac
"#,
        fx = fx.display()
    );
    let bin = dir.join("genmodels");
    std::fs::write(&bin, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_until_executable(&bin);
    bin
}

/// Waits until `bin` can be executed. A test thread that forks while this one still holds
/// the script open for writing gives the child a copy of that descriptor until it execs,
/// and exec of a file open for writing fails with ETXTBSY ("Text file busy"), as it did in
/// CI. Our descriptor is closed by now, so once one exec succeeds no writer is left.
fn wait_until_executable(bin: &Path) {
    const ETXTBSY: i32 = 26;
    for _ in 0..500 {
        match std::process::Command::new(bin)
            .arg("list")
            .stdout(std::process::Stdio::null())
            .status()
        {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("could not run the fake genmodels {}: {e}", bin.display()),
            Ok(_) => return,
        }
    }
    panic!("the fake genmodels {} stayed busy for 5 s", bin.display());
}
