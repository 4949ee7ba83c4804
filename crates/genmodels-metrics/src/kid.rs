//! Kernel Inception Distance (Binkowski et al. 2018) as torch-fidelity computes it: for each of
//! `subsets` rounds, draw `subset_size` rows of each set without replacement (numpy's legacy
//! `RandomState(2020).choice`), take the polynomial kernel `k(x, y) = (x.y / d + 1)^3`, and the
//! unbiased MMD^2 estimate
//! `sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1)) - 2 sum_{i,j} k(x_i,y_j)/m^2`;
//! report the mean and population standard deviation over rounds.

use crate::np_random::RandomState;
use crate::{features_f64, Error, Result};
use tch::{Device, Kind, Tensor};

/// KID settings (torch-fidelity's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KidConfig {
    pub subsets: usize,
    pub subset_size: usize,
    pub degree: f64,
    /// `None`: 1 / feature dimension.
    pub gamma: Option<f64>,
    pub coef0: f64,
    pub seed: u32,
}

impl Default for KidConfig {
    fn default() -> Self {
        KidConfig {
            subsets: 100,
            subset_size: 1000,
            degree: 3.0,
            gamma: None,
            coef0: 1.0,
            seed: 2020,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
}

/// Unbiased MMD^2 of two equally sized samples under the polynomial kernel.
pub fn mmd2_poly(x: &Tensor, y: &Tensor, degree: f64, gamma: f64, coef0: f64) -> f64 {
    let k = |a: &Tensor, b: &Tensor| (a.matmul(&b.tr()) * gamma + coef0).pow_tensor_scalar(degree);
    let m = x.size()[0] as f64;
    let (kxx, kyy, kxy) = (k(x, x), k(y, y), k(x, y));
    let off = |t: &Tensor| (t.sum(Kind::Double) - t.trace()).double_value(&[]);
    (off(&kxx) + off(&kyy)) / (m * (m - 1.0))
        - 2.0 * kxy.sum(Kind::Double).double_value(&[]) / (m * m)
}

/// KID between two feature matrices. Refuses sets smaller than the subset size, as torch-fidelity
/// does; lower `subset_size` for small sets.
pub fn kid(f1: &Tensor, f2: &Tensor, cfg: &KidConfig) -> Result<Kid> {
    let a = features_f64("KID first set", f1, Device::Cpu)?;
    let b = features_f64("KID second set", f2, Device::Cpu)?;
    let d = a.size()[1];
    if b.size()[1] != d {
        return Err(Error::invalid(format!(
            "KID: feature dimensions differ ({d} vs {})",
            b.size()[1]
        )));
    }
    let (n1, n2) = (a.size()[0] as usize, b.size()[0] as usize);
    if n1 < cfg.subset_size || n2 < cfg.subset_size || cfg.subset_size < 2 || cfg.subsets == 0 {
        return Err(Error::invalid(format!(
            "KID subset size {} needs at least that many samples in each set (got {n1} and {n2}) and at least 2",
            cfg.subset_size
        )));
    }
    let gamma = cfg.gamma.unwrap_or(1.0 / d as f64);
    let mut rng = RandomState::new(cfg.seed);
    let idx =
        |v: Vec<usize>| Tensor::from_slice(&v.into_iter().map(|i| i as i64).collect::<Vec<_>>());
    let mut mmds = Vec::with_capacity(cfg.subsets);
    for _ in 0..cfg.subsets {
        let i1 = idx(rng.choice_without_replacement(n1, cfg.subset_size));
        let i2 = idx(rng.choice_without_replacement(n2, cfg.subset_size));
        mmds.push(mmd2_poly(
            &a.index_select(0, &i1),
            &b.index_select(0, &i2),
            cfg.degree,
            gamma,
            cfg.coef0,
        ));
    }
    let mean = mmds.iter().sum::<f64>() / mmds.len() as f64;
    let std = (mmds.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / mmds.len() as f64).sqrt();
    Ok(Kid { mean, std })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_distribution_is_near_zero_and_shift_is_positive() {
        tch::manual_seed(0);
        let o = (Kind::Double, Device::Cpu);
        let a = Tensor::randn([400, 8], o);
        let b = Tensor::randn([400, 8], o);
        let cfg = KidConfig {
            subsets: 10,
            subset_size: 200,
            ..Default::default()
        };
        let same = kid(&a, &b, &cfg).unwrap();
        let shifted = kid(&a, &(&b + 1.0), &cfg).unwrap();
        assert!(same.mean.abs() < 0.05, "{same:?}");
        assert!(
            shifted.mean > 10.0 * same.mean.abs(),
            "{shifted:?} vs {same:?}"
        );
        assert!(kid(&a, &b, &KidConfig::default())
            .unwrap_err()
            .to_string()
            .contains("subset size 1000"));
    }
}
