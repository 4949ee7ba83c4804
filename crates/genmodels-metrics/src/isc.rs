//! Inception Score (Salimans et al. 2016): `exp(E_x KL(p(y|x) || p(y)))`, computed as
//! torch-fidelity does: samples shuffled by numpy's `RandomState(2020).permutation`, 10 splits
//! (split i covers `[i*N/10, (i+1)*N/10)`), softmax in float64, mean and population standard
//! deviation over the splits.
//!
//! It takes logits from any classifier: the 1008-way `logits_unbiased` of the FID Inception
//! gives the ImageNet Inception Score; a domain classifier's logits give a domain score, which
//! is not comparable with published ImageNet numbers.

use crate::np_random::RandomState;
use crate::{features_f64, Error, Result};
use tch::{Device, Kind, Tensor};

/// Inception Score mean and standard deviation over splits.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct InceptionScore {
    pub mean: f64,
    pub std: f64,
}

/// torch-fidelity's defaults: 10 splits, shuffle with seed 2020.
pub fn inception_score(logits: &Tensor) -> Result<InceptionScore> {
    inception_score_with(logits, 10, Some(2020))
}

/// Inception Score with explicit splits and shuffle seed (`None`: no shuffle).
pub fn inception_score_with(
    logits: &Tensor,
    splits: usize,
    shuffle_seed: Option<u32>,
) -> Result<InceptionScore> {
    let l = features_f64("Inception Score logits", logits, Device::Cpu)?;
    let n = l.size()[0] as usize;
    if splits == 0 || n < splits {
        return Err(Error::invalid(format!(
            "Inception Score: {n} samples cannot make {splits} splits"
        )));
    }
    let l = match shuffle_seed {
        Some(seed) => {
            let perm: Vec<i64> = RandomState::new(seed)
                .permutation(n)
                .into_iter()
                .map(|i| i as i64)
                .collect();
            l.index_select(0, &Tensor::from_slice(&perm))
        }
        None => l,
    };
    let p = l.softmax(1, Kind::Double);
    let log_p = l.log_softmax(1, Kind::Double);
    let mut scores = Vec::with_capacity(splits);
    for i in 0..splits {
        let (a, b) = ((i * n / splits) as i64, ((i + 1) * n / splits) as i64);
        let pc = p.narrow(0, a, b - a);
        let lpc = log_p.narrow(0, a, b - a);
        let q = pc.mean_dim(0, true, Kind::Double);
        let kl = (&pc * (lpc - q.log()))
            .sum_dim_intlist(1, false, Kind::Double)
            .mean(Kind::Double)
            .exp();
        scores.push(kl.double_value(&[]));
    }
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / splits as f64).sqrt();
    Ok(InceptionScore { mean, std })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confident_and_uniform_extremes() {
        // One-hot-like predictions spread evenly over C classes give IS = C; identical predictions give 1.
        let c = 5i64;
        let eye = Tensor::eye(c, (Kind::Double, Device::Cpu)) * 50.0;
        let logits = eye.repeat([20, 1]);
        let s = inception_score_with(&logits, 4, None).unwrap();
        assert!((s.mean - c as f64).abs() < 1e-6, "{s:?}");
        let same = Tensor::zeros([100, c], (Kind::Double, Device::Cpu));
        assert!((inception_score(&same).unwrap().mean - 1.0).abs() < 1e-12);
        assert!(inception_score_with(&same, 200, None).is_err());
    }
}
