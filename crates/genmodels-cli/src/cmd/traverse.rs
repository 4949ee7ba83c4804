//! `genmodels traverse`: latent traversals (beta-VAE's picture) of any model with a continuous
//! latent space.

use crate::common::{need, open_run, parent_dir, Weights};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_core::data::{DataLoader, DataSpec};
use genmodels_core::device::seed_everything;
use genmodels_core::model::Capability;
use std::path::PathBuf;

#[derive(Args)]
pub struct TraverseArgs {
    run_dir: PathBuf,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Where the image comes from.
    #[arg(long, default_value = "fashion-mnist:test")]
    data: String,
    /// Which image of --data.
    #[arg(long, default_value_t = 0)]
    index: usize,
    /// Latent dimensions to sweep, comma-separated (default: the --rows most active).
    #[arg(long, value_delimiter = ',')]
    dims: Option<Vec<i64>>,
    #[arg(long, default_value_t = 10)]
    rows: usize,
    #[arg(long, default_value_t = 11)]
    steps: i64,
    #[arg(long, default_value_t = 3.0)]
    range: f64,
    #[arg(long)]
    device: Option<String>,
}

pub fn traverse(a: TraverseArgs) -> Result<()> {
    if a.steps < 2 || a.rows == 0 || a.range.is_nan() || a.range <= 0.0 {
        bail!("--steps must be at least 2, --rows at least 1 and --range positive");
    }
    let (mut run, device) = open_run(&a.run_dir, a.device.as_deref(), Weights::Raw)?;
    let name = run.name();
    let m = need(
        run.model.as_traversal(),
        "traverse",
        Capability::Traversal,
        name,
    )?;
    let ds = DataSpec::parse(&a.data)?.dataset()?;
    if a.index >= ds.len() {
        bail!(
            "--index {} is out of range: {} has {} images",
            a.index,
            a.data,
            ds.len()
        );
    }
    seed_everything(0);
    let dims = match a.dims {
        Some(d) => d,
        None => {
            // The most active units, measured on up to 1000 images of the same data.
            let idx: Vec<usize> = (0..ds.len().min(1000)).collect();
            let batch = DataLoader::collate(ds.as_ref(), &idx, device)?;
            let order = m.unit_activity(&batch.x)?.argsort(0, true);
            let k = (a.rows as i64).min(m.latent_dims());
            Vec::<i64>::try_from(order.narrow(0, 0, k))?
        }
    };
    let one = DataLoader::collate(ds.as_ref(), &[a.index], device)?;
    let grid = m.traversal(&one.x, &dims, a.steps, a.range)?;
    parent_dir(&a.out)?;
    genmodels_core::image_io::save_grid(&grid, a.steps, 2, &a.out)?;
    println!(
        "wrote a traversal of latent dimensions {dims:?} ({} values from -{r} to {r} each) to {}",
        a.steps,
        a.out.display(),
        r = a.range
    );
    Ok(())
}
