//! The JSON files the scoring verbs write (`--json FILE`), one struct per verb.

use serde::{Deserialize, Serialize};

/// `genmodels metrics` on images: the scores in one feature space, plus the optional extras.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMetricsReport {
    pub fid: f64,
    pub kid_mean: f64,
    pub kid_std: f64,
    pub kid_subset_size: usize,
    pub precision: f64,
    pub recall: f64,
    pub density: f64,
    pub coverage: f64,
    pub num_real: usize,
    pub num_fake: usize,
    /// The feature network (and its input convention) the scores were computed in.
    pub feature_network: String,
    /// Scores in a domain classifier's space (`--classifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainScores>,
    /// Nearest-training distances (`--train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memorisation: Option<Memorisation>,
    /// The Inception Score of the generated images (`--isc`, with a network that has its
    /// 1008-way head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inception_score: Option<InceptionScoreReport>,
    /// What was scored and how: every default that changes the numbers.
    #[serde(default)]
    pub inputs: ScoringInputs,
}

/// The inputs of a scoring run as it read them: data as described by the loader (size,
/// channels, whether resized), the resize convention to the network's input, the counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoringInputs {
    /// The reference images (`--real`, torch-fidelity's `--input2`).
    pub real: String,
    /// The generated images (`--fake`, torch-fidelity's `--input1`).
    pub fake: String,
    /// Resize convention to the feature network's input (empty for networks without one).
    pub resize: String,
    /// Images per forward pass of the feature network.
    pub batch_size: usize,
    /// KID subsets and their size.
    pub kid_subsets: usize,
}

/// An Inception Score: mean and population standard deviation over splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InceptionScoreReport {
    pub mean: f64,
    pub std: f64,
    pub splits: usize,
}

/// `genmodels fid PATH1 PATH2`: pytorch-fid's computation (folders or `.npz` statistics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FidReport {
    pub fid: f64,
    /// Feature dimension (pytorch-fid's `--dims`: 64, 192, 768 or 2048).
    pub dims: i64,
    /// The two inputs as read (folder with image size and count, or a statistics file).
    pub inputs: [String; 2],
    /// Samples behind each side's statistics (0 for a statistics file, which does not say).
    pub counts: [usize; 2],
    /// Resize convention to 299 x 299.
    pub resize: String,
    pub feature_network: String,
}

/// `genmodels metrics` with torch-fidelity's metric flags (`--fid --kid --isc --prc`): its
/// keys, only the chosen metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FidelityReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inception_score_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inception_score_std: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frechet_inception_distance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_inception_distance_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_inception_distance_std: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f_score: Option<f64>,
    /// What was scored and how.
    pub inputs: ScoringInputs,
    pub feature_network: String,
}

/// Scores from a domain classifier: its feature space's FID, its Inception Score and the
/// generated class histogram against the real one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainScores {
    pub domain_fid: f64,
    pub domain_is_mean: f64,
    pub domain_is_std: f64,
    /// KL(generated class histogram || real class histogram), nats.
    pub class_kl: f64,
    /// Share of generated samples the classifier puts in each class.
    pub class_histogram: Vec<f64>,
    pub domain_feature_network: String,
}

/// Generated samples compared with held-out real ones by their nearest-training distances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memorisation {
    /// Share of generated samples closer to the training set than 99% of held-out real samples.
    pub near_copy_share: f64,
    /// The threshold used: the 1% quantile of held-out -> training nearest distances.
    pub threshold: f64,
    /// Median nearest-training distance of generated samples.
    pub fake_median: f64,
    /// Median nearest-training distance of held-out real samples.
    pub heldout_median: f64,
}

/// Mode coverage of 2-D samples on a Gaussian mixture (`genmodels metrics --real ring8|grid25`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeCoverage {
    pub modes: usize,
    pub modes_covered: usize,
    /// Share of samples within 3 standard deviations of a mode.
    pub high_quality_share: f64,
    /// KL(histogram of high-quality samples over modes || uniform), in nats.
    pub kl_to_uniform: f64,
    /// High-quality samples per mode.
    pub counts: Vec<i64>,
}

/// [`ModeCoverage`] with the mixture it was measured on, as `genmodels metrics` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeReport {
    #[serde(flatten)]
    pub coverage: ModeCoverage,
    pub num_samples: usize,
    /// High-quality samples a mode needs to count as covered.
    pub min_count: i64,
    pub centers: Vec<[f32; 2]>,
    pub mode_std: f64,
}

/// `genmodels nll`: the importance-sampled test log-likelihood of an image model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NllReport {
    pub model: String,
    pub data: String,
    pub n: usize,
    /// Importance samples per image.
    pub k: i64,
    /// Seed of the one binarisation of the test images (independent of `k` and the model).
    pub seed: u64,
    pub nll_nats: f64,
    pub nll_standard_error: f64,
    /// The same NLL in bits per dimension (nats / (D ln 2)).
    pub bits_per_dim: f64,
    /// The one-sample bound.
    pub negative_elbo_nats: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_units: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z_dim: Option<i64>,
    /// Cov_x E_q[z_u] per latent unit.
    #[serde(default)]
    pub unit_activity: Vec<f64>,
    /// How the data were prepared for the likelihood (binarisation).
    pub preparation: String,
    /// How `nll_nats` was estimated (importance sampling, or a diffusion's variational bound).
    #[serde(default)]
    pub estimator: String,
    /// Whether the EMA weights were scored.
    #[serde(default)]
    pub ema: bool,
    /// SHA-256 of the prepared test set (the float32 values the likelihood scored, little
    /// endian, image after image): equal digests mean the same binarised images.
    #[serde(default)]
    pub test_set_sha256: String,
}

/// `genmodels perplexity`: a text model on a validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityReport {
    pub tokens: usize,
    pub loss_nats_per_token: f64,
    pub perplexity: f64,
    pub bits_per_token: f64,
    pub bits_per_char: f64,
    pub split: String,
}

/// `genmodels reconstruct`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructReport {
    pub model: String,
    pub data: String,
    pub n: usize,
    /// Mean squared error with pixels in [-1, 1].
    pub reconstruction_mse: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codebook: Option<CodebookScores>,
}

/// Codebook usage and the code prior of a discrete-latent model, on the reconstructed images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodebookScores {
    /// exp(entropy of code usage), at most `codes`.
    pub codebook_perplexity: f64,
    pub codes: i64,
    pub prior_nll_nats_per_code: f64,
    pub codes_per_image: i64,
}

/// `genmodels cas`: Classification Accuracy Score of a class-conditional model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CasReport {
    /// Test accuracy of a classifier trained on generated images.
    pub cas: f64,
    /// Test accuracy of the same classifier trained on as many real images.
    pub real_baseline: f64,
    pub num_train: usize,
    pub epochs: usize,
    pub truncation: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_plus_generated: Option<f64>,
}

/// `genmodels ood`: AUROC of each score against each out-of-distribution set, the
/// in-distribution images the positives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodReport {
    pub model: String,
    pub in_data: String,
    pub n: usize,
    pub mean_log_px: f64,
    pub rows: Vec<OodRow>,
}

/// One out-of-distribution set of an [`OodReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodRow {
    pub out_data: String,
    pub n: usize,
    /// AUROC of log p(x) = -E(x) (up to a constant).
    pub auroc_log_px: f64,
    /// AUROC of the maximum softmax probability (models with class logits).
    pub auroc_max_softmax: Option<f64>,
    /// AUROC of -||d log p(x) / dx||.
    pub auroc_grad_norm: f64,
    pub mean_log_px: f64,
}

/// One equal-width confidence bin of a [`Calibration`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// The bin's confidence interval (lo, hi].
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    /// Mean confidence and accuracy of the predictions in the bin (0 when empty).
    pub confidence: f64,
    pub accuracy: f64,
}

/// Expected calibration error (Guo et al. 2017) and its bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub ece: f64,
    pub accuracy: f64,
    pub bins: Vec<CalibrationBin>,
}

/// `genmodels calibration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    pub model: String,
    pub data: String,
    pub n: usize,
    #[serde(flatten)]
    pub calibration: Calibration,
}

/// `genmodels langevin`: chains of an energy model, and restorations when it was given
/// corrupted images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LangevinReport {
    pub model: String,
    pub chains: usize,
    pub steps: usize,
    pub seed: u64,
    /// Wall time of the chains, all of them together.
    pub chain_seconds: f64,
    /// Milliseconds per chain step per image (a sample's MCMC cost is this times the chain
    /// length).
    pub ms_per_step_per_image: f64,
    pub threads: i32,
    pub device: String,
    pub restoration: Option<Restoration>,
    pub grid: std::path::PathBuf,
}

/// Restoration scores of a [`LangevinReport`]: PSNR (dB, [0, 1] scale, per image then
/// averaged) and LPIPS to the clean images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restoration {
    pub data: String,
    pub corrupt: String,
    /// Share of the pixels the chain moves.
    pub free_fraction: f64,
    pub psnr_corrupted_db: f64,
    pub lpips_corrupted: Option<f64>,
    /// A baseline without the model: the free pixels set to the mean of the image's known
    /// pixels (masks only).
    pub psnr_mean_fill_db: Option<f64>,
    /// The chain's end.
    pub psnr_restored_db: f64,
    pub lpips_restored: Option<f64>,
    pub lpips_net: Option<String>,
    pub frames: Vec<RestorationFrame>,
}

/// The scores at one recorded chain step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestorationFrame {
    pub step: usize,
    pub psnr_db: f64,
    pub lpips: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_or_missing_field_is_an_error_not_a_nan() {
        let ok = r#"{"tokens": 10, "loss_nats_per_token": 1.0, "perplexity": 2.7,
                     "bits_per_token": 1.4, "bits_per_char": 1.4, "split": "val"}"#;
        assert!(serde_json::from_str::<PerplexityReport>(ok).is_ok());
        let renamed = ok.replace("perplexity\"", "ppl\"");
        assert!(serde_json::from_str::<PerplexityReport>(&renamed).is_err());
    }

    #[test]
    fn mode_reports_flatten_the_coverage() {
        let r = ModeReport {
            coverage: ModeCoverage {
                modes: 8,
                modes_covered: 7,
                high_quality_share: 0.9,
                kl_to_uniform: 0.1,
                counts: vec![1; 8],
            },
            num_samples: 2500,
            min_count: 3,
            centers: vec![[0.0, 1.0]; 8],
            mode_std: 0.02,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["modes_covered"], 7);
        assert_eq!(serde_json::from_value::<ModeReport>(v).unwrap(), r);
    }
}
