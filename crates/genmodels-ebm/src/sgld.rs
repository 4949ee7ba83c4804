//! Short-run stochastic gradient Langevin dynamics (Welling & Teh 2011) as energy-based models
//! train with it: a fixed number of steps
//!
//! `x <- x - step_size * clip(grad E(x)) + noise * N(0, I)`, then clamped to the data range,
//!
//! with the step size and the noise set separately, as both reference codes do (exact Langevin
//! dynamics would tie them, `noise = sqrt(2 step_size)`; [`langevin`] gives that form). IGEBM
//! (`openai/ebm_code_release`) adds its noise before the gradient step and clips the gradient
//! elementwise (`proj_norm`); JEM (`wgrathwohl/JEM`) adds it after, without clipping.

use genmodels_core::model::check::Check;
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// One chain's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SgldConfig {
    /// Steps per chain.
    pub steps: usize,
    /// Multiplier of the (clipped) energy gradient.
    pub step_size: f64,
    /// Standard deviation of the Gaussian noise added each step.
    pub noise: f64,
    /// Elementwise clip of the gradient, `[-grad_clip, grad_clip]` (IGEBM's `proj_norm`; 0: none).
    pub grad_clip: f64,
    /// Noise before the gradient step (IGEBM) instead of after it (JEM).
    pub noise_first: bool,
    /// Clamp the chain to the data range [-1, 1] after every step (IGEBM clips to its range).
    pub clamp: bool,
}

impl Default for SgldConfig {
    /// JEM's chain (`train_wrn_ebm.py`): 20 steps, step 1, noise 0.01, no clipping.
    fn default() -> Self {
        SgldConfig {
            steps: 20,
            step_size: 1.0,
            noise: 0.01,
            grad_clip: 0.0,
            noise_first: false,
            clamp: false,
        }
    }
}

impl SgldConfig {
    /// IGEBM's chain (its CIFAR-10 command: 60 steps, `step_lr` 10, `proj_norm` 0.01, noise
    /// 0.005, clipped to [0, 1]) on our [-1, 1] scale: with x' = 2x - 1 a step of
    /// `-10 clip(dE/dx, 0.01)` is `-40 clip(dE/dx', 0.005)` and the noise is 0.01.
    pub fn igebm() -> Self {
        SgldConfig {
            steps: 60,
            step_size: 40.0,
            noise: 0.01,
            grad_clip: 0.005,
            noise_first: true,
            clamp: true,
        }
    }

    pub fn validate(&self, c: &Check, prefix: &str) -> Result<()> {
        let k = |s: &str| format!("{prefix}{s}");
        c.int(&k("steps"), self.steps, 0, 100_000)?;
        c.non_negative(&k("step_size"), self.step_size)?;
        c.non_negative(&k("noise"), self.noise)?;
        c.non_negative(&k("grad_clip"), self.grad_clip)
    }

    /// One step from `x` (detached in, detached out); also the mean per-example L2 norm of
    /// the energy gradient (before clipping), the monitor of a chain's stability.
    pub fn step(&self, x: &Tensor, energy: &dyn Fn(&Tensor) -> Tensor) -> (Tensor, f64) {
        let mut x = x.detach();
        if self.noise_first && self.noise > 0.0 {
            x = &x + Tensor::randn_like(&x) * self.noise;
        }
        let xg = x.set_requires_grad(true);
        let e = energy(&xg).sum(Kind::Float);
        let g = Tensor::run_backward(&[e], &[&xg], false, false).remove(0);
        let norm = g
            .flatten(1, -1)
            .norm_scalaropt_dim(2, [1], false)
            .mean(Kind::Float)
            .double_value(&[]);
        let g = if self.grad_clip > 0.0 {
            g.clamp(-self.grad_clip, self.grad_clip)
        } else {
            g
        };
        let mut y = xg.detach() - g * self.step_size;
        if !self.noise_first && self.noise > 0.0 {
            y = &y + Tensor::randn_like(&y) * self.noise;
        }
        if self.clamp {
            y = y.clamp(-1.0, 1.0);
        }
        (y.detach(), norm)
    }

    /// A whole chain from `x0`: its end and the mean gradient norm over its steps. A chain
    /// that leaves the finite numbers is an error naming the step.
    pub fn run(&self, x0: &Tensor, energy: &dyn Fn(&Tensor) -> Tensor) -> Result<(Tensor, f64)> {
        let (mut frames, norm) = self.run_frames(x0, None, 1, energy)?;
        Ok((frames.remove(0), norm))
    }

    /// A chain from `x0` that moves only where `mask` (shaped as `x0`) is 1 and keeps `x0`
    /// where it is 0 (inpainting: the known pixels stay), recorded at `frames` evenly spaced
    /// steps, the last frame the chain's end (frame `k` of `F` after `round(k S / F)` of the
    /// `S` steps; with no steps every frame is `x0`). Also the mean gradient norm over its
    /// steps, taken over the whole input.
    pub fn run_frames(
        &self,
        x0: &Tensor,
        mask: Option<&Tensor>,
        frames: usize,
        energy: &dyn Fn(&Tensor) -> Tensor,
    ) -> Result<(Vec<Tensor>, f64)> {
        if let Some(m) = mask {
            if m.size() != x0.size() {
                return Err(Error::invalid(format!(
                    "SGLD mask of shape {:?} for a chain of shape {:?}",
                    m.size(),
                    x0.size()
                )));
            }
        }
        let frames = frames.max(1);
        let at: Vec<usize> = (1..=frames)
            .map(|k| ((k * self.steps) as f64 / frames as f64).round() as usize)
            .collect();
        tch::with_grad(|| {
            let x0 = x0.detach();
            let keep = mask.map(|m| (m.detach().to_kind(x0.kind()), x0.shallow_clone()));
            let mut x = x0.shallow_clone();
            let mut norms = 0.0;
            let mut out = Vec::with_capacity(frames);
            out.extend(at.iter().take_while(|&&s| s == 0).map(|_| x.copy()));
            for i in 0..self.steps {
                let (mut y, n) = self.step(&x, energy);
                if !n.is_finite() {
                    return Err(Error::invalid(format!(
                        "SGLD diverged at chain step {i} of {}: the energy gradient norm is {n} \
                         (lower step_size, or set grad_clip / clamp)",
                        self.steps
                    )));
                }
                if let Some((m, known)) = &keep {
                    y = &y * m + known * (1.0 - m);
                }
                norms += n;
                x = y;
                out.extend(at.iter().filter(|&&s| s == i + 1).map(|_| x.copy()));
            }
            Ok((out, norms / self.steps.max(1) as f64))
        })
    }
}

/// Unadjusted Langevin dynamics with step `eps`: `x - eps/2 grad E(x) + sqrt(eps) N(0, I)`,
/// which samples exp(-E) as eps -> 0.
pub fn langevin(eps: f64, steps: usize) -> SgldConfig {
    SgldConfig {
        steps,
        step_size: eps / 2.0,
        noise: eps.sqrt(),
        grad_clip: 0.0,
        noise_first: false,
        clamp: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn one_step_follows_its_formula() {
        let _rng = crate::test_lock();
        // E(x) = sum x^3 / 3 has gradient x^2.
        let x = Tensor::from_slice(&[0.5f32, -0.2, 0.1, 0.3]).reshape([2, 2]);
        let energy = |x: &Tensor| {
            x.pow_tensor_scalar(3)
                .sum_dim_intlist(1, false, Kind::Float)
                / 3.0
        };
        for noise_first in [false, true] {
            let cfg = SgldConfig {
                steps: 1,
                step_size: 0.7,
                noise: 0.05,
                grad_clip: 0.1,
                noise_first,
                clamp: true,
            };
            tch::manual_seed(3);
            let (y, norm) = cfg.step(&x, &energy);
            tch::manual_seed(3);
            let n = Tensor::randn([2, 2], (Kind::Float, Device::Cpu)) * 0.05;
            let at = if noise_first {
                &x + &n
            } else {
                x.shallow_clone()
            };
            let g = at.square();
            let mut want = &at - g.clamp(-0.1, 0.1) * 0.7;
            if !noise_first {
                want += &n;
            }
            let want = want.clamp(-1.0, 1.0);
            assert!(y.allclose(&want, 1e-6, 1e-7, false), "{y} vs {want}");
            let gn = g
                .norm_scalaropt_dim(2, [1], false)
                .mean(Kind::Float)
                .double_value(&[]);
            assert!((norm - gn).abs() < 1e-6);
        }
    }

    #[test]
    fn langevin_samples_a_gaussian() {
        let _rng = crate::test_lock();
        tch::manual_seed(0);
        // E(x) = x^2 / 2 is N(0, 1); Langevin with a small step gets there from 3.
        let x0 = Tensor::full([4000, 1], 3.0, (Kind::Float, Device::Cpu));
        let (x, _) = langevin(0.05, 400)
            .run(&x0, &|x| {
                x.square().sum_dim_intlist(1, false, Kind::Float) * 0.5
            })
            .unwrap();
        let (m, s) = (
            x.mean(Kind::Float).double_value(&[]),
            x.std(true).double_value(&[]),
        );
        assert!(m.abs() < 0.08 && (s - 1.0).abs() < 0.08, "mean {m} std {s}");
    }

    #[test]
    fn a_masked_chain_keeps_the_known_elements_and_records_its_frames() {
        let _rng = crate::test_lock();
        tch::manual_seed(1);
        let cfg = SgldConfig {
            steps: 10,
            step_size: 0.1,
            noise: 0.01,
            ..Default::default()
        };
        let energy = |x: &Tensor| x.square().sum_dim_intlist(1, false, Kind::Float) * 0.5;
        let x0 = Tensor::full([3, 4], 2.0, (Kind::Float, Device::Cpu));
        let mask = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0])
            .unsqueeze(0)
            .expand([3, 4], false)
            .contiguous();
        let (frames, _) = cfg.run_frames(&x0, Some(&mask), 5, &energy).unwrap();
        assert_eq!(frames.len(), 5);
        for f in &frames {
            // the kept columns never move
            assert!(f.select(1, 1).eq(2.0).all().int64_value(&[]) == 1);
            assert!(f.select(1, 3).eq(2.0).all().int64_value(&[]) == 1);
        }
        // the free ones descend x^2 / 2 (x <- 0.9 x + noise): 2 * 0.9^2 after 2 steps, 0.9^10 at the end
        let free = |f: &Tensor| f.select(1, 0).mean(Kind::Float).double_value(&[]);
        assert!(
            (free(&frames[0]) - 2.0 * 0.81).abs() < 0.03,
            "{}",
            free(&frames[0])
        );
        assert!((free(&frames[4]) - 2.0 * 0.9f64.powi(10)).abs() < 0.03);
        // unmasked, the same seed gives the same chain as `run`
        tch::manual_seed(2);
        let (end, _) = cfg.run(&x0, &energy).unwrap();
        tch::manual_seed(2);
        let (frames, _) = cfg.run_frames(&x0, None, 3, &energy).unwrap();
        assert!(frames[2].equal(&end));
        let bad = Tensor::ones([3, 3], (Kind::Float, Device::Cpu));
        let e = cfg.run_frames(&x0, Some(&bad), 1, &energy).unwrap_err();
        assert!(e.to_string().contains("mask of shape [3, 3]"), "{e}");
    }

    #[test]
    fn a_diverging_chain_is_an_error_naming_the_step() {
        let _rng = crate::test_lock();
        let cfg = SgldConfig {
            steps: 50,
            step_size: 10.0,
            noise: 0.0,
            ..Default::default()
        };
        // E = x^4 with a large step explodes.
        let x0 = Tensor::full([2, 1], 2.0, (Kind::Float, Device::Cpu));
        let err = cfg
            .run(&x0, &|x| {
                x.pow_tensor_scalar(4)
                    .sum_dim_intlist(1, false, Kind::Float)
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("SGLD diverged at chain step"), "{err}");
    }
}
