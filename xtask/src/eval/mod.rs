//! `cargo xtask eval`: train (or resume) a reference model of each family within a time
//! budget, sample, measure, and write `report.html`, `report.md` and `results.json`.
//!
//! Everything runs through the `genmodels` binary, so what the report shows is what a user's
//! own commands give; each model's section lists the commands. The recipes are data
//! (`xtask/recipes.toml`, [`recipes`]); what is measured comes from the capabilities the
//! binary declares for each model (`genmodels list --json`, [`plan`]), and every report is
//! read back through the typed contracts of `genmodels-contracts` ([`measure`]). Run folders
//! live under `OUT/runs/ID` and are resumed by the next eval, so repeated evals keep training
//! toward each recipe's step total.

mod genmodels;
mod measure;
mod plan;
mod recipes;
mod testkit; // test-only (#![cfg(test)] inside)

pub use recipes::{family_help, model_help};

use crate::report::{self, ModelReport, Report};
use anyhow::{anyhow, bail, Context, Result};
use genmodels::{p, s, Genmodels};
use genmodels_contracts::{LogLine, RunLayout, RunManifest};
use plan::Step;
use recipes::{Recipe, RecipeBook};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Options of `cargo xtask eval` (without --metrics-only).
pub struct Opts {
    pub quick: bool,
    pub families: Vec<String>,
    pub models: Vec<String>,
    pub samples: Option<usize>,
    pub inception_samples: Option<usize>,
    pub device: Option<String>,
    /// Training minutes per reference model.
    pub budget_min: Option<f64>,
    pub out: Option<PathBuf>,
    pub threads: Option<usize>,
    pub release: bool,
    /// Measure the run folders as they stand; train nothing.
    pub no_train: bool,
    pub command_line: String,
}

/// Where a run folder stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunState {
    /// The last logged step.
    pub step: u64,
    /// The step total of the run (its manifest's trainer settings).
    pub planned: u64,
    /// Training seconds so far, all invocations.
    pub time_s: f64,
}

/// Where a run folder stands: `None` when it holds no checkpoint (or has logged nothing);
/// an error naming the file when its manifest does not read as a `RunManifest`.
pub fn run_state(run: &Path) -> Result<Option<RunState>> {
    let layout = RunLayout::new(run);
    if !layout.has_checkpoint() {
        return Ok(None);
    }
    let log = match std::fs::read_to_string(layout.log()) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(anyhow!("reading {}: {e}", layout.log().display())),
    };
    let Some(last) = LogLine::parse_log(&log).pop() else {
        return Ok(None);
    };
    let manifest: RunManifest = genmodels::read_report(&layout.manifest())?;
    Ok(Some(RunState {
        step: last.step,
        planned: manifest.trainer.steps,
        time_s: last.time_s,
    }))
}

/// The last logged value of `key` in a run's log (`None`: never logged).
pub fn last_value(run: &Path, key: &str) -> Result<Option<f64>> {
    let path = RunLayout::new(run).log();
    let log =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(LogLine::parse_log(&log)
        .iter()
        .rev()
        .find_map(|l| l.values.get(key).copied()))
}

/// Prints a stage line with the running clock.
struct Stages {
    t0: Instant,
    n: usize,
    i: usize,
}

impl Stages {
    fn next(&mut self, what: &str) {
        self.i += 1;
        println!(
            "\n[{}/{}] {what}   (eval clock {:.0} s)",
            self.i,
            self.n,
            self.t0.elapsed().as_secs_f64()
        );
    }
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown time".into())
}

/// Settings shared by every model's measurement.
pub struct Ctx<'a> {
    g: &'a Genmodels,
    out: PathBuf,
    img: PathBuf,
    quick: bool,
    samples: usize,
    inception_samples: usize,
    classifier: Option<PathBuf>,
    budget_s: f64,
    no_train: bool,
}

pub fn eval(opts: Opts) -> Result<()> {
    let t0 = Instant::now();
    let book = RecipeBook::embedded()?;
    let recipes = book.select(&opts.families, &opts.models)?;
    let quick = opts.quick;
    let budget_min = opts.budget_min.unwrap_or(if quick { 3.0 } else { 15.0 });
    if !(budget_min.is_finite() && budget_min >= 0.0) {
        bail!("--budget takes minutes of training per model, e.g. --budget 10 (got {budget_min})");
    }
    let samples = opts.samples.unwrap_or(if quick { 2000 } else { 5000 });
    if samples < 100 {
        bail!("--samples {samples} is too few for the metrics (at least 100; 5000 or more for numbers worth comparing)");
    }
    let on_cuda = opts
        .device
        .as_deref()
        .is_some_and(|d| d.starts_with("cuda"));
    let inception_samples = opts.inception_samples.unwrap_or(if quick {
        0
    } else if on_cuda {
        samples
    } else {
        1000
    });
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| crate::root().join("target").join("eval"));
    let out = if out.is_absolute() {
        out
    } else {
        std::env::current_dir()?.join(out)
    };
    let img = out.join("img");
    std::fs::create_dir_all(&img).with_context(|| format!("creating {}", img.display()))?;
    std::fs::create_dir_all(out.join("runs"))?;

    crate::setup(false)?;
    let g = Genmodels {
        bin: genmodels::build(opts.release)?,
        threads: opts.threads,
        device: opts.device.clone(),
    };
    // What each model can do decides what is measured; a recipe whose model the binary does
    // not know fails here, before anything trains.
    let models = g.list()?;
    let plans: Vec<(&Recipe, Vec<Step>)> = recipes
        .iter()
        .map(|r| Ok((*r, plan::plan(r, plan::model_for(&models, r)?)?)))
        .collect::<Result<_>>()?;
    let needs_classifier = plans
        .iter()
        .flat_map(|(_, p)| p)
        .any(Step::needs_classifier);
    let mut stages = Stages {
        t0,
        n: plans.len() + usize::from(needs_classifier),
        i: 0,
    };
    println!(
        "xtask eval: {} model(s): {}; training budget {budget_min} min per reference model; {} samples per image metric{}; report in {}",
        recipes.len(),
        recipes.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "),
        samples,
        if inception_samples > 0 {
            format!(", Inception FID on {inception_samples}")
        } else {
            String::new()
        },
        out.display()
    );

    let mut notes = Vec::new();
    let classifier = if needs_classifier {
        let epochs = if quick { 1 } else { 3 };
        let path = out.join(format!("fmnist-classifier-{epochs}ep.safetensors"));
        stages.next(&format!(
            "domain classifier for the image metrics ({epochs} epoch(s))"
        ));
        let mut log = Vec::new();
        if path.exists() {
            println!("reusing {}", path.display());
        } else {
            let c = &book.classifier;
            g.run(
                &[
                    s(&["classifier", "--data", &c.data, "--test", &c.test, "--out"]),
                    vec![p(&path), "--epochs".into(), epochs.to_string()],
                ]
                .concat(),
                &mut log,
            )?;
        }
        notes.push(format!(
            "Image scores use the penultimate layer (128-d) of a Fashion-MNIST classifier trained for {epochs} epoch(s) \
             by `genmodels classifier` (a domain feature space: fast on a CPU, not comparable with published FIDs); \
             `Inception FID` uses the FID Inception network (TF 2015-12-05 weights, pool3), the standard."
        ));
        Some(path)
    } else {
        None
    };
    if plans
        .iter()
        .flat_map(|(_, p)| p)
        .any(|s| matches!(s, Step::SchedulerSweep { .. }))
    {
        let n = measure::sample_count(samples, plan::SampleCost::Iterative, quick, on_cuda);
        let (nll_n, nll_k) = measure::nll_counts(plan::SampleCost::Iterative, quick);
        let steps: Vec<String> = measure::sweep_steps(quick)
            .iter()
            .map(|k| k.to_string())
            .collect();
        notes.push(format!(
            "Models that sample through a scheduler (`schedulers`: a network pass per sampling step) are scored on \
             {n} samples{} with their default sampler, their test NLL is the variational bound on {nll_n} images with \
             `-k {nll_k}` network evaluations each (EMA weights), and FID against sampling steps is measured for each \
             of the recipe's schedulers at {} steps, {n} samples a point (domain classifier features).",
            if on_cuda { "" } else { " (capped on a CPU)" },
            steps.join(", ")
        ));
    }

    let ctx = Ctx {
        g: &g,
        out: out.clone(),
        img,
        quick,
        samples,
        inception_samples,
        classifier,
        budget_s: budget_min * 60.0,
        no_train: opts.no_train,
    };
    let started = utc_now();
    let mut html = PathBuf::new();
    let mut reports = Vec::new();
    for (r, steps) in &plans {
        stages.next(&format!("{}: {}", r.id, r.about));
        let mut m = ModelReport {
            id: r.id.clone(),
            model: r.model.clone(),
            family: r.family.clone(),
            about: r.about.clone(),
            data: r.data.clone(),
            planned_steps: r.steps,
            ..Default::default()
        };
        if let Err(e) = train_and_measure(&ctx, r, steps, &mut m) {
            eprintln!("xtask eval: {} failed: {e:#}", r.id);
            m.error = Some(format!("{e:#}"));
        }
        reports.push(m);
        // A report after every model: a crash later loses nothing measured so far.
        html = write_report(&opts, &ctx, &reports, &notes, &started, t0)?;
    }
    match report::check_in_browser(&html) {
        Ok(c) if c.images_broken == 0 && c.table_rows == reports.len() => println!(
            "xtask eval: report checked in headless Chromium: {} images load, {} table rows",
            c.images_total, c.table_rows
        ),
        Ok(c) => eprintln!(
            "xtask eval: warning: in Chromium {} of {} images did not load ({:?}); {} table rows for {} models",
            c.images_broken,
            c.images_total,
            c.broken,
            c.table_rows,
            reports.len()
        ),
        Err(e) => println!("xtask eval: report not checked in a browser ({e:#})"),
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|m| m.error.is_some())
        .map(|m| m.id.as_str())
        .collect();
    println!(
        "\nxtask eval: done in {:.1} min; results.json and report.md beside it",
        t0.elapsed().as_secs_f64() / 60.0
    );
    if !failed.is_empty() {
        println!("xtask eval: failed: {} (see the report)", failed.join(", "));
    }
    println!("report: {}", html.display());
    if !failed.is_empty() {
        bail!("{} of {} models failed", failed.len(), reports.len());
    }
    Ok(())
}

fn write_report(
    opts: &Opts,
    ctx: &Ctx,
    models: &[ModelReport],
    notes: &[String],
    started: &str,
    t0: Instant,
) -> Result<PathBuf> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let r = Report {
        command: opts.command_line.clone(),
        started_utc: started.to_string(),
        wall_s: t0.elapsed().as_secs_f64(),
        quick: ctx.quick,
        budget_s: if ctx.no_train { 0.0 } else { ctx.budget_s },
        trained: !ctx.no_train,
        device: opts.device.clone().unwrap_or_else(|| "auto".into()),
        threads: opts
            .threads
            .map(|t| t.to_string())
            .unwrap_or_else(|| "libtorch default".into()),
        machine: format!("{cores} CPU cores"),
        models: models.to_vec(),
        notes: notes.to_vec(),
    };
    r.write(&ctx.out)
}

/// Trains the recipe's run within its budget, then runs its measurement plan.
fn train_and_measure(ctx: &Ctx, r: &Recipe, steps: &[Step], m: &mut ModelReport) -> Result<()> {
    let run = ctx.out.join("runs").join(&r.id);
    // A tiny model runs faster on one libtorch thread, unless the user chose.
    let g = ctx
        .g
        .with_threads(ctx.g.threads.or(if r.small { Some(1) } else { None }));
    train(ctx, &g, r, &run, m)?;
    println!(
        "{}: measuring {}",
        r.id,
        steps
            .iter()
            .filter(|s| ctx.inception_samples > 0 || !matches!(s, Step::InceptionFid { .. }))
            .map(Step::label)
            .collect::<Vec<_>>()
            .join(", ")
    );
    measure::run_steps(ctx, &g, r, &run, steps, m)
}

/// Trains or resumes the recipe's run within its budget; fills steps and time.
fn train(ctx: &Ctx, g: &Genmodels, r: &Recipe, run: &Path, m: &mut ModelReport) -> Result<()> {
    let budget = (ctx.budget_s * r.share).max(1.0);
    match run_state(run)? {
        None if ctx.no_train => {
            bail!(
                "--no-train, but {} holds no run to measure; drop --no-train to train it",
                run.display()
            );
        }
        Some(st) if ctx.no_train => {
            println!(
                "{}: measuring the run as it stands (step {} of {}; --no-train)",
                run.display(),
                st.step,
                st.planned
            );
        }
        Some(st) if st.step >= st.planned => {
            println!(
                "{} is already at step {} of {}: nothing to train",
                run.display(),
                st.step,
                st.planned
            );
        }
        Some(st) => {
            m.resumed_from = Some(st.step);
            g.run(
                &[
                    s(&["resume"]),
                    vec![p(run), "--time-budget".into(), format!("{budget:.0}s")],
                ]
                .concat(),
                &mut m.commands,
            )?;
        }
        None => {
            g.run(
                &[
                    s(&["train", &r.model, "--data", &r.data, "--out"]),
                    vec![
                        p(run),
                        "--steps".into(),
                        r.steps.to_string(),
                        "--batch-size".into(),
                        r.batch.to_string(),
                        "--time-budget".into(),
                        format!("{budget:.0}s"),
                        "--force".into(),
                    ],
                    r.args.clone(),
                ]
                .concat(),
                &mut m.commands,
            )?;
        }
    }
    let st =
        run_state(run)?.ok_or_else(|| anyhow!("{} holds no run after training", run.display()))?;
    m.steps = st.step;
    m.planned_steps = st.planned;
    m.train_s = st.time_s;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::{fake_genmodels, manifest};

    #[test]
    fn run_state_reads_the_log_and_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let layout = RunLayout::new(run);
        assert_eq!(run_state(run).unwrap(), None);
        std::fs::write(layout.checkpoint(), b"x").unwrap();
        std::fs::write(
            layout.manifest(),
            genmodels_contracts::to_json_pretty(&manifest(300)),
        )
        .unwrap();
        std::fs::write(
            layout.log(),
            "{\"step\":50,\"time_s\":1.5}\n{\"step\":120,\"time_s\":3.0,\"val_loss\":2.5}\n{\"step\":",
        )
        .unwrap();
        assert_eq!(
            run_state(run).unwrap(),
            Some(RunState {
                step: 120,
                planned: 300,
                time_s: 3.0
            })
        );
        assert_eq!(last_value(run, "val_loss").unwrap(), Some(2.5));
        assert_eq!(last_value(run, "nothing").unwrap(), None);
    }

    #[test]
    fn a_manifest_that_is_not_a_run_manifest_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let layout = RunLayout::new(run);
        std::fs::write(layout.checkpoint(), b"x").unwrap();
        std::fs::write(layout.log(), "{\"step\":5,\"time_s\":1.0}\n").unwrap();
        let e = format!("{:#}", run_state(run).unwrap_err());
        assert!(e.contains("run.json"), "{e}");
        std::fs::write(layout.manifest(), r#"{"trainer": {"steps": 300}}"#).unwrap();
        let e = format!("{:#}", run_state(run).unwrap_err());
        assert!(e.contains("run.json") && e.contains("RunManifest"), "{e}");
        // A checkpoint with nothing logged yet is no run to resume.
        std::fs::write(layout.log(), "").unwrap();
        assert_eq!(run_state(run).unwrap(), None);
        assert!(last_value(&run.join("missing"), "val_loss").is_err());
    }

    /// Trains and measures `id` with the fake binary; returns the report with the temporary
    /// folder written as OUT.
    fn measure_with_fake_binary(id: &str, codebook: bool, quick: bool) -> (ModelReport, String) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let img = out.join("img");
        std::fs::create_dir_all(&img).unwrap();
        let g = Genmodels {
            bin: fake_genmodels(dir.path(), codebook),
            threads: None,
            device: None,
        };
        let ctx = Ctx {
            g: &g,
            out: out.clone(),
            img,
            quick,
            samples: 5000,
            inception_samples: if quick { 0 } else { 1000 },
            classifier: Some(out.join("cls.safetensors")),
            budget_s: 60.0,
            no_train: false,
        };
        let book = RecipeBook::embedded().unwrap();
        let r = book.recipes.iter().find(|r| r.id == id).unwrap();
        let list = g.list().unwrap();
        let steps = plan::plan(r, plan::model_for(&list, r).unwrap()).unwrap();
        let mut m = ModelReport::default();
        let res = train_and_measure(&ctx, r, &steps, &mut m);
        let shown = |s: &str| s.replace(&out.display().to_string(), "OUT");
        m.commands = m.commands.iter().map(|c| shown(c)).collect();
        if let Err(e) = res {
            return (m, shown(&format!("{e:#}")));
        }
        for (_, rel) in &m.images {
            assert!(out.join(rel).exists(), "{rel} was not written");
        }
        (m, String::new())
    }

    #[test]
    fn an_image_model_with_likelihood_runs_the_commands_it_always_ran() {
        let (m, err) = measure_with_fake_binary("vae", false, false);
        assert_eq!(err, "");
        assert_eq!(
            m.commands,
            [
                "genmodels --threads 1 train vae --data fashion-mnist --out OUT/runs/vae --steps 9360 --batch-size 128 \
                 --time-budget 60s --force --sample-every 4000 --checkpoint-every 1000 --log-every 100",
                "genmodels --threads 1 sample OUT/runs/vae -n 64 --out OUT/runs/vae/eval/grid",
                "genmodels --threads 1 interpolate OUT/runs/vae --out OUT/img/vae-interp.png --seed 1",
                // the feature networks get every thread, even for a small model
                "genmodels metrics --real fashion-mnist:test --fake OUT/runs/vae -n 5000 --features classifier \
                 --classifier OUT/cls.safetensors --json OUT/runs/vae/eval/metrics-domain.json --train fashion-mnist",
                "genmodels metrics --real fashion-mnist:test --fake OUT/runs/vae -n 1000 --json OUT/runs/vae/eval/metrics-inception.json",
                "genmodels --threads 1 reconstruct OUT/runs/vae -n 10000 --out OUT/img/vae-recon.png --json OUT/runs/vae/eval/reconstruct.json",
                "genmodels --threads 1 nll OUT/runs/vae -n 2000 -k 5000 --json OUT/runs/vae/eval/nll.json",
            ]
        );
        let captions: Vec<&str> = m.images.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            captions,
            [
                "samples at step 20",
                "interpolation: rows walk along slerp in z",
                "test images (top) and reconstructions (bottom)",
                "training curves"
            ]
        );
        let labels: Vec<&str> = m.scores.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            labels,
            [
                "test NLL (2000 images, k = 5000)",
                "reconstruction MSE",
                "active units",
                "FID (5000)",
                "KID",
                "precision",
                "recall",
                "density",
                "coverage",
                "Inception FID (1000)"
            ]
        );
        assert_eq!((m.steps, m.planned_steps, m.train_s), (20, 1000, 2.5));
    }

    #[test]
    fn a_model_with_schedulers_gets_fid_against_steps_in_its_report() {
        let (m, err) = measure_with_fake_binary("ddpm", false, true);
        assert_eq!(err, "");
        let mut want = vec![
            "genmodels train ddpm --data fashion-mnist --out OUT/runs/ddpm --steps 20000 --batch-size 64 \
             --time-budget 60s --force --ema 0.99 --lr-schedule warmup:100 --sample-every 500 \
             --checkpoint-every 100 --log-every 25 --eval-batches 4"
                .to_string(),
            // the main grid as for any image model
            "genmodels sample OUT/runs/ddpm -n 64 --out OUT/runs/ddpm/eval/grid".into(),
            // an iterative sampler's scores draw fewer samples on a CPU
            "genmodels metrics --real fashion-mnist:test --fake OUT/runs/ddpm -n 250 --features classifier \
             --classifier OUT/cls.safetensors --json OUT/runs/ddpm/eval/metrics-domain.json --train fashion-mnist"
                .into(),
        ];
        for sch in ["ddim", "dpm-solver++"] {
            for k in [5, 10, 20] {
                let d = format!("OUT/runs/ddpm/eval/sweep/{sch}-{k}");
                want.push(format!(
                    "genmodels sample OUT/runs/ddpm -n 250 --out {d} --scheduler {sch} --steps {k}"
                ));
                want.push(format!(
                    "genmodels metrics --real fashion-mnist:test --fake folder:{d} -n 250 --features classifier \
                     --classifier OUT/cls.safetensors --json {d}.json"
                ));
            }
        }
        // the bound of the sampled weights, with few network evaluations
        want.push(
            "genmodels nll OUT/runs/ddpm -n 200 -k 20 --json OUT/runs/ddpm/eval/nll.json --ema"
                .into(),
        );
        assert_eq!(m.commands, want);
        let captions: Vec<&str> = m.images.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            captions,
            [
                "samples at step 20",
                "FID against sampling steps, one line per scheduler (250 samples a point, domain classifier features)",
                "training curves"
            ]
        );
        assert_eq!(m.images[1].1, "img/ddpm-fid-steps.png");
        // the table: a row per (scheduler, steps)
        assert_eq!(m.tables.len(), 1);
        let t = &m.tables[0];
        assert!(
            t.caption.starts_with("FID against sampling steps")
                && t.caption.contains(
                    "250 samples a point scored against `fashion-mnist:test` in the domain classifier's features"
                )
                && !t.caption.contains("  "),
            "{}",
            t.caption
        );
        assert_eq!(
            t.header,
            [
                "scheduler",
                "steps",
                "FID",
                "precision",
                "recall",
                "s / image"
            ]
        );
        let rows: Vec<String> = t.rows.iter().map(|r| r[..3].join(" ")).collect();
        assert_eq!(
            rows,
            [
                "ddim 5 20.5",
                "ddim 10 10.5",
                "ddim 20 5.5",
                "dpm-solver++ 5 21.5",
                "dpm-solver++ 10 11.5",
                "dpm-solver++ 20 6.5"
            ]
        );
        assert!(t.rows.iter().all(|r| r[5].parse::<f64>().unwrap() >= 0.0));
        let labels: Vec<&str> = m.scores.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            labels,
            [
                "test NLL bound (200 images, k = 20 network evaluations)",
                "bits/dim",
                "FID (250)",
                "KID",
                "precision",
                "recall",
                "density",
                "coverage",
                "best FID of the step sweep (250 a point)"
            ]
        );
        assert_eq!(m.scores[1].1, "4.316");
        assert_eq!(m.scores.last().unwrap().1, "5.5 (ddim 20 steps)");
        // the main FID is the default sampler's, apart from the sweep
        assert_eq!(m.scores[2], ("FID (250)".into(), "21.2".into()));
        let sweep = m.metrics["schedulers"].as_array().unwrap();
        assert_eq!(sweep.len(), 6);
        assert_eq!(sweep[3]["scheduler"], "dpm-solver++");
        assert_eq!(sweep[3]["steps"], 5);
        assert_eq!(sweep[3]["metrics"]["fid"], 21.5);

        // ... and the pages show the table and the plot
        let dir = tempfile::tempdir().unwrap();
        let r = Report {
            models: vec![m],
            ..Default::default()
        };
        r.write(dir.path()).unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(
            md.contains("| scheduler | steps | FID | precision | recall | s / image |"),
            "{md}"
        );
        assert!(
            md.contains("| dpm-solver++ | 20 | 6.5 | 0.500 | 0.250 |"),
            "{md}"
        );
        assert!(md.contains("(img/ddpm-fid-steps.png)"), "{md}");
        let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
        assert!(html.contains("<table class=\"model-table\"><caption>FID against sampling steps"));
        assert!(html.contains("<img src=\"img/ddpm-fid-steps.png\""));

        // the full budget: more samples and steps, the Inception FID capped too
        let (m, err) = measure_with_fake_binary("ddpm", false, false);
        assert_eq!(err, "");
        let has = |c: &str| m.commands.iter().any(|x| x.contains(c));
        assert!(has("--fake OUT/runs/ddpm -n 1000 --features classifier"));
        assert!(has(
            "metrics --real fashion-mnist:test --fake OUT/runs/ddpm -n 1000 --json"
        ));
        assert!(has(
            "--out OUT/runs/ddpm/eval/sweep/dpm-solver++-50 --scheduler dpm-solver++ --steps 50"
        ));
        assert!(!has("/sweep/ddim-5 "));
        assert!(has(
            "nll OUT/runs/ddpm -n 1000 -k 50 --json OUT/runs/ddpm/eval/nll.json --ema"
        ));
        assert_eq!(m.tables[0].rows.len(), 6);
    }

    #[test]
    fn iterative_samplers_are_capped_on_a_cpu_only() {
        use plan::SampleCost::{Iterative, OnePass};
        assert_eq!(measure::sample_count(2000, OnePass, true, false), 2000);
        assert_eq!(measure::sample_count(2000, Iterative, true, false), 250);
        assert_eq!(measure::sample_count(5000, Iterative, false, false), 1000);
        assert_eq!(measure::sample_count(100, Iterative, true, false), 100);
        assert_eq!(measure::sample_count(5000, Iterative, false, true), 5000);
        assert_eq!(measure::sample_count(0, Iterative, false, false), 0);
        assert_eq!(measure::nll_counts(OnePass, false), (2000, 5000));
        assert_eq!(measure::nll_counts(Iterative, true), (200, 20));
        assert_eq!(measure::sweep_steps(true), [5, 10, 20]);
        assert_eq!(measure::sweep_steps(false), [10, 20, 50]);
    }

    #[test]
    fn an_image_energy_model_runs_its_chains_restorations_ood_and_calibration() {
        let (m, err) = measure_with_fake_binary("jem", false, true);
        assert_eq!(err, "");
        let at = m
            .commands
            .iter()
            .position(|c| c.contains(" langevin "))
            .unwrap();
        assert_eq!(
            m.commands[at..at + 5],
            [
                "genmodels langevin OUT/runs/jem -n 8 --steps 200 --frames 8 --out OUT/img/jem-chains.png \
                 --json OUT/runs/jem/eval/chains.json",
                "genmodels langevin OUT/runs/jem --data fashion-mnist:test --corrupt mask:center -n 8 --steps 60 \
                 --frames 6 --out OUT/img/jem-restore-mask-center.png --json OUT/runs/jem/eval/restore-mask-center.json",
                "genmodels langevin OUT/runs/jem --data fashion-mnist:test --corrupt noise:0.3 -n 8 --steps 60 \
                 --frames 6 --out OUT/img/jem-restore-noise-0.3.png --json OUT/runs/jem/eval/restore-noise-0.3.json",
                "genmodels ood OUT/runs/jem --in fashion-mnist:test --out-data mnist-5k --out-data noise \
                 --out-data invert:fashion-mnist:test --out-data vflip:fashion-mnist:test -n 500 \
                 --json OUT/runs/jem/eval/ood.json",
                "genmodels calibration OUT/runs/jem --data fashion-mnist:test -n 2000 --out OUT/img/jem-reliability.png \
                 --json OUT/runs/jem/eval/calibration.json",
            ]
        );
        let score = |k: &str| {
            m.scores
                .iter()
                .find(|(l, _)| l == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            score("test accuracy (2000 images)").as_deref(),
            Some("0.8765")
        );
        assert_eq!(score("ECE (15 bins)").as_deref(), Some("0.0312"));
        assert_eq!(
            score("Langevin ms / step / image").as_deref(),
            Some("2.00 (2 threads)")
        );
        let ood = m
            .tables
            .iter()
            .find(|t| t.caption.starts_with("out-of-distribution"))
            .unwrap();
        assert_eq!(ood.rows[0], ["mnist-5k", "500", "0.812", "0.700", "0.600"]);
        assert_eq!(ood.rows[1][3], "-");
        let rest = m
            .tables
            .iter()
            .find(|t| t.caption.starts_with("restoration"))
            .unwrap();
        assert_eq!(rest.rows.len(), 2);
        assert_eq!(
            rest.rows[0],
            [
                "mask:center",
                "25 %",
                "13.10",
                "15.08",
                "16.50",
                "0.287",
                "0.150"
            ]
        );
        assert!(m
            .images
            .iter()
            .any(|(c, _)| c.starts_with("reliability diagram")));
        assert_eq!(m.metrics["calibration"]["ece"], 0.0312);
        assert_eq!(m.metrics["restorations"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn points_text_translation_and_codebook_recipes() {
        let (m, err) = measure_with_fake_binary("grid25-plain", false, true);
        assert_eq!(err, "");
        assert_eq!(
            m.commands[1..],
            [
                "genmodels --threads 1 metrics --real grid25 --fake OUT/runs/grid25-plain -n 2500 --json OUT/runs/grid25-plain/eval/modes.json",
                "genmodels --threads 1 sample OUT/runs/grid25-plain -n 2500 --out OUT/runs/grid25-plain/eval/points",
            ]
        );
        assert!(
            m.commands[0].contains("--time-budget 30s"),
            "{}",
            m.commands[0]
        );
        assert_eq!(m.scores[0], ("modes covered".into(), "21/25".into()));

        let (m, err) = measure_with_fake_binary("gpt-mini", false, true);
        assert_eq!(err, "");
        assert_eq!(
            m.commands[1..],
            [
                "genmodels perplexity OUT/runs/gpt-mini --json OUT/runs/gpt-mini/eval/perplexity.json --max-tokens 20000",
                "genmodels generate OUT/runs/gpt-mini --prompt \"Call me Ishmael.\" -n 400 --top-k 40 --seed 0 --no-stream",
            ]
        );
        assert_eq!(
            m.scores[0],
            ("validation loss (nats/char)".into(), "1.500".into())
        );
        assert_eq!(m.text.as_deref(), Some("Call me Ishmael. Some years ago"));

        let (m, err) = measure_with_fake_binary("cyclegan", false, false);
        assert_eq!(err, "");
        assert_eq!(
            m.commands[1..],
            [
                "genmodels sample OUT/runs/cyclegan -n 64 --out OUT/runs/cyclegan/eval/grid",
                "genmodels translate OUT/runs/cyclegan --data fashion-mnist:test@7 --out OUT/runs/cyclegan/eval/a2b -n 1000",
                "genmodels metrics --real fashion-mnist:test@9 --fake folder:OUT/runs/cyclegan/eval/a2b:28:1 -n 1000 \
                 --features classifier --classifier OUT/cls.safetensors --json OUT/runs/cyclegan/eval/metrics-domain.json",
            ]
        );
        assert_eq!(
            m.images[0].0,
            "A -> B -> A (rows: sneaker, boot, sneaker back)"
        );
        assert_eq!(m.scores[0].0, "FID (translated vs real B, 1000)");

        let (m, err) = measure_with_fake_binary("vqvae", true, true);
        assert_eq!(err, "");
        assert_eq!(m.scores[1], ("codebook perplexity".into(), "97.0".into()));
        assert!(!m
            .commands
            .iter()
            .any(|c| c.contains(" interpolate ") || c.contains(" nll ")));
        // A model that declares a codebook but whose report has none is an error naming the file;
        // what was measured before stays in the report.
        let (m, err) = measure_with_fake_binary("vqvae", false, true);
        assert!(
            err.contains("reconstruct.json") && err.contains("codebook"),
            "{err}"
        );
        assert_eq!(m.scores[0].0, "reconstruction MSE");
        assert!(m.scores.iter().any(|(k, _)| k.starts_with("FID")));
    }

    #[test]
    fn a_second_eval_resumes_and_no_train_measures_the_run_as_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        let g = Genmodels {
            bin: fake_genmodels(dir.path(), false),
            threads: Some(2),
            device: Some("cpu".into()),
        };
        let mut ctx = Ctx {
            g: &g,
            out: dir.path().into(),
            img: dir.path().into(),
            quick: true,
            samples: 100,
            inception_samples: 0,
            classifier: None,
            budget_s: 90.0,
            no_train: true,
        };
        let r = &RecipeBook::embedded().unwrap().recipes[0];
        let run = dir.path().join("run");
        let mut m = ModelReport::default();
        let e = train(&ctx, &g, r, &run, &mut m).unwrap_err().to_string();
        assert!(e.contains("--no-train"), "{e}");
        ctx.no_train = false;
        train(&ctx, &g, r, &run, &mut m).unwrap();
        assert_eq!((m.steps, m.resumed_from), (20, None));
        train(&ctx, &g, r, &run, &mut m).unwrap();
        assert_eq!((m.steps, m.resumed_from, m.train_s), (30, Some(20), 4.0));
        let last = m
            .commands
            .last()
            .unwrap()
            .replace(&dir.path().display().to_string(), "D");
        assert_eq!(
            last,
            "genmodels --threads 2 resume D/run --time-budget 90s --device cpu"
        );
        ctx.no_train = true;
        let before = m.commands.len();
        train(&ctx, &g, r, &run, &mut m).unwrap();
        assert_eq!(m.commands.len(), before, "--no-train runs no command");
    }

    #[test]
    fn every_recipe_plans_against_a_binary_that_lists_its_model() {
        let list = testkit::list();
        for r in &RecipeBook::embedded().unwrap().recipes {
            let info = plan::model_for(&list, r).unwrap();
            let steps = plan::plan(r, info).unwrap();
            assert_eq!(steps.last(), Some(&Step::LossCurves), "{}", r.id);
        }
    }
}
