//! Novelty and memorisation, and mode coverage (the measure of mode collapse).
//!
//! - [`nearest_distances`]: for each generated sample, the Euclidean distance to its nearest
//!   training sample (pixels or features), in blocks.
//! - [`memorisation`]: the share of generated samples that sit closer to a training sample
//!   than 99% of held-out real samples do (near copies), with the distance quantiles.
//! - [`mifid`]: MiFID as torchmetrics computes it: FID divided by `d`, the mean over real
//!   samples of the smallest cosine distance `1 - |cos|` to a generated one, with `d` set to 1
//!   when it is at least `eps` (0.1): only memorising generators are penalised.
//! - [`mode_coverage`]: on the ring-8 / grid-25 mixtures, the usual protocol (Metz et al.
//!   2017; Srivastava et al. 2017): a sample is high quality when it lies within 3 standard
//!   deviations of its nearest mode; a mode is covered when it receives at least `min_count`
//!   high-quality samples; plus the KL divergence of the high-quality samples' mode histogram
//!   from the uniform one (as PacGAN reports).

use crate::fid::{frechet_distance, FeatureStats};
use crate::{features_f64, Error, Result};
use genmodels_core::data::MixtureKind;
use tch::{Device, Kind, Tensor};

const BLOCK: i64 = 2048;

/// Distance from each row of `queries` to its nearest row of `reference`.
pub fn nearest_distances(queries: &Tensor, reference: &Tensor) -> Result<Tensor> {
    let q = features_f64("queries", &queries.flatten(1, -1), Device::Cpu)?;
    let r = features_f64("reference", &reference.flatten(1, -1), Device::Cpu)?;
    if q.size()[1] != r.size()[1] {
        return Err(Error::invalid(format!(
            "dimensions differ: {} vs {}",
            q.size()[1],
            r.size()[1]
        )));
    }
    let parts: Vec<Tensor> = q
        .split(BLOCK, 0)
        .iter()
        .map(|b| Tensor::cdist(b, &r, 2.0, None).min_dim(1, false).0)
        .collect();
    Ok(Tensor::cat(&parts, 0))
}

/// Memorisation summary (the report contract).
pub use genmodels_contracts::reports::Memorisation;

/// Compares generated and held-out samples by their nearest-training distances.
pub fn memorisation(fake: &Tensor, train: &Tensor, heldout: &Tensor) -> Result<Memorisation> {
    let df = nearest_distances(fake, train)?;
    let dh = nearest_distances(heldout, train)?;
    let threshold = dh
        .quantile_scalar(0.01, None, false, "linear")
        .double_value(&[]);
    Ok(Memorisation {
        near_copy_share: df
            .lt(threshold)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]),
        threshold,
        fake_median: df
            .quantile_scalar(0.5, None, false, "linear")
            .double_value(&[]),
        heldout_median: dh
            .quantile_scalar(0.5, None, false, "linear")
            .double_value(&[]),
    })
}

/// torchmetrics' cosine distance term: mean over `a` of the smallest `1 - |cos|` to `b`
/// (all-zero rows dropped), or 1 when that mean is at least `eps`.
pub fn mean_min_cosine_distance(a: &Tensor, b: &Tensor, eps: f64) -> Result<f64> {
    let a = features_f64("MiFID real", a, Device::Cpu)?;
    let b = features_f64("MiFID fake", b, Device::Cpu)?;
    let keep = |t: &Tensor| {
        t.index_select(
            0,
            &t.sum_dim_intlist(1, false, Kind::Double)
                .ne(0.0)
                .nonzero()
                .squeeze_dim(1),
        )
    };
    let unit = |t: &Tensor| t / t.norm_scalaropt_dim(2, [1], true);
    let (na, nb) = (unit(&keep(&a)), unit(&keep(&b)));
    let mut mins = Vec::new();
    for blk in na.split(BLOCK, 0) {
        mins.push((-blk.matmul(&nb.tr()).abs() + 1.0).min_dim(1, false).0);
    }
    let d = Tensor::cat(&mins, 0).mean(Kind::Double).double_value(&[]);
    Ok(if d < eps { d } else { 1.0 })
}

/// MiFID (torchmetrics' definition) from real and generated features.
pub fn mifid(real: &Tensor, fake: &Tensor, eps: f64) -> Result<f64> {
    let fid = frechet_distance(
        &FeatureStats::from_features(real)?,
        &FeatureStats::from_features(fake)?,
    )?;
    if fid <= 1e-8 {
        return Ok(0.0);
    }
    Ok(fid / (mean_min_cosine_distance(real, fake, eps)? + 10e-15))
}

/// Mode coverage on a synthetic mixture (the report contract).
pub use genmodels_contracts::reports::ModeCoverage;

/// Mode coverage of 2-D samples `[N, 2]` for a mixture.
pub fn mode_coverage(samples: &Tensor, kind: MixtureKind, min_count: i64) -> Result<ModeCoverage> {
    if samples.dim() != 2 || samples.size()[1] != 2 || samples.size()[0] == 0 {
        return Err(Error::invalid(format!(
            "mode coverage expects points [N, 2], got {:?}",
            samples.size()
        )));
    }
    let centers: Vec<f64> = kind
        .centers()
        .iter()
        .flat_map(|c| [c[0] as f64, c[1] as f64])
        .collect();
    let k = centers.len() as i64 / 2;
    let c = Tensor::from_slice(&centers).reshape([k, 2]);
    let x = samples.to_device(Device::Cpu).to_kind(Kind::Double);
    let (dist, nearest) = Tensor::cdist(&x, &c, 2.0, None).min_dim(1, false);
    let good = dist.le(3.0 * kind.std() as f64);
    let n = x.size()[0];
    let hq = nearest.masked_select(&good);
    let counts = hq.bincount(None::<Tensor>, k);
    let counts_v: Vec<i64> = Vec::try_from(&counts).map_err(Error::Torch)?;
    let total: i64 = counts_v.iter().sum();
    let kl = if total == 0 {
        f64::INFINITY
    } else {
        counts_v
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let p = c as f64 / total as f64;
                p * (p * k as f64).ln()
            })
            .sum()
    };
    Ok(ModeCoverage {
        modes: k as usize,
        modes_covered: counts_v.iter().filter(|&&c| c >= min_count.max(1)).count(),
        high_quality_share: total as f64 / n as f64,
        kl_to_uniform: kl,
        counts: counts_v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use genmodels_core::data::{Dataset, Mixture2d};

    fn points(kind: MixtureKind, n: usize) -> Tensor {
        let m = Mixture2d::new(kind, n, 1).unwrap();
        let mut v = vec![0f32; 2 * n];
        for i in 0..n {
            m.get(i, &mut v[2 * i..2 * i + 2]).unwrap();
        }
        Tensor::from_slice(&v).reshape([n as i64, 2])
    }

    #[test]
    fn data_covers_every_mode_and_a_collapsed_sampler_one() {
        for kind in [MixtureKind::Ring8, MixtureKind::Grid25] {
            let m = mode_coverage(&points(kind, 5000), kind, 1).unwrap();
            assert_eq!(m.modes_covered, m.modes);
            assert!(m.high_quality_share > 0.98, "{m:?}");
            assert!(m.kl_to_uniform < 0.01, "{m:?}");
            let c = kind.centers()[0];
            let collapsed = Tensor::from_slice(&[c[0], c[1]])
                .reshape([1, 2])
                .repeat([100, 1]);
            let m = mode_coverage(&collapsed, kind, 1).unwrap();
            assert_eq!(m.modes_covered, 1);
            assert!((m.kl_to_uniform - (m.modes as f64).ln()).abs() < 1e-9);
        }
        let junk = Tensor::full([10, 2], 100.0, (Kind::Float, Device::Cpu));
        assert_eq!(
            mode_coverage(&junk, MixtureKind::Ring8, 1)
                .unwrap()
                .high_quality_share,
            0.0
        );
        assert!(mode_coverage(
            &Tensor::zeros([3, 3], (Kind::Float, Device::Cpu)),
            MixtureKind::Ring8,
            1
        )
        .is_err());
    }

    #[test]
    fn copies_are_flagged_and_mifid_penalises_them() {
        tch::manual_seed(0);
        let o = (Kind::Double, Device::Cpu);
        let train = Tensor::randn([500, 16], o);
        let heldout = Tensor::randn([300, 16], o);
        let copies = train.narrow(0, 0, 200) + Tensor::randn([200, 16], o) * 1e-3;
        let fresh = Tensor::randn([200, 16], o);
        assert!(
            memorisation(&copies, &train, &heldout)
                .unwrap()
                .near_copy_share
                > 0.99
        );
        assert!(
            memorisation(&fresh, &train, &heldout)
                .unwrap()
                .near_copy_share
                < 0.05
        );
        // cosine term by hand: a = [1, 0], b = [[0, 1], [1, 1]]: min(1 - 0, 1 - 1/sqrt 2)
        let a = Tensor::from_slice(&[1.0f64, 0.0]).reshape([1, 2]);
        let b = Tensor::from_slice(&[0.0f64, 1.0, 1.0, 1.0]).reshape([2, 2]);
        let d = mean_min_cosine_distance(&a, &b, 0.5).unwrap();
        assert!((d - (1.0 - 0.5f64.sqrt())).abs() < 1e-12);
        assert_eq!(mean_min_cosine_distance(&a, &b, 0.1).unwrap(), 1.0);
        let fake_copies = train.narrow(0, 0, 300) + Tensor::randn([300, 16], o) * 1e-3;
        let real = train.narrow(0, 0, 300);
        let fid = crate::fid::fid_from_features(&real, &fake_copies).unwrap();
        assert!(mifid(&real, &fake_copies, 0.1).unwrap() > 10.0 * fid);
    }
}
