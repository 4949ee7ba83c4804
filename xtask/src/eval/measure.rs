//! Carries out a recipe's [`Step`]s on its trained run: the `genmodels` commands, the typed
//! reports they write, the pictures, and the report's headline scores formatted from them.

use super::genmodels::{p, read_report, s, Genmodels};
use super::plan::{SampleCost, Step};
use super::recipes::Recipe;
use super::{last_value, Ctx};
use crate::plot;
use crate::report::{ModelReport, Table};
use anyhow::{anyhow, bail, Context, Result};
use genmodels_contracts::layout::RunLayout;
use genmodels_contracts::reports::{
    CalibrationReport, ImageMetricsReport, LangevinReport, ModeReport, NllReport, OodReport,
    PerplexityReport, ReconstructReport,
};
use genmodels_contracts::LogLine;
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Seed of the interpolation grid.
const INTERPOLATION_SEED: u64 = 1;
/// At most this many images are translated and scored.
const MAX_TRANSLATED: usize = 1000;
/// Tokens scored by `perplexity` with `--quick` (all of the validation split otherwise).
const QUICK_PERPLEXITY_TOKENS: usize = 20_000;
/// Sampling steps of the FID-against-steps sweep, per scheduler: `--quick`, and otherwise.
pub const SWEEP_STEPS_QUICK: [usize; 3] = [5, 10, 20];
pub const SWEEP_STEPS: [usize; 3] = [10, 20, 50];
/// At most this many images per sampling-step score of an iterative sampler on a CPU
/// (`--quick`, and otherwise): DDIM's 50 steps cost about 0.35 s an image on two cores.
const ITERATIVE_SAMPLES_QUICK: usize = 250;
const ITERATIVE_SAMPLES: usize = 1000;
/// `nll -n N -k K` of an iterative sampler's variational bound, K network evaluations per
/// image (`--quick`, and otherwise); a one-pass model's K counts importance samples.
const ITERATIVE_NLL_QUICK: (usize, i64) = (200, 20);
const ITERATIVE_NLL: (usize, i64) = (1000, 50);
const ONE_PASS_NLL_QUICK: (usize, i64) = (500, 1000);
const ONE_PASS_NLL: (usize, i64) = (2000, 5000);
/// Images per set of `ood` and of `calibration` (`--quick`, and otherwise).
const OOD_IMAGES_QUICK: usize = 500;
const OOD_IMAGES: usize = 2000;
const CALIBRATION_IMAGES_QUICK: usize = 2000;
const CALIBRATION_IMAGES: usize = 10_000;
/// Chains (images) of a `langevin` grid.
const LANGEVIN_CHAINS: usize = 8;

/// The sweep's step counts.
pub fn sweep_steps(quick: bool) -> &'static [usize] {
    if quick {
        &SWEEP_STEPS_QUICK
    } else {
        &SWEEP_STEPS
    }
}

/// Images a sampling step draws: eval's count, capped for an iterative sampler unless it runs
/// on CUDA.
pub fn sample_count(wanted: usize, cost: SampleCost, quick: bool, on_cuda: bool) -> usize {
    match cost {
        SampleCost::OnePass => wanted,
        SampleCost::Iterative if on_cuda => wanted,
        SampleCost::Iterative => wanted.min(if quick {
            ITERATIVE_SAMPLES_QUICK
        } else {
            ITERATIVE_SAMPLES
        }),
    }
}

/// `nll`'s images and `-k`.
pub fn nll_counts(cost: SampleCost, quick: bool) -> (usize, i64) {
    match (cost, quick) {
        (SampleCost::OnePass, true) => ONE_PASS_NLL_QUICK,
        (SampleCost::OnePass, false) => ONE_PASS_NLL,
        (SampleCost::Iterative, true) => ITERATIVE_NLL_QUICK,
        (SampleCost::Iterative, false) => ITERATIVE_NLL,
    }
}

/// One point of the FID-against-sampling-steps sweep.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    /// The real set the samples are scored against (a data spec).
    pub real: String,
    pub scheduler: String,
    pub steps: usize,
    /// Images sampled and scored (against as many real ones).
    pub n: usize,
    /// Wall seconds of the `sample` command per image (start-up and model load included).
    pub sample_s_per_image: f64,
    /// `metrics --features classifier` of the samples.
    pub report: ImageMetricsReport,
}

/// The domain-classifier scores, with what they were computed on.
#[derive(Debug, Clone)]
pub struct DomainRun {
    /// Generated (or translated) images scored.
    pub n: usize,
    /// The fake set was the translations of [`Step::Translate`].
    pub translated: bool,
    pub report: ImageMetricsReport,
}

/// Everything a recipe's steps measured, as the binary's typed reports.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub domain: Option<DomainRun>,
    /// Inception FID: (images, report).
    pub inception: Option<(usize, ImageMetricsReport)>,
    pub reconstruct: Option<ReconstructReport>,
    pub nll: Option<NllReport>,
    /// The NLL is an iterative sampler's variational bound (`k` network evaluations).
    pub nll_bound: bool,
    /// FID against sampling steps, per scheduler, in the order measured.
    pub sweep: Vec<SweepPoint>,
    pub modes: Option<ModeReport>,
    pub perplexity: Option<PerplexityReport>,
    /// Set by [`Step::ValidationLoss`]: the last logged `val_loss`, when there is one.
    pub validation_loss: Option<Option<f64>>,
    /// Chains from noise ([`Step::Chains`]).
    pub chains: Option<LangevinReport>,
    /// One restoration per corruption ([`Step::Restore`]).
    pub restorations: Vec<LangevinReport>,
    pub ood: Option<OodReport>,
    pub calibration: Option<CalibrationReport>,
    /// The translations of [`Step::Translate`]: (data spec of the folder, images).
    translated: Option<(String, usize)>,
}

/// Runs `steps` on the recipe's run; the scores, metrics and feature network go into `m` even
/// when a step fails (the report keeps what was measured).
pub fn run_steps(
    ctx: &Ctx,
    g: &Genmodels,
    r: &Recipe,
    run: &Path,
    steps: &[Step],
    m: &mut ModelReport,
) -> Result<()> {
    let job = Job {
        ctx,
        g,
        r,
        run,
        ev: run.join("eval"),
    };
    std::fs::create_dir_all(&job.ev).with_context(|| format!("creating {}", job.ev.display()))?;
    let mut got = Measured::default();
    let res = steps.iter().try_for_each(|st| job.step(st, &mut got, m));
    m.scores = scores(&got);
    m.tables = tables(&got);
    m.metrics = metrics_json(&got);
    m.feature_network = feature_network(&got);
    res
}

/// `genmodels sample RUN -n N --out DIR`.
fn sample_into(
    g: &Genmodels,
    run: &Path,
    n: usize,
    dir: &Path,
    cmds: &mut Vec<String>,
) -> Result<()> {
    g.run(
        &[
            s(&["sample"]),
            vec![p(run), "-n".into(), n.to_string(), "--out".into(), p(dir)],
        ]
        .concat(),
        cmds,
    )
}

/// One recipe's run being measured, and where its files go.
struct Job<'a> {
    ctx: &'a Ctx<'a>,
    /// The binary with the recipe's thread setting.
    g: &'a Genmodels,
    r: &'a Recipe,
    run: &'a Path,
    /// `RUN/eval`: the reports and sample folders.
    ev: PathBuf,
}

impl Job<'_> {
    /// A picture in the report's img/ folder.
    fn img(&self, name: &str) -> PathBuf {
        self.ctx.img.join(format!("{}-{name}", self.r.id))
    }

    /// The same picture's path relative to the report.
    fn rel(&self, name: &str) -> String {
        format!("img/{}-{name}", self.r.id)
    }

    /// Images a sampling step of this cost draws when eval asks for `wanted`.
    fn sampled(&self, cost: SampleCost, wanted: usize) -> usize {
        let on_cuda = self
            .ctx
            .g
            .device
            .as_deref()
            .is_some_and(|d| d.starts_with("cuda"));
        sample_count(wanted, cost, self.ctx.quick, on_cuda)
    }

    /// FID against sampling steps: for each scheduler and step count, `sample` (timed) into
    /// `RUN/eval/sweep/S-K`, then `metrics` of that folder in the domain classifier's space;
    /// then the plot with a line per scheduler.
    fn sweep(
        &self,
        real: &str,
        schedulers: &[String],
        got: &mut Measured,
        m: &mut ModelReport,
    ) -> Result<()> {
        let ctx = self.ctx;
        let cls = ctx
            .classifier
            .as_ref()
            .context("FID against sampling steps needs the domain classifier")?;
        let n = self.sampled(SampleCost::Iterative, ctx.samples);
        let dir = self.ev.join("sweep");
        for sch in schedulers {
            for &k in sweep_steps(ctx.quick) {
                let name = format!("{sch}-{k}");
                let out = dir.join(&name);
                // a folder left by an earlier eval may hold more (or other) images
                if out.exists() {
                    std::fs::remove_dir_all(&out)
                        .with_context(|| format!("clearing {}", out.display()))?;
                }
                let t0 = Instant::now();
                self.g.run(
                    &[
                        s(&["sample"]),
                        vec![
                            p(self.run),
                            "-n".into(),
                            n.to_string(),
                            "--out".into(),
                            p(&out),
                            "--scheduler".into(),
                            sch.clone(),
                            "--steps".into(),
                            k.to_string(),
                        ],
                    ]
                    .concat(),
                    &mut m.commands,
                )?;
                let secs = t0.elapsed().as_secs_f64();
                let j = dir.join(format!("{name}.json"));
                ctx.g.run(
                    &domain_metrics_args(real, &format!("folder:{}", p(&out)), n, cls, &j),
                    &mut m.commands,
                )?;
                got.sweep.push(SweepPoint {
                    real: real.to_string(),
                    scheduler: sch.clone(),
                    steps: k,
                    n,
                    sample_s_per_image: secs / n as f64,
                    report: read_report(&j)?,
                });
            }
        }
        let series: Vec<plot::Series> = schedulers
            .iter()
            .map(|sch| plot::Series {
                name: sch.clone(),
                points: got
                    .sweep
                    .iter()
                    .filter(|pt| &pt.scheduler == sch)
                    .map(|pt| (pt.steps as f64, pt.report.fid))
                    .collect(),
            })
            .collect();
        plot::points_chart(
            &self.img("fid-steps.png"),
            &format!(
                "{}: FID against sampling steps (step {})",
                self.r.id, m.steps
            ),
            "sampling steps",
            "FID (domain features)",
            &series,
            640,
            380,
        )?;
        m.images.push((
            format!(
                "FID against sampling steps, one line per scheduler ({n} samples a point, domain classifier features)"
            ),
            self.rel("fid-steps.png"),
        ));
        Ok(())
    }

    /// Runs one step: its commands go into `m.commands`, its pictures into `m.images`, its
    /// reports into `got`. The feature-network steps run with eval's own thread setting.
    fn step(&self, step: &Step, got: &mut Measured, m: &mut ModelReport) -> Result<()> {
        let (ctx, r, run) = (self.ctx, self.r, self.run);
        let ev = &self.ev;
        let cmds = &mut m.commands;
        let g = if step.runs_feature_network() {
            ctx.g
        } else {
            self.g
        };
        match step {
            Step::SampleGrid { n, caption } => {
                let dir = ev.join("grid");
                sample_into(g, run, *n, &dir, cmds)?;
                let grid = dir.join("overview").join("grid.png");
                std::fs::copy(&grid, self.img("samples.png"))
                    .with_context(|| format!("copying {}", grid.display()))?;
                let caption = caption
                    .clone()
                    .unwrap_or_else(|| format!("samples at step {}", m.steps));
                m.images.push((caption, self.rel("samples.png")));
            }
            Step::Interpolate { caption } => {
                g.run(
                    &[
                        s(&["interpolate"]),
                        vec![
                            p(run),
                            "--out".into(),
                            p(&self.img("interp.png")),
                            "--seed".into(),
                            INTERPOLATION_SEED.to_string(),
                        ],
                    ]
                    .concat(),
                    cmds,
                )?;
                m.images.push((caption.clone(), self.rel("interp.png")));
            }
            Step::Translate {
                source,
                size,
                channels,
            } => {
                let dir = ev.join("a2b");
                let n = ctx.samples.min(MAX_TRANSLATED);
                g.run(
                    &[
                        s(&["translate"]),
                        vec![
                            p(run),
                            "--data".into(),
                            source.clone(),
                            "--out".into(),
                            p(&dir),
                            "-n".into(),
                            n.to_string(),
                        ],
                    ]
                    .concat(),
                    cmds,
                )?;
                got.translated = Some((format!("folder:{}:{size}:{channels}", p(&dir)), n));
            }
            Step::DomainMetrics {
                real,
                translated,
                train,
                cost,
            } => {
                let cls = ctx
                    .classifier
                    .as_ref()
                    .context("the image metrics need the domain classifier")?;
                let (fake, n) = if *translated {
                    got.translated
                        .clone()
                        .context("the translated set is scored after the translate step")?
                } else {
                    (p(run), self.sampled(*cost, ctx.samples))
                };
                let dj = ev.join("metrics-domain.json");
                let mut args = domain_metrics_args(real, &fake, n, cls, &dj);
                if let Some(t) = train {
                    args.extend(["--train".into(), t.clone()]);
                }
                g.run(&args, cmds)?;
                let report: ImageMetricsReport = read_report(&dj)?;
                if report.domain.is_none() {
                    bail!(
                        "{} has no `domain` scores, though `--classifier` was given",
                        dj.display()
                    );
                }
                if train.is_some() && report.memorisation.is_none() {
                    bail!(
                        "{} has no `memorisation` scores, though `--train` was given",
                        dj.display()
                    );
                }
                got.domain = Some(DomainRun {
                    n,
                    translated: *translated,
                    report,
                });
            }
            Step::InceptionFid { real, cost } => {
                let k = self.sampled(*cost, ctx.inception_samples);
                if k == 0 {
                    return Ok(());
                }
                let ij = ev.join("metrics-inception.json");
                g.run(
                    &[
                        s(&["metrics", "--real", real, "--fake"]),
                        vec![p(run), "-n".into(), k.to_string(), "--json".into(), p(&ij)],
                    ]
                    .concat(),
                    cmds,
                )?;
                got.inception = Some((k, read_report(&ij)?));
            }
            Step::Reconstruct { codebook } => {
                let rj = ev.join("reconstruct.json");
                let n = if ctx.quick { 1000 } else { 10000 };
                g.run(
                    &[
                        s(&["reconstruct"]),
                        vec![
                            p(run),
                            "-n".into(),
                            n.to_string(),
                            "--out".into(),
                            p(&self.img("recon.png")),
                            "--json".into(),
                            p(&rj),
                        ],
                    ]
                    .concat(),
                    cmds,
                )?;
                m.images.push((
                    "test images (top) and reconstructions (bottom)".into(),
                    self.rel("recon.png"),
                ));
                let rec: ReconstructReport = read_report(&rj)?;
                let missing = *codebook && rec.codebook.is_none();
                got.reconstruct = Some(rec);
                if missing {
                    bail!(
                        "{} has no `codebook` scores, though `{}` declares a codebook",
                        rj.display(),
                        r.model
                    );
                }
            }
            Step::SchedulerSweep { real, schedulers } => {
                self.sweep(real, schedulers, got, m)?;
            }
            Step::Nll { cost } => {
                let (n, k) = nll_counts(*cost, ctx.quick);
                let nj = ev.join("nll.json");
                let mut args = vec![
                    "nll".to_string(),
                    p(run),
                    "-n".into(),
                    n.to_string(),
                    "-k".into(),
                    k.to_string(),
                    "--json".into(),
                    p(&nj),
                ];
                let bound = *cost == SampleCost::Iterative;
                if bound {
                    // the bound of the weights that are sampled
                    args.push("--ema".into());
                }
                g.run(&args, cmds)?;
                got.nll = Some(read_report(&nj)?);
                got.nll_bound = bound;
            }
            Step::ModeCoverage { real, n } => {
                let mj = ev.join("modes.json");
                g.run(
                    &[
                        s(&["metrics", "--real", real, "--fake"]),
                        vec![p(run), "-n".into(), n.to_string(), "--json".into(), p(&mj)],
                    ]
                    .concat(),
                    cmds,
                )?;
                got.modes = Some(read_report(&mj)?);
            }
            Step::Scatter { n } => {
                let dir = ev.join("points");
                sample_into(g, run, *n, &dir, cmds)?;
                let modes = got
                    .modes
                    .as_ref()
                    .context("the scatter is drawn after the mode coverage step")?;
                let pts = read_points(&dir.join("points.csv"))?;
                let centers: Vec<(f64, f64)> = modes
                    .centers
                    .iter()
                    .map(|c| (c[0] as f64, c[1] as f64))
                    .collect();
                let lim = centers
                    .iter()
                    .map(|c| c.0.abs().max(c.1.abs()))
                    .fold(0.0, f64::max)
                    * 1.5;
                plot::scatter(
                    &self.img("modes.png"),
                    &format!("{}: {n} samples, step {}", r.id, m.steps),
                    &pts,
                    &centers,
                    modes.mode_std,
                    lim.max(1.0),
                )?;
                m.images
                    .push(("mode-collapse scatter".into(), self.rel("modes.png")));
            }
            Step::EnergyMap { temperature } => {
                let png = self.img("energy.png");
                g.run(
                    &[
                        s(&["energy"]),
                        vec![
                            p(run),
                            "--out".into(),
                            p(&png),
                            "--temperature".into(),
                            temperature.to_string(),
                            "--json".into(),
                            p(&ev.join("energy.json")),
                        ],
                    ]
                    .concat(),
                    cmds,
                )?;
                m.images.push((
                    format!("learned density exp(-E / {temperature}), data in white"),
                    self.rel("energy.png"),
                ));
                m.images.push((
                    "the energy model's samples (blue) over the data (grey)".into(),
                    self.rel("energy-samples.png"),
                ));
            }
            Step::Chains { steps } => {
                let j = ev.join("chains.json");
                g.run(
                    &langevin_args(run, *steps, 8, &self.img("chains.png"), &j, None),
                    cmds,
                )?;
                m.images.push((
                    format!(
                        "Langevin chains from noise: a row per chain, {steps} steps from left to right"
                    ),
                    self.rel("chains.png"),
                ));
                got.chains = Some(read_report(&j)?);
            }
            Step::Restore {
                real,
                corruptions,
                steps,
            } => {
                for c in corruptions {
                    let name = format!("restore-{}", c.replace(':', "-"));
                    let j = ev.join(format!("{name}.json"));
                    g.run(
                        &langevin_args(
                            run,
                            *steps,
                            6,
                            &self.img(&format!("{name}.png")),
                            &j,
                            Some((real, c)),
                        ),
                        cmds,
                    )?;
                    m.images.push((
                        format!(
                            "restoring `{c}` by {steps} Langevin steps: clean, corrupted, then the chain"
                        ),
                        self.rel(&format!("{name}.png")),
                    ));
                    got.restorations.push(read_report(&j)?);
                }
            }
            Step::Ood { real, out_sets } => {
                let j = ev.join("ood.json");
                let n = if ctx.quick {
                    OOD_IMAGES_QUICK
                } else {
                    OOD_IMAGES
                };
                let mut args = vec!["ood".into(), p(run), "--in".into(), real.clone()];
                for o in out_sets {
                    args.extend(["--out-data".into(), o.clone()]);
                }
                args.extend(["-n".into(), n.to_string(), "--json".into(), p(&j)]);
                g.run(&args, cmds)?;
                got.ood = Some(read_report(&j)?);
            }
            Step::Calibration { real } => {
                let j = ev.join("calibration.json");
                let n = if ctx.quick {
                    CALIBRATION_IMAGES_QUICK
                } else {
                    CALIBRATION_IMAGES
                };
                g.run(
                    &[
                        s(&["calibration"]),
                        vec![
                            p(run),
                            "--data".into(),
                            real.clone(),
                            "-n".into(),
                            n.to_string(),
                            "--out".into(),
                            p(&self.img("reliability.png")),
                            "--json".into(),
                            p(&j),
                        ],
                    ]
                    .concat(),
                    cmds,
                )?;
                m.images.push((
                    "reliability diagram: accuracy per confidence bin (the diagonal is calibrated)"
                        .into(),
                    self.rel("reliability.png"),
                ));
                got.calibration = Some(read_report(&j)?);
            }
            Step::ValidationLoss => {
                got.validation_loss = Some(last_value(run, "val_loss")?);
            }
            Step::Perplexity => {
                let pj = ev.join("perplexity.json");
                let mut args = vec!["perplexity".to_string(), p(run), "--json".into(), p(&pj)];
                if ctx.quick {
                    args.extend(["--max-tokens".into(), QUICK_PERPLEXITY_TOKENS.to_string()]);
                }
                g.run(&args, cmds)?;
                got.perplexity = Some(read_report(&pj)?);
            }
            Step::Generate { prompt } => {
                let text = g.stdout(
                    &[
                        s(&["generate"]),
                        vec![p(run), "--prompt".into(), prompt.clone()],
                        s(&["-n", "400", "--top-k", "40", "--seed", "0", "--no-stream"]),
                    ]
                    .concat(),
                    cmds,
                )?;
                m.text = Some(text.trim_end().to_string());
            }
            Step::LossCurves => {
                loss_plot(run, r, &self.img("loss.png"))?;
                m.images
                    .push(("training curves".into(), self.rel("loss.png")));
                // A codebook model's usage over training (perplexity of its codes per batch).
                if codebook_plot(run, r, &self.img("codebook.png"))? {
                    m.images.push((
                        "codebook usage over training".into(),
                        self.rel("codebook.png"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The report's headline scores: the model's own scores (NLL, reconstruction, codebook),
/// then the sample scores (FID and its companions, or modes, or perplexity).
pub fn scores(got: &Measured) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    let mut push = |k: String, val: String| v.push((k, val));
    if let Some(val) = got.validation_loss {
        push(
            "validation loss (nats/char)".into(),
            val.map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "n/a".into()),
        );
    }
    if let Some(pp) = &got.perplexity {
        push(
            format!("perplexity ({} val tokens)", pp.tokens),
            format!("{:.2}", pp.perplexity),
        );
        push("bits/char".into(), format!("{:.3}", pp.bits_per_char));
    }
    if let Some(md) = &got.modes {
        let c = &md.coverage;
        push(
            "modes covered".into(),
            format!("{}/{}", c.modes_covered, c.modes),
        );
        push(
            "high-quality share".into(),
            format!("{:.3}", c.high_quality_share),
        );
        push(
            "KL(modes||uniform)".into(),
            format!("{:.3}", c.kl_to_uniform),
        );
    }
    if let Some(nll) = &got.nll {
        if got.nll_bound {
            push(
                format!(
                    "test NLL bound ({} images, k = {} network evaluations)",
                    nll.n, nll.k
                ),
                format!("{:.2} nats", nll.nll_nats),
            );
            push("bits/dim".into(), format!("{:.3}", nll.bits_per_dim));
        } else {
            push(
                format!("test NLL ({} images, k = {})", nll.n, nll.k),
                format!("{:.2} nats", nll.nll_nats),
            );
        }
    }
    if let Some(rec) = &got.reconstruct {
        push(
            "reconstruction MSE".into(),
            format!("{:.4}", rec.reconstruction_mse),
        );
        if let Some(cb) = &rec.codebook {
            push(
                "codebook perplexity".into(),
                format!("{:.1}", cb.codebook_perplexity),
            );
            push(
                "prior NLL (nats/code)".into(),
                format!("{:.3}", cb.prior_nll_nats_per_code),
            );
        }
    }
    if let Some(NllReport {
        active_units: Some(a),
        z_dim: Some(z),
        ..
    }) = &got.nll
    {
        push("active units".into(), format!("{a}/{z}"));
    }
    if let Some(d) = &got.domain {
        let what = if d.translated {
            "translated vs real B, "
        } else {
            ""
        };
        let r = &d.report;
        push(format!("FID ({what}{})", d.n), format!("{:.1}", r.fid));
        push("KID".into(), format!("{:.2}", r.kid_mean));
        push("precision".into(), format!("{:.3}", r.precision));
        push("recall".into(), format!("{:.3}", r.recall));
        push("density".into(), format!("{:.3}", r.density));
        push("coverage".into(), format!("{:.3}", r.coverage));
    }
    if let Some((k, i)) = &got.inception {
        push(format!("Inception FID ({k})"), format!("{:.1}", i.fid));
    }
    if let Some(c) = &got.calibration {
        push(
            format!("test accuracy ({} images)", c.n),
            format!("{:.4}", c.calibration.accuracy),
        );
        push("ECE (15 bins)".into(), format!("{:.4}", c.calibration.ece));
    }
    if let Some(c) = &got.chains {
        push(
            "Langevin ms / step / image".into(),
            format!("{:.2} ({} threads)", c.ms_per_step_per_image, c.threads),
        );
    }
    if let Some(best) = got
        .sweep
        .iter()
        .filter(|pt| pt.report.fid.is_finite())
        .min_by(|a, b| a.report.fid.total_cmp(&b.report.fid))
    {
        push(
            format!("best FID of the step sweep ({} a point)", best.n),
            format!(
                "{:.1} ({} {} steps)",
                best.report.fid, best.scheduler, best.steps
            ),
        );
    }
    v
}

/// The model section's tables: FID against sampling steps, a row per (scheduler, steps);
/// an energy model's out-of-distribution AUROCs and restorations.
pub fn tables(got: &Measured) -> Vec<Table> {
    let mut t = sweep_table(got).into_iter().collect::<Vec<_>>();
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    if let Some(o) = &got.ood {
        t.push(Table {
            caption: format!(
                "out-of-distribution detection: AUROC with `{}` ({} images) as the positives, \
                 for each score (higher = in distribution; 0.5 is chance)",
                o.in_data, o.n
            ),
            header: [
                "out-of-distribution set",
                "images",
                "log p(x)",
                "max p(y|x)",
                "-|d log p / dx|",
            ]
            .map(String::from)
            .to_vec(),
            rows: o
                .rows
                .iter()
                .map(|r| {
                    vec![
                        r.out_data.clone(),
                        r.n.to_string(),
                        format!("{:.3}", r.auroc_log_px),
                        opt(r.auroc_max_softmax, 3),
                        format!("{:.3}", r.auroc_grad_norm),
                    ]
                })
                .collect(),
        });
    }
    let rest: Vec<_> = got
        .restorations
        .iter()
        .filter_map(|l| l.restoration.as_ref().map(|r| (l, r)))
        .collect();
    if let Some((l, _)) = rest.first() {
        t.push(Table {
            caption: format!(
                "restoration by {} Langevin steps of the first {} test images: PSNR (dB, [0, 1] \
                 scale) and LPIPS to the clean images; mean fill = the free pixels set to the \
                 image's mean, no model",
                l.steps, l.chains
            ),
            header: [
                "corruption",
                "free pixels",
                "PSNR corrupted",
                "PSNR mean fill",
                "PSNR restored",
                "LPIPS corrupted",
                "LPIPS restored",
            ]
            .map(String::from)
            .to_vec(),
            rows: rest
                .iter()
                .map(|(_, r)| {
                    vec![
                        r.corrupt.clone(),
                        format!("{:.0} %", 100.0 * r.free_fraction),
                        format!("{:.2}", r.psnr_corrupted_db),
                        opt(r.psnr_mean_fill_db, 2),
                        format!("{:.2}", r.psnr_restored_db),
                        opt(r.lpips_corrupted, 3),
                        opt(r.lpips_restored, 3),
                    ]
                })
                .collect(),
        });
    }
    t
}

fn sweep_table(got: &Measured) -> Option<Table> {
    let first = got.sweep.first()?;
    Some(Table {
        caption: format!(
            "FID against sampling steps: `sample --scheduler S --steps K`, {} samples a point scored against `{}` \
             in the domain classifier's features; s / image is the `sample` command's wall time over the \
             images (start-up and model load included)",
            first.n, first.real
        ),
        header: ["scheduler", "steps", "FID", "precision", "recall", "s / image"]
            .map(String::from)
            .to_vec(),
        rows: got
            .sweep
            .iter()
            .map(|pt| {
                vec![
                    pt.scheduler.clone(),
                    pt.steps.to_string(),
                    format!("{:.1}", pt.report.fid),
                    format!("{:.3}", pt.report.precision),
                    format!("{:.3}", pt.report.recall),
                    format!("{:.3}", pt.sample_s_per_image),
                ]
            })
            .collect(),
    })
}

/// Every report as the binary wrote it, for results.json: a points or text model's one report
/// as it is, an image model's reports by name (domain, inception, nll, reconstruct, and
/// `schedulers`: the FID-against-steps points with their sampling times).
pub fn metrics_json(got: &Measured) -> Value {
    fn json<T: Serialize>(t: &T) -> Value {
        serde_json::to_value(t).unwrap_or(Value::Null)
    }
    if let Some(md) = &got.modes {
        return json(md);
    }
    if let Some(pp) = &got.perplexity {
        return json(pp);
    }
    let mut o = serde_json::Map::new();
    if let Some(d) = &got.domain {
        o.insert("domain".into(), json(&d.report));
    }
    if let Some((_, i)) = &got.inception {
        o.insert("inception".into(), json(i));
    }
    if let Some(n) = &got.nll {
        o.insert("nll".into(), json(n));
    }
    if let Some(r) = &got.reconstruct {
        o.insert("reconstruct".into(), json(r));
    }
    if let Some(v) = &got.ood {
        o.insert("ood".into(), json(v));
    }
    if let Some(v) = &got.calibration {
        o.insert("calibration".into(), json(v));
    }
    if let Some(v) = &got.chains {
        o.insert("chains".into(), json(v));
    }
    if !got.restorations.is_empty() {
        o.insert("restorations".into(), json(&got.restorations));
    }
    if !got.sweep.is_empty() {
        let pts: Vec<Value> = got
            .sweep
            .iter()
            .map(|pt| {
                serde_json::json!({
                    "scheduler": pt.scheduler,
                    "steps": pt.steps,
                    "n": pt.n,
                    "sample_s_per_image": pt.sample_s_per_image,
                    "metrics": json(&pt.report),
                })
            })
            .collect();
        o.insert("schedulers".into(), Value::Array(pts));
    }
    if o.is_empty() {
        Value::Null
    } else {
        Value::Object(o)
    }
}

/// The feature networks behind the image scores.
pub fn feature_network(got: &Measured) -> Option<String> {
    let domain = got
        .domain
        .as_ref()
        .map(|d| d.report.feature_network.clone());
    match (&got.inception, domain) {
        (None, d) => d,
        (Some((_, i)), d) => Some(format!(
            "{}; Inception FID: {}",
            d.unwrap_or_default(),
            i.feature_network
        )),
    }
}

/// `points.csv` as written by `sample` for a points model: one `x,y` pair a line.
pub fn read_points(path: &Path) -> Result<Vec<(f64, f64)>> {
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
    let path = RunLayout::new(run).log();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let log = LogLine::parse_log(&text);
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

/// The codebook perplexity the run logged (codes in use, `exp` of the codes' entropy per
/// batch) against the step, when it logged one: a VQ-VAE's codebook usage over training.
fn codebook_plot(run: &Path, r: &Recipe, png: &Path) -> Result<bool> {
    let path = RunLayout::new(run).log();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut series = plot::log_series(&LogLine::parse_log(&text));
    series.retain(|s| s.name == "perplexity");
    if series.is_empty() {
        return Ok(false);
    }
    plot::line_chart(
        png,
        &format!("{}: codebook perplexity (codes in use) over training", r.id),
        "step",
        &series,
        640,
        300,
    )?;
    Ok(true)
}

/// `genmodels langevin RUN -n 8 --steps K --frames F --out PNG --json J`, restoring
/// `(data, corruption)` when given.
fn langevin_args(
    run: &Path,
    steps: usize,
    frames: usize,
    png: &Path,
    json: &Path,
    restore: Option<(&str, &str)>,
) -> Vec<String> {
    let mut a = vec!["langevin".into(), p(run)];
    if let Some((data, c)) = restore {
        a.extend(["--data".into(), data.into(), "--corrupt".into(), c.into()]);
    }
    a.extend([
        "-n".into(),
        LANGEVIN_CHAINS.to_string(),
        "--steps".into(),
        steps.to_string(),
        "--frames".into(),
        frames.to_string(),
        "--out".into(),
        p(png),
        "--json".into(),
        p(json),
    ]);
    a
}

/// `genmodels metrics` of `fake` against `real` in the domain classifier's features, to `json`.
fn domain_metrics_args(
    real: &str,
    fake: &str,
    n: usize,
    classifier: &Path,
    json: &Path,
) -> Vec<String> {
    vec![
        "metrics".into(),
        "--real".into(),
        real.into(),
        "--fake".into(),
        fake.into(),
        "-n".into(),
        n.to_string(),
        "--features".into(),
        "classifier".into(),
        "--classifier".into(),
        p(classifier),
        "--json".into(),
        p(json),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::testkit::{image_report, modes, nll, perplexity, reconstruct};

    #[test]
    fn image_scores_put_the_models_own_first() {
        let got = Measured {
            domain: Some(DomainRun {
                n: 5000,
                translated: false,
                report: image_report(70.81, "classifier"),
            }),
            inception: Some((1000, image_report(175.3, "inception"))),
            reconstruct: Some(reconstruct(false)),
            nll: Some(nll()),
            ..Default::default()
        };
        let rows: Vec<String> = scores(&got)
            .into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        assert_eq!(
            rows,
            [
                "test NLL (2000 images, k = 5000) 238.90 nats",
                "reconstruction MSE 0.0670",
                "active units 9/50",
                "FID (5000) 70.8",
                "KID 1.23",
                "precision 0.500",
                "recall 0.250",
                "density 1.000",
                "coverage 0.750",
                "Inception FID (1000) 175.3"
            ]
        );
        assert_eq!(
            feature_network(&got).as_deref(),
            Some("classifier; Inception FID: inception")
        );
        let j = metrics_json(&got);
        let mut keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["domain", "inception", "nll", "reconstruct"]);
        assert_eq!(j["nll"]["nll_nats"], 238.904);
    }

    #[test]
    fn codebook_translation_points_and_text_scores() {
        let got = Measured {
            reconstruct: Some(reconstruct(true)),
            domain: Some(DomainRun {
                n: 1000,
                translated: true,
                report: image_report(12.0, "classifier"),
            }),
            ..Default::default()
        };
        let s = scores(&got);
        assert_eq!(s[1], ("codebook perplexity".into(), "97.0".into()));
        assert_eq!(s[2], ("prior NLL (nats/code)".into(), "3.123".into()));
        assert_eq!(s[3].0, "FID (translated vs real B, 1000)");

        let got = Measured {
            modes: Some(modes()),
            ..Default::default()
        };
        assert_eq!(scores(&got)[0], ("modes covered".into(), "21/25".into()));
        // results.json keeps the mode report flat, as the binary wrote it.
        assert_eq!(metrics_json(&got)["modes_covered"], 21);
        assert_eq!(feature_network(&got), None);

        let got = Measured {
            perplexity: Some(perplexity()),
            validation_loss: Some(None),
            ..Default::default()
        };
        let rows: Vec<String> = scores(&got)
            .into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        assert_eq!(
            rows,
            [
                "validation loss (nats/char) n/a",
                "perplexity (119030 val tokens) 6.40",
                "bits/char 2.678"
            ]
        );
        assert_eq!(metrics_json(&got)["tokens"], 119030);
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
