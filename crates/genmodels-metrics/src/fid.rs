//! Frechet Inception Distance (Heusel et al. 2017): `||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`.
//!
//! Statistics are kept in float64 (float32 gives wrong FIDs) and accumulated in chunks with
//! Chan et al.'s pairwise update, so 50k x 2048 features never sit in memory at once. The
//! covariance is the unbiased one (`np.cov`, N - 1), as pytorch-fid computes it.
//!
//! The trace term is computed without `sqrtm`: `tr (S1 S2)^(1/2)` equals the sum of the square
//! roots of the eigenvalues of `L^T S2 L` with `S1 = L L^T` (Cholesky), a symmetric positive
//! semi-definite matrix, so one Cholesky factorisation and one symmetric eigenvalue solve
//! suffice; a singular `S1` falls back to `S1^(1/2) S2 S1^(1/2)` (tiny negative eigenvalues from
//! rounding are clamped to 0). This agrees with pytorch-fid's `scipy.linalg.sqrtm` route to ~1e-6 relative
//! where that route is well defined, and stays finite when it is not.

use crate::{features_f64, Error, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Mean and covariance of a set of feature vectors, in float64.
pub struct FeatureStats {
    n: i64,
    mean: Tensor,
    m2: Tensor,
}

impl FeatureStats {
    /// Empty statistics for `dim`-dimensional features.
    pub fn new(dim: i64) -> Self {
        let o = (Kind::Double, Device::Cpu);
        FeatureStats {
            n: 0,
            mean: Tensor::zeros([dim], o),
            m2: Tensor::zeros([dim, dim], o),
        }
    }

    /// Statistics of a whole feature matrix `[N, D]`.
    pub fn from_features(f: &Tensor) -> Result<Self> {
        let mut s = FeatureStats::new(f.size().get(1).copied().unwrap_or(0));
        s.update(f)?;
        Ok(s)
    }

    pub fn dim(&self) -> i64 {
        self.mean.size()[0]
    }

    pub fn count(&self) -> i64 {
        self.n
    }

    /// Adds a chunk of features `[n, D]`.
    pub fn update(&mut self, chunk: &Tensor) -> Result<()> {
        let x = features_f64("FID statistics", chunk, Device::Cpu)?;
        if x.size()[1] != self.dim() {
            return Err(Error::invalid(format!(
                "FID statistics: features of dimension {} added to statistics of dimension {}",
                x.size()[1],
                self.dim()
            )));
        }
        let nb = x.size()[0];
        let mb = x.mean_dim(0, false, Kind::Double);
        let xc = &x - &mb;
        let m2b = xc.tr().matmul(&xc);
        let na = self.n;
        let n = na + nb;
        let delta = &mb - &self.mean;
        self.mean = &self.mean + &delta * (nb as f64 / n as f64);
        self.m2 = &self.m2 + m2b + delta.outer(&delta) * (na as f64 * nb as f64 / n as f64);
        self.n = n;
        Ok(())
    }

    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// Unbiased covariance (divides by N - 1).
    pub fn covariance(&self) -> Result<Tensor> {
        if self.n < 2 {
            return Err(Error::invalid(format!(
                "FID needs at least 2 samples for a covariance, got {}",
                self.n
            )));
        }
        Ok(&self.m2 / (self.n - 1) as f64)
    }

    /// Saves `mu`, `sigma` and `num_samples` as safetensors (so a dataset's statistics are computed once).
    pub fn save(&self, path: &Path) -> Result<()> {
        let sigma = self.covariance()?;
        let n = Tensor::from(self.n);
        let tmp = path.with_extension("tmp");
        Tensor::write_safetensors(
            &[("mu", &self.mean), ("sigma", &sigma), ("num_samples", &n)],
            &tmp,
        )?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    /// Loads statistics written by [`FeatureStats::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let named = Tensor::read_safetensors(path)
            .map_err(|e| Error::bad_data(path, format!("not a statistics file: {e}")))?;
        let get = |k: &str| {
            named
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| Error::bad_data(path, format!("missing tensor `{k}`")))
        };
        let (mean, sigma, n) = (
            get("mu")?.to_kind(Kind::Double),
            get("sigma")?.to_kind(Kind::Double),
            get("num_samples")?.int64_value(&[]),
        );
        let d = mean.size()[0];
        if sigma.size() != [d, d] {
            return Err(Error::bad_data(
                path,
                format!("sigma has shape {:?}, expected [{d}, {d}]", sigma.size()),
            ));
        }
        Ok(FeatureStats {
            n,
            mean,
            m2: sigma * (n - 1) as f64,
        })
    }
}

/// Symmetric matrix square root by eigendecomposition (negative eigenvalues clamped to 0).
fn sqrt_psd(s: &Tensor) -> Tensor {
    let (evals, evecs) = s.linalg_eigh("L");
    let r = evals.clamp_min(0.0).sqrt();
    (&evecs * r.unsqueeze(0)).matmul(&evecs.tr())
}

/// `tr (S1 S2)^(1/2)`: the eigenvalues of `S1 S2` are those of the symmetric PSD matrix
/// `L^T S2 L` where `S1 = L L^T` (Cholesky), so one Cholesky factorisation and one symmetric
/// eigenvalue solve suffice. When `S1` is singular (fewer samples than dimensions) the Cholesky
/// factorisation fails and `S1^(1/2) S2 S1^(1/2)` is used instead (two symmetric solves).
pub fn trace_sqrt_product(s1: &Tensor, s2: &Tensor) -> f64 {
    let sym = |m: Tensor| (&m + m.tr()) * 0.5; // symmetrise rounding noise
    let m = match s1.f_linalg_cholesky_ex(false, false) {
        Ok((l, info)) if info.int64_value(&[]) == 0 => sym(l.tr().matmul(s2).matmul(&l)),
        _ => {
            let h = sqrt_psd(s1);
            sym(h.matmul(s2).matmul(&h))
        }
    };
    m.linalg_eigvalsh("L")
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[])
}

/// Frechet distance between two sets of statistics.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    if a.dim() != b.dim() {
        return Err(Error::invalid(format!(
            "FID: feature dimensions differ ({} vs {})",
            a.dim(),
            b.dim()
        )));
    }
    for (name, s) in [("first", a), ("second", b)] {
        if s.count() < s.dim() {
            eprintln!(
                "warning: FID: the {name} set has {} samples for {} feature dimensions; its covariance is singular and the FID is biased upward",
                s.count(),
                s.dim()
            );
        }
    }
    let (s1, s2) = (a.covariance()?, b.covariance()?);
    let diff = a.mean() - b.mean();
    let tr = s1.trace().double_value(&[]) + s2.trace().double_value(&[]);
    Ok(diff.dot(&diff).double_value(&[]) + tr - 2.0 * trace_sqrt_product(&s1, &s2))
}

/// FID between two feature matrices `[N, D]`.
pub fn fid_from_features(f1: &Tensor, f2: &Tensor) -> Result<f64> {
    frechet_distance(
        &FeatureStats::from_features(f1)?,
        &FeatureStats::from_features(f2)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_covariances_give_the_squared_mean_distance() {
        tch::manual_seed(0);
        let x = Tensor::randn([500, 8], (Kind::Double, Device::Cpu));
        let shift = Tensor::from_slice(&[1.0f64, -2.0, 0.5, 0.0, 0.0, 3.0, 0.0, 1.0]);
        let fid = fid_from_features(&x, &(&x + &shift)).unwrap();
        let expect = shift.dot(&shift).double_value(&[]);
        assert!((fid - expect).abs() < 1e-9 * expect, "{fid} vs {expect}");
        assert!(fid_from_features(&x, &x).unwrap().abs() < 1e-9);
    }

    #[test]
    fn singular_covariances_take_the_eigen_route() {
        // 5 samples in 8 dimensions: the covariance is singular, Cholesky fails, the result is
        // still finite and equals the eigen route computed directly.
        let a = Tensor::randn([5, 8], (Kind::Double, Device::Cpu));
        let b = Tensor::randn([50, 8], (Kind::Double, Device::Cpu));
        let (sa, sb) = (
            FeatureStats::from_features(&a).unwrap(),
            FeatureStats::from_features(&b).unwrap(),
        );
        let (ca, cb) = (sa.covariance().unwrap(), sb.covariance().unwrap());
        let h = sqrt_psd(&ca);
        let direct = h
            .matmul(&cb)
            .matmul(&h)
            .linalg_eigvalsh("L")
            .clamp_min(0.0)
            .sqrt()
            .sum(Kind::Double)
            .double_value(&[]);
        let got = trace_sqrt_product(&ca, &cb);
        assert!(
            (got - direct).abs() < 1e-8 * direct.abs().max(1.0),
            "{got} vs {direct}"
        );
        // and the Cholesky route agrees with the eigen route on a well-conditioned pair
        let h = sqrt_psd(&cb);
        let direct = h
            .matmul(&ca)
            .matmul(&h)
            .linalg_eigvalsh("L")
            .clamp_min(0.0)
            .sqrt()
            .sum(Kind::Double)
            .double_value(&[]);
        assert!((trace_sqrt_product(&cb, &ca) - direct).abs() < 1e-8 * direct);
    }

    #[test]
    fn chunked_statistics_equal_whole_ones() {
        let x = Tensor::randn([301, 5], (Kind::Float, Device::Cpu));
        let whole = FeatureStats::from_features(&x).unwrap();
        let mut parts = FeatureStats::new(5);
        for c in x.split(64, 0) {
            parts.update(&c).unwrap();
        }
        assert!(whole.covariance().unwrap().allclose(
            &parts.covariance().unwrap(),
            1e-12,
            1e-12,
            false
        ));
        assert!(whole.mean().allclose(parts.mean(), 1e-12, 1e-12, false));
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let a = Tensor::randn([10, 4], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([10, 3], (Kind::Float, Device::Cpu));
        assert!(fid_from_features(&a, &b)
            .unwrap_err()
            .to_string()
            .contains("dimensions differ"));
        let one = Tensor::randn([1, 4], (Kind::Float, Device::Cpu));
        assert!(fid_from_features(&a, &one)
            .unwrap_err()
            .to_string()
            .contains("at least 2 samples"));
        assert!(
            FeatureStats::from_features(&Tensor::zeros([3], (Kind::Float, Device::Cpu))).is_err()
        );
    }

    #[test]
    fn statistics_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.safetensors");
        let s = FeatureStats::from_features(&Tensor::randn([20, 3], (Kind::Float, Device::Cpu)))
            .unwrap();
        s.save(&p).unwrap();
        let t = FeatureStats::load(&p).unwrap();
        assert_eq!(t.count(), 20);
        assert!(t
            .covariance()
            .unwrap()
            .allclose(&s.covariance().unwrap(), 1e-12, 1e-12, false));
        std::fs::write(&p, b"nope").unwrap();
        assert!(FeatureStats::load(&p).is_err());
    }
}
