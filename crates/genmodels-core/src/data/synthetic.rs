//! Synthetic 2-D Gaussian mixtures, the standard testbed for mode collapse (Metz et al. 2017,
//! "Unrolled GANs"; Srivastava et al. 2017, "VEEGAN"): 8 modes on a ring of radius 2 with
//! standard deviation 0.02, and 25 modes on the grid {-4,-2,0,2,4}^2 with standard deviation 0.05.

use super::Dataset;
use crate::rng::SplitMix64;
use crate::{Error, Result};

/// Which mixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MixtureKind {
    /// 8 Gaussians evenly spaced on a circle of radius 2, std 0.02.
    Ring8,
    /// 25 Gaussians on a 5x5 grid with spacing 2, std 0.05.
    Grid25,
}

impl MixtureKind {
    /// Parses `ring8` / `grid25`.
    /// The name [`MixtureKind::parse`] takes.
    pub fn name(self) -> &'static str {
        match self {
            MixtureKind::Ring8 => "ring8",
            MixtureKind::Grid25 => "grid25",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ring8" | "ring-8" => Ok(MixtureKind::Ring8),
            "grid25" | "grid-25" => Ok(MixtureKind::Grid25),
            _ => Err(Error::invalid(format!(
                "unknown mixture `{s}`: expected ring8 or grid25"
            ))),
        }
    }

    /// Mode centres.
    pub fn centers(self) -> Vec<[f32; 2]> {
        match self {
            MixtureKind::Ring8 => (0..8)
                .map(|i| {
                    let a = i as f32 * std::f32::consts::TAU / 8.0;
                    [2.0 * a.cos(), 2.0 * a.sin()]
                })
                .collect(),
            MixtureKind::Grid25 => (0..25)
                .map(|i| [(i / 5) as f32 * 2.0 - 4.0, (i % 5) as f32 * 2.0 - 4.0])
                .collect(),
        }
    }

    /// Per-mode standard deviation.
    pub fn std(self) -> f32 {
        match self {
            MixtureKind::Ring8 => 0.02,
            MixtureKind::Grid25 => 0.05,
        }
    }
}

/// `n` points drawn from a mixture with a fixed seed; labels are the mode index.
pub struct Mixture2d {
    kind: MixtureKind,
    points: Vec<f32>,
    labels: Vec<i64>,
}

impl Mixture2d {
    pub fn new(kind: MixtureKind, n: usize, seed: u64) -> Result<Self> {
        if n == 0 {
            return Err(Error::invalid("a mixture needs at least one point"));
        }
        let centers = kind.centers();
        let std = kind.std() as f64;
        let mut rng = SplitMix64::new(seed);
        let mut points = Vec::with_capacity(2 * n);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let m = rng.below(centers.len());
            points.push(centers[m][0] + (rng.normal() * std) as f32);
            points.push(centers[m][1] + (rng.normal() * std) as f32);
            labels.push(m as i64);
        }
        Ok(Mixture2d {
            kind,
            points,
            labels,
        })
    }

    pub fn kind(&self) -> MixtureKind {
        self.kind
    }
}

impl Dataset for Mixture2d {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn example_shape(&self) -> Vec<i64> {
        vec![2]
    }
    fn num_classes(&self) -> Option<usize> {
        Some(self.kind.centers().len())
    }
    fn get(&self, idx: usize, out: &mut [f32]) -> Result<Option<i64>> {
        let p = self.points.get(2 * idx..2 * idx + 2).ok_or_else(|| {
            Error::invalid(format!(
                "index {idx} out of range for {} points",
                self.labels.len()
            ))
        })?;
        out.copy_from_slice(p);
        Ok(Some(self.labels[idx]))
    }
    fn describe(&self) -> String {
        format!("{:?} mixture ({} points)", self.kind, self.labels.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_sit_on_their_modes() {
        for kind in [MixtureKind::Ring8, MixtureKind::Grid25] {
            let m = Mixture2d::new(kind, 2000, 1).unwrap();
            let c = kind.centers();
            let mut seen = vec![false; c.len()];
            let mut buf = [0f32; 2];
            for i in 0..m.len() {
                let l = m.get(i, &mut buf).unwrap().unwrap() as usize;
                seen[l] = true;
                let d = ((buf[0] - c[l][0]).powi(2) + (buf[1] - c[l][1]).powi(2)).sqrt();
                assert!(
                    d < 6.0 * kind.std(),
                    "{kind:?} point {i} is {d} from its mode"
                );
            }
            assert!(seen.iter().all(|s| *s));
        }
        assert!(MixtureKind::parse("ring9").is_err());
    }
}
