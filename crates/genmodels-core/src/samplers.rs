//! Sampling helpers: Gaussian latents with truncation, categorical sampling from logits with
//! temperature / top-k / top-p / repetition penalty. (Langevin / SGLD for energy models lives
//! in `genmodels-ebm`.)

use crate::{Error, Result};
use tch::{Device, Kind, Tensor};

/// `n` standard-normal latents of dimension `dim`. With `truncation = Some(t)` every coordinate
/// is redrawn until `|z| <= t` (BigGAN's truncation trick, Brock et al. 2019, Sec. 3.1).
pub fn gaussian_latents(
    n: i64,
    dim: i64,
    truncation: Option<f64>,
    device: Device,
) -> Result<Tensor> {
    let z = Tensor::randn([n, dim], (Kind::Float, device));
    match truncation {
        None => Ok(z),
        Some(t) if t > 0.0 => Ok(truncated_normal_(z, t)),
        Some(t) => Err(Error::invalid(format!(
            "truncation threshold must be positive, got {t}"
        ))),
    }
}

fn truncated_normal_(mut z: Tensor, t: f64) -> Tensor {
    // Resample out-of-range entries; each round keeps ~P(|z|<=t) of them, so this ends fast
    // even for t = 0.05 (a few hundred rounds at most, on ever fewer entries).
    for _ in 0..10_000 {
        let bad = z.abs().gt(t);
        if !bool::try_from(bad.any()).unwrap_or(false) {
            break;
        }
        let fresh = Tensor::randn_like(&z);
        z = z.where_self(&bad.logical_not(), &fresh);
    }
    z.clamp(-t, t)
}

/// Truncation toward a mean (StyleGAN's truncation in W, Karras et al. 2019, Sec. 3):
/// `mean + psi * (w - mean)`; `psi = 0` gives the mean, `psi = 1` leaves `w` unchanged.
pub fn truncate_toward(w: &Tensor, mean: &Tensor, psi: f64) -> Tensor {
    mean + (w - mean) * psi
}

/// Latents for an interpolation grid: `rows` pairs of endpoints `[rows, dim]` each, walked in
/// `steps` slerp steps; returns `[rows * steps, dim]`, row-major (one walk per grid row).
pub fn slerp_grid(a: &Tensor, b: &Tensor, steps: usize) -> Tensor {
    let steps = steps.max(2);
    let rows = a.size()[0];
    let walk: Vec<Tensor> = (0..steps)
        .map(|i| slerp(a, b, i as f64 / (steps - 1) as f64))
        .collect();
    Tensor::stack(&walk, 1).view([rows * steps as i64, -1])
}

/// Spherical interpolation between latents (White 2016), for interpolation grids in z.
pub fn slerp(a: &Tensor, b: &Tensor, t: f64) -> Tensor {
    let an = a / a.norm_scalaropt_dim(2, [-1], true);
    let bn = b / b.norm_scalaropt_dim(2, [-1], true);
    let omega = (an * bn)
        .sum_dim_intlist(-1, true, Kind::Float)
        .clamp(-1.0, 1.0)
        .acos();
    let so = omega.sin();
    let small = so.abs().lt(1e-6);
    let wa = ((1.0 - t) * &omega).sin() / &so;
    let wb = (t * &omega).sin() / &so;
    let s = wa * a + wb * b;
    s.where_self(&small.logical_not(), &(a * (1.0 - t) + b * t))
}

/// How to turn next-token logits into a choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitsProcessor {
    /// Divides the logits; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<i64>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (Holtzman et al. 2020).
    pub top_p: Option<f64>,
    /// CTRL's penalty (Keskar et al. 2019): logits of already generated tokens are divided by it
    /// when positive and multiplied when negative.
    pub repetition_penalty: Option<f64>,
}

impl Default for LogitsProcessor {
    fn default() -> Self {
        LogitsProcessor {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            repetition_penalty: None,
        }
    }
}

impl LogitsProcessor {
    pub fn validate(&self) -> Result<()> {
        if self.temperature < 0.0 || !self.temperature.is_finite() {
            return Err(Error::invalid(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if let Some(k) = self.top_k {
            if k < 1 {
                return Err(Error::invalid(format!("top-k must be >= 1, got {k}")));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid(format!("top-p must be in (0, 1], got {p}")));
            }
        }
        if let Some(r) = self.repetition_penalty {
            if r <= 0.0 {
                return Err(Error::invalid(format!(
                    "repetition penalty must be > 0, got {r}"
                )));
            }
        }
        Ok(())
    }

    /// Filtered log-probabilities `[B, V]` (removed tokens at -inf); `history` `[B, T]` of
    /// previous token ids feeds the repetition penalty.
    pub fn process(&self, logits: &Tensor, history: Option<&Tensor>) -> Tensor {
        let mut l = logits.to_kind(Kind::Float);
        if let (Some(r), Some(h)) = (self.repetition_penalty, history) {
            if h.numel() > 0 {
                let prev = l.gather(1, h, false);
                let pen = prev
                    .where_self(&prev.lt(0.0), &(&prev / r))
                    .where_self(&prev.ge(0.0), &(&prev * r));
                l = l.scatter(1, h, &pen);
            }
        }
        if self.temperature > 0.0 {
            l /= self.temperature;
        }
        let v = l.size()[1];
        if let Some(k) = self.top_k {
            if k < v {
                let kth = l.topk(k, 1, true, true).0.narrow(1, k - 1, 1);
                l = l.masked_fill(&l.lt_tensor(&kth), f64::NEG_INFINITY);
            }
        }
        if let Some(p) = self.top_p {
            if p < 1.0 {
                let (sorted, idx) = l.sort(1, true);
                let probs = sorted.softmax(1, Kind::Float);
                let before = probs.cumsum(1, Kind::Float) - &probs; // mass strictly ahead of each token
                let remove_sorted = before.gt(p);
                let remove = remove_sorted.scatter(1, &idx, &remove_sorted);
                l = l.masked_fill(&remove, f64::NEG_INFINITY);
            }
        }
        l.log_softmax(1, Kind::Float)
    }

    /// One token per row `[B]`: argmax when temperature is 0, else a draw from the filtered distribution.
    /// Non-finite logits (a diverged model) give an error, not a libtorch panic.
    pub fn sample(&self, logits: &Tensor, history: Option<&Tensor>) -> crate::Result<Tensor> {
        if self.temperature == 0.0 {
            let l = self.process(logits, history);
            return Ok(l.argmax(1, false));
        }
        let draw = self.process(logits, history).exp().f_multinomial(1, false);
        match draw {
            Ok(t) => Ok(t.squeeze_dim(1)),
            Err(_) => Err(crate::Error::invalid(
                "the model's next-token probabilities are not finite (NaN or infinite logits: \
                 the weights have diverged)",
            )),
        }
    }
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub max_new_tokens: usize,
    pub processor: LogitsProcessor,
    /// Keep keys and values of past tokens (the fast path); off recomputes the whole context
    /// at every step, as nanoGPT's `generate` does.
    pub use_cache: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: 100,
            processor: LogitsProcessor::default(),
            use_cache: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_latents_stay_inside() {
        tch::manual_seed(0);
        let z = gaussian_latents(64, 16, Some(0.5), Device::Cpu).unwrap();
        assert!(z.abs().max().double_value(&[]) <= 0.5);
        assert!(gaussian_latents(2, 2, Some(0.0), Device::Cpu).is_err());
        let w = Tensor::from_slice(&[2.0f32, 4.0]);
        let m = Tensor::from_slice(&[1.0f32, 1.0]);
        assert!(truncate_toward(&w, &m, 0.0).equal(&m));
        assert!(truncate_toward(&w, &m, 1.0).equal(&w));
    }

    #[test]
    fn slerp_endpoints() {
        let a = Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 2]);
        let b = Tensor::from_slice(&[0.0f32, 2.0]).reshape([1, 2]);
        assert!(slerp(&a, &b, 0.0).allclose(&a, 1e-6, 1e-6, false));
        assert!(slerp(&a, &b, 1.0).allclose(&b, 1e-6, 1e-6, false));
    }

    #[test]
    fn slerp_grid_rows_walk_from_a_to_b() {
        let a = Tensor::randn([3, 5], (tch::Kind::Float, Device::Cpu));
        let b = Tensor::randn([3, 5], (tch::Kind::Float, Device::Cpu));
        let g = slerp_grid(&a, &b, 4);
        assert_eq!(g.size(), [12, 5]);
        for r in 0..3 {
            assert!(g.get(r * 4).allclose(&a.get(r), 1e-5, 1e-5, false));
            assert!(g.get(r * 4 + 3).allclose(&b.get(r), 1e-5, 1e-5, false));
        }
    }

    #[test]
    fn filters_against_hand_made_distributions() {
        // probabilities 0.5, 0.3, 0.15, 0.05
        let p = Tensor::from_slice(&[0.5f64, 0.3, 0.15, 0.05]).reshape([1, 4]);
        let logits = p.log().to_kind(Kind::Float);
        let keep =
            |lp: Tensor| -> Vec<bool> { Vec::<bool>::try_from(lp.isfinite().squeeze()).unwrap() };
        let top_k = LogitsProcessor {
            top_k: Some(2),
            ..Default::default()
        };
        assert_eq!(
            keep(top_k.process(&logits, None)),
            [true, true, false, false]
        );
        let lp = top_k.process(&logits, None).exp();
        assert!((lp.double_value(&[0, 0]) - 0.625).abs() < 1e-6);
        let top_p = LogitsProcessor {
            top_p: Some(0.75),
            ..Default::default()
        };
        assert_eq!(
            keep(top_p.process(&logits, None)),
            [true, true, false, false]
        );
        let top_p = LogitsProcessor {
            top_p: Some(0.85),
            ..Default::default()
        };
        assert_eq!(
            keep(top_p.process(&logits, None)),
            [true, true, true, false]
        );
        let greedy = LogitsProcessor {
            temperature: 0.0,
            ..Default::default()
        };
        assert_eq!(greedy.sample(&logits, None).unwrap().int64_value(&[0]), 0);
        let rep = LogitsProcessor {
            temperature: 0.0,
            repetition_penalty: Some(100.0),
            ..Default::default()
        };
        let hist = Tensor::from_slice(&[0i64]).reshape([1, 1]);
        assert_eq!(
            rep.sample(&logits, Some(&hist)).unwrap().int64_value(&[0]),
            1
        );
        assert!(LogitsProcessor {
            top_p: Some(1.5),
            ..Default::default()
        }
        .validate()
        .is_err());
        // sampling frequencies follow the filtered distribution
        tch::manual_seed(1);
        let many = logits.repeat([20000, 1]);
        let s = top_k.sample(&many, None).unwrap();
        let frac0 = s
            .eq(0)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((frac0 - 0.625).abs() < 0.02, "{frac0}");
        assert_eq!(s.ge(2).sum(Kind::Int64).int64_value(&[]), 0);
    }
}
