//! `genmodels metrics`: generated images against real ones through
//! [`genmodels_metrics::pipeline`], or mode coverage for a 2-D mixture.

use crate::common::{bar, device, registry, write_json, StageBars};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_core::data::{DataLoader, DataSpec, MixtureKind};
use genmodels_core::device::seed_everything;
use genmodels_core::model::Samples;
use genmodels_core::run::{Run, RunLayout};
use genmodels_metrics::pipeline::{mode_report, score_images, FeatureSpace, ImageScoring};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct MetricsArgs {
    /// Real images (a data spec, e.g. fashion-mnist:test or folder:DIR).
    #[arg(long)]
    real: String,
    /// Generated images: a run folder (samples are drawn from its checkpoint) or a data spec.
    #[arg(long)]
    fake: String,
    /// How many generated samples (and at most how many real ones).
    #[arg(short, long, default_value_t = 10_000)]
    n: usize,
    /// Resize convention to 299x299: pil-bicubic (clean-fid), tf1-bilinear (torch-fidelity), pytorch-bilinear (pytorch-fid).
    #[arg(long, default_value = "pil-bicubic")]
    resize: String,
    /// Also write the scores as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Images per forward pass of the feature network.
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// Folder for cached real-set features (keyed by a hash of the images and the network).
    #[arg(long, default_value = "target/metrics-cache")]
    cache: PathBuf,
    /// A domain classifier (from `genmodels classifier`): adds FID in its feature space, a domain
    /// Inception Score and the KL of the generated class histogram from the real one.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Training data: adds the memorisation check (nearest-training distances in pixel space).
    #[arg(long)]
    train: Option<String>,
    /// Feature network for FID, KID, precision/recall, density/coverage: inception (FID
    /// Inception pool3, the standard) or classifier (the --classifier's 128-d penultimate
    /// layer: a domain feature space, fast on a CPU, not comparable with published FIDs).
    #[arg(long, default_value = "inception")]
    features: String,
}

pub fn metrics(a: MetricsArgs) -> Result<()> {
    if a.n < 2 || a.batch_size == 0 {
        bail!("-n must be at least 2 and --batch-size at least 1");
    }
    let device = device(a.device.as_deref())?;
    if let DataSpec::Mixture { mixture, .. } = DataSpec::parse(&a.real)? {
        return mode_metrics(&a, mixture, device);
    }
    let features = match a.features.as_str() {
        "inception" => FeatureSpace::inception(&a.resize)?,
        "classifier" => match &a.classifier {
            Some(cp) => FeatureSpace::Classifier {
                weights: cp.clone(),
            },
            None => {
                bail!("--features classifier needs --classifier FILE (from `genmodels classifier`)")
            }
        },
        other => bail!("unknown --features `{other}`: expected inception or classifier"),
    };
    let real = DataSpec::parse(&a.real)?.dataset()?;
    let scoring = ImageScoring {
        features,
        batch_size: a.batch_size,
        device,
        cache: Some(a.cache.clone()),
        classifier: a.classifier.clone(),
        train: match &a.train {
            Some(t) => Some(DataSpec::parse(t)?.dataset()?),
            None => None,
        },
    };
    let fake = fake_images(&a.fake, a.n, a.seed, a.batch_size, device)?;
    let mut bars = StageBars::default();
    let r = score_images(real.as_ref(), a.n, &fake, &scoring, &mut |s, d, t| {
        bars.update(s, d, t)
    })?;
    bars.finish();
    let mut rows = vec![
        ("FID", r.fid),
        ("KID", r.kid_mean),
        ("KID std", r.kid_std),
        ("precision", r.precision),
        ("recall", r.recall),
        ("density", r.density),
        ("coverage", r.coverage),
    ];
    if let Some(d) = &r.domain {
        rows.extend([
            ("domain FID", d.domain_fid),
            ("domain IS", d.domain_is_mean),
            ("domain IS std", d.domain_is_std),
            ("class KL", d.class_kl),
        ]);
    }
    if let Some(m) = &r.memorisation {
        rows.extend([
            ("near copies", m.near_copy_share),
            ("NN dist fake", m.fake_median),
            ("NN dist real", m.heldout_median),
        ]);
    }
    println!("{:<14} {:>12}", "metric", "value");
    for (k, v) in rows {
        println!("{k:<14} {v:>12.5}");
    }
    println!(
        "{} real vs {} generated images; features: {}",
        r.num_real, r.num_fake, r.feature_network
    );
    if let Some(p) = &a.json {
        write_json(p, &r)?;
    }
    Ok(())
}

/// Mode coverage of a run trained on a 2-D mixture, with a scatter plot beside the JSON.
fn mode_metrics(a: &MetricsArgs, mixture: MixtureKind, device: tch::Device) -> Result<()> {
    let path = Path::new(&a.fake);
    let mut run = Run::open_with_model(path, registry(), device)?;
    run.load_for_sampling(false)?;
    seed_everything(a.seed);
    let Samples::Points(pts) = run.model.sample(a.n)? else {
        bail!("{} does not generate 2-D points", path.display())
    };
    let m = mode_report(&pts, mixture)?;
    println!(
        "modes covered {}/{}, high-quality share {:.4}, KL(modes || uniform) {:.4}",
        m.coverage.modes_covered,
        m.coverage.modes,
        m.coverage.high_quality_share,
        m.coverage.kl_to_uniform
    );
    if let Some(p) = &a.json {
        write_json(p, &m)?;
        let real = genmodels_core::data::Mixture2d::new(mixture, 2000, 1)?;
        let idx: Vec<usize> = (0..2000).collect();
        let real_pts = DataLoader::collate(&real, &idx, tch::Device::Cpu)?.x;
        let plot = p.with_extension("png");
        let lim = if matches!(mixture, MixtureKind::Ring8) {
            3.0
        } else {
            6.0
        };
        genmodels_core::image_io::save_scatter(&pts, Some(&real_pts), lim, 400, &plot)?;
        println!("scatter plot (data grey, samples blue): {}", plot.display());
    }
    Ok(())
}

/// `n` generated images in [-1, 1]: sampled from a run folder, or read from a data spec.
fn fake_images(
    fake: &str,
    n: usize,
    seed: u64,
    batch: usize,
    device: tch::Device,
) -> Result<tch::Tensor> {
    let path = Path::new(fake);
    if RunLayout::new(path).has_checkpoint() {
        let mut run = Run::open_with_model(path, registry(), device)?;
        run.load_for_sampling(false)?;
        seed_everything(seed);
        let b = bar(n as u64, "sampling");
        let mut parts = Vec::new();
        let mut done = 0;
        while done < n {
            let k = batch.min(n - done);
            let Samples::Images(imgs) = run.model.sample(k)? else {
                bail!("{} does not generate images", path.display())
            };
            parts.push(imgs.to_device(tch::Device::Cpu));
            done += k;
            b.set_position(done as u64);
        }
        b.finish();
        Ok(tch::Tensor::cat(&parts, 0))
    } else {
        let ds = DataSpec::parse(fake)?.dataset()?;
        let idx: Vec<usize> = (0..n.min(ds.len())).collect();
        Ok(DataLoader::collate(ds.as_ref(), &idx, tch::Device::Cpu)?.x)
    }
}
