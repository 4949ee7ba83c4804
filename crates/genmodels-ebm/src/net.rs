//! Energy networks: `f(x)` with one output (the negative energy) or K outputs (class logits,
//! for JEM and class-conditional energies).
//!
//! - On 2-D points: an MLP `2 -> w -> w -> w -> K` (the toy energies of both references).
//! - On images: a small convolutional net in the pattern of IGEBM's MNIST network (3x3 convs,
//!   4x4 stride-2 down-sampling, a global pool and a linear head): `C -> w` then two stages
//!   `[3x3, 4x4/2]` to `2w` and `4w` (28 -> 14 -> 7), a last 3x3, the spatial mean, `4w -> K`.
//!
//! Swish (IGEBM) or LeakyReLU 0.2 (JEM's WRN) activations, optional spectral norm on every
//! weight (IGEBM's default), PyTorch's default initialisation.

use genmodels_core::layers::SpectralNorm;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

/// Hidden activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// x * sigmoid(x) (IGEBM).
    Swish,
    /// LeakyReLU with slope 0.2 (JEM).
    LeakyRelu,
}

impl Activation {
    /// One ATen kernel each way (SiLU; leaky ReLU through core's native op): composing them
    /// from `x * sigmoid(x)` or `max(x, 0.2 x)` made a JEM step 1.5x slower than PyTorch's.
    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Swish => x.silu(),
            Activation::LeakyRelu => genmodels_core::ops::leaky_relu(x, 0.2),
        }
    }
}

enum Weight {
    Plain(Tensor),
    Spectral(SpectralNorm),
}

struct Layer {
    w: Weight,
    b: Tensor,
    /// (stride, padding) for a convolution; `None` for a linear layer.
    conv: Option<(i64, i64)>,
}

impl Layer {
    fn new(p: nn::Path, shape: &[i64], conv: Option<(i64, i64)>, spectral: bool) -> Self {
        let fan_in: i64 = shape[1..].iter().product();
        let bound = 1.0 / (fan_in as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let w = if spectral {
            Weight::Spectral(SpectralNorm::new(&p, shape, init))
        } else {
            Weight::Plain(p.var("weight", shape, init))
        };
        let b = p.var("bias", &[shape[0]], init);
        Layer { w, b, conv }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let w = match &self.w {
            Weight::Plain(w) => w.shallow_clone(),
            Weight::Spectral(s) => s.get(train),
        };
        match self.conv {
            Some((s, p)) => x.conv2d(&w, Some(&self.b), [s, s], [p, p], [1, 1], 1),
            None => x.linear(&w, Some(&self.b)),
        }
    }
}

/// `f(x)`: `[N, heads]`.
pub struct EnergyNet {
    layers: Vec<Layer>,
    act: Activation,
    image: bool,
}

impl EnergyNet {
    /// A net for examples of `shape` (`[D]` points or `[C, H, W]` images).
    pub fn new(
        p: nn::Path,
        shape: &[i64],
        width: i64,
        heads: i64,
        act: Activation,
        spectral: bool,
    ) -> Self {
        let w = width;
        let mut layers = Vec::new();
        let image = shape.len() == 3;
        if image {
            let c = shape[0];
            let plan: [(i64, i64, i64, i64, i64); 6] = [
                (c, w, 3, 1, 1),
                (w, w, 3, 1, 1),
                (w, 2 * w, 4, 2, 1),
                (2 * w, 2 * w, 3, 1, 1),
                (2 * w, 4 * w, 4, 2, 1),
                (4 * w, 4 * w, 3, 1, 1),
            ];
            for (i, (ci, co, k, s, pad)) in plan.into_iter().enumerate() {
                layers.push(Layer::new(
                    &p / format!("conv{i}"),
                    &[co, ci, k, k],
                    Some((s, pad)),
                    spectral,
                ));
            }
            layers.push(Layer::new(&p / "head", &[heads, 4 * w], None, spectral));
        } else {
            let d = shape.iter().product();
            for (i, (a, b)) in [(d, w), (w, w), (w, w)].into_iter().enumerate() {
                layers.push(Layer::new(&p / format!("fc{i}"), &[b, a], None, spectral));
            }
            layers.push(Layer::new(&p / "head", &[heads, w], None, spectral));
        }
        EnergyNet { layers, act, image }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let (last, body) = self.layers.split_last().expect("at least one layer");
        let mut h = if self.image {
            x.shallow_clone()
        } else {
            x.flatten(1, -1)
        };
        for l in body {
            h = self.act.apply(&l.forward(&h, train));
        }
        if self.image {
            h = h.mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        }
        last.forward(&h, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn the_activations_are_their_formulas() {
        let x = Tensor::linspace(-3.0, 3.0, 61, (Kind::Float, Device::Cpu));
        let leaky = Activation::LeakyRelu.apply(&x);
        assert!(leaky.allclose(&x.maximum(&(&x * 0.2)), 1e-6, 1e-7, false));
        let swish = Activation::Swish.apply(&x);
        assert!(swish.allclose(&(&x * x.sigmoid()), 1e-5, 1e-6, false));
    }
}
