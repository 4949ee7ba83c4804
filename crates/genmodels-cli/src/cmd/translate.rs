//! `genmodels translate`: images through a translation model into a folder of PNGs.

use crate::common::{bar, need, open_run, Weights};
use anyhow::{bail, Context, Result};
use clap::Args;
use genmodels_core::data::{DataLoader, DataSpec};
use genmodels_core::model::Capability;
use std::path::PathBuf;

#[derive(Args)]
pub struct TranslateArgs {
    run_dir: PathBuf,
    /// Images to translate (e.g. fashion-mnist:test@7).
    #[arg(long)]
    data: String,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// At most this many images.
    #[arg(short, long, default_value_t = 1000)]
    n: usize,
    /// Translate B -> A instead.
    #[arg(long)]
    reverse: bool,
    #[arg(long)]
    device: Option<String>,
}

pub fn translate(a: TranslateArgs) -> Result<()> {
    if a.n == 0 {
        bail!("-n must be at least 1");
    }
    let (mut run, device) = open_run(&a.run_dir, a.device.as_deref(), Weights::Raw)?;
    let name = run.name();
    let m = need(
        run.model.as_translate(),
        "translate",
        Capability::Translation,
        name,
    )?;
    let ds = DataSpec::parse(&a.data)?.dataset()?;
    let n = a.n.min(ds.len());
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let b = bar(n as u64, "translating");
    let mut done = 0;
    while done < n {
        let k = 100.min(n - done);
        let idx: Vec<usize> = (done..done + k).collect();
        let batch = DataLoader::collate(ds.as_ref(), &idx, device)?;
        let y = tch::no_grad(|| m.translate(&batch.x, !a.reverse))?;
        genmodels_core::image_io::save_each(&y, &a.out, "translated", done)?;
        done += k;
        b.set_position(done as u64);
    }
    b.finish();
    println!("translated {n} images into {}", a.out.display());
    Ok(())
}
