//! `genmodels interpolate`: latent walks of any model with the interpolation capability.

use crate::common::{open_run, parent_dir, registry, Weights};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_core::device::seed_everything;
use genmodels_core::model::Capability;
use std::path::PathBuf;

#[derive(Args)]
pub struct InterpolateArgs {
    run_dir: PathBuf,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 8)]
    rows: usize,
    #[arg(long, default_value_t = 10)]
    steps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Use the raw weights even when the checkpoint holds an EMA.
    #[arg(long)]
    no_ema: bool,
}

pub fn interpolate(a: InterpolateArgs) -> Result<()> {
    if a.rows == 0 || a.steps < 2 {
        bail!("--rows must be at least 1 and --steps at least 2");
    }
    let (mut run, _) = open_run(
        &a.run_dir,
        a.device.as_deref(),
        Weights::Sampling { no_ema: a.no_ema },
    )?;
    seed_everything(a.seed);
    let Some(grid) = run.model.interpolate(a.rows, a.steps)? else {
        bail!(registry().lacks("interpolate", Capability::Interpolation, run.name()));
    };
    parent_dir(&a.out)?;
    genmodels_core::image_io::save_grid(&grid, a.steps as i64, 2, &a.out)?;
    println!(
        "wrote a {} x {} interpolation grid to {}",
        a.rows,
        a.steps,
        a.out.display()
    );
    Ok(())
}
