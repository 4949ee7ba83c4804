//! `genmodels metrics`: generated images against real ones through
//! [`genmodels_metrics::pipeline`], or mode coverage for a 2-D mixture. With torch-fidelity's
//! metric flags (`--isc --fid --kid --prc`, `--input1 FAKE --input2 REAL`) it computes only
//! those and writes torch-fidelity's keys.

use crate::common::{bar, device, registry, write_json, StageBars};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_core::data::{DataLoader, DataSpec, MixtureKind};
use genmodels_core::device::seed_everything;
use genmodels_core::model::Samples;
use genmodels_core::run::{Run, RunLayout};
use genmodels_metrics::kid::KidConfig;
use genmodels_metrics::pipeline::{
    fidelity_scores, mode_report, score_images, FeatureSpace, ImageScoring, Images, Selection,
};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct MetricsArgs {
    /// Real images (a data spec, e.g. fashion-mnist:test, or a folder of images, read at
    /// their own size). torch-fidelity's name: --input2.
    #[arg(long, visible_alias = "input2")]
    real: Option<String>,
    /// Generated images: a run folder (samples are drawn from its checkpoint), a folder of
    /// images or a data spec. torch-fidelity's name: --input1.
    #[arg(long, visible_alias = "input1")]
    fake: String,
    /// torch-fidelity's flags: compute only the chosen metrics and write its JSON keys.
    /// Inception Score of the generated images (needs --inception-weights with the head;
    /// without the other flags, the full report adds it whenever the weights have the head).
    #[arg(long)]
    isc: bool,
    /// Fréchet Inception Distance (torch-fidelity's flag).
    #[arg(long)]
    fid: bool,
    /// Kernel Inception Distance (torch-fidelity's flag).
    #[arg(long)]
    kid: bool,
    /// Precision, recall and F-score (torch-fidelity's flag).
    #[arg(long)]
    prc: bool,
    /// KID subset size (torch-fidelity's default 1000; capped by the counts without the flags).
    #[arg(long, default_value_t = 1000)]
    kid_subset_size: usize,
    /// KID subsets.
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    /// FID Inception weights (safetensors; default: the set-up asset). One with `fc.weight`
    /// and `fc.bias` also gives the Inception Score.
    #[arg(long)]
    inception_weights: Option<PathBuf>,
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
    if a.n < 2 || a.batch_size == 0 || a.kid_subsets == 0 || a.kid_subset_size < 2 {
        bail!("-n must be at least 2, --batch-size and --kid-subsets at least 1, --kid-subset-size at least 2");
    }
    let device = device(a.device.as_deref())?;
    let sel = Selection {
        isc: a.isc,
        fid: a.fid,
        kid: a.kid,
        prc: a.prc,
    };
    let real_spec = match (&a.real, sel.any() && !(sel.fid || sel.kid || sel.prc)) {
        (Some(r), _) => Some(DataSpec::parse(r)?),
        (None, true) => None,
        (None, false) => bail!("--real (or --input2) is needed: the images to compare against"),
    };
    if let Some(DataSpec::Mixture { mixture, .. }) = &real_spec {
        return mode_metrics(&a, *mixture, device);
    }
    let features = match a.features.as_str() {
        "inception" => match &a.inception_weights {
            Some(w) => FeatureSpace::Inception {
                resize: genmodels_metrics::resize::Resize::parse(&a.resize)?,
                weights: w.clone(),
            },
            None => FeatureSpace::inception(&a.resize)?,
        },
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
    let real = match &real_spec {
        Some(spec) => Some(spec.dataset()?),
        None => None,
    };
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
        isc: a.isc,
        kid: KidConfig {
            subsets: a.kid_subsets,
            subset_size: a.kid_subset_size,
            ..Default::default()
        },
    };
    let fake = FakeImages::open(&a.fake, a.n, a.seed, a.batch_size, device)?;
    let fake_images = fake.images(a.n);
    let real_images = real.as_ref().map(|r| Images::Dataset {
        data: r.as_ref(),
        limit: a.n,
    });
    print_inputs(real_images.as_ref(), &fake_images, &scoring, a.n);
    let mut bars = StageBars::default();
    if sel.any() {
        let empty = EmptySet;
        let real_images = real_images.unwrap_or(Images::Dataset {
            data: &empty,
            limit: 0,
        });
        let r = fidelity_scores(real_images, fake_images, &scoring, sel, &mut |s, d, t| {
            bars.update(s, d, t)
        })?;
        bars.finish();
        for (k, v) in [
            ("inception_score_mean", r.inception_score_mean),
            ("inception_score_std", r.inception_score_std),
            ("frechet_inception_distance", r.frechet_inception_distance),
            (
                "kernel_inception_distance_mean",
                r.kernel_inception_distance_mean,
            ),
            (
                "kernel_inception_distance_std",
                r.kernel_inception_distance_std,
            ),
            ("precision", r.precision),
            ("recall", r.recall),
            ("f_score", r.f_score),
        ] {
            if let Some(v) = v {
                println!("{k}: {v:.7}");
            }
        }
        if let Some(p) = &a.json {
            write_json(p, &r)?;
        }
        return Ok(());
    }
    let Some(real) = &real else {
        bail!("--real (or --input2) is needed: the images to compare against")
    };
    let r = score_images(real.as_ref(), a.n, fake_images, &scoring, &mut |s, d, t| {
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
    if let Some(is) = &r.inception_score {
        rows.extend([("IS", is.mean), ("IS std", is.std)]);
    }
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
        "{} real vs {} generated images; features: {}; KID subsets {} of {}",
        r.num_real, r.num_fake, r.feature_network, scoring.kid.subsets, r.kid_subset_size
    );
    if let Some(p) = &a.json {
        write_json(p, &r)?;
    }
    Ok(())
}

/// Prints every input and default that changes the numbers, before the long work starts.
fn print_inputs(real: Option<&Images>, fake: &Images, s: &ImageScoring, n: usize) {
    if let Some(r) = real {
        println!("real:       {}", r.describe());
    }
    println!("generated:  {}", fake.describe());
    let resize = s.features.resize_name();
    println!(
        "features:   {}{}; -n {n}, --batch-size {}",
        match &s.features {
            FeatureSpace::Inception { weights, .. } =>
                format!("FID Inception ({})", weights.display()),
            FeatureSpace::Classifier { weights } =>
                format!("domain classifier ({})", weights.display()),
        },
        if resize.is_empty() {
            String::new()
        } else {
            format!(", --resize {resize} to 299x299 (grey repeated to RGB)")
        },
        s.batch_size
    );
}

/// No images (torch-fidelity's Inception Score needs only input1).
struct EmptySet;

impl genmodels_core::data::Dataset for EmptySet {
    fn len(&self) -> usize {
        0
    }
    fn example_shape(&self) -> Vec<i64> {
        vec![3, 1, 1]
    }
    fn num_classes(&self) -> Option<usize> {
        None
    }
    fn get(&self, _: usize, _: &mut [f32]) -> genmodels_core::Result<Option<i64>> {
        Err(genmodels_core::Error::invalid("no images"))
    }
    fn describe(&self) -> String {
        "no images".into()
    }
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

/// Generated images: sampled from a run folder into memory, or a dataset read as it streams.
enum FakeImages {
    Sampled(tch::Tensor),
    Data(genmodels_core::data::DynDataset),
}

impl FakeImages {
    fn open(fake: &str, n: usize, seed: u64, batch: usize, device: tch::Device) -> Result<Self> {
        let path = Path::new(fake);
        if !RunLayout::new(path).has_checkpoint() {
            return Ok(FakeImages::Data(DataSpec::parse(fake)?.dataset()?));
        }
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
        Ok(FakeImages::Sampled(tch::Tensor::cat(&parts, 0)))
    }

    fn images(&self, n: usize) -> Images<'_> {
        match self {
            FakeImages::Sampled(t) => Images::Tensor(t),
            FakeImages::Data(d) => Images::Dataset {
                data: d.as_ref(),
                limit: n,
            },
        }
    }
}
