//! `genmodels fid`: pytorch-fid's command line (`python -m pytorch_fid PATH1 PATH2`), where
//! each path is a folder of images or a statistics file (pytorch-fid's `.npz` with `mu` and
//! `sigma`, or ours in safetensors), and `--save-stats FOLDER OUT.npz` writes pytorch-fid's
//! statistics file, so statistics interoperate both ways.

use crate::common::{device, write_json, StageBars};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_contracts::reports::FidReport;
use genmodels_core::data::{Dataset, ImageFolder};
use genmodels_metrics::fid::{frechet_distance, FeatureStats};
use genmodels_metrics::inception::{FeatureExtractor, FidInception, Tap};
use genmodels_metrics::report::dataset_stats;
use genmodels_metrics::resize::Resize;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct FidArgs {
    /// Two inputs (folders of images or statistics files); with --save-stats, a folder and the
    /// .npz to write.
    #[arg(num_args = 2, required = true)]
    paths: Vec<PathBuf>,
    /// Write the first path's statistics to the second (pytorch-fid's .npz: mu, sigma).
    #[arg(long)]
    save_stats: bool,
    /// Feature layer: 64, 192, 768 or 2048 (pool3), as pytorch-fid's --dims.
    #[arg(long, default_value_t = 2048)]
    dims: i64,
    /// Images per forward pass (pytorch-fid's default 50).
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// Resize convention to 299x299: pytorch-bilinear (pytorch-fid's, the default here),
    /// tf1-bilinear (torch-fidelity), pil-bicubic (clean-fid).
    #[arg(long, default_value = "pytorch-bilinear")]
    resize: String,
    #[arg(long)]
    device: Option<String>,
    /// FID Inception weights (safetensors; default: the set-up asset).
    #[arg(long)]
    inception_weights: Option<PathBuf>,
    /// Also write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn fid(a: FidArgs) -> Result<()> {
    if a.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let tap = Tap::from_dims(a.dims)?;
    let resize = Resize::parse(&a.resize)?;
    let device = device(a.device.as_deref())?;
    let weights = a
        .inception_weights
        .clone()
        .unwrap_or_else(FidInception::default_path);
    let net = FidInception::load(&weights, resize, device)?.with_tap(tap);
    println!(
        "features: {} ({}), --dims {}, --batch-size {}; folders read at their own size, converted to RGB",
        net.name(),
        weights.display(),
        a.dims,
        a.batch_size
    );
    let (p1, p2) = (&a.paths[0], &a.paths[1]);
    if a.save_stats {
        if !p1.is_dir() {
            bail!(
                "--save-stats needs a folder of images first, got {}",
                p1.display()
            );
        }
        let (stats, what) = statistics(p1, &net, a.batch_size)?;
        println!("{what}");
        if p2.extension().and_then(|e| e.to_str()) == Some("npz") {
            stats.save_npz(p2)?;
        } else {
            stats.save(p2)?;
        }
        println!("statistics ({} dims) written to {}", a.dims, p2.display());
        return Ok(());
    }
    let (s1, w1) = statistics(p1, &net, a.batch_size)?;
    let (s2, w2) = statistics(p2, &net, a.batch_size)?;
    println!("1: {w1}\n2: {w2}");
    if s1.dim() != s2.dim() {
        bail!(
            "the inputs have {}- and {}-dimensional statistics: compare statistics of one feature layer (--dims)",
            s1.dim(),
            s2.dim()
        );
    }
    let fid = frechet_distance(&s1, &s2)?;
    println!("FID:  {fid}");
    if let Some(j) = &a.json {
        write_json(
            j,
            &FidReport {
                fid,
                dims: a.dims,
                inputs: [w1, w2],
                counts: [s1.count() as usize, s2.count() as usize],
                resize: resize.name().to_string(),
                feature_network: net.name(),
            },
        )?;
    }
    Ok(())
}

/// A path's statistics: a `.npz` (pytorch-fid's), a `.safetensors` (ours) or a folder.
fn statistics(path: &Path, net: &FidInception, batch: usize) -> Result<(FeatureStats, String)> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if path.is_file() {
        let stats = match ext {
            "npz" => FeatureStats::load_npz(path)?,
            "safetensors" => FeatureStats::load(path)?,
            _ => bail!(
                "{}: expected a folder of images or a statistics file (.npz from pytorch-fid, .safetensors from genmodels)",
                path.display()
            ),
        };
        return Ok((stats, format!("statistics file {}", path.display())));
    }
    if !path.is_dir() {
        bail!("{}: no such folder or statistics file", path.display());
    }
    let folder = ImageFolder::open(path, 0, 3)?;
    let what = folder.describe();
    let n = folder.len();
    if n < 2 {
        bail!("{what}: FID needs at least 2 images");
    }
    let mut bars = StageBars::default();
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stats = dataset_stats(net, &folder, n, batch, &mut |d| {
        bars.update(&format!("features {name}"), d, n)
    })?;
    bars.finish();
    Ok((stats, what))
}
