//! # genmodels-metrics
//!
//! Scores for generative models, each equal to a named reference implementation on the same
//! inputs (see `docs/metrics.md`):
//!
//! - [`fid`]: feature statistics in float64 and the Frechet distance (pytorch-fid's formula,
//!   computed through two symmetric eigendecompositions instead of `scipy.linalg.sqrtm`);
//! - [`kid`]: Kernel Inception Distance (torch-fidelity: cubic polynomial kernel, unbiased
//!   MMD^2, 100 subsets of 1000 drawn with numpy's legacy generator seeded 2020);
//! - [`isc`]: Inception Score over any classifier's logits (torch-fidelity's conventions);
//! - [`prdc`]: improved precision/recall (Kynkaanniemi et al., k = 3, `<=`, as torch-fidelity)
//!   and density/coverage (Naeem et al., k = 5, strict `<`, as the `prdc` package), with
//!   distances computed in blocks.
//! - [`inception`]: the FID Inception network ported natively, and the [`inception::FeatureExtractor`] trait;
//! - [`resize`]: the three resize conventions (pytorch-fid, torch-fidelity, clean-fid);
//! - [`lpips`]: LPIPS v0.1 with AlexNet and VGG16 (equal to the `lpips` package), and LPIPS diversity;
//! - [`novelty`]: nearest-training-neighbour distances, near-copy share, MiFID, and mode coverage on the 2-D mixtures;
//! - [`detection`]: AUROC (as sklearn's roc_auc_score) and the expected calibration error;
//! - [`classifier`]: a domain classifier (features, domain IS, class histogram KL, Classification Accuracy Score);
//! - [`np_random`]: numpy's legacy `RandomState` (MT19937) permutations, so that subsets and
//!   shuffles are the references' own.

pub mod classifier;
pub mod detection;
pub mod fid;
pub mod inception;
pub mod isc;
pub mod kid;
pub mod lpips;
pub mod novelty;
pub mod np_random;
pub mod pipeline;
pub mod prdc;
pub mod report;
pub mod resize;

pub use genmodels_core::{Error, Result};

use tch::{Device, Kind, Tensor};

/// Checks that features are a non-empty 2-D matrix and returns them as float64 on `device`.
pub(crate) fn features_f64(name: &str, f: &Tensor, device: Device) -> Result<Tensor> {
    if f.dim() != 2 || f.size()[0] == 0 || f.size()[1] == 0 {
        return Err(Error::invalid(format!(
            "{name}: expected features [N, D] with N, D > 0, got shape {:?}",
            f.size()
        )));
    }
    Ok(f.to_device(device).to_kind(Kind::Double))
}
