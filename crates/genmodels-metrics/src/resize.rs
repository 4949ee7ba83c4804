//! Resizing to the feature network's input size, with the three conventions in use, each written
//! as a pair of separable interpolation matrices (`out = Wh x Ww^T`):
//!
//! - [`Resize::PytorchBilinear`]: pytorch-fid, `F.interpolate(mode="bilinear",
//!   align_corners=False)` without antialiasing: `src = (dst + 0.5) * in/out - 0.5`, clamped at 0.
//! - [`Resize::Tf1Bilinear`]: torch-fidelity, TensorFlow 1.x `resize_bilinear` with
//!   `align_corners=False`: `src = dst * in/out` (no half-pixel offset).
//! - [`Resize::PilBicubic`]: clean-fid, PIL's `Image.resize(BICUBIC)` on float images per
//!   channel (Keys cubic with a = -0.5, support widened by the scale when shrinking, weights
//!   normalised), then clipped to [0, 255].

use crate::{Error, Result};
use tch::{Kind, Tensor};

/// How images are brought to the network's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    PytorchBilinear,
    Tf1Bilinear,
    PilBicubic,
}

impl Resize {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "bilinear" | "pytorch-bilinear" | "pytorch-fid" => Ok(Resize::PytorchBilinear),
            "tf1-bilinear" | "torch-fidelity" => Ok(Resize::Tf1Bilinear),
            "pil-bicubic" | "bicubic" | "clean-fid" => Ok(Resize::PilBicubic),
            _ => Err(Error::invalid(format!(
                "unknown resize `{s}`: expected pytorch-bilinear, tf1-bilinear or pil-bicubic"
            ))),
        }
    }

    /// The name `parse` takes (and reports print).
    pub fn name(self) -> &'static str {
        match self {
            Resize::PytorchBilinear => "pytorch-bilinear",
            Resize::Tf1Bilinear => "tf1-bilinear",
            Resize::PilBicubic => "pil-bicubic",
        }
    }
}

fn bilinear_rows(n_in: i64, n_out: i64, tf1: bool) -> Vec<f64> {
    let scale = n_in as f64 / n_out as f64;
    let mut w = vec![0.0; (n_in * n_out) as usize];
    for o in 0..n_out {
        let src = if tf1 {
            o as f64 * scale
        } else {
            ((o as f64 + 0.5) * scale - 0.5).max(0.0)
        };
        let i0 = (src.floor() as i64).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let l = src - i0 as f64;
        w[(o * n_in + i0) as usize] += 1.0 - l;
        w[(o * n_in + i1) as usize] += l;
    }
    w
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// PIL's `precompute_coeffs` for the bicubic filter (support 2).
fn pil_bicubic_rows(n_in: i64, n_out: i64) -> Vec<f64> {
    let scale = n_in as f64 / n_out as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let mut w = vec![0.0; (n_in * n_out) as usize];
    for o in 0..n_out {
        let center = (o as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0); // C cast truncates toward zero
        let xmax = ((center + support + 0.5) as i64).min(n_in);
        let ks: Vec<f64> = (xmin..xmax)
            .map(|x| bicubic((x as f64 - center + 0.5) / filterscale))
            .collect();
        let total: f64 = ks.iter().sum();
        for (x, k) in (xmin..xmax).zip(ks) {
            w[(o * n_in + x) as usize] = if total != 0.0 { k / total } else { k };
        }
    }
    w
}

/// The `[out, in]` interpolation matrix of one axis.
pub fn matrix(mode: Resize, n_in: i64, n_out: i64) -> Tensor {
    let w = match mode {
        Resize::PytorchBilinear => bilinear_rows(n_in, n_out, false),
        Resize::Tf1Bilinear => bilinear_rows(n_in, n_out, true),
        Resize::PilBicubic => pil_bicubic_rows(n_in, n_out),
    };
    Tensor::from_slice(&w).reshape([n_out, n_in])
}

/// Resizes images `[N, C, H, W]` (values in [0, 255]) to `out_h x out_w`.
pub fn resize(x: &Tensor, out_h: i64, out_w: i64, mode: Resize) -> Result<Tensor> {
    let s = x.size();
    if s.len() != 4 {
        return Err(Error::invalid(format!(
            "resize expects images [N, C, H, W], got {s:?}"
        )));
    }
    let (h, w) = (s[2], s[3]);
    if (h, w) == (out_h, out_w) {
        return Ok(x.shallow_clone());
    }
    let dev = x.device();
    let kind = if x.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    };
    let wh = matrix(mode, h, out_h).to_kind(kind).to_device(dev);
    let ww = matrix(mode, w, out_w).to_kind(kind).to_device(dev);
    let y = wh.matmul(&x.to_kind(kind)).matmul(&ww.tr());
    Ok(if mode == Resize::PilBicubic {
        y.clamp(0.0, 255.0)
    } else {
        y
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn rows_sum_to_one_and_identity_is_kept() {
        for mode in [
            Resize::PytorchBilinear,
            Resize::Tf1Bilinear,
            Resize::PilBicubic,
        ] {
            for (a, b) in [(28, 299), (64, 29), (7, 7)] {
                let m = matrix(mode, a, b);
                let sums = m.sum_dim_intlist(1, false, Kind::Double);
                assert!(
                    sums.allclose(
                        &Tensor::ones([b], (Kind::Double, Device::Cpu)),
                        1e-12,
                        1e-12,
                        false
                    ),
                    "{mode:?} {a}->{b}"
                );
            }
            assert!(
                matrix(mode, 5, 5).allclose(
                    &Tensor::eye(5, (Kind::Double, Device::Cpu)),
                    1e-12,
                    1e-12,
                    false
                ),
                "{mode:?}"
            );
        }
        assert!(Resize::parse("nearest").is_err());
    }
}
