//! Manifold metrics on feature sets, with Euclidean distances computed in row blocks so that
//! 50k x 50k distances never sit in memory:
//!
//! - improved precision and recall (Kynkaanniemi et al. 2019) as torch-fidelity's `prc`: the
//!   radius of a sample is the distance to its k-th nearest neighbour in its own set (k = 3, the
//!   sample itself counted at index 0); a sample is inside the other set's manifold when its
//!   distance to some sample of that set is `<=` that sample's radius. Precision: share of fakes
//!   inside the real manifold; recall: share of reals inside the fake manifold.
//! - density and coverage (Naeem et al. 2020) as the `prdc` package: radii from the k-th
//!   nearest other real sample (k = 5), strict `<`; density = mean over fakes of the number of
//!   real balls containing them, divided by k; coverage = share of reals whose nearest fake lies
//!   inside their own ball.

use crate::{features_f64, Error, Result};
use tch::{Device, Kind, Tensor};

/// Rows per block when computing distances.
const BLOCK: i64 = 2048;

/// Distance from each row of `x` to its k-th nearest row of `x` (index 0 is the row itself).
pub fn kth_neighbour_radii(x: &Tensor, k: i64) -> Result<Tensor> {
    let n = x.size()[0];
    if k < 1 || k >= n {
        return Err(Error::invalid(format!(
            "k = {k} nearest neighbours need more than {k} samples, got {n}"
        )));
    }
    let parts: Vec<Tensor> = x
        .split(BLOCK, 0)
        .iter()
        .map(|b| Tensor::cdist(b, x, 2.0, None).kthvalue(k + 1, 1, false).0)
        .collect();
    Ok(Tensor::cat(&parts, 0))
}

/// For each row of `q`: (is some row j of `r` within `radii[j]` (`<=` or `<`), how many are,
/// distance to the nearest row of `r`).
fn ball_queries(
    q: &Tensor,
    r: &Tensor,
    radii: &Tensor,
    inclusive: bool,
) -> (Tensor, Tensor, Tensor) {
    let (mut any, mut count, mut nearest) = (Vec::new(), Vec::new(), Vec::new());
    for b in q.split(BLOCK, 0) {
        let d = Tensor::cdist(&b, r, 2.0, None);
        let inside = if inclusive {
            d.le_tensor(&radii.unsqueeze(0))
        } else {
            d.lt_tensor(&radii.unsqueeze(0))
        };
        any.push(inside.any_dim(1, false));
        count.push(inside.sum_dim_intlist(1, false, Kind::Int64));
        nearest.push(d.min_dim(1, false).0);
    }
    (
        Tensor::cat(&any, 0),
        Tensor::cat(&count, 0),
        Tensor::cat(&nearest, 0),
    )
}

/// Checks two feature sets; they keep their dtype (float32 features are compared in float32,
/// as torch-fidelity does; float64 stays float64).
fn pair(real: &Tensor, fake: &Tensor) -> Result<(Tensor, Tensor)> {
    let kind = if real.kind() == Kind::Double || fake.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    };
    let r = features_f64("real features", real, Device::Cpu)?.to_kind(kind);
    let f = features_f64("fake features", fake, Device::Cpu)?.to_kind(kind);
    if r.size()[1] != f.size()[1] {
        return Err(Error::invalid(format!(
            "feature dimensions differ: real {} vs fake {}",
            r.size()[1],
            f.size()[1]
        )));
    }
    Ok((r, f))
}

fn mean_bool(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

/// Improved precision and recall with `k` neighbours (paper: 3). The fake-to-real distances are
/// computed once, block by block, and serve both directions.
pub fn precision_recall(real: &Tensor, fake: &Tensor, k: i64) -> Result<(f64, f64)> {
    let (r, f) = pair(real, fake)?;
    let rr = kth_neighbour_radii(&r, k)?;
    let fr = kth_neighbour_radii(&f, k)?;
    let mut fake_inside = Vec::new();
    let mut real_inside = Tensor::zeros([r.size()[0]], (Kind::Bool, Device::Cpu));
    for (fb, frb) in f.split(BLOCK, 0).iter().zip(fr.split(BLOCK, 0)) {
        let d = Tensor::cdist(fb, &r, 2.0, None);
        fake_inside.push(d.le_tensor(&rr.unsqueeze(0)).any_dim(1, false));
        real_inside = real_inside.logical_or(&d.le_tensor(&frb.unsqueeze(1)).any_dim(0, false));
    }
    Ok((
        mean_bool(&Tensor::cat(&fake_inside, 0)),
        mean_bool(&real_inside),
    ))
}

/// Density and coverage with `k` neighbours (paper: 5).
pub fn density_coverage(real: &Tensor, fake: &Tensor, k: i64) -> Result<(f64, f64)> {
    let (r, f) = pair(real, fake)?;
    let rr = kth_neighbour_radii(&r, k)?;
    let (_, count, _) = ball_queries(&f, &r, &rr, false);
    let density = count
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[])
        / k as f64;
    let (_, _, nearest_fake) = ball_queries(
        &r,
        &f,
        &Tensor::zeros([f.size()[0]], (Kind::Double, Device::Cpu)),
        false,
    );
    let coverage = mean_bool(&nearest_fake.lt_tensor(&rr));
    Ok((density, coverage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_sets_are_fully_precise_and_covered() {
        let x = Tensor::randn([300, 6], (Kind::Double, Device::Cpu));
        let (p, r) = precision_recall(&x, &x, 3).unwrap();
        assert_eq!((p, r), (1.0, 1.0));
        let (_, c) = density_coverage(&x, &x, 5).unwrap();
        assert_eq!(c, 1.0);
        let far = &x + 100.0;
        assert_eq!(precision_recall(&x, &far, 3).unwrap(), (0.0, 0.0));
        assert_eq!(density_coverage(&x, &far, 5).unwrap(), (0.0, 0.0));
        assert!(precision_recall(&x, &x.narrow(0, 0, 3), 3).is_err());
    }
}
