//! Every score for two sets of images at once, from features extracted in batches.

use crate::fid::{frechet_distance, FeatureStats};
use crate::inception::{unit_to_0_255, FeatureExtractor};
use crate::kid::{kid, KidConfig};
use crate::prdc::{density_coverage, precision_recall};
use crate::{Error, Result};
use genmodels_core::data::{DataLoader, Dataset};
use tch::{Kind, Tensor};

/// The scores of one comparison, as written to JSON (the report contract).
pub use genmodels_contracts::reports::ImageMetricsReport as MetricsReport;

/// Features (and a classifier head's logits, when the network has one) of a set of images.
pub struct Extracted {
    /// `[N, D]` on the CPU.
    pub features: Tensor,
    /// `[N, classes]` on the CPU, when the network has a head.
    pub logits: Option<Tensor>,
}

/// Features `[N, D]` of the first `limit` examples of an image dataset (values in [-1, 1]),
/// `batch` at a time; `progress` is told how many images are done after each batch.
pub fn dataset_features(
    ex: &dyn FeatureExtractor,
    ds: &dyn Dataset,
    limit: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Tensor> {
    Ok(dataset_extract(ex, ds, limit, batch, progress)?.features)
}

/// Features and logits of the first `limit` examples of an image dataset, streamed: one batch
/// of images is decoded (in parallel) and in memory at a time, so a folder of any size is
/// scored in bounded memory (the features themselves are kept: `N x D` floats).
pub fn dataset_extract(
    ex: &dyn FeatureExtractor,
    ds: &dyn Dataset,
    limit: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Extracted> {
    let shape = ds.example_shape();
    if shape.len() != 3 {
        return Err(Error::invalid(format!(
            "image metrics need image data, got examples of shape {shape:?}"
        )));
    }
    if batch == 0 {
        return Err(Error::invalid("the feature batch size must be at least 1"));
    }
    let n = limit.min(ds.len());
    let mut out = Collected::default();
    let mut done = 0;
    while done < n {
        let b = batch.min(n - done);
        let idx: Vec<usize> = (done..done + b).collect();
        let x = DataLoader::collate(ds, &idx, tch::Device::Cpu)?.x;
        out.push(ex.features_and_logits(&unit_to_0_255(&x))?);
        done += b;
        progress(done);
    }
    out.finish()
}

/// FID statistics of the first `limit` images of a dataset, streamed: neither the images nor
/// their features are kept, so a folder of any size fits in memory (pytorch-fid's
/// `calculate_activation_statistics`, without holding the `N x D` activations).
pub fn dataset_stats(
    ex: &dyn FeatureExtractor,
    ds: &dyn Dataset,
    limit: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<FeatureStats> {
    let shape = ds.example_shape();
    if shape.len() != 3 {
        return Err(Error::invalid(format!(
            "image statistics need image data, got examples of shape {shape:?}"
        )));
    }
    if batch == 0 {
        return Err(Error::invalid("the feature batch size must be at least 1"));
    }
    let n = limit.min(ds.len());
    let mut stats = FeatureStats::new(ex.dim());
    let mut done = 0;
    while done < n {
        let b = batch.min(n - done);
        let idx: Vec<usize> = (done..done + b).collect();
        let x = DataLoader::collate(ds, &idx, tch::Device::Cpu)?.x;
        stats.update(&ex.features(&unit_to_0_255(&x))?)?;
        done += b;
        progress(done);
    }
    Ok(stats)
}

#[derive(Default)]
struct Collected {
    features: Vec<Tensor>,
    logits: Vec<Tensor>,
}

impl Collected {
    fn push(&mut self, (f, l): (Tensor, Option<Tensor>)) {
        self.features.push(f.to_device(tch::Device::Cpu));
        if let Some(l) = l {
            self.logits.push(l.to_device(tch::Device::Cpu));
        }
    }
    fn finish(self) -> Result<Extracted> {
        if self.features.is_empty() {
            return Err(Error::invalid("no images to extract features from"));
        }
        Ok(Extracted {
            features: Tensor::cat(&self.features, 0),
            logits: (!self.logits.is_empty()).then(|| Tensor::cat(&self.logits, 0)),
        })
    }
}

/// Features of images held in memory (`[N, C, H, W]` in [-1, 1]).
pub fn tensor_features(
    ex: &dyn FeatureExtractor,
    images: &Tensor,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Tensor> {
    Ok(tensor_extract(ex, images, batch, progress)?.features)
}

/// Features and logits of images held in memory (`[N, C, H, W]` in [-1, 1]).
pub fn tensor_extract(
    ex: &dyn FeatureExtractor,
    images: &Tensor,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Extracted> {
    if batch == 0 {
        return Err(Error::invalid("the feature batch size must be at least 1"));
    }
    let n = images.size().first().copied().unwrap_or(0);
    let mut out = Collected::default();
    let mut done = 0;
    while done < n {
        let b = (batch as i64).min(n - done);
        out.push(ex.features_and_logits(&unit_to_0_255(&images.narrow(0, done, b)))?);
        done += b;
        progress(done as usize);
    }
    out.finish()
}

/// All scores from real and fake features.
pub fn compare(
    real: &Tensor,
    fake: &Tensor,
    feature_network: &str,
    kid_config: &KidConfig,
) -> Result<MetricsReport> {
    let (nr, nf) = (real.size()[0] as usize, fake.size()[0] as usize);
    let fid = frechet_distance(
        &FeatureStats::from_features(real)?,
        &FeatureStats::from_features(fake)?,
    )?;
    let subset = kid_config.subset_size.min(nr).min(nf);
    // torch-fidelity draws the generated set's subset first (input1), then the real one's
    let k = kid(
        fake,
        real,
        &KidConfig {
            subset_size: subset,
            ..*kid_config
        },
    )?;
    let (real64, fake64) = (real.to_kind(Kind::Double), fake.to_kind(Kind::Double));
    let (precision, recall) = precision_recall(&real64, &fake64, 3)?;
    let (density, coverage) = density_coverage(&real64, &fake64, 5)?;
    Ok(MetricsReport {
        fid,
        kid_mean: k.mean,
        kid_std: k.std,
        kid_subset_size: subset,
        precision,
        recall,
        density,
        coverage,
        num_real: nr,
        num_fake: nf,
        feature_network: feature_network.to_string(),
        domain: None,
        memorisation: None,
        inception_score: None,
        inputs: Default::default(),
    })
}

/// The cache key of a real set's features: the images, the network's name and the bytes of the
/// network's weights file. Two networks of the same kind with different weights (say, two
/// domain classifiers) must never share cached features.
pub fn features_cache_key(
    ds: &dyn Dataset,
    limit: usize,
    net_name: &str,
    weights: &std::path::Path,
) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(weights).map_err(|e| genmodels_core::Error::io(weights, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| genmodels_core::Error::io(weights, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    dataset_hash_with(ds, limit, net_name, &h.finalize())
}

fn dataset_hash_with(
    ds: &dyn Dataset,
    limit: usize,
    tag: &str,
    weights_digest: &[u8],
) -> Result<String> {
    use sha2::{Digest, Sha256};
    let per: usize = ds.example_shape().iter().product::<i64>() as usize;
    let mut buf = vec![0f32; per];
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update(b"|weights:");
    h.update(weights_digest);
    for i in 0..limit.min(ds.len()) {
        ds.get(i, &mut buf)?;
        for v in &buf {
            h.update(v.to_le_bytes());
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use genmodels_core::data::{Mixture2d, MixtureKind};

    #[test]
    fn the_feature_cache_key_changes_with_the_weights_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            dir.path().join("a.safetensors"),
            dir.path().join("b.safetensors"),
        );
        std::fs::write(&a, b"weights one").unwrap();
        std::fs::write(&b, b"weights two").unwrap();
        let ds = Mixture2d::new(MixtureKind::Ring8, 64, 0).unwrap();
        let ka = features_cache_key(&ds, 64, "domain classifier", &a).unwrap();
        let kb = features_cache_key(&ds, 64, "domain classifier", &b).unwrap();
        assert_ne!(
            ka, kb,
            "same network name, different weights: different keys"
        );
        assert_eq!(
            ka,
            features_cache_key(&ds, 64, "domain classifier", &a).unwrap()
        );
        assert_ne!(
            ka,
            features_cache_key(&ds, 32, "domain classifier", &a).unwrap()
        );
        assert!(features_cache_key(&ds, 64, "x", &dir.path().join("missing")).is_err());
    }
}
