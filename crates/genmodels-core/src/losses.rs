//! Losses shared by the families. Every function documents its reduction; the GAN losses take
//! the discriminator's raw outputs (logits for the non-saturating loss, critic values for the
//! Wasserstein loss).

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

/// The adversarial objectives in common use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GanLoss {
    /// Goodfellow et al. 2014, generator with the non-saturating -log D(G(z)) (Sec. 3).
    NonSaturating,
    /// Lim & Ye 2017, Miyato et al. 2018: D on relu(1 - D(x)) + relu(1 + D(G(z))); G on -D(G(z)).
    Hinge,
    /// Mao et al. 2017 (LSGAN, a=0, b=c=1), with the paper's factor 1/2.
    LeastSquares,
    /// Arjovsky et al. 2017: the critic maximises D(x) - D(G(z)).
    Wasserstein,
}

impl GanLoss {
    /// Discriminator (critic) loss, averaged over the batch; `real` and `fake` are D's outputs.
    pub fn d_loss(self, real: &Tensor, fake: &Tensor) -> Tensor {
        match self {
            GanLoss::NonSaturating => {
                (-real).softplus().mean(Kind::Float) + fake.softplus().mean(Kind::Float)
            }
            GanLoss::Hinge => {
                (-real + 1.0).relu().mean(Kind::Float) + (fake + 1.0).relu().mean(Kind::Float)
            }
            GanLoss::LeastSquares => {
                ((real - 1.0).square().mean(Kind::Float) + fake.square().mean(Kind::Float)) * 0.5
            }
            GanLoss::Wasserstein => fake.mean(Kind::Float) - real.mean(Kind::Float),
        }
    }

    /// Generator loss, averaged over the batch; `fake` is D's output on generated samples.
    pub fn g_loss(self, fake: &Tensor) -> Tensor {
        match self {
            GanLoss::NonSaturating => (-fake).softplus().mean(Kind::Float),
            GanLoss::Hinge | GanLoss::Wasserstein => -fake.mean(Kind::Float),
            GanLoss::LeastSquares => (fake - 1.0).square().mean(Kind::Float) * 0.5,
        }
    }
}

/// Squared-gradient-norm term shared by the penalties: `||d out.sum() / d x||` per sample.
fn grad_norms(out: &Tensor, x: &Tensor) -> Tensor {
    let g = Tensor::run_backward(&[out.sum(Kind::Float)], &[x], true, true).remove(0);
    g.flatten(1, -1)
        .square()
        .sum_dim_intlist(1, false, Kind::Float)
}

/// WGAN-GP gradient penalty (Gulrajani et al. 2017, Eq. 3):
/// `lambda * E[(||grad D(x_hat)||_2 - 1)^2]` with `x_hat = e*real + (1-e)*fake`, `e ~ U[0,1]` per sample.
pub fn gradient_penalty(
    critic: impl Fn(&Tensor) -> Tensor,
    real: &Tensor,
    fake: &Tensor,
    lambda: f64,
) -> Result<Tensor> {
    if real.size() != fake.size() {
        return Err(Error::invalid(format!(
            "gradient penalty: real {:?} and fake {:?} differ in shape",
            real.size(),
            fake.size()
        )));
    }
    let mut eshape = vec![real.size()[0]];
    eshape.extend(std::iter::repeat_n(1, real.dim() - 1));
    let e = Tensor::rand(&eshape, (real.kind(), real.device()));
    let x_hat = (&e * real.detach() + (-&e + 1.0) * fake.detach()).set_requires_grad(true);
    let norms = grad_norms(&critic(&x_hat), &x_hat).sqrt();
    Ok((norms - 1.0).square().mean(Kind::Float) * lambda)
}

/// R1 penalty (Mescheder et al. 2018, Eq. 9): `gamma/2 * E[||grad D(x)||^2]` on real data.
/// `real` must have been passed through D with `requires_grad` set; `d_real` is that output.
pub fn r1_penalty(d_real: &Tensor, real: &Tensor, gamma: f64) -> Tensor {
    grad_norms(d_real, real).mean(Kind::Float) * (gamma / 2.0)
}

/// KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent dimensions: shape `[N]`
/// (Kingma & Welling 2014, App. B). Average it over the batch yourself; the sign is such that
/// it is non-negative.
pub fn gaussian_kl(mu: &Tensor, logvar: &Tensor) -> Tensor {
    ((mu.square() + logvar.exp() - logvar - 1.0) * 0.5)
        .flatten(1, -1)
        .sum_dim_intlist(1, false, Kind::Float)
}

/// log p(x | logits) for Bernoulli pixels `x` in [0, 1], summed per sample: shape `[N]`.
pub fn bernoulli_log_likelihood(logits: &Tensor, x: &Tensor) -> Tensor {
    -logits
        .binary_cross_entropy_with_logits::<Tensor>(x, None, None, Reduction::None)
        .flatten(1, -1)
        .sum_dim_intlist(1, false, Kind::Float)
}

/// log N(x | mean, exp(logvar)) summed per sample: shape `[N]`.
pub fn gaussian_log_likelihood(x: &Tensor, mean: &Tensor, logvar: &Tensor) -> Tensor {
    let ln2pi = (2.0 * std::f64::consts::PI).ln();
    (((x - mean).square() * (-logvar).exp() + logvar + ln2pi) * -0.5)
        .flatten(1, -1)
        .sum_dim_intlist(1, false, Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn close(a: &Tensor, b: f64) {
        let v = a.double_value(&[]);
        assert!((v - b).abs() < 1e-5, "{v} vs {b}");
    }

    #[test]
    fn gan_losses_match_their_formulas() {
        let r = Tensor::from_slice(&[0.5f32, -1.0]);
        let f = Tensor::from_slice(&[2.0f32, -0.5]);
        let sp = |x: f64| (1.0 + x.exp()).ln();
        close(
            &GanLoss::NonSaturating.d_loss(&r, &f),
            (sp(-0.5) + sp(1.0)) / 2.0 + (sp(2.0) + sp(-0.5)) / 2.0,
        );
        close(
            &GanLoss::NonSaturating.g_loss(&f),
            (sp(-2.0) + sp(0.5)) / 2.0,
        );
        close(
            &GanLoss::Hinge.d_loss(&r, &f),
            (0.5 + 2.0) / 2.0 + (3.0 + 0.5) / 2.0,
        );
        close(&GanLoss::Hinge.g_loss(&f), -0.75);
        close(
            &GanLoss::LeastSquares.d_loss(&r, &f),
            0.5 * ((0.25 + 4.0) / 2.0 + (4.0 + 0.25) / 2.0),
        );
        close(&GanLoss::LeastSquares.g_loss(&f), 0.5 * (1.0 + 2.25) / 2.0);
        close(&GanLoss::Wasserstein.d_loss(&r, &f), 0.75 - (-0.25));
        close(&GanLoss::Wasserstein.g_loss(&f), -0.75);
    }

    #[test]
    fn gradient_penalty_of_a_linear_critic() {
        // D(x) = a.x has gradient a everywhere: penalty = lambda (|a| - 1)^2.
        let a = Tensor::from_slice(&[3.0f32, 4.0]);
        let critic = |x: &Tensor| x.matmul(&a);
        let real = Tensor::randn([8, 2], (Kind::Float, Device::Cpu));
        let fake = Tensor::randn([8, 2], (Kind::Float, Device::Cpu));
        close(
            &gradient_penalty(critic, &real, &fake, 10.0).unwrap(),
            10.0 * 16.0,
        );
        let x = real.set_requires_grad(true);
        close(&r1_penalty(&critic(&x), &x, 10.0), 5.0 * 25.0);
        assert!(gradient_penalty(critic, &real, &fake.narrow(0, 0, 4), 1.0).is_err());
    }

    #[test]
    fn kl_and_likelihoods() {
        let mu = Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 2]);
        let lv = Tensor::from_slice(&[0.0f32, 1.0]).reshape([1, 2]);
        let e = std::f64::consts::E;
        close(
            &gaussian_kl(&mu, &lv).squeeze(),
            0.5 * 1.0 + 0.5 * (e - 1.0 - 1.0),
        );
        let x = Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 2]);
        let logits = Tensor::from_slice(&[0.0f32, 0.0]).reshape([1, 2]);
        close(
            &bernoulli_log_likelihood(&logits, &x).squeeze(),
            2.0 * 0.5f64.ln(),
        );
        let m = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
        let z = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
        close(
            &gaussian_log_likelihood(&x, &m, &z).squeeze(),
            -0.5 * (2.0 * (2.0 * std::f64::consts::PI).ln() + 1.0),
        );
    }
}
