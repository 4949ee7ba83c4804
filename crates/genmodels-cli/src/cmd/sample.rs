//! `genmodels sample`: samples of any run, drawn in batches.

use crate::common::{bar, open_run, Weights};
use anyhow::{bail, Context, Result};
use clap::Args;
use genmodels_core::device::seed_everything;
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
    /// Output folder (PNG files and grid.png for images; points.csv and scatter.png for points).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Use the raw weights even when the checkpoint holds an EMA.
    #[arg(long)]
    no_ema: bool,
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
    let stem = match samples {
        Samples::Images(_) => "grid",
        Samples::Points(_) => "scatter",
        Samples::Text(_) => "samples",
    };
    let grid = write_samples_to(&samples, &a.out.join(stem))?;
    println!(
        "wrote {} samples to {} (overview: {})",
        a.n,
        a.out.display(),
        grid.display()
    );
    Ok(())
}
