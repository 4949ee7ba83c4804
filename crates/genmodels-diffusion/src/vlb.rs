//! The variational bound of a Gaussian diffusion (Ho et al. 2020, Sec. 3.3 and Eq. 5; Nichol &
//! Dhariwal 2021, Sec. 3.1): per image
//!
//! `-log p(x_0) <= L_T + sum_{t>1} L_{t-1} + L_0`, with `L_T = KL(q(x_T | x_0) || N(0, I))`,
//! `L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))` and the discretised Gaussian decoder
//! `L_0 = -log p(x_0 | x_1)` over 256 bins of width 2/255 in [-1, 1] (the edge bins open to
//! infinity), the formulas of OpenAI's `improved-diffusion` (`normal_kl`,
//! `discretized_gaussian_log_likelihood` with its tanh approximation of the normal CDF,
//! `_vb_terms_bpd`, `calc_bpd_loop`). Timesteps are 0-based as in diffusers: index `t` is the
//! paper's `t + 1`.
//!
//! The same terms give the hybrid loss of Improved DDPM when the network learns its variance:
//! `L_simple + lambda L_vlb` with the mean's gradient stopped in `L_vlb`.

use crate::schedulers::{PredictionType, VarianceType};
use genmodels_core::{Error, Result};
use tch::{Device, Kind, Tensor};

/// `KL(N(m1, exp(lv1)) || N(m2, exp(lv2)))` elementwise, in nats.
pub fn normal_kl(mean1: &Tensor, logvar1: &Tensor, mean2: &Tensor, logvar2: &Tensor) -> Tensor {
    ((logvar2 - logvar1) - 1.0
        + (logvar1 - logvar2).exp()
        + (mean1 - mean2).square() * (-logvar2).exp())
        * 0.5
}

/// The standard normal CDF by `improved-diffusion`'s approximation
/// `0.5 (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
pub fn approx_standard_normal_cdf(x: &Tensor) -> Tensor {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    ((x + x.pow_tensor_scalar(3) * 0.044715) * c).tanh() * 0.5 + 0.5
}

/// `log p(x)` elementwise (nats) of 8-bit data `x` in [-1, 1] under a Gaussian of `means` and
/// `log_scales` (log standard deviations) discretised to 256 bins of half-width 1/255; the lowest
/// and highest bins reach to -inf and +inf.
pub fn discretized_gaussian_log_likelihood(
    x: &Tensor,
    means: &Tensor,
    log_scales: &Tensor,
) -> Tensor {
    let centered = x - means;
    let inv_std = (-log_scales).exp();
    let cdf_plus = approx_standard_normal_cdf(&(&inv_std * (&centered + 1.0 / 255.0)));
    let cdf_min = approx_standard_normal_cdf(&(&inv_std * (&centered - 1.0 / 255.0)));
    let log_cdf_plus = cdf_plus.clamp_min(1e-12).log();
    let log_one_minus_cdf_min = (-&cdf_min + 1.0).clamp_min(1e-12).log();
    let log_delta = (cdf_plus - cdf_min).clamp_min(1e-12).log();
    let inner = log_one_minus_cdf_min.where_self(&x.gt(0.999), &log_delta);
    log_cdf_plus.where_self(&x.lt(-0.999), &inner)
}

/// Mean over every dimension but the first.
fn mean_flat(x: &Tensor) -> Tensor {
    let dims: Vec<i64> = (1..x.dim() as i64).collect();
    x.mean_dim(dims.as_slice(), false, Kind::Float)
}

/// The closed-form quantities of one training noise schedule, as tensors indexed by timestep.
pub struct Diffusion {
    /// Number of training timesteps.
    pub steps: i64,
    alphas_cumprod: Tensor,
    betas: Tensor,
    sqrt_recip_ac: Tensor,
    sqrt_recipm1_ac: Tensor,
    posterior_variance: Tensor,
    posterior_log_variance_clipped: Tensor,
    posterior_mean_coef1: Tensor,
    posterior_mean_coef2: Tensor,
    device: Device,
}

impl Diffusion {
    /// From the schedule's `alphas_cumprod` (float64; `betas` are recovered as
    /// `1 - abar_t / abar_{t-1}`).
    pub fn new(alphas_cumprod: &[f64], device: Device) -> Result<Self> {
        let n = alphas_cumprod.len();
        if n < 2 {
            return Err(Error::invalid(format!(
                "the variational bound needs at least 2 training timesteps, the schedule has {n}"
            )));
        }
        let ac = alphas_cumprod;
        let prev: Vec<f64> = std::iter::once(1.0)
            .chain(ac[..n - 1].iter().copied())
            .collect();
        let betas: Vec<f64> = ac.iter().zip(&prev).map(|(a, p)| 1.0 - a / p).collect();
        let post_var: Vec<f64> = (0..n)
            .map(|t| betas[t] * (1.0 - prev[t]) / (1.0 - ac[t]))
            .collect();
        // log of the posterior variance with its first entry (0) replaced by the second
        let post_log_clipped: Vec<f64> = (0..n)
            .map(|t| post_var[if t == 0 { 1 } else { t }].ln())
            .collect();
        let coef1: Vec<f64> = (0..n)
            .map(|t| betas[t] * prev[t].sqrt() / (1.0 - ac[t]))
            .collect();
        let coef2: Vec<f64> = (0..n)
            .map(|t| (1.0 - prev[t]) * (1.0 - betas[t]).sqrt() / (1.0 - ac[t]))
            .collect();
        let v = |x: &[f64]| Tensor::from_slice(x).to_device(device);
        Ok(Diffusion {
            steps: n as i64,
            alphas_cumprod: v(ac),
            betas: v(&betas),
            sqrt_recip_ac: v(&ac.iter().map(|a| (1.0 / a).sqrt()).collect::<Vec<_>>()),
            sqrt_recipm1_ac: v(&ac
                .iter()
                .map(|a| (1.0 / a - 1.0).sqrt())
                .collect::<Vec<_>>()),
            posterior_variance: v(&post_var),
            posterior_log_variance_clipped: v(&post_log_clipped),
            posterior_mean_coef1: v(&coef1),
            posterior_mean_coef2: v(&coef2),
            device,
        })
    }

    /// `table[t]` shaped to broadcast against `like` `[N, ...]`, in `like`'s kind.
    fn at(&self, table: &Tensor, t: &Tensor, like: &Tensor) -> Tensor {
        let mut shape = vec![-1i64];
        shape.extend(std::iter::repeat_n(1, like.dim() - 1));
        table
            .index_select(0, &t.to_device(self.device).to_kind(Kind::Int64))
            .view(shape.as_slice())
            .to_kind(like.kind())
    }

    /// `x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise`.
    pub fn q_sample(&self, x0: &Tensor, noise: &Tensor, t: &Tensor) -> Tensor {
        let a = self.at(&self.alphas_cumprod, t, x0);
        x0 * a.sqrt() + noise * (-a + 1.0).sqrt()
    }

    /// Mean and log variance of `q(x_{t-1} | x_t, x_0)`.
    pub fn q_posterior(&self, x0: &Tensor, xt: &Tensor, t: &Tensor) -> (Tensor, Tensor) {
        let mean = self.at(&self.posterior_mean_coef1, t, x0) * x0
            + self.at(&self.posterior_mean_coef2, t, x0) * xt;
        (
            mean,
            self.at(&self.posterior_log_variance_clipped, t, x0)
                .expand_as(x0),
        )
    }

    /// The predicted `x_0` from a network output of `prediction` type.
    pub fn predict_x0(
        &self,
        out: &Tensor,
        xt: &Tensor,
        t: &Tensor,
        prediction: PredictionType,
    ) -> Tensor {
        match prediction {
            PredictionType::Epsilon => {
                self.at(&self.sqrt_recip_ac, t, xt) * xt
                    - self.at(&self.sqrt_recipm1_ac, t, xt) * out
            }
            PredictionType::Sample => out.shallow_clone(),
            PredictionType::VPrediction => {
                let a = self.at(&self.alphas_cumprod, t, xt);
                xt * a.sqrt() - out * (-a + 1.0).sqrt()
            }
        }
    }

    /// Mean and log variance of `p(x_{t-1} | x_t)` from the network output (`[N, C]` channels, or
    /// `[N, 2C]` with a learned variance), with the predicted `x_0` clipped to [-1, 1] when
    /// `clip`.
    pub fn p_mean_logvar(
        &self,
        out: &Tensor,
        xt: &Tensor,
        t: &Tensor,
        prediction: PredictionType,
        variance: VarianceType,
        clip: bool,
    ) -> Result<(Tensor, Tensor)> {
        let c = xt.size()[1];
        let learned = matches!(variance, VarianceType::Learned | VarianceType::LearnedRange);
        let want = if learned { 2 * c } else { c };
        if out.size()[1] != want {
            return Err(Error::invalid(format!(
                "the network output has {} channels; expected {want} for {c}-channel images with variance {variance:?}",
                out.size()[1]
            )));
        }
        let (mean_out, logvar) = if learned {
            let v = out.narrow(1, c, c);
            let logvar = match variance {
                VarianceType::Learned => v,
                _ => {
                    let min_log = self.at(&self.posterior_log_variance_clipped, t, xt);
                    let max_log = self.at(&self.betas, t, xt).log();
                    let frac = (v + 1.0) * 0.5;
                    &frac * max_log + (-&frac + 1.0) * min_log
                }
            };
            (out.narrow(1, 0, c), logvar)
        } else {
            let table = match variance {
                VarianceType::FixedLarge | VarianceType::FixedLargeLog => {
                    // beta_t, with the first entry the posterior variance (as improved-diffusion)
                    let first = self.posterior_variance.narrow(0, 1, 1);
                    Tensor::cat(&[first, self.betas.narrow(0, 1, self.steps - 1)], 0).log()
                }
                _ => self.posterior_log_variance_clipped.shallow_clone(),
            };
            (out.shallow_clone(), self.at(&table, t, xt).expand_as(xt))
        };
        let mut x0 = self.predict_x0(&mean_out, xt, t, prediction);
        if clip {
            x0 = x0.clamp(-1.0, 1.0);
        }
        let (mean, _) = self.q_posterior(&x0, xt, t);
        Ok((mean, logvar))
    }

    /// Each example's term of the bound at its timestep `t`, in bits per dimension: the
    /// decoder's negative log-likelihood where `t = 0`, the KL of the posteriors elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub fn vb_terms_bits(
        &self,
        out: &Tensor,
        x0: &Tensor,
        xt: &Tensor,
        t: &Tensor,
        prediction: PredictionType,
        variance: VarianceType,
        clip: bool,
    ) -> Result<Tensor> {
        let (true_mean, true_logvar) = self.q_posterior(x0, xt, t);
        let (mean, logvar) = self.p_mean_logvar(out, xt, t, prediction, variance, clip)?;
        let ln2 = std::f64::consts::LN_2;
        let kl = mean_flat(&normal_kl(&true_mean, &true_logvar, &mean, &logvar)) / ln2;
        let nll = -mean_flat(&discretized_gaussian_log_likelihood(
            x0,
            &mean,
            &(logvar * 0.5),
        )) / ln2;
        let first = t.to_device(self.device).eq(0).to_kind(Kind::Bool);
        Ok(nll.where_self(&first, &kl))
    }

    /// `KL(q(x_T | x_0) || N(0, I))` per example, in bits per dimension.
    pub fn prior_bits(&self, x0: &Tensor) -> Tensor {
        let n = x0.size()[0];
        let t = Tensor::full([n], self.steps - 1, (Kind::Int64, self.device));
        let a = self.at(&self.alphas_cumprod, &t, x0);
        let mean = x0 * a.sqrt();
        let logvar = (-a + 1.0).log().expand_as(x0);
        let zeros = x0.zeros_like();
        mean_flat(&normal_kl(&mean, &logvar, &zeros, &zeros)) / std::f64::consts::LN_2
    }
}

/// The timestep strata of an estimate of the bound, as `[lo, hi)` ranges: every single timestep
/// (all `T` terms exactly) when `evals >= T`; else `t = 0` (the decoder) alone and `evals - 1`
/// equal strata of `1..T`. Each image draws one timestep uniformly from each stratum, weighted by
/// the stratum's width: an unbiased estimate of the sum of the KL terms, independent between
/// images, so the spread over images includes the timestep sampling.
pub fn bound_strata(steps: i64, evals: i64) -> Vec<(i64, i64)> {
    if evals >= steps {
        return (0..steps).map(|t| (t, t + 1)).collect();
    }
    let strata = (evals - 1).max(1);
    let rest = steps - 1;
    let mut out = vec![(0, 1)];
    for k in 0..strata {
        let lo = 1 + rest * k / strata;
        let hi = 1 + rest * (k + 1) / strata;
        if hi > lo {
            out.push((lo, hi));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(n: usize) -> Vec<f64> {
        let mut ac = Vec::with_capacity(n);
        let mut p = 1.0;
        for i in 0..n {
            let b = 1e-4 + (0.02 - 1e-4) * i as f64 / (n - 1) as f64;
            p *= 1.0 - b;
            ac.push(p);
        }
        ac
    }

    fn d(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn the_decoder_is_a_distribution_over_the_256_levels() {
        // summing p over every level of one pixel gives 1 whatever the mean and scale
        let levels = Tensor::arange(256, (Kind::Double, Device::Cpu)) / 127.5 - 1.0;
        for (m, s) in [(0.0, -3.0), (0.7, -1.0), (-0.99, -5.0), (0.2, 0.5)] {
            let lp = discretized_gaussian_log_likelihood(
                &levels,
                &levels.full_like(m),
                &levels.full_like(s),
            );
            let total = d(&lp.exp().sum(Kind::Double));
            assert!(
                (total - 1.0).abs() < 1e-9,
                "mean {m} log scale {s}: {total}"
            );
        }
    }

    #[test]
    fn the_kl_matches_its_closed_form_and_vanishes_for_equal_gaussians() {
        let m1 = Tensor::from_slice(&[0.3f64]);
        let m2 = Tensor::from_slice(&[-0.2f64]);
        let (l1, l2) = (
            Tensor::from_slice(&[-1.0f64]),
            Tensor::from_slice(&[0.5f64]),
        );
        let (v1, v2) = ((-1.0f64).exp(), 0.5f64.exp());
        let want = 0.5 * ((v2 / v1).ln() + (v1 + 0.25) / v2 - 1.0);
        assert!((d(&normal_kl(&m1, &l1, &m2, &l2)) - want).abs() < 1e-12);
        assert!(d(&normal_kl(&m1, &l1, &m1, &l1)).abs() < 1e-15);
    }

    #[test]
    fn the_true_noise_makes_every_kl_term_zero() {
        // a network that outputs the noise that made x_t has p = q at every t > 0 (fixed small
        // variance): the bound is then the decoder and the prior only
        let diff = Diffusion::new(&linear(50), Device::Cpu).unwrap();
        let x0 = (Tensor::randint(256, [3, 1, 4, 4], (Kind::Double, Device::Cpu)) / 127.5) - 1.0;
        let noise = x0.randn_like();
        for step in [1i64, 10, 49] {
            let t = Tensor::full([3], step, (Kind::Int64, Device::Cpu));
            let xt = diff.q_sample(&x0, &noise, &t);
            let kl = diff
                .vb_terms_bits(
                    &noise,
                    &x0,
                    &xt,
                    &t,
                    PredictionType::Epsilon,
                    VarianceType::FixedSmall,
                    false,
                )
                .unwrap();
            assert!(d(&kl.abs().max()) < 1e-9, "t = {step}: {kl:?}");
            // and a wrong noise costs bits
            let off = diff
                .vb_terms_bits(
                    &(&noise + 0.5),
                    &x0,
                    &xt,
                    &t,
                    PredictionType::Epsilon,
                    VarianceType::FixedSmall,
                    false,
                )
                .unwrap();
            assert!(d(&off.min()) > 1e-4, "t = {step}");
        }
        // the three prediction types agree on x_0 when given the matching truths
        let t = Tensor::full([3], 20i64, (Kind::Int64, Device::Cpu));
        let xt = diff.q_sample(&x0, &noise, &t);
        let a = diff.at(&diff.alphas_cumprod, &t, &x0);
        let v = &noise * a.sqrt() - &x0 * (-&a + 1.0).sqrt();
        for (out, p) in [
            (&noise, PredictionType::Epsilon),
            (&x0, PredictionType::Sample),
            (&v, PredictionType::VPrediction),
        ] {
            let got = diff.predict_x0(out, &xt, &t, p);
            assert!(d(&(got - &x0).abs().max()) < 1e-9, "{p:?}");
        }
    }

    #[test]
    fn learned_range_spans_the_two_fixed_variances() {
        let diff = Diffusion::new(&linear(100), Device::Cpu).unwrap();
        let xt = Tensor::zeros([1, 1, 2, 2], (Kind::Double, Device::Cpu));
        let t = Tensor::from_slice(&[40i64]);
        let logvar = |v: f64, vt: VarianceType| {
            let out = Tensor::cat(&[xt.zeros_like(), xt.full_like(v)], 1);
            let out = if matches!(vt, VarianceType::LearnedRange) {
                out
            } else {
                out.narrow(1, 0, 1)
            };
            let (_, lv) = diff
                .p_mean_logvar(&out, &xt, &t, PredictionType::Epsilon, vt, false)
                .unwrap();
            d(&lv.mean(Kind::Double))
        };
        let small = logvar(0.0, VarianceType::FixedSmall);
        let large = logvar(0.0, VarianceType::FixedLarge);
        assert!(small < large);
        assert!((logvar(-1.0, VarianceType::LearnedRange) - small).abs() < 1e-12);
        assert!((logvar(1.0, VarianceType::LearnedRange) - large).abs() < 1e-12);
        // a fixed variance with a doubled output is refused
        let e = diff
            .p_mean_logvar(
                &Tensor::cat(&[&xt, &xt], 1),
                &xt,
                &t,
                PredictionType::Epsilon,
                VarianceType::FixedSmall,
                false,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 channels") && e.contains("expected 1"), "{e}");
    }

    #[test]
    fn the_strata_tile_the_chain() {
        for (steps, evals) in [(1000i64, 100i64), (1000, 2), (50, 7), (10, 10), (10, 40)] {
            let st = bound_strata(steps, evals);
            assert_eq!(st[0], (0, 1), "the decoder term alone first");
            assert!(st.windows(2).all(|w| w[0].1 == w[1].0 && w[1].1 > w[1].0));
            assert_eq!(st.last().unwrap().1, steps);
            assert_eq!(st.len() as i64, evals.min(steps), "{steps} {evals}");
        }
    }
}
