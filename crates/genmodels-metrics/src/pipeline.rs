//! The scoring pipeline behind `genmodels metrics`, callable without the binary: choose a
//! feature network, extract (and cache) the real set's features, score generated images in
//! that space, and add the optional extras (a domain classifier's FID, Inception Score and
//! class histogram; the memorisation check). Also mode coverage for 2-D mixtures.
//!
//! ```no_run
//! # fn main() -> genmodels_metrics::Result<()> {
//! use genmodels_core::data::DataSpec;
//! use genmodels_metrics::pipeline::{score_images, FeatureSpace, ImageScoring, Images};
//! let real = DataSpec::parse("fashion-mnist:test")?.dataset()?;
//! let fake = tch::Tensor::zeros([100, 1, 28, 28], (tch::Kind::Float, tch::Device::Cpu));
//! let scoring = ImageScoring::new(FeatureSpace::inception("pil-bicubic")?);
//! let report = score_images(real.as_ref(), 100, Images::Tensor(&fake), &scoring, &mut |_, _, _| {})?;
//! println!("FID {:.2}", report.fid);
//! # Ok(())
//! # }
//! ```

use crate::classifier::{class_histogram_kl, DomainClassifier};
use crate::inception::{FeatureExtractor, FidInception};
use crate::kid::KidConfig;
use crate::report::{compare, dataset_extract, features_cache_key, tensor_extract, Extracted};
use crate::resize::Resize;
use crate::{Error, Result};
use genmodels_contracts::reports::{
    DomainScores, FidelityReport, ImageMetricsReport, InceptionScoreReport, ModeReport,
    ScoringInputs,
};
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

    /// The resize convention's name ("" for networks without one).
    pub fn resize_name(&self) -> &'static str {
        match self {
            FeatureSpace::Inception { resize, .. } => resize.name(),
            FeatureSpace::Classifier { .. } => "",
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
    /// Requires the Inception Score of the generated images (an error without a network with
    /// a head); it is added whenever the network has one.
    pub isc: bool,
    /// KID's subsets (its subset size is capped by the sample counts).
    pub kid: KidConfig,
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
            isc: false,
            kid: KidConfig::default(),
        }
    }

    fn inputs(&self, real: &str, fake: &str) -> ScoringInputs {
        ScoringInputs {
            real: real.to_string(),
            fake: fake.to_string(),
            resize: self.features.resize_name().to_string(),
            batch_size: self.batch_size,
            kid_subsets: self.kid.subsets,
        }
    }
}

/// A set of images to score: in memory, or a dataset streamed a batch at a time.
pub enum Images<'a> {
    /// `[N, C, H, W]` in [-1, 1].
    Tensor(&'a Tensor),
    /// The first `limit` examples of a dataset (a folder of any size streams).
    Dataset { data: &'a dyn Dataset, limit: usize },
}

impl Images<'_> {
    /// How many images.
    pub fn len(&self) -> usize {
        match self {
            Images::Tensor(t) => t.size().first().copied().unwrap_or(0) as usize,
            Images::Dataset { data, limit } => data.len().min(*limit),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What they are, for reports.
    pub fn describe(&self) -> String {
        match self {
            Images::Tensor(t) => format!("{} generated images {:?}", self.len(), t.size()),
            Images::Dataset { data, .. } => {
                format!("first {} of {}", self.len(), data.describe())
            }
        }
    }

    fn extract(
        &self,
        net: &dyn FeatureExtractor,
        batch: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Extracted> {
        match self {
            Images::Tensor(t) => tensor_extract(net, t, batch, progress),
            Images::Dataset { data, limit } => dataset_extract(net, *data, *limit, batch, progress),
        }
    }

    /// All of them in memory (for the extras that compare pixels).
    fn to_tensor(&self, device: Device) -> Result<Tensor> {
        match self {
            Images::Tensor(t) => Ok(t.to_device(device)),
            Images::Dataset { data, .. } => first_images(*data, self.len(), device),
        }
    }
}

/// Progress of a long stage: `(stage, done, total)`.
pub type Progress<'a> = dyn FnMut(&str, usize, usize) + 'a;

/// Scores `fake` against the first `n_real` images of `real`.
pub fn score_images(
    real: &dyn Dataset,
    n_real: usize,
    fake: Images,
    s: &ImageScoring,
    progress: &mut Progress,
) -> Result<ImageMetricsReport> {
    let n_real = n_real.min(real.len());
    let n_fake = fake.len();
    if n_real < 2 || n_fake < 2 {
        return Err(Error::invalid(format!(
            "the metrics need at least 2 real and 2 generated images, got {n_real} and {n_fake}"
        )));
    }
    let net = s.features.load(s.device)?;
    let net = net.as_ref();
    check_isc(net, s.isc)?;
    let with_isc = s.isc || net.has_logits();
    let real_feats = real_features(net, real, n_real, s, progress)?;
    let fake_x = fake.extract(net, s.batch_size, &mut |d| {
        progress("generated features", d, n_fake)
    })?;
    let mut report = compare(&real_feats, &fake_x.features, &net.name(), &s.kid)?;
    report.inputs = s.inputs(
        &Images::Dataset {
            data: real,
            limit: n_real,
        }
        .describe(),
        &fake.describe(),
    );
    if with_isc {
        report.inception_score = Some(isc_of(&fake_x)?);
    }
    if let Some(cp) = &s.classifier {
        let fake_t = fake.to_tensor(Device::Cpu)?;
        report.domain = Some(domain_scores(cp, real, n_real, &fake_t, s.device)?);
    }
    if let Some(train) = &s.train {
        let all: Vec<usize> = (0..train.len()).collect();
        let train_x = DataLoader::collate(train.as_ref(), &all, Device::Cpu)?.x;
        let held = first_images(real, n_real, Device::Cpu)?;
        report.memorisation = Some(crate::novelty::memorisation(
            &fake.to_tensor(Device::Cpu)?,
            &train_x,
            &held,
        )?);
    }
    Ok(report)
}

fn check_isc(net: &dyn FeatureExtractor, isc: bool) -> Result<()> {
    if isc && !net.has_logits() {
        return Err(Error::invalid(format!(
            "--isc needs a network with a classifier head, and {} has none: the FID Inception asset carries no 1008-way layer; pass --inception-weights FILE with fc.weight and fc.bias (scripts/convert_weights.py fid-inception-pth converts pytorch-fid's or torch-fidelity's .pth)",
            net.name()
        )));
    }
    Ok(())
}

fn isc_of(x: &Extracted) -> Result<InceptionScoreReport> {
    let logits = x
        .logits
        .as_ref()
        .ok_or_else(|| Error::invalid("the feature network gave no logits"))?;
    let is = crate::isc::inception_score(logits)?;
    Ok(InceptionScoreReport {
        mean: is.mean,
        std: is.std,
        splits: 10,
    })
}

/// Which metrics torch-fidelity's flags chose (`--isc --fid --kid --prc`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    pub isc: bool,
    pub fid: bool,
    pub kid: bool,
    pub prc: bool,
}

impl Selection {
    /// Whether any flag was given.
    pub fn any(&self) -> bool {
        self.isc || self.fid || self.kid || self.prc
    }
}

/// torch-fidelity's `calculate_metrics(input1=fake, input2=real, ...)`: only the chosen
/// metrics, under its keys. The Inception Score is of `fake` (input1) alone; KID refuses a
/// subset larger than either set, as torch-fidelity does.
pub fn fidelity_scores(
    real: Images,
    fake: Images,
    s: &ImageScoring,
    sel: Selection,
    progress: &mut Progress,
) -> Result<FidelityReport> {
    let (n_real, n_fake) = (real.len(), fake.len());
    let two_sets = sel.fid || sel.kid || sel.prc;
    if n_fake < 2 || (two_sets && n_real < 2) {
        return Err(Error::invalid(format!(
            "the metrics need at least 2 images in each input, got {n_fake} (input1) and {n_real} (input2)"
        )));
    }
    if sel.kid && (s.kid.subset_size > n_real || s.kid.subset_size > n_fake) {
        return Err(Error::invalid(format!(
            "--kid-subset-size {} is larger than the inputs ({n_fake} and {n_real} images): give at most {}",
            s.kid.subset_size,
            n_real.min(n_fake)
        )));
    }
    let net = s.features.load(s.device)?;
    let net = net.as_ref();
    check_isc(net, sel.isc)?;
    let fake_x = fake.extract(net, s.batch_size, &mut |d| {
        progress("input1 features", d, n_fake)
    })?;
    let mut r = FidelityReport {
        inputs: s.inputs(&real.describe(), &fake.describe()),
        feature_network: net.name(),
        ..Default::default()
    };
    if sel.isc {
        let is = isc_of(&fake_x)?;
        r.inception_score_mean = Some(is.mean);
        r.inception_score_std = Some(is.std);
    }
    if two_sets {
        let real_x = real.extract(net, s.batch_size, &mut |d| {
            progress("input2 features", d, n_real)
        })?;
        let (rf, ff) = (&real_x.features, &fake_x.features);
        if sel.fid {
            r.frechet_inception_distance = Some(crate::fid::frechet_distance(
                &crate::fid::FeatureStats::from_features(rf)?,
                &crate::fid::FeatureStats::from_features(ff)?,
            )?);
        }
        if sel.kid {
            let k = crate::kid::kid(ff, rf, &s.kid)?;
            r.kernel_inception_distance_mean = Some(k.mean);
            r.kernel_inception_distance_std = Some(k.std);
        }
        if sel.prc {
            let (p, rc) = crate::prdc::precision_recall(
                &rf.to_kind(tch::Kind::Double),
                &ff.to_kind(tch::Kind::Double),
                3,
            )?;
            r.precision = Some(p);
            r.recall = Some(rc);
            r.f_score = Some(if p + rc > 0.0 {
                2.0 * p * rc / (p + rc)
            } else {
                0.0
            });
        }
    }
    Ok(r)
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
    let f = dataset_extract(net, real, n_real, s.batch_size, &mut |d| {
        progress("real features", d, n_real)
    })?
    .features;
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
