//! `genmodels ood`: out-of-distribution detection with an energy model's scores, as JEM
//! evaluates it (Grathwohl et al. 2020, Sec. 5.3; `eval_wrn_ebm.py`). Each image gets three
//! scores, higher meaning "in distribution": log p(x) up to a constant (-E(x)); the maximum
//! softmax probability (models whose energy is a classifier's); and minus the norm of
//! d log p(x) / dx (JEM's "approximate mass"). For each out-of-distribution set, each score's
//! AUROC with the in-distribution images as positives (sklearn's roc_auc_score).
//!
//! `genmodels calibration`: the expected calibration error (15 bins, Guo et al. 2017) of a
//! model with class logits, with its reliability diagram.

use crate::common::{bar, first_batches, need, open_run, write_json, Weights};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_contracts::reports::{CalibrationReport, OodReport, OodRow};
use genmodels_core::data::DataSpec;
use genmodels_core::device::seed_everything;
use genmodels_core::model::{Capability, Energy};
use genmodels_metrics::detection::{auroc, calibration};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

const PER: usize = 100;

#[derive(Args)]
pub struct OodArgs {
    /// The run folder of a model with an energy.
    run_dir: PathBuf,
    /// In-distribution images.
    #[arg(long = "in", default_value = "fashion-mnist:test")]
    in_data: String,
    /// Out-of-distribution sets (repeatable): a data spec (mnist-5k, folder:DIR, ...),
    /// `noise` (uniform on [-1, 1]), `invert:SPEC` (dark and light swapped) or `vflip:SPEC`
    /// (upside down).
    #[arg(long = "out-data", required = true)]
    out_data: Vec<String>,
    /// Images per set (the first N).
    #[arg(short, long, default_value_t = 2000)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Also write the scores as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The three scores of a set, each higher for "more in distribution".
struct Scores {
    log_px: Vec<f64>,
    max_softmax: Option<Vec<f64>>,
    grad: Vec<f64>,
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(
        t.to_device(Device::Cpu).to_kind(Kind::Double),
    )?)
}

fn score(e: &mut dyn Energy, batches: &[Tensor], what: &str) -> Result<Scores> {
    let b = bar(batches.len() as u64, what);
    let (mut lp, mut ms, mut gr) = (Vec::new(), Vec::new(), Vec::new());
    let mut has_logits = true;
    for x in batches {
        lp.extend(to_vec(&-e.energy(x)?)?);
        match e.class_logits(x)? {
            Some(l) => ms.extend(to_vec(
                &l.softmax(1, Kind::Float).amax([1i64].as_slice(), false),
            )?),
            None => has_logits = false,
        }
        gr.extend(to_vec(&-e.energy_grad_norm(x)?)?);
        b.inc(1);
    }
    b.finish_and_clear();
    Ok(Scores {
        log_px: lp,
        max_softmax: has_logits.then_some(ms),
        grad: gr,
    })
}

/// The first `n` images of `spec` in batches, with the set transforms.
fn images(spec: &str, n: usize, like: &[i64], device: Device) -> Result<Vec<Tensor>> {
    if spec == "noise" {
        let mut out = Vec::new();
        for start in (0..n).step_by(PER) {
            let mut shape = vec![(PER.min(n - start)) as i64];
            shape.extend_from_slice(like);
            out.push(Tensor::rand(shape.as_slice(), (Kind::Float, device)) * 2.0 - 1.0);
        }
        return Ok(out);
    }
    let (transform, inner) = match spec.split_once(':') {
        Some((t @ ("invert" | "vflip"), rest)) => (Some(t), rest),
        _ => (None, spec),
    };
    let ds = DataSpec::parse(inner)?.dataset()?;
    if ds.is_empty() {
        bail!("`{spec}` holds no images");
    }
    Ok(first_batches(ds.as_ref(), n, PER, device)?
        .into_iter()
        .map(|b| match transform {
            Some("invert") => -b.x,
            Some(_) => b.x.flip([2]),
            None => b.x,
        })
        .collect())
}

pub fn ood(a: OodArgs) -> Result<()> {
    if a.n == 0 {
        bail!("-n must be at least 1");
    }
    let (mut run, device) = open_run(
        &a.run_dir,
        a.device.as_deref(),
        Weights::Sampling { no_ema: false },
    )?;
    let name = run.name();
    let e = need(run.model.as_energy(), "ood", Capability::Energy, name)?;
    seed_everything(a.seed);
    let inside = images(&a.in_data, a.n, &[], device)?;
    let like = inside[0].size()[1..].to_vec();
    let s_in = score(e, &inside, &a.in_data)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut rows = Vec::new();
    println!(
        "{:<28} {:>8} {:>12} {:>14} {:>12}",
        "out-of-distribution set", "images", "AUROC log p", "AUROC max p(y|x)", "AUROC -|grad|"
    );
    for spec in &a.out_data {
        let out = images(spec, a.n, &like, device)?;
        if out[0].size()[1..] != like[..] {
            bail!(
                "`{spec}` has images of shape {:?}, the in-distribution set {:?}",
                &out[0].size()[1..],
                like
            );
        }
        let s = score(e, &out, spec)?;
        let ms = match (&s_in.max_softmax, &s.max_softmax) {
            (Some(p), Some(q)) => Some(auroc(p, q)?),
            _ => None,
        };
        let row = OodRow {
            out_data: spec.clone(),
            n: s.log_px.len(),
            auroc_log_px: auroc(&s_in.log_px, &s.log_px)?,
            auroc_max_softmax: ms,
            auroc_grad_norm: auroc(&s_in.grad, &s.grad)?,
            mean_log_px: mean(&s.log_px),
        };
        println!(
            "{:<28} {:>8} {:>12.4} {:>14} {:>12.4}",
            row.out_data,
            row.n,
            row.auroc_log_px,
            ms.map_or("-".into(), |v| format!("{v:.4}")),
            row.auroc_grad_norm
        );
        rows.push(row);
    }
    let r = OodReport {
        model: name.into(),
        in_data: a.in_data.clone(),
        n: s_in.log_px.len(),
        mean_log_px: mean(&s_in.log_px),
        rows,
    };
    if let Some(p) = &a.json {
        write_json(p, &r)?;
    }
    Ok(())
}

#[derive(Args)]
pub struct CalibrationArgs {
    /// The run folder of a model with class logits (an energy that is a classifier's).
    run_dir: PathBuf,
    /// Labelled images to score.
    #[arg(long, default_value = "fashion-mnist:test")]
    data: String,
    #[arg(short, long, default_value_t = 10_000)]
    n: usize,
    /// Equal-width confidence bins.
    #[arg(long, default_value_t = 15)]
    bins: usize,
    /// The reliability diagram (PNG).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    device: Option<String>,
    /// Also write the ECE and the bins as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn calibration_cmd(a: CalibrationArgs) -> Result<()> {
    if a.n == 0 || !(1..=1000).contains(&a.bins) {
        bail!("-n must be at least 1 and --bins from 1 to 1000");
    }
    let (mut run, device) = open_run(
        &a.run_dir,
        a.device.as_deref(),
        Weights::Sampling { no_ema: false },
    )?;
    let name = run.name();
    let e = need(
        run.model.as_energy(),
        "calibration",
        Capability::Energy,
        name,
    )?;
    let ds = DataSpec::parse(&a.data)?.dataset()?;
    let n = a.n.min(ds.len());
    let (mut conf, mut correct) = (Vec::new(), Vec::new());
    for b in first_batches(ds.as_ref(), n, PER, device)? {
        let Some(y) = b.y else {
            bail!(
                "`{}` has no labels; calibration needs labelled images",
                a.data
            );
        };
        let Some(l) = e.class_logits(&b.x)? else {
            bail!("{name} has no class logits (its energy is not a classifier's); calibration needs them");
        };
        let p = l.softmax(1, Kind::Float);
        let (c, pred) = p.max_dim(1, false);
        conf.extend(to_vec(&c)?);
        let ok = Vec::<bool>::try_from(
            pred.eq_tensor(&y.to_device(pred.device()))
                .to_device(Device::Cpu),
        )?;
        correct.extend(ok);
    }
    let c = calibration(&conf, &correct, a.bins)?;
    println!(
        "{name} on {} ({n} images): accuracy {:.4}, ECE {:.4} ({} bins)",
        a.data, c.accuracy, c.ece, a.bins
    );
    if let Some(p) = &a.out {
        let bins: Vec<(f64, f64)> = c
            .bins
            .iter()
            .map(|b| (b.accuracy, b.count as f64))
            .collect();
        genmodels_core::image_io::save_reliability(&bins, 300, p)?;
        println!(
            "reliability diagram (accuracy per confidence bin, diagonal = calibrated): {}",
            p.display()
        );
    }
    if let Some(p) = &a.json {
        write_json(
            p,
            &CalibrationReport {
                model: name.into(),
                data: a.data.clone(),
                n,
                calibration: c,
            },
        )?;
    }
    Ok(())
}
