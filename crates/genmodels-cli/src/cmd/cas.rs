//! `genmodels cas`: Classification Accuracy Score of any class-conditional run.

use crate::common::{bar, need, open_run, write_json, Weights};
use anyhow::{bail, Context, Result};
use clap::Args;
use genmodels_contracts::reports::CasReport;
use genmodels_core::data::{DataSpec, Dataset, DynDataset, InMemory, Subset};
use genmodels_core::device::seed_everything;
use genmodels_core::model::Capability;
use genmodels_metrics::classifier::{classification_accuracy_score, ClassifierConfig};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct CasArgs {
    /// A class-conditional run folder.
    run_dir: PathBuf,
    /// Real labelled training images (baseline, and `--mix`).
    #[arg(long, default_value = "fashion-mnist")]
    real: String,
    /// Real labelled test images.
    #[arg(long, default_value = "fashion-mnist:test")]
    test: String,
    /// Generated images (balanced over classes); the baseline uses as many real ones.
    #[arg(short, long, default_value_t = 10_000)]
    n: usize,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Truncation threshold for the generated latents (0: none).
    #[arg(long, default_value_t = 0.0)]
    truncation: f64,
    /// Also train on real + generated (data augmentation) and report it.
    #[arg(long)]
    mix: bool,
    /// Write the scores as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Also write the generated images here (one PNG each, classes `i mod K`, and
    /// overview/grid.png with one class per column), so the same images score as `folder:DIR`.
    #[arg(long)]
    save_samples: Option<PathBuf>,
    #[command(flatten)]
    sampler: super::sample::SamplerArgs,
}

/// Two labelled datasets one after the other.
struct Concat(DynDataset, DynDataset);

impl Dataset for Concat {
    fn len(&self) -> usize {
        self.0.len() + self.1.len()
    }
    fn example_shape(&self) -> Vec<i64> {
        self.0.example_shape()
    }
    fn num_classes(&self) -> Option<usize> {
        self.0.num_classes()
    }
    fn get(&self, i: usize, o: &mut [f32]) -> genmodels_core::Result<Option<i64>> {
        if i < self.0.len() {
            self.0.get(i, o)
        } else {
            self.1.get(i - self.0.len(), o)
        }
    }
    fn describe(&self) -> String {
        format!("{} + {}", self.0.describe(), self.1.describe())
    }
}

pub fn cas(a: CasArgs) -> Result<()> {
    if a.n == 0 || a.epochs == 0 {
        bail!("-n and --epochs must be at least 1");
    }
    let (mut run, device) = open_run(
        &a.run_dir,
        a.device.as_deref(),
        Weights::Sampling { no_ema: false },
    )?;
    let name = run.name();
    if let Some(c) = a.sampler.apply(run.model.as_mut(), name)? {
        eprintln!(
            "sampler: {} with {} steps{}",
            c.scheduler,
            c.steps,
            c.guidance_scale
                .map(|g| format!(", guidance {g}"))
                .unwrap_or_default()
        );
    }
    let g = need(
        run.model.as_class_conditional(),
        "cas",
        Capability::ClassConditional,
        name,
    )?;
    let real = DataSpec::parse(&a.real)?.dataset()?;
    let test = DataSpec::parse(&a.test)?.dataset()?;
    let k = g.num_classes() as usize;
    if real.num_classes() != Some(k) || test.num_classes() != Some(k) {
        bail!("the run has {k} classes; --real and --test must be labelled with the same classes");
    }
    seed_everything(a.seed);
    let b = bar(a.n as u64, "generating");
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < a.n {
        let m = 500.min(a.n - done);
        let y: Vec<i64> = (done..done + m).map(|i| (i % k) as i64).collect();
        let y = tch::Tensor::from_slice(&y).to_device(device);
        xs.push(
            g.sample_classes(&y, a.truncation)?
                .to_device(tch::Device::Cpu),
        );
        ys.push(y.to_device(tch::Device::Cpu));
        done += m;
        b.set_position(done as u64);
    }
    b.finish();
    let all = tch::Tensor::cat(&xs, 0);
    if let Some(dir) = &a.save_samples {
        std::fs::create_dir_all(dir.join("overview"))
            .with_context(|| format!("creating {}", dir.display()))?;
        genmodels_core::image_io::save_each(&all, dir, "sample", 0)?;
        let rows = (a.n / k).clamp(1, 10);
        let shown = (rows * k).min(a.n) as i64;
        let grid = dir.join("overview").join("grid.png");
        genmodels_core::image_io::save_grid(&all.narrow(0, 0, shown), k as i64, 2, &grid)?;
        eprintln!(
            "wrote {} generated images to {} (class x sample grid: {})",
            a.n,
            dir.display(),
            grid.display()
        );
    }
    let fake: DynDataset = Arc::new(InMemory::new(
        &all,
        &tch::Tensor::cat(&ys, 0),
        k,
        "generated",
    )?);
    let n_real = a.n.min(real.len());
    let real_sub: DynDataset = Arc::new(Subset::new(real.clone(), (0..n_real).collect())?);
    let shape = real.example_shape();
    let ccfg = ClassifierConfig {
        channels: shape[0],
        image_size: shape[1],
        classes: k as i64,
        feature_dim: 128,
    };
    let t0 = std::time::Instant::now();
    let score = |train: DynDataset, what: &str| -> Result<f64> {
        eprintln!("training the classifier on {what} ...");
        Ok(classification_accuracy_score(
            ccfg.clone(),
            train,
            test.as_ref(),
            a.epochs,
            a.seed,
            device,
        )?)
    };
    let cas = score(fake.clone(), "generated images")?;
    let base = score(real_sub.clone(), "real images")?;
    println!("CAS (train on {} generated, test on real)  {cas:.4}", a.n);
    println!("baseline (train on {n_real} real)           {base:.4}");
    let mixed = if a.mix {
        let m = score(Arc::new(Concat(real_sub, fake)), "real + generated images")?;
        println!("real + generated                         {m:.4}");
        Some(m)
    } else {
        None
    };
    eprintln!("({:.0}s)", t0.elapsed().as_secs_f64());
    if let Some(p) = &a.json {
        write_json(
            p,
            &CasReport {
                cas,
                real_baseline: base,
                num_train: a.n,
                epochs: a.epochs,
                truncation: a.truncation,
                real_plus_generated: mixed,
            },
        )?;
    }
    Ok(())
}
