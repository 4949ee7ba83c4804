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
use genmodels_core::checkpoint::read_safetensors;
use genmodels_core::data::limits::torch_error_line;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Mean and covariance of a set of feature vectors, in float64.
pub struct FeatureStats {
    n: i64,
    mean: Tensor,
    m2: Tensor,
    /// A covariance read from a file that does not say how many samples made it (pytorch-fid's
    /// `.npz`); `n` is 0 then and no features can be added.
    fixed_cov: Option<Tensor>,
}

impl FeatureStats {
    /// Empty statistics for `dim`-dimensional features.
    pub fn new(dim: i64) -> Self {
        let o = (Kind::Double, Device::Cpu);
        FeatureStats {
            n: 0,
            mean: Tensor::zeros([dim], o),
            m2: Tensor::zeros([dim, dim], o),
            fixed_cov: None,
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

    /// How many samples made the statistics (0 when a statistics file did not say).
    pub fn count(&self) -> i64 {
        self.n
    }

    /// Adds a chunk of features `[n, D]`.
    pub fn update(&mut self, chunk: &Tensor) -> Result<()> {
        if self.fixed_cov.is_some() {
            return Err(Error::invalid(
                "FID statistics read from a file without a sample count cannot take more features",
            ));
        }
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
        if let Some(c) = &self.fixed_cov {
            return Ok(c.shallow_clone());
        }
        if self.n < 2 {
            return Err(Error::invalid(format!(
                "FID needs at least 2 samples for a covariance, got {}",
                self.n
            )));
        }
        Ok(&self.m2 / (self.n - 1) as f64)
    }

    /// Saves `mu`, `sigma` and `num_samples` as safetensors (so a dataset's statistics are
    /// computed once). The write is atomic: a temporary file in the same folder, fsync, rename
    /// over `path`, fsync of the folder; on failure `path` keeps its previous content.
    pub fn save(&self, path: &Path) -> Result<()> {
        let sigma = self.covariance()?;
        let n = Tensor::from(self.n);
        atomic_write(path, |tmp| {
            Tensor::write_safetensors(
                &[("mu", &self.mean), ("sigma", &sigma), ("num_samples", &n)],
                tmp,
            )
            .map_err(|e| std::io::Error::other(e.to_string()))
        })
    }

    /// Loads statistics written by [`FeatureStats::save`] (pytorch-fid's `mu` and `sigma`, plus
    /// `num_samples`). Every field is checked: `mu` a floating-point vector of 1 to
    /// [`MAX_FEATURE_DIM`] values, `sigma` `[D, D]`, both finite, `num_samples` one whole number
    /// of at least 2; anything else is a one-line error naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |m: String| Error::bad_data(path, m);
        let (_, named) = read_safetensors(path)?;
        let get = |k: &str| {
            named.get(k).ok_or_else(|| {
                bad(format!(
                    "missing tensor `{k}` (a statistics file holds mu, sigma and num_samples)"
                ))
            })
        };
        let (mu, sigma, n) = (get("mu")?, get("sigma")?, get("num_samples")?);
        check_mu_sigma(path, mu, sigma)?;
        if n.numel() != 1 {
            return Err(bad(format!(
                "num_samples has shape {:?}, expected one number",
                n.size()
            )));
        }
        let count = n
            .f_double_value(&vec![0; n.dim()])
            .map_err(|e| bad(format!("num_samples: {e}")))?;
        if !(count.fract() == 0.0 && (2.0..=(1u64 << 53) as f64).contains(&count)) {
            return Err(bad(format!(
                "num_samples is {count}, expected a whole number of at least 2"
            )));
        }
        let n = count as i64;
        Ok(FeatureStats {
            n,
            mean: mu.to_kind(Kind::Double),
            m2: sigma.to_kind(Kind::Double) * (n - 1) as f64,
            fixed_cov: None,
        })
    }

    /// Reads pytorch-fid's statistics file (`np.savez_compressed(path, mu=mu, sigma=sigma)`,
    /// what `python -m pytorch_fid --save-stats` writes), checked as [`FeatureStats::load`]
    /// checks its own. It holds no sample count: [`FeatureStats::count`] is 0.
    pub fn load_npz(path: &Path) -> Result<Self> {
        let bad = |m: String| Error::bad_data(path, m);
        let named: std::collections::HashMap<String, Tensor> = Tensor::read_npz(path)
            .map_err(|e| {
                bad(format!(
                    "cannot read as a NumPy .npz file ({}); expected pytorch-fid statistics (mu, sigma)",
                    torch_error_line(&e)
                ))
            })?
            .into_iter()
            .map(|(k, t)| (k.trim_end_matches(".npy").to_string(), t))
            .collect();
        let get = |k: &str| {
            named.get(k).ok_or_else(|| {
                bad(format!(
                    "missing array `{k}` (pytorch-fid statistics hold mu and sigma)"
                ))
            })
        };
        let (mu, sigma) = (get("mu")?, get("sigma")?);
        check_mu_sigma(path, mu, sigma)?;
        let o = (Kind::Double, Device::Cpu);
        let d = mu.size()[0];
        Ok(FeatureStats {
            n: 0,
            mean: mu.to_kind(Kind::Double),
            m2: Tensor::zeros([d, d], o),
            fixed_cov: Some(sigma.to_kind(Kind::Double)),
        })
    }

    /// Writes pytorch-fid's statistics file: `mu` and `sigma` as float64 arrays in a `.npz`
    /// (`np.load(path)["mu"]` reads it back). Atomic, as [`FeatureStats::save`].
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let sigma = self.covariance()?;
        let mu = self.mean.to_kind(Kind::Double);
        let sigma = sigma.to_kind(Kind::Double);
        atomic_write(path, |tmp| {
            Tensor::write_npz(&[("mu", &mu), ("sigma", &sigma)], tmp)
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
    }
}

/// Writes a file through `write(tmp)`, then fsync, rename over `path`, fsync of the folder; on
/// failure `path` keeps its previous content.
fn atomic_write(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = write(&tmp).and_then(|()| {
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    });
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// `mu` a floating-point vector of 1 to [`MAX_FEATURE_DIM`] values, `sigma` `[D, D]`, both
/// finite, `sigma` symmetric; anything else is a one-line error naming the file.
fn check_mu_sigma(path: &Path, mu: &Tensor, sigma: &Tensor) -> Result<()> {
    let bad = |m: String| Error::bad_data(path, m);
    let d = match mu.size()[..] {
        [d] if (1..=MAX_FEATURE_DIM).contains(&d) => d,
        _ => {
            return Err(bad(format!(
                "mu has shape {:?}, expected a vector of 1 to {MAX_FEATURE_DIM} values",
                mu.size()
            )))
        }
    };
    if sigma.size() != [d, d] {
        return Err(bad(format!(
            "sigma has shape {:?}, expected [{d}, {d}]",
            sigma.size()
        )));
    }
    for (k, t) in [("mu", mu), ("sigma", sigma)] {
        if !t.is_floating_point() {
            return Err(bad(format!(
                "{k} is {:?}, expected floating point",
                t.kind()
            )));
        }
        if !bool::try_from(t.isfinite().all()).unwrap_or(false) {
            return Err(bad(format!("{k} holds NaN or infinite values")));
        }
    }
    // A covariance is symmetric (to rounding).
    let asym = (sigma - sigma.tr()).abs().max().double_value(&[]);
    let scale = sigma.abs().max().double_value(&[]);
    if asym > 1e-4 * scale {
        return Err(bad(format!(
                "sigma is not symmetric (|sigma - sigma^T| up to {asym:e} for entries up to {scale:e}): not a covariance"
            )));
    }
    Ok(())
}

/// Largest feature dimension a statistics file may have (`sigma` is `D x D`; Inception's is 2048).
pub const MAX_FEATURE_DIM: i64 = 1 << 15;

/// Symmetric matrix square root by eigendecomposition (negative eigenvalues clamped to 0).
fn sqrt_psd(s: &Tensor) -> Result<Tensor> {
    let (evals, evecs) = s.f_linalg_eigh("L").map_err(eig_error)?;
    let r = evals.clamp_min(0.0).sqrt();
    Ok((&evecs * r.unsqueeze(0)).matmul(&evecs.tr()))
}

/// A failed eigendecomposition (statistics too ill-conditioned, e.g. from a corrupt file).
fn eig_error(e: tch::TchError) -> Error {
    Error::invalid(format!(
        "FID: the covariance matrices are too ill-conditioned for an eigendecomposition ({})",
        torch_error_line(&e)
    ))
}

/// `tr (S1 S2)^(1/2)`: the eigenvalues of `S1 S2` are those of the symmetric PSD matrix
/// `L^T S2 L` where `S1 = L L^T` (Cholesky), so one Cholesky factorisation and one symmetric
/// eigenvalue solve suffice. When `S1` is singular (fewer samples than dimensions) the Cholesky
/// factorisation fails and `S1^(1/2) S2 S1^(1/2)` is used instead (two symmetric solves).
/// NaN when the eigenvalue solver does not converge (see [`frechet_distance`] for the error).
pub fn trace_sqrt_product(s1: &Tensor, s2: &Tensor) -> f64 {
    try_trace_sqrt_product(s1, s2).unwrap_or(f64::NAN)
}

fn try_trace_sqrt_product(s1: &Tensor, s2: &Tensor) -> Result<f64> {
    let sym = |m: Tensor| (&m + m.tr()) * 0.5; // symmetrise rounding noise
    let m = match s1.f_linalg_cholesky_ex(false, false) {
        Ok((l, info)) if info.int64_value(&[]) == 0 => sym(l.tr().matmul(s2).matmul(&l)),
        _ => {
            let h = sqrt_psd(s1)?;
            sym(h.matmul(s2).matmul(&h))
        }
    };
    Ok(m.f_linalg_eigvalsh("L")
        .map_err(eig_error)?
        .clamp_min(0.0)
        .sqrt()
        .sum(Kind::Double)
        .double_value(&[]))
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
        if s.count() > 0 && s.count() < s.dim() {
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
    let fid = diff.dot(&diff).double_value(&[]) + tr - 2.0 * try_trace_sqrt_product(&s1, &s2)?;
    if !fid.is_finite() {
        return Err(Error::invalid(format!(
            "FID: the result is {fid} (statistics of {} and {} samples out of floating-point range)",
            a.count(),
            b.count()
        )));
    }
    Ok(fid)
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
        let h = sqrt_psd(&ca).unwrap();
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
        let h = sqrt_psd(&cb).unwrap();
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
