//! `cargo xtask eval`: train (or resume) a reference model of each family within a time
//! budget, sample, measure, and write `report.html`, `report.md` and `results.json`.
//!
//! Everything runs through the `genmodels` binary, so what the report shows is what a user's
//! own commands give; each model's section lists the commands. Run folders live under
//! `OUT/runs/ID` and are resumed by the next eval, so repeated evals keep training toward
//! each recipe's step total.

use crate::plot;
use crate::report::{self, ModelReport, Report};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// What a recipe's model produces, which decides how it is measured.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// Fashion-MNIST images: sample grid, interpolation, metrics in a feature space.
    Images,
    /// 2-D points on a Gaussian mixture: modes covered, scatter plot.
    Points,
    /// Text: validation loss, perplexity, a generated passage.
    Text,
    /// Unpaired image translation (CycleGAN): A -> B -> A grid, translated set vs real B.
    Translation,
}

/// A reference model: what to train, on what, for how long, and how to measure it.
#[derive(Debug)]
struct Recipe {
    id: &'static str,
    model: &'static str,
    family: &'static str,
    kind: Kind,
    data: &'static str,
    batch: usize,
    steps: u64,
    /// Share of the budget (the 2-D mixtures need a fraction of an image model's time).
    share: f64,
    /// A tiny model (MLP on 2-D points): one libtorch thread is faster than several.
    small: bool,
    /// Part of the default set (one reference per family, plus the mode-collapse pair).
    default: bool,
    /// Extra `genmodels train` arguments, separated by spaces.
    args: &'static str,
    about: &'static str,
}

const RECIPES: &[Recipe] = &[
    Recipe {
        id: "dcgan",
        model: "dcgan",
        family: "gan",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 64,
        steps: 6000,
        share: 1.0,
        small: false,
        default: true,
        args: "--sample-every 1000 --checkpoint-every 200",
        about: "DCGAN (Radford et al. 2015), paper defaults, on Fashion-MNIST",
    },
    Recipe {
        id: "grid25-plain",
        model: "gan2d",
        family: "gan",
        kind: Kind::Points,
        data: "grid25",
        batch: 256,
        steps: 10000,
        share: 0.5,
        small: true,
        default: true,
        args: "--sample-every 5000 --checkpoint-every 1000 --seed 1",
        about: "plain MLP GAN (non-saturating) on the 25-Gaussian grid: the mode-collapse baseline",
    },
    Recipe {
        id: "grid25-wgangp",
        model: "gan2d",
        family: "gan",
        kind: Kind::Points,
        data: "grid25",
        batch: 256,
        steps: 10000,
        share: 0.5,
        small: true,
        default: true,
        args: "--sample-every 5000 --checkpoint-every 1000 --seed 1 --set loss=wasserstein --set gp_lambda=0.1 --set n_critic=5 --set lr=1e-4 --set beta2=0.9",
        about: "the same MLP GAN as a WGAN-GP critic on the 25-Gaussian grid: the mode-collapse fix",
    },
    Recipe {
        id: "gpt-mini",
        model: "gpt-mini",
        family: "transformer",
        kind: Kind::Text,
        data: "moby-dick",
        batch: 12,
        steps: 2000,
        share: 1.0,
        small: false,
        default: true,
        args: "--lr-schedule cosine:100:2000:0.1 --grad-clip 1 --eval-every 250 --checkpoint-every 100 --sample-every 1000",
        about: "character-level GPT in nanoGPT's CPU configuration (4 layers, 4 heads, 128 wide) on Moby-Dick",
    },
    Recipe {
        id: "wgan-gp",
        model: "wgan-gp",
        family: "gan",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 64,
        steps: 2000,
        share: 1.0,
        small: false,
        default: false,
        args: "--sample-every 500 --checkpoint-every 100 --log-every 25",
        about: "WGAN-GP (Gulrajani et al. 2017): DCGAN generator, critic without batch norm, GP 10, 5 critic steps",
    },
    Recipe {
        id: "biggan",
        model: "biggan",
        family: "gan",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 64,
        steps: 1500,
        share: 1.0,
        small: false,
        default: false,
        args: "--ema 0.99 --sample-every 500 --sample-count 100 --checkpoint-every 100",
        about: "BigGAN-style class-conditional GAN (CBN, projection D, spectral norm, self-attention, hinge)",
    },
    Recipe {
        id: "progan",
        model: "progan",
        family: "gan",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 32,
        steps: 2800,
        share: 1.0,
        small: false,
        default: false,
        args: "--set phase_steps=400 --sample-every 400 --checkpoint-every 100",
        about: "Progressive GAN growing 4x4 -> 32x32 with fade-in, equalised lr, pixel norm, minibatch std",
    },
    Recipe {
        id: "stylegan2",
        model: "stylegan2",
        family: "gan",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 32,
        steps: 1000,
        share: 1.0,
        small: false,
        default: false,
        args: "--set fmap_max=64 --set fmap_min=16 --ema 0.99 --sample-every 500 --checkpoint-every 100",
        about: "StyleGAN2: mapping network, modulated convolutions, noise, style mixing, lazy R1",
    },
    Recipe {
        id: "cyclegan",
        model: "cyclegan",
        family: "gan",
        kind: Kind::Translation,
        data: "fashion-mnist@7,9",
        batch: 32,
        steps: 800,
        share: 1.0,
        small: false,
        default: false,
        args: "--set ngf=16 --set ndf=16 --sample-every 400 --sample-count 36 --checkpoint-every 100",
        about: "CycleGAN sneaker (7) <-> ankle boot (9): ResNet generators, PatchGAN, LSGAN, cycle 10",
    },
    Recipe {
        id: "gpt",
        model: "gpt",
        family: "transformer",
        kind: Kind::Text,
        data: "moby-dick",
        batch: 64,
        steps: 5000,
        share: 1.0,
        small: false,
        default: false,
        args: "--lr-schedule cosine:100:5000:0.1 --grad-clip 1 --eval-every 250 --eval-batches 5 --checkpoint-every 50 --sample-every 1000",
        about: "character-level GPT in nanoGPT's shakespeare_char configuration (6x6x384) on Moby-Dick",
    },
    Recipe {
        id: "vae",
        model: "vae",
        family: "vae",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 100,
        steps: 12000,
        share: 1.0,
        small: true,
        default: true,
        args: "--sample-every 4000 --checkpoint-every 1000 --log-every 100",
        about: "VAE (Kingma & Welling 2014), the IWAE paper's MLP (200-200, 50 latents), Bernoulli decoder on dynamically binarised Fashion-MNIST",
    },
    Recipe {
        id: "iwae",
        model: "iwae",
        family: "vae",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 100,
        steps: 12000,
        share: 1.0,
        small: true,
        default: false,
        args: "--set k=5 --sample-every 4000 --checkpoint-every 1000 --log-every 100",
        about: "IWAE (Burda et al. 2016) with k = 5 on the VAE's networks",
    },
    Recipe {
        id: "beta-vae",
        model: "beta-vae",
        family: "vae",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 100,
        steps: 12000,
        share: 1.0,
        small: true,
        default: false,
        args: "--sample-every 4000 --checkpoint-every 1000 --log-every 100",
        about: "beta-VAE (Higgins et al. 2017), beta = 4, on the VAE's networks",
    },
    Recipe {
        id: "vqvae",
        model: "vqvae",
        family: "vae",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 64,
        steps: 10000,
        share: 1.0,
        small: false,
        default: false,
        args: "--set prior_start=6000 --sample-every 2000 --checkpoint-every 500 --log-every 100",
        about: "VQ-VAE (van den Oord et al. 2017): 128 codes on a 7x7 grid, EMA codebook; a GPT prior over the codes from step 6000",
    },
    Recipe {
        id: "vaegan",
        model: "vaegan",
        family: "vae",
        kind: Kind::Images,
        data: "fashion-mnist",
        batch: 64,
        steps: 6000,
        share: 1.0,
        small: false,
        default: false,
        args: "--sample-every 2000 --checkpoint-every 500 --log-every 100",
        about: "VAE-GAN (Larsen et al. 2016): the decoder is a GAN generator, reconstruction measured in D's features",
    },
];

/// Families the project plans but this build does not have yet.
const PLANNED: &[&str] = &["diffusion", "ebm"];

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

fn select(opts: &Opts) -> Result<Vec<&'static Recipe>> {
    let known_families: Vec<&str> = {
        let mut f: Vec<&str> = RECIPES.iter().map(|r| r.family).collect();
        f.dedup();
        f
    };
    for f in &opts.families {
        if PLANNED.contains(&f.as_str()) {
            bail!(
                "the {f} family is not built yet; families in this build: {}",
                known_families.join(", ")
            );
        }
        if !known_families.contains(&f.as_str()) {
            bail!(
                "unknown family `{f}`; families in this build: {}",
                known_families.join(", ")
            );
        }
    }
    let mut out: Vec<&Recipe> = Vec::new();
    for m in &opts.models {
        let found: Vec<&Recipe> = RECIPES
            .iter()
            .filter(|r| r.id == m || r.model == m)
            .collect();
        if found.is_empty() {
            let ids: Vec<&str> = RECIPES.iter().map(|r| r.id).collect();
            bail!("no eval recipe for `{m}`; recipes: {}", ids.join(", "));
        }
        for r in found {
            if !out.iter().any(|o| o.id == r.id) {
                out.push(r);
            }
        }
    }
    if opts.models.is_empty() {
        out = RECIPES
            .iter()
            .filter(|r| r.default)
            .filter(|r| opts.families.is_empty() || opts.families.iter().any(|f| f == r.family))
            .collect();
    } else if !opts.families.is_empty() {
        out.retain(|r| opts.families.iter().any(|f| f == r.family));
        if out.is_empty() {
            bail!("none of the --model recipes belongs to the --family given");
        }
    }
    Ok(out)
}

/// The `genmodels` binary with the options every call shares; records each command.
struct Genmodels {
    bin: PathBuf,
    threads: Option<usize>,
    device: Option<String>,
}

impl Genmodels {
    fn command(&self, args: &[String], with_device: bool) -> (Command, String) {
        let mut c = Command::new(&self.bin);
        let mut shown = vec!["genmodels".to_string()];
        if let Some(t) = self.threads {
            shown.extend(["--threads".into(), t.to_string()]);
        }
        shown.extend(args.iter().cloned());
        if with_device {
            if let Some(d) = &self.device {
                shown.extend(["--device".into(), d.clone()]);
            }
        }
        c.args(&shown[1..]);
        c.current_dir(crate::root());
        let text = shown
            .iter()
            .map(|a| {
                if a.contains([' ', '"', '\'']) {
                    format!("{a:?}")
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        // Paths inside the workspace are shown relative to it, as a user would type them.
        let text = text.replace(&format!("{}/", crate::root().display()), "");
        (c, text)
    }

    /// Runs with inherited output (progress bars show); the command goes into `log`.
    fn run(&self, args: &[String], log: &mut Vec<String>) -> Result<()> {
        let (mut c, text) = self.command(args, true);
        log.push(text.clone());
        let st = c
            .status()
            .with_context(|| format!("could not start {text}"))?;
        if !st.success() {
            bail!("`{text}` failed ({st})");
        }
        Ok(())
    }

    /// Runs and returns stdout (stderr, with progress bars, still shows).
    fn stdout(&self, args: &[String], log: &mut Vec<String>) -> Result<String> {
        let (mut c, text) = self.command(args, true);
        log.push(text.clone());
        let out = c
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start {text}"))?;
        if !out.status.success() {
            bail!("`{text}` failed ({})", out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Where a run folder stands: (step reached, planned total, training seconds so far).
fn run_state(run: &Path) -> Option<(u64, u64, f64)> {
    if !run.join("checkpoint.safetensors").exists() {
        return None;
    }
    let log = std::fs::read_to_string(run.join("train.jsonl")).unwrap_or_default();
    let last = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("step").is_some())?;
    let step = last["step"].as_u64()?;
    let time = last["time_s"].as_f64().unwrap_or(0.0);
    let planned = std::fs::read_to_string(run.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v["trainer"]["steps"].as_u64())
        .unwrap_or(step);
    Some((step, planned, time))
}

fn read_json(path: &Path) -> Result<Value> {
    let t = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&t).with_context(|| format!("{} is not JSON", path.display()))
}

fn f(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(|x| x.as_f64())
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

fn build_cli(release: bool) -> Result<PathBuf> {
    println!(
        "xtask eval: building the genmodels binary ({} profile)",
        if release { "release" } else { "dev" }
    );
    let mut c = crate::cargo();
    c.args(["build", "-p", "genmodels-cli", "--bin", "genmodels"]);
    if release {
        c.arg("--release");
    }
    crate::run(&mut c)?;
    let bin = crate::root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("genmodels");
    if !bin.exists() {
        bail!("the build did not produce {}", bin.display());
    }
    Ok(bin)
}

/// Settings shared by every model's measurement.
struct Ctx<'a> {
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
    let recipes = select(&opts)?;
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
    let bin = build_cli(opts.release)?;
    let g = Genmodels {
        bin,
        threads: opts.threads,
        device: opts.device.clone(),
    };
    let needs_classifier = recipes
        .iter()
        .any(|r| matches!(r.kind, Kind::Images | Kind::Translation));
    let mut stages = Stages {
        t0,
        n: recipes.len() + usize::from(needs_classifier),
        i: 0,
    };
    println!(
        "xtask eval: {} model(s): {}; training budget {budget_min} min per reference model; {} samples per image metric{}; report in {}",
        recipes.len(),
        recipes.iter().map(|r| r.id).collect::<Vec<_>>().join(", "),
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
            g.run(
                &[
                    s(&[
                        "classifier",
                        "--data",
                        "fashion-mnist",
                        "--test",
                        "fashion-mnist:test",
                        "--out",
                    ]),
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
    let mut models = Vec::new();
    for r in &recipes {
        stages.next(&format!("{}: {}", r.id, r.about));
        let mut m = ModelReport {
            id: r.id.into(),
            model: r.model.into(),
            family: r.family.into(),
            about: r.about.into(),
            data: r.data.into(),
            planned_steps: r.steps,
            ..Default::default()
        };
        if let Err(e) = measure(&ctx, r, &mut m) {
            eprintln!("xtask eval: {} failed: {e:#}", r.id);
            m.error = Some(format!("{e:#}"));
        }
        models.push(m);
        // A report after every model: a crash later loses nothing measured so far.
        html = write_report(&opts, &ctx, &models, &notes, &started, t0)?;
    }
    match report::check_in_browser(&html) {
        Ok(c) if c.images_broken == 0 && c.table_rows == models.len() => println!(
            "xtask eval: report checked in headless Chromium: {} images load, {} table rows",
            c.images_total, c.table_rows
        ),
        Ok(c) => eprintln!(
            "xtask eval: warning: in Chromium {} of {} images did not load ({:?}); {} table rows for {} models",
            c.images_broken,
            c.images_total,
            c.broken,
            c.table_rows,
            models.len()
        ),
        Err(e) => println!("xtask eval: report not checked in a browser ({e:#})"),
    }
    let failed: Vec<&str> = models
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
        bail!("{} of {} models failed", failed.len(), models.len());
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

/// Trains or resumes the recipe's run within its budget; fills steps and time.
fn train(ctx: &Ctx, g: &Genmodels, r: &Recipe, run: &Path, m: &mut ModelReport) -> Result<()> {
    let budget = (ctx.budget_s * r.share).max(1.0);
    match run_state(run) {
        None if ctx.no_train => {
            bail!(
                "--no-train, but {} holds no run to measure; drop --no-train to train it",
                run.display()
            );
        }
        Some((step, planned, _)) if ctx.no_train => {
            println!(
                "{}: measuring the run as it stands (step {step} of {planned}; --no-train)",
                run.display()
            );
        }
        Some((step, planned, _)) if step >= planned => {
            println!(
                "{} is already at step {step} of {planned}: nothing to train",
                run.display()
            );
        }
        Some((step, _, _)) => {
            m.resumed_from = Some(step);
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
                    s(&["train", r.model, "--data", r.data, "--out"]),
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
                    r.args.split_whitespace().map(String::from).collect(),
                ]
                .concat(),
                &mut m.commands,
            )?;
        }
    }
    let (step, planned, time) =
        run_state(run).ok_or_else(|| anyhow!("{} holds no run after training", run.display()))?;
    m.steps = step;
    m.planned_steps = planned;
    m.train_s = time;
    Ok(())
}

fn measure(ctx: &Ctx, r: &Recipe, m: &mut ModelReport) -> Result<()> {
    let run = ctx.out.join("runs").join(r.id);
    let local = Genmodels {
        bin: ctx.g.bin.clone(),
        threads: ctx.g.threads.or(if r.small { Some(1) } else { None }),
        device: ctx.g.device.clone(),
    };
    let g = &local;
    train(ctx, g, r, &run, m)?;
    let ev = run.join("eval");
    std::fs::create_dir_all(&ev)?;
    let img = |name: &str| ctx.img.join(format!("{}-{name}", r.id));
    let rel = |name: &str| format!("img/{}-{name}", r.id);
    match r.kind {
        Kind::Images | Kind::Translation => {
            let n_grid = if r.model == "biggan" { 100 } else { 64 };
            g.run(
                &[
                    s(&["sample"]),
                    vec![
                        p(&run),
                        "-n".into(),
                        n_grid.to_string(),
                        "--out".into(),
                        p(&ev.join("grid")),
                    ],
                ]
                .concat(),
                &mut m.commands,
            )?;
            std::fs::copy(ev.join("grid").join("grid.png"), img("samples.png"))?;
            m.images.push((
                match (r.kind, r.model) {
                    (Kind::Translation, _) => {
                        "A -> B -> A (rows: sneaker, boot, sneaker back)".into()
                    }
                    (_, "biggan") => "class x sample: column c is class c".into(),
                    _ => format!("samples at step {}", m.steps),
                },
                rel("samples.png"),
            ));
            // VQ-VAE has no continuous latent space to walk.
            if r.kind == Kind::Images && r.model != "vqvae" {
                g.run(
                    &[
                        s(&["interpolate"]),
                        vec![
                            p(&run),
                            "--out".into(),
                            p(&img("interp.png")),
                            "--seed".into(),
                            "1".into(),
                        ],
                    ]
                    .concat(),
                    &mut m.commands,
                )?;
                m.images.push((
                    if r.model == "stylegan2" {
                        "interpolation: rows walk linearly in W".into()
                    } else {
                        "interpolation: rows walk along slerp in z".into()
                    },
                    rel("interp.png"),
                ));
            }
            image_metrics(ctx, r, &run, &ev, m)?;
            if r.family == "vae" {
                vae_scores(ctx, g, r, &run, &ev, m)?;
            }
        }
        Kind::Points => {
            let modes = ev.join("modes.json");
            g.run(
                &[
                    s(&["metrics", "--real", r.data, "--fake"]),
                    vec![
                        p(&run),
                        "-n".into(),
                        "2500".into(),
                        "--json".into(),
                        p(&modes),
                    ],
                ]
                .concat(),
                &mut m.commands,
            )?;
            g.run(
                &[
                    s(&["sample"]),
                    vec![
                        p(&run),
                        "-n".into(),
                        "2500".into(),
                        "--out".into(),
                        p(&ev.join("points")),
                    ],
                ]
                .concat(),
                &mut m.commands,
            )?;
            let j = read_json(&modes)?;
            let pts = read_points(&ev.join("points").join("points.csv"))?;
            let centers: Vec<(f64, f64)> = j["centers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| Some((c.get(0)?.as_f64()?, c.get(1)?.as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            let lim = centers
                .iter()
                .map(|c| c.0.abs().max(c.1.abs()))
                .fold(0.0, f64::max)
                * 1.5;
            plot::scatter(
                &img("modes.png"),
                &format!("{}: 2500 samples, step {}", r.id, m.steps),
                &pts,
                &centers,
                f(&j, "mode_std").unwrap_or(0.05),
                lim.max(1.0),
            )?;
            m.images
                .push(("mode-collapse scatter".into(), rel("modes.png")));
            m.scores = vec![
                (
                    "modes covered".into(),
                    format!(
                        "{}/{}",
                        j["modes_covered"].as_u64().unwrap_or(0),
                        j["modes"].as_u64().unwrap_or(0)
                    ),
                ),
                (
                    "high-quality share".into(),
                    format!("{:.3}", f(&j, "high_quality_share").unwrap_or(f64::NAN)),
                ),
                (
                    "KL(modes||uniform)".into(),
                    format!("{:.3}", f(&j, "kl_to_uniform").unwrap_or(f64::NAN)),
                ),
            ];
            m.metrics = j;
        }
        Kind::Text => {
            let pj = ev.join("perplexity.json");
            let mut args = vec!["perplexity".to_string(), p(&run), "--json".into(), p(&pj)];
            if ctx.quick {
                args.extend(["--max-tokens".into(), "20000".into()]);
            }
            g.run(&args, &mut m.commands)?;
            let text = g.stdout(
                &[
                    s(&["generate"]),
                    vec![p(&run)],
                    s(&[
                        "--prompt",
                        "Call me Ishmael.",
                        "-n",
                        "400",
                        "--top-k",
                        "40",
                        "--seed",
                        "0",
                        "--no-stream",
                    ]),
                ]
                .concat(),
                &mut m.commands,
            )?;
            m.text = Some(text.trim_end().to_string());
            let j = read_json(&pj)?;
            let val = last_value(&run, "val_loss");
            m.scores = vec![
                (
                    "validation loss (nats/char)".into(),
                    val.map(|v| format!("{v:.3}"))
                        .unwrap_or_else(|| "n/a".into()),
                ),
                (
                    format!(
                        "perplexity ({} val tokens)",
                        j["tokens"].as_u64().unwrap_or(0)
                    ),
                    format!("{:.2}", f(&j, "perplexity").unwrap_or(f64::NAN)),
                ),
                (
                    "bits/char".into(),
                    format!("{:.3}", f(&j, "bits_per_char").unwrap_or(f64::NAN)),
                ),
            ];
            m.metrics = j;
        }
    }
    loss_plot(&run, r, &img("loss.png"))?;
    m.images.push(("training curves".into(), rel("loss.png")));
    Ok(())
}

/// Domain-feature metrics on `ctx.samples` (plus Inception FID when asked).
/// The VAE family's own scores: the importance-sampled test NLL (VAE, beta-VAE, IWAE), and the
/// reconstruction error with a grid of reconstructions (all of them, VAE-GAN included; for
/// VQ-VAE also the codebook perplexity and the prior's NLL per code).
fn vae_scores(
    ctx: &Ctx,
    g: &Genmodels,
    r: &Recipe,
    run: &Path,
    ev: &Path,
    m: &mut ModelReport,
) -> Result<()> {
    let img = ctx.img.join(format!("{}-recon.png", r.id));
    let rj = ev.join("reconstruct.json");
    let n_rec = if ctx.quick { 1000 } else { 10000 };
    g.run(
        &[
            s(&["reconstruct"]),
            vec![
                p(run),
                "-n".into(),
                n_rec.to_string(),
                "--out".into(),
                p(&img),
                "--json".into(),
                p(&rj),
            ],
        ]
        .concat(),
        &mut m.commands,
    )?;
    m.images.push((
        "test images (top) and reconstructions (bottom)".into(),
        format!("img/{}-recon.png", r.id),
    ));
    let rec = read_json(&rj)?;
    let mut extra = vec![(
        "reconstruction MSE".to_string(),
        format!("{:.4}", f(&rec, "reconstruction_mse").unwrap_or(f64::NAN)),
    )];
    if r.model == "vqvae" {
        extra.push((
            "codebook perplexity".into(),
            format!("{:.1}", f(&rec, "codebook_perplexity").unwrap_or(f64::NAN)),
        ));
        extra.push((
            "prior NLL (nats/code)".into(),
            format!(
                "{:.3}",
                f(&rec, "prior_nll_nats_per_code").unwrap_or(f64::NAN)
            ),
        ));
    } else if matches!(r.model, "vae" | "beta-vae" | "iwae") {
        // VAE-GAN has no likelihood to estimate; the three likelihood models do.
        let (n, k) = if ctx.quick { (500, 1000) } else { (2000, 5000) };
        let nj = ev.join("nll.json");
        g.run(
            &[
                s(&["nll"]),
                vec![
                    p(run),
                    "-n".into(),
                    n.to_string(),
                    "-k".into(),
                    k.to_string(),
                    "--json".into(),
                    p(&nj),
                ],
            ]
            .concat(),
            &mut m.commands,
        )?;
        let nll = read_json(&nj)?;
        extra.insert(
            0,
            (
                format!("test NLL ({n} images, k = {k})"),
                format!("{:.2} nats", f(&nll, "nll_nats").unwrap_or(f64::NAN)),
            ),
        );
        extra.push((
            "active units".into(),
            format!(
                "{}/{}",
                nll["active_units"].as_i64().unwrap_or(0),
                nll["z_dim"].as_i64().unwrap_or(0)
            ),
        ));
        if let Some(o) = m.metrics.as_object_mut() {
            o.insert("nll".into(), nll);
        }
    }
    if let Some(o) = m.metrics.as_object_mut() {
        o.insert("reconstruct".into(), rec);
    }
    m.scores.splice(0..0, extra);
    Ok(())
}

fn image_metrics(ctx: &Ctx, r: &Recipe, run: &Path, ev: &Path, m: &mut ModelReport) -> Result<()> {
    let g = ctx.g;
    let cls = ctx
        .classifier
        .as_ref()
        .context("the image metrics need the domain classifier")?;
    let (real, fake, n) = if r.kind == Kind::Translation {
        let dir = ev.join("a2b");
        let n = ctx.samples.min(1000);
        g.run(
            &[
                s(&["translate"]),
                vec![
                    p(run),
                    "--data".into(),
                    "fashion-mnist:test@7".into(),
                    "--out".into(),
                    p(&dir),
                    "-n".into(),
                    n.to_string(),
                ],
            ]
            .concat(),
            &mut m.commands,
        )?;
        (
            "fashion-mnist:test@9".to_string(),
            format!("folder:{}:28:1", p(&dir)),
            n,
        )
    } else {
        ("fashion-mnist:test".to_string(), p(run), ctx.samples)
    };
    let dj = ev.join("metrics-domain.json");
    let mut args = vec![
        "metrics".to_string(),
        "--real".into(),
        real.clone(),
        "--fake".into(),
        fake.clone(),
        "-n".into(),
        n.to_string(),
        "--features".into(),
        "classifier".into(),
        "--classifier".into(),
        p(cls),
        "--json".into(),
        p(&dj),
    ];
    if r.kind == Kind::Images {
        args.extend(["--train".into(), "fashion-mnist".into()]);
    }
    g.run(&args, &mut m.commands)?;
    let d = read_json(&dj)?;
    let fmt = |k: &str, digits: usize| {
        f(&d, k)
            .map(|v| format!("{v:.digits$}"))
            .unwrap_or_else(|| "n/a".into())
    };
    let what = if r.kind == Kind::Translation {
        "translated vs real B, "
    } else {
        ""
    };
    m.scores = vec![
        (format!("FID ({what}{n})"), fmt("fid", 1)),
        ("KID".into(), fmt("kid_mean", 2)),
        ("precision".into(), fmt("precision", 3)),
        ("recall".into(), fmt("recall", 3)),
        ("density".into(), fmt("density", 3)),
        ("coverage".into(), fmt("coverage", 3)),
    ];
    m.feature_network = d["feature_network"].as_str().map(String::from);
    let mut all = serde_json::Map::new();
    all.insert("domain".into(), d);
    if ctx.inception_samples > 0 && r.kind == Kind::Images {
        let ij = ev.join("metrics-inception.json");
        let k = ctx.inception_samples;
        g.run(
            &[
                s(&["metrics", "--real", "fashion-mnist:test", "--fake"]),
                vec![p(run), "-n".into(), k.to_string(), "--json".into(), p(&ij)],
            ]
            .concat(),
            &mut m.commands,
        )?;
        let i = read_json(&ij)?;
        if let Some(v) = f(&i, "fid") {
            m.scores
                .push((format!("Inception FID ({k})"), format!("{v:.1}")));
        }
        m.feature_network = Some(format!(
            "{}; Inception FID: {}",
            m.feature_network.clone().unwrap_or_default(),
            i["feature_network"]
                .as_str()
                .unwrap_or("FID Inception pool3")
        ));
        all.insert("inception".into(), i);
    }
    m.metrics = Value::Object(all);
    Ok(())
}

/// The last logged value of `key` in a run's train.jsonl.
fn last_value(run: &Path, key: &str) -> Option<f64> {
    let log = std::fs::read_to_string(run.join("train.jsonl")).ok()?;
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get(key).and_then(|x| x.as_f64()))
}

fn read_points(path: &Path) -> Result<Vec<(f64, f64)>> {
    let t = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    t.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split(',').map(|x| x.trim().parse::<f64>());
            match (it.next(), it.next()) {
                (Some(Ok(x)), Some(Ok(y))) => Ok((x, y)),
                _ => Err(anyhow!("{}: `{l}` is not an x,y pair", path.display())),
            }
        })
        .collect()
}

/// Loss curves from the run's log; the validation loss, when logged, goes in the same chart.
fn loss_plot(run: &Path, r: &Recipe, png: &Path) -> Result<()> {
    let log = std::fs::read_to_string(run.join("train.jsonl"))
        .with_context(|| format!("reading {}/train.jsonl", run.display()))?;
    let mut series = plot::log_series(&log);
    // Keep the curves a reader compares: losses and the Wasserstein estimate, not every
    // diagnostic the model logs.
    series.retain(|s| {
        let n = s.name.as_str();
        n.contains("loss") || n.contains("wasserstein") || n == "d_real" || n == "d_fake"
    });
    if series.is_empty() {
        series = plot::log_series(&log);
    }
    series.truncate(8);
    plot::line_chart(
        png,
        &format!("{} training curves", r.id),
        "step",
        &series,
        640,
        360,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(families: &[&str], models: &[&str]) -> Opts {
        Opts {
            quick: true,
            families: families.iter().map(|s| s.to_string()).collect(),
            models: models.iter().map(|s| s.to_string()).collect(),
            samples: None,
            inception_samples: None,
            device: None,
            budget_min: None,
            out: None,
            threads: None,
            release: false,
            no_train: false,
            command_line: String::new(),
        }
    }

    fn ids(v: &[&Recipe]) -> Vec<&'static str> {
        v.iter().map(|r| r.id).collect()
    }

    #[test]
    fn selection_by_family_and_model() {
        let all = select(&opts(&[], &[])).unwrap();
        assert_eq!(
            ids(&all),
            ["dcgan", "grid25-plain", "grid25-wgangp", "gpt-mini", "vae"]
        );
        assert_eq!(ids(&select(&opts(&["vae"], &[])).unwrap()), ["vae"]);
        assert_eq!(
            ids(&select(&opts(&["transformer"], &[])).unwrap()),
            ["gpt-mini"]
        );
        // a model name selects every recipe of that model
        assert_eq!(
            ids(&select(&opts(&[], &["gan2d"])).unwrap()),
            ["grid25-plain", "grid25-wgangp"]
        );
        assert_eq!(
            ids(&select(&opts(&[], &["stylegan2", "dcgan"])).unwrap()),
            ["stylegan2", "dcgan"]
        );
        let e = select(&opts(&["diffusion"], &[])).unwrap_err().to_string();
        assert!(e.contains("not built yet"), "{e}");
        let e = select(&opts(&[], &["nope"])).unwrap_err().to_string();
        assert!(
            e.contains("no eval recipe for `nope`") && e.contains("dcgan"),
            "{e}"
        );
        assert!(select(&opts(&["transformer"], &["dcgan"])).is_err());
    }

    #[test]
    fn every_recipe_names_a_known_model_and_family() {
        // The model names must exist in a family crate's registry (read from the sources,
        // since xtask does not link libtorch).
        let mut src = String::new();
        for krate in ["genmodels-gan", "genmodels-transformer", "genmodels-vae"] {
            let dir = crate::root().join("crates").join(krate).join("src");
            for e in std::fs::read_dir(dir).unwrap() {
                src += &std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            }
        }
        for r in RECIPES {
            assert!(
                src.contains(&format!("name: \"{}\"", r.model)),
                "{} is not registered",
                r.model
            );
            assert!(r.share > 0.0 && r.steps > 0 && r.batch > 0);
        }
    }

    #[test]
    fn run_state_reads_the_log_and_run_json() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        assert_eq!(run_state(run), None);
        std::fs::write(run.join("checkpoint.safetensors"), b"x").unwrap();
        std::fs::write(run.join("run.json"), r#"{"trainer": {"steps": 300}}"#).unwrap();
        std::fs::write(
            run.join("train.jsonl"),
            "{\"step\":50,\"time_s\":1.5}\n{\"step\":120,\"time_s\":3.0,\"val_loss\":2.5}\n",
        )
        .unwrap();
        assert_eq!(run_state(run), Some((120, 300, 3.0)));
        assert_eq!(last_value(run, "val_loss"), Some(2.5));
        assert_eq!(last_value(run, "nothing"), None);
    }

    #[test]
    fn points_csv_parses_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.csv");
        std::fs::write(&f, "1,2\n-0.5,3e-1\n").unwrap();
        assert_eq!(read_points(&f).unwrap(), vec![(1.0, 2.0), (-0.5, 0.3)]);
        std::fs::write(&f, "1;2\n").unwrap();
        assert!(read_points(&f).is_err());
    }
}
