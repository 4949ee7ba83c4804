//! `genmodels sample`: samples of any run, drawn in batches.

use crate::common::{bar, need, open_run, Weights};
use anyhow::{bail, Context, Result};
use clap::Args;
use genmodels_core::device::seed_everything;
use genmodels_core::model::Capability;
use genmodels_core::model::Samples;
use genmodels_core::train::write_samples_to;
use std::path::PathBuf;
use tch::Tensor;

/// Samples drawn per forward pass, so `sample -n 100000` runs in bounded memory. A multiple of
/// 10, so class-conditional models (class `i mod C` within a batch) stay balanced over
/// Fashion-MNIST's 10 classes.
const SAMPLE_BATCH: usize = 250;

#[derive(Args)]
pub struct SampleArgs {
    /// The run folder written by `genmodels train`.
    run_dir: PathBuf,
    /// Number of samples.
    #[arg(short, long, default_value_t = 64)]
    n: usize,
    /// Output folder (one PNG per image, with the overview grid in overview/grid.png so the
    /// folder holds only samples and scores as `folder:DIR`; points.csv and scatter.png for points).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Use the raw weights even when the checkpoint holds an EMA.
    #[arg(long)]
    no_ema: bool,
    #[command(flatten)]
    sampler: SamplerArgs,
    /// Also write a denoising trajectory (x_t above predicted x_0, about 8 frames) of 8 samples as
    /// overview/trajectory.png (diffusion models).
    #[arg(long)]
    trajectory: bool,
}

/// The sampler of a diffusion run (models with the `schedulers` capability).
#[derive(Args, Default)]
pub struct SamplerArgs {
    /// Noise scheduler: ddpm, ddim, dpm-solver++, euler, euler-ancestral, heun.
    #[arg(long)]
    pub scheduler: Option<String>,
    /// Inference steps (network evaluations; Heun makes two per step but the last).
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM's eta (0: deterministic, 1: DDPM-like).
    #[arg(long)]
    pub eta: Option<f64>,
    /// Classifier-free guidance scale (class-conditional diffusion; diffusers' convention:
    /// 0 unconditional, 1 conditional, above 1 guided).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Karras sigmas (DPM-Solver++, Euler).
    #[arg(long)]
    pub karras: bool,
}

impl SamplerArgs {
    fn given(&self) -> bool {
        self.scheduler.is_some()
            || self.steps.is_some()
            || self.eta.is_some()
            || self.guidance.is_some()
            || self.karras
    }

    /// Applies the flags to a diffusion model's sampler; a model without schedulers is a
    /// one-line error when any flag was given. Returns the sampler in use, if any.
    pub fn apply(
        &self,
        model: &mut dyn genmodels_core::model::Model,
        name: &str,
    ) -> Result<Option<genmodels_core::model::SamplerChoice>> {
        if !self.given() {
            return Ok(model.as_scheduled().map(|s| s.sampler()));
        }
        let s = need(
            model.as_scheduled(),
            "sample --scheduler/--steps/--eta/--guidance",
            Capability::Schedulers,
            name,
        )?;
        let mut c = s.sampler();
        if let Some(v) = &self.scheduler {
            c.scheduler = v.clone();
        }
        if let Some(v) = self.steps {
            c.steps = v;
        }
        if self.eta.is_some() {
            c.eta = self.eta;
        }
        if self.guidance.is_some() {
            c.guidance_scale = self.guidance;
        }
        c.karras = self.karras;
        s.set_sampler(&c)?;
        Ok(Some(c))
    }
}

pub fn sample(a: SampleArgs) -> Result<()> {
    if a.n == 0 {
        bail!("-n must be at least 1");
    }
    let (mut run, _) = open_run(
        &a.run_dir,
        a.device.as_deref(),
        Weights::Sampling { no_ema: a.no_ema },
    )?;
    let name = run.entry.name;
    if let Some(c) = a.sampler.apply(run.model.as_mut(), name)? {
        println!(
            "sampler: {} with {} steps{}{}{}",
            c.scheduler,
            c.steps,
            c.eta.map(|e| format!(", eta {e}")).unwrap_or_default(),
            c.guidance_scale
                .map(|g| format!(", guidance {g}"))
                .unwrap_or_default(),
            if c.karras { ", Karras sigmas" } else { "" }
        );
    }
    seed_everything(a.seed);
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // Images are written batch by batch; the overview grid shows the first batch (at most 250).
    let b = bar(a.n as u64, "sampling");
    let (mut first, mut points, mut texts) = (None, Vec::new(), Vec::new());
    let mut done = 0;
    while done < a.n {
        let k = SAMPLE_BATCH.min(a.n - done);
        match run.model.sample(k)? {
            Samples::Images(t) => {
                genmodels_core::image_io::save_each(&t, &a.out, "sample", done)?;
                first.get_or_insert(t);
            }
            Samples::Points(t) => points.push(t.to_device(tch::Device::Cpu)),
            Samples::Text(v) => texts.extend(v),
        }
        done += k;
        b.set_position(done as u64);
    }
    b.finish_and_clear();
    let samples = if let Some(t) = first {
        Samples::Images(t)
    } else if !points.is_empty() {
        let t = Tensor::cat(&points, 0);
        let v: Vec<f32> = Vec::try_from(t.flatten(0, -1))?;
        let d = t.size()[1] as usize;
        let csv: String = v
            .chunks(d)
            .map(|r| {
                r.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
                    + "\n"
            })
            .collect();
        std::fs::write(a.out.join("points.csv"), csv)?;
        Samples::Points(t)
    } else {
        Samples::Text(texts)
    };
    let overview = a.out.join("overview");
    let stem = match samples {
        Samples::Images(_) => {
            std::fs::create_dir_all(&overview)
                .with_context(|| format!("creating {}", overview.display()))?;
            overview.join("grid")
        }
        Samples::Points(_) => a.out.join("scatter"),
        Samples::Text(_) => a.out.join("samples"),
    };
    let grid = write_samples_to(&samples, &stem)?;
    if a.trajectory {
        let s = need(
            run.model.as_scheduled(),
            "sample --trajectory",
            Capability::Schedulers,
            name,
        )?;
        seed_everything(a.seed);
        let (xs, x0s) = s.trajectory(8, 8)?;
        // rows: the 8 samples' x_t over the frames, then their predicted x_0
        let f = xs.size()[0];
        let rows = |t: &Tensor| t.transpose(0, 1).flatten(0, 1);
        let grid_t = Tensor::cat(&[rows(&xs), rows(&x0s)], 0);
        let p = overview.join("trajectory.png");
        genmodels_core::image_io::save_grid(&grid_t, f, 2, &p)?;
        println!(
            "denoising trajectory: {} (8 samples x {f} frames: x_t rows, then predicted x_0 rows)",
            p.display()
        );
    }
    println!(
        "wrote {} samples to {} (overview: {})",
        a.n,
        a.out.display(),
        grid.display()
    );
    Ok(())
}
