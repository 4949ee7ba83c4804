//! Layers shared by the families.
//!
//! - [`SpectralNorm`]: a weight divided by its largest singular value (Miyato et al. 2018), as
//!   BigGAN's networks and IGEBM's energy use it.
//! - [`pytorch_linear`] / [`pytorch_conv`]: PyTorch's default initialisation
//!   (`kaiming_uniform_(a = sqrt(5))`, i.e. U(+-1/sqrt(fan_in)) for weights and biases). tch's
//!   own default is Kaiming uniform with the ReLU gain, a bound sqrt(6) = 2.45 times wider: a
//!   port of a PyTorch model that keeps tch's default does not train like its reference.

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// A weight divided by its largest singular value, estimated by power iteration on a stored
/// vector `u` (not trained; checkpointed as `sn_u` beside `weight`).
#[derive(Debug)]
pub struct SpectralNorm {
    pub w: Tensor,
    u: Tensor,
}

impl SpectralNorm {
    /// A weight of `shape` (`[out, ...]`) drawn from `init`, with its power-iteration vector.
    pub fn new(p: &nn::Path, shape: &[i64], init: Init) -> Self {
        let w = p.var("weight", shape, init);
        let u = p.zeros_no_train("sn_u", &[shape[0]]);
        tch::no_grad(|| {
            let r = Tensor::randn([shape[0]], (Kind::Float, u.device()));
            u.shallow_clone().copy_(&(&r / (r.norm() + 1e-12)));
        });
        SpectralNorm { w, u }
    }

    /// `W / sigma(W)`; in training one power iteration updates `u` first.
    pub fn get(&self, train: bool) -> Tensor {
        let out = self.w.size()[0];
        let wm = self.w.view([out, -1]);
        let (u, v) = tch::no_grad(|| {
            let u = &self.u / (self.u.norm() + 1e-12);
            let v = wm.tr().mv(&u);
            let v = &v / (v.norm() + 1e-12);
            if train {
                let u2 = wm.mv(&v);
                let u2 = &u2 / (u2.norm() + 1e-12);
                self.u.shallow_clone().copy_(&u2);
                (u2, v)
            } else {
                (u, v)
            }
        });
        let sigma = u.dot(&wm.mv(&v));
        &self.w / sigma
    }
}

/// PyTorch's default bound for a layer with `fan_in` inputs: 1/sqrt(fan_in).
fn pytorch_bound(fan_in: i64) -> f64 {
    1.0 / (fan_in.max(1) as f64).sqrt()
}

/// `nn::linear` with PyTorch's `nn.Linear` initialisation.
pub fn pytorch_linear(p: nn::Path, i: i64, o: i64, bias: bool) -> nn::Linear {
    let b = pytorch_bound(i);
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: Init::Uniform { lo: -b, up: b },
            bs_init: bias.then_some(Init::Uniform { lo: -b, up: b }),
            bias,
        },
    )
}

/// `nn::conv2d` with PyTorch's `nn.Conv2d` initialisation (fan_in = in x k x k).
pub fn pytorch_conv(p: nn::Path, i: i64, o: i64, k: i64, cfg: nn::ConvConfig) -> nn::Conv2D {
    let b = pytorch_bound(i / cfg.groups.max(1) * k * k);
    nn::conv2d(
        p,
        i,
        o,
        k,
        nn::ConvConfig {
            ws_init: Init::Uniform { lo: -b, up: b },
            bs_init: Init::Uniform { lo: -b, up: b },
            ..cfg
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn spectral_norm_makes_the_largest_singular_value_one() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = SpectralNorm::new(
            &vs.root(),
            &[16, 8, 3, 3],
            Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        for _ in 0..50 {
            let _ = w.get(true);
        }
        let m = tch::no_grad(|| w.get(false).view([16, -1]));
        let top = m
            .mm(&m.tr())
            .linalg_eigvalsh("L")
            .max()
            .sqrt()
            .double_value(&[]);
        assert!((top - 1.0).abs() < 1e-3, "largest singular value {top}");
        // Evaluation does not move u.
        let u = w.u.copy();
        let _ = w.get(false);
        assert!(w.u.equal(&u));
    }

    #[test]
    fn pytorch_init_bounds() {
        let vs = nn::VarStore::new(Device::Cpu);
        let l = pytorch_linear(vs.root() / "l", 400, 20, true);
        let c = pytorch_conv(vs.root() / "c", 8, 4, 3, Default::default());
        for (t, fan) in [(&l.ws, 400.0), (&c.ws, 72.0)] {
            let m = t.abs().max().double_value(&[]);
            let bound = 1.0 / f64::sqrt(fan);
            assert!(m <= bound && m > 0.9 * bound, "{m} vs {bound}");
        }
        let lb = l.bs.as_ref().map(|b| b.abs().max().double_value(&[]));
        assert!(lb.is_some_and(|m| m <= 0.05 && m > 0.04));
    }
}
