//! Scores of a classifier or a detector against labels:
//!
//! - [`auroc`]: the area under the ROC curve of scores for positives against negatives, as
//!   `sklearn.metrics.roc_auc_score` computes it (the Mann-Whitney statistic, ties counted
//!   half), for out-of-distribution detection;
//! - [`calibration`]: the expected calibration error and the reliability diagram's bins
//!   (Guo et al. 2017: confidence = max softmax probability, equal-width bins over (0, 1],
//!   ECE = sum over bins of |accuracy - confidence| weighted by the bin's share).

use crate::{Error, Result};

/// AUROC of `positive` scores against `negative` ones (higher scores should mean positive).
pub fn auroc(positive: &[f64], negative: &[f64]) -> Result<f64> {
    if positive.is_empty() || negative.is_empty() {
        return Err(Error::invalid(format!(
            "AUROC needs scores of both classes, got {} positive and {} negative",
            positive.len(),
            negative.len()
        )));
    }
    if positive.iter().chain(negative).any(|x| x.is_nan()) {
        return Err(Error::invalid("AUROC of NaN scores"));
    }
    // Midranks of the pooled scores; U = sum of the positives' ranks - n+(n+ + 1)/2.
    let mut all: Vec<(f64, bool)> = positive
        .iter()
        .map(|&x| (x, true))
        .chain(negative.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|e| e.1).count() as f64 * mid;
        i = j + 1;
    }
    let (np, nn) = (positive.len() as f64, negative.len() as f64);
    Ok((rank_sum - np * (np + 1.0) / 2.0) / (np * nn))
}

pub use genmodels_contracts::reports::{Calibration, CalibrationBin};

/// Calibration of predictions given as (confidence in [0, 1], correct) pairs, in `bins`
/// equal-width bins.
pub fn calibration(confidence: &[f64], correct: &[bool], bins: usize) -> Result<Calibration> {
    if confidence.len() != correct.len() || confidence.is_empty() || bins == 0 {
        return Err(Error::invalid(format!(
            "calibration needs as many confidences as outcomes (got {} and {}) and at least one bin",
            confidence.len(),
            correct.len()
        )));
    }
    if let Some(c) = confidence.iter().find(|c| !(0.0..=1.0).contains(*c)) {
        return Err(Error::invalid(format!(
            "a confidence must lie in [0, 1], got {c}"
        )));
    }
    let mut sum_c = vec![0.0; bins];
    let mut sum_a = vec![0.0; bins];
    let mut count = vec![0usize; bins];
    for (&c, &ok) in confidence.iter().zip(correct) {
        // (lo, hi] bins; a confidence of 0 falls in the first.
        let b = ((c * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        sum_c[b] += c;
        sum_a[b] += f64::from(u8::from(ok));
        count[b] += 1;
    }
    let n = confidence.len() as f64;
    let mut ece = 0.0;
    let mut out = Vec::with_capacity(bins);
    for b in 0..bins {
        let k = count[b];
        let (conf, acc) = if k > 0 {
            (sum_c[b] / k as f64, sum_a[b] / k as f64)
        } else {
            (0.0, 0.0)
        };
        ece += k as f64 / n * (acc - conf).abs();
        out.push(CalibrationBin {
            lo: b as f64 / bins as f64,
            hi: (b + 1) as f64 / bins as f64,
            count: k,
            confidence: conf,
            accuracy: acc,
        });
    }
    let accuracy = correct.iter().filter(|&&c| c).count() as f64 / n;
    Ok(Calibration {
        ece,
        accuracy,
        bins: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_ties_half_as_sklearn_does() {
        // Pairs won: 0.9 -> 3, 0.8 -> 3, 0.3 -> 1 + a tie with 0.3 (half): 7.5 of 9.
        let a = auroc(&[0.9, 0.8, 0.3], &[0.5, 0.3, 0.1]).unwrap();
        assert!((a - 7.5 / 9.0).abs() < 1e-12, "{a}");
        assert_eq!(auroc(&[2.0, 3.0], &[0.0, 1.0]).unwrap(), 1.0);
        assert_eq!(auroc(&[0.0], &[1.0]).unwrap(), 0.0);
        assert_eq!(auroc(&[1.0; 4], &[1.0; 3]).unwrap(), 0.5);
        assert!(auroc(&[], &[1.0]).is_err());
        assert!(auroc(&[f64::NAN], &[1.0]).is_err());
    }

    #[test]
    fn ece_is_the_weighted_gap_between_accuracy_and_confidence() {
        // Bin (0.5, 0.6]: confidences 0.55, 0.55, one right -> gap 0.05, weight 2/4;
        // bin (0.9, 1.0]: 0.95, 0.95, both right -> gap 0.05, weight 2/4. ECE = 0.05.
        let c = calibration(&[0.55, 0.55, 0.95, 0.95], &[true, false, true, true], 10).unwrap();
        assert!((c.ece - 0.05).abs() < 1e-12, "{}", c.ece);
        assert_eq!(c.bins[5].count, 2);
        assert_eq!(c.bins[9].count, 2);
        assert!((c.accuracy - 0.75).abs() < 1e-12);
        // A perfectly calibrated predictor has ECE 0; bad input is refused.
        let c = calibration(&[1.0, 1.0], &[true, true], 15).unwrap();
        assert_eq!(c.ece, 0.0);
        assert!(calibration(&[1.2], &[true], 15).is_err());
        assert!(calibration(&[0.5], &[true, false], 15).is_err());
    }
}
