//! The scoring pipeline behind `genmodels metrics`, callable without the binary: choose a
//! feature network, extract (and cache) the real set's features, score generated images in
//! that space, and add the optional extras (a domain classifier's FID, Inception Score and
//! class histogram; the memorisation check). Also mode coverage for 2-D mixtures.
//!
//! ```no_run
//! # fn main() -> genmodels_metrics::Result<()> {
//! use genmodels_core::data::DataSpec;
//! use genmodels_metrics::pipeline::{score_images, FeatureSpace, ImageScoring};
//! let real = DataSpec::parse("fashion-mnist:test")?.dataset()?;
//! let fake = tch::Tensor::zeros([100, 1, 28, 28], (tch::Kind::Float, tch::Device::Cpu));
//! let scoring = ImageScoring::new(FeatureSpace::inception("pil-bicubic")?);
//! let report = score_images(real.as_ref(), 100, &fake, &scoring, &mut |_, _, _| {})?;
//! println!("FID {:.2}", report.fid);
//! # Ok(())
//! # }
//! ```

use crate::classifier::{class_histogram_kl, DomainClassifier};
use crate::inception::{FeatureExtractor, FidInception};
use crate::report::{compare, dataset_features, features_cache_key, tensor_features};
use crate::resize::Resize;
use crate::{Error, Result};
use genmodels_contracts::reports::{DomainScores, ImageMetricsReport, ModeReport};
use genmodels_core::data::{DataLoader, Dataset, DynDataset, MixtureKind};
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// The feature network the scores are computed in.
#[derive(Debug, Clone)]
pub enum FeatureSpace {
    /// FID Inception pool3 (the standard), with the chosen resize convention, from `weights`.
    Inception { resize: Resize, weights: PathBuf },
    /// A domain classifier's 128-d penultimate layer (from `genmodels classifier`).
    Classifier { weights: PathBuf },
}

impl FeatureSpace {
    /// FID Inception from the asset folder, with a resize convention by name.
    pub fn inception(resize: &str) -> Result<Self> {
        Ok(FeatureSpace::Inception {
            resize: Resize::parse(resize)?,
            weights: FidInception::default_path(),
        })
    }

    /// The weights file (part of the real-feature cache key).
    pub fn weights(&self) -> &Path {
        match self {
            FeatureSpace::Inception { weights, .. } | FeatureSpace::Classifier { weights } => {
                weights
            }
        }
    }

    fn load(&self, device: Device) -> Result<Box<dyn FeatureExtractor>> {
        Ok(match self {
            FeatureSpace::Inception { resize, weights } => {
                Box::new(FidInception::load(weights, *resize, device)?)
            }
            FeatureSpace::Classifier { weights } => {
                Box::new(DomainClassifier::load(weights, device)?)
            }
        })
    }
}

/// How to score: the feature space and the optional extras.
pub struct ImageScoring {
    pub features: FeatureSpace,
    /// Images per forward pass of the feature network.
    pub batch_size: usize,
    pub device: Device,
    /// Folder for cached real-set features (keyed by the images, the network and its weights).
    pub cache: Option<PathBuf>,
    /// A domain classifier: adds its FID, Inception Score and class-histogram KL.
    pub classifier: Option<PathBuf>,
    /// Training data: adds the memorisation check (nearest-training distances in pixels).
    pub train: Option<DynDataset>,
}

impl ImageScoring {
    pub fn new(features: FeatureSpace) -> Self {
        ImageScoring {
            features,
            batch_size: 50,
            device: Device::Cpu,
            cache: None,
            classifier: None,
            train: None,
        }
    }
}

/// Progress of a long stage: `(stage, done, total)`.
pub type Progress<'a> = dyn FnMut(&str, usize, usize) + 'a;

/// Scores `fake` (`[N, C, H, W]` in [-1, 1]) against the first `n_real` images of `real`.
pub fn score_images(
    real: &dyn Dataset,
    n_real: usize,
    fake: &Tensor,
    s: &ImageScoring,
    progress: &mut Progress,
) -> Result<ImageMetricsReport> {
    if s.batch_size == 0 {
        return Err(Error::invalid("the feature batch size must be at least 1"));
    }
    let n_real = n_real.min(real.len());
    let n_fake = fake.size().first().copied().unwrap_or(0) as usize;
    if n_real < 2 || n_fake < 2 {
        return Err(Error::invalid(format!(
            "the metrics need at least 2 real and 2 generated images, got {n_real} and {n_fake}"
        )));
    }
    let net = s.features.load(s.device)?;
    let net = net.as_ref();
    let real_feats = real_features(net, real, n_real, s, progress)?;
    let fake_feats = tensor_features(net, fake, s.batch_size, &mut |d| {
        progress("generated features", d, n_fake)
    })?;
    let mut report = compare(&real_feats, &fake_feats, &net.name())?;
    if let Some(cp) = &s.classifier {
        report.domain = Some(domain_scores(cp, real, n_real, fake, s.device)?);
    }
    if let Some(train) = &s.train {
        let all: Vec<usize> = (0..train.len()).collect();
        let train_x = DataLoader::collate(train.as_ref(), &all, Device::Cpu)?.x;
        let held = first_images(real, n_real, Device::Cpu)?;
        report.memorisation = Some(crate::novelty::memorisation(
            &fake.to_device(Device::Cpu),
            &train_x,
            &held,
        )?);
    }
    Ok(report)
}

/// The real set's features, from the cache when it holds them.
fn real_features(
    net: &dyn FeatureExtractor,
    real: &dyn Dataset,
    n_real: usize,
    s: &ImageScoring,
    progress: &mut Progress,
) -> Result<Tensor> {
    let cache = match &s.cache {
        Some(dir) => {
            let key = features_cache_key(real, n_real, &net.name(), s.features.weights())?;
            Some((dir, dir.join(format!("{key}.safetensors"))))
        }
        None => None,
    };
    if let Some((_, file)) = &cache {
        if let Ok(mut v) = Tensor::read_safetensors(file) {
            if v.len() == 1 {
                return Ok(v.remove(0).1);
            }
        }
    }
    let f = dataset_features(net, real, n_real, s.batch_size, &mut |d| {
        progress("real features", d, n_real)
    })?;
    if let Some((dir, file)) = cache {
        std::fs::create_dir_all(dir).map_err(|e| genmodels_core::Error::io(dir, e))?;
        let tmp = file.with_extension("tmp");
        tch::Tensor::write_safetensors(&[("features", &f)], &tmp)?;
        std::fs::rename(&tmp, &file).map_err(|e| genmodels_core::Error::io(&file, e))?;
    }
    Ok(f)
}

fn first_images(ds: &dyn Dataset, n: usize, device: Device) -> Result<Tensor> {
    let idx: Vec<usize> = (0..n.min(ds.len())).collect();
    Ok(DataLoader::collate(ds, &idx, device)?.x)
}

/// A domain classifier's FID, Inception Score and class-histogram KL.
fn domain_scores(
    classifier: &Path,
    real: &dyn Dataset,
    n_real: usize,
    fake: &Tensor,
    device: Device,
) -> Result<DomainScores> {
    let clf = DomainClassifier::load(classifier, device)?;
    let idx: Vec<usize> = (0..n_real).collect();
    let real_b = DataLoader::collate(real, &idx, device)?;
    let fake = fake.to_device(device);
    let (rf, ff) = (clf.embed(&real_b.x), clf.embed(&fake));
    let domain_fid = crate::fid::fid_from_features(&rf, &ff)?;
    let logits = clf.logits(&fake);
    let is = crate::isc::inception_score(&logits)?;
    let labels = real_b.y.ok_or_else(|| {
        Error::invalid("the real data has no labels; the class histogram needs them")
    })?;
    let (class_kl, class_histogram) = class_histogram_kl(&logits, &labels, clf.cfg.classes)?;
    Ok(DomainScores {
        domain_fid,
        domain_is_mean: is.mean,
        domain_is_std: is.std,
        class_kl,
        class_histogram,
        domain_feature_network: clf.name(),
    })
}

/// Mode coverage of 2-D samples on a mixture. A mode counts as covered with at least 1 % of
/// its fair share of high-quality samples (at least one sample).
pub fn mode_report(points: &Tensor, mixture: MixtureKind) -> Result<ModeReport> {
    let n = points.size().first().copied().unwrap_or(0) as usize;
    let fair = n as i64 / mixture.centers().len() as i64;
    let min_count = (fair / 100).max(1);
    let coverage = crate::novelty::mode_coverage(points, mixture, min_count)?;
    Ok(ModeReport {
        coverage,
        num_samples: n,
        min_count,
        centers: mixture.centers(),
        mode_std: f64::from(mixture.std()),
    })
}
