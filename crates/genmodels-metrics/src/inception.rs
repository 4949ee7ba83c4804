//! The FID Inception network (TensorFlow's 2015-12-05 Inception v3 graph, as every FID
//! implementation uses it), ported natively and loaded from the converted TorchScript weights
//! (`weights/fid_inception.safetensors`, made by `cargo xtask setup`).
//!
//! It is not torchvision's Inception v3: the pooling branches of the A, C and first E blocks
//! average with `count_include_pad=False`, the second E block's pool branch is a max-pool, and
//! batch norm has no scale (eps 1e-3). Input: RGB at 299x299 scaled to `(x - 128) / 128`
//! (pytorch-fid's `2x - 1` on [0, 1] in its bilinear mode). Outputs: the 2048-d pool3 feature
//! and the 64 / 192 / 768-d taps (pytorch-fid's block outputs, spatially averaged).

use crate::resize::{resize, Resize};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Anything that maps images to feature vectors (plug in your own network).
pub trait FeatureExtractor {
    /// Feature dimension.
    fn dim(&self) -> i64;
    /// Features `[N, dim]` of images `[N, C, H, W]` with values in [0, 255].
    fn features(&self, images_0_255: &Tensor) -> Result<Tensor>;
    /// A short name for reports ("FID Inception pool3, pil-bicubic").
    fn name(&self) -> String;
    /// Features and, where the network has a classifier head, its logits (`[N, classes]`,
    /// what the Inception Score is computed from). By default no logits.
    fn features_and_logits(&self, images_0_255: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        Ok((self.features(images_0_255)?, None))
    }
    /// Whether [`FeatureExtractor::features_and_logits`] gives logits.
    fn has_logits(&self) -> bool {
        false
    }
}

/// Which outputs to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tap {
    /// After the first max-pool (64 channels).
    Block64,
    /// After the second max-pool (192 channels).
    Block192,
    /// After Mixed_6e (768 channels).
    Block768,
    /// pool3 (2048).
    Pool3,
}

/// The FID Inception with its weights.
pub struct FidInception {
    w: HashMap<String, Tensor>,
    pub resize: Resize,
    device: Device,
    /// The feature [`FidInception::features`] returns (pool3 unless chosen otherwise).
    tap: Tap,
    /// The 1008-way classifier (`fc.weight`, `fc.bias`), when the weights file has it.
    head: Option<(Tensor, Tensor)>,
}

impl Tap {
    /// The tap of a pytorch-fid `--dims` value (64, 192, 768 or 2048).
    pub fn from_dims(dims: i64) -> Result<Tap> {
        Ok(match dims {
            64 => Tap::Block64,
            192 => Tap::Block192,
            768 => Tap::Block768,
            2048 => Tap::Pool3,
            _ => {
                return Err(Error::invalid(format!(
                    "--dims {dims}: expected 64, 192, 768 or 2048 (pytorch-fid's feature layers)"
                )))
            }
        })
    }

    /// Its feature dimension.
    pub fn dims(self) -> i64 {
        match self {
            Tap::Block64 => 64,
            Tap::Block192 => 192,
            Tap::Block768 => 768,
            Tap::Pool3 => 2048,
        }
    }
}

const PREFIX: &str = "net.layers.";

impl FidInception {
    /// Loads the converted weights; every missing tensor is named in the error.
    pub fn load(path: &Path, resize: Resize, device: Device) -> Result<Self> {
        let tensors = Tensor::read_safetensors(path).map_err(|e| {
            Error::bad_data(
                path,
                format!("cannot read FID Inception weights ({e}); run `cargo xtask setup`"),
            )
        })?;
        let mut head_w = None;
        let mut head_b = None;
        let mut w = HashMap::new();
        for (k, t) in tensors {
            match k.as_str() {
                "fc.weight" => head_w = Some(t.to_device(device).to_kind(Kind::Float)),
                "fc.bias" => head_b = Some(t.to_device(device).to_kind(Kind::Float)),
                _ => {
                    if let Some(k) = k.strip_prefix(PREFIX) {
                        w.insert(k.to_string(), t.to_device(device));
                    }
                }
            }
        }
        let head = match (head_w, head_b) {
            (Some(hw), Some(hb)) => {
                if hw.size() != [1008, 2048] || hb.size() != [1008] {
                    return Err(Error::bad_data(
                        path,
                        format!(
                            "fc.weight {:?} and fc.bias {:?}: expected [1008, 2048] and [1008] (the FID Inception's classifier)",
                            hw.size(),
                            hb.size()
                        ),
                    ));
                }
                Some((hw, hb))
            }
            (None, None) => None,
            _ => {
                return Err(Error::bad_data(
                    path,
                    "has one of fc.weight and fc.bias but not the other",
                ))
            }
        };
        let me = FidInception {
            w,
            resize,
            device,
            tap: Tap::Pool3,
            head,
        };
        let missing: Vec<String> = me
            .expected_names()
            .into_iter()
            .filter(|n| !me.w.contains_key(n))
            .collect();
        if !missing.is_empty() {
            return Err(Error::bad_data(
                path,
                format!(
                    "not the FID Inception weights: missing {}",
                    missing.join(", ")
                ),
            ));
        }
        Ok(me)
    }

    /// Returns `tap`'s feature from [`FeatureExtractor::features`] (pytorch-fid's `--dims`).
    pub fn with_tap(mut self, tap: Tap) -> Self {
        self.tap = tap;
        self
    }

    /// Whether the weights carried the 1008-way classifier, so the Inception Score can be had.
    pub fn has_head(&self) -> bool {
        self.head.is_some()
    }

    /// The default asset path.
    pub fn default_path() -> std::path::PathBuf {
        genmodels_core::assets_dir()
            .join("weights")
            .join("fid_inception.safetensors")
    }

    fn expected_names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for n in [
            "conv",
            "conv_1",
            "conv_2",
            "conv_3",
            "conv_4",
            "mixed_10.tower_2_conv",
            "mixed_4.tower_1.conv_4",
        ] {
            for s in ["weight", "beta", "mean", "var"] {
                v.push(format!("{n}.{s}"));
            }
        }
        v
    }

    /// Conv + batch norm (no scale, eps 1e-3) + ReLU, with the layer's padding.
    fn conv(&self, name: &str, x: &Tensor, stride: i64, pad: [i64; 2]) -> Tensor {
        let g = |s: &str| &self.w[&format!("{name}.{s}")];
        let y = x.conv2d(
            g("weight"),
            None::<&Tensor>,
            [stride, stride],
            pad,
            [1, 1],
            1,
        );
        y.batch_norm(
            None::<&Tensor>,
            Some(g("beta")),
            Some(g("mean")),
            Some(g("var")),
            false,
            0.1,
            1e-3,
            false,
        )
        .relu()
    }

    fn avg3(x: &Tensor) -> Tensor {
        x.avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None)
    }

    fn max3s2(x: &Tensor) -> Tensor {
        x.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
    }

    fn block_a(&self, b: &str, x: &Tensor) -> Tensor {
        let c = |n: &str, x: &Tensor, p: i64| self.conv(&format!("{b}.{n}"), x, 1, [p, p]);
        let b0 = c("conv", x, 0);
        let b1 = c("tower.conv_1", &c("tower.conv", x, 0), 2);
        let b2 = c(
            "tower_1.conv_2",
            &c("tower_1.conv_1", &c("tower_1.conv", x, 0), 1),
            1,
        );
        let b3 = c("tower_2.conv", &Self::avg3(x), 0);
        Tensor::cat(&[b0, b1, b2, b3], 1)
    }

    fn block_b(&self, b: &str, x: &Tensor) -> Tensor {
        let b0 = self.conv(&format!("{b}.conv"), x, 2, [0, 0]);
        let t = self.conv(&format!("{b}.tower.conv"), x, 1, [0, 0]);
        let t = self.conv(&format!("{b}.tower.conv_1"), &t, 1, [1, 1]);
        let b1 = self.conv(&format!("{b}.tower.conv_2"), &t, 2, [0, 0]);
        Tensor::cat(&[b0, b1, Self::max3s2(x)], 1)
    }

    fn block_c(&self, b: &str, x: &Tensor) -> Tensor {
        let c = |n: &str, x: &Tensor, p: [i64; 2]| self.conv(&format!("{b}.{n}"), x, 1, p);
        let (z, h, v) = ([0, 0], [0, 3], [3, 0]); // 1x1, 1x7, 7x1
        let b0 = c("conv", x, z);
        let b1 = c(
            "tower.conv_2",
            &c("tower.conv_1", &c("tower.conv", x, z), h),
            v,
        );
        let t = c("tower_1.conv", x, z);
        let t = c("tower_1.conv_1", &t, v);
        let t = c("tower_1.conv_2", &t, h);
        let t = c("tower_1.conv_3", &t, v);
        let b2 = c("tower_1.conv_4", &t, h);
        let b3 = c("tower_2.conv", &Self::avg3(x), z);
        Tensor::cat(&[b0, b1, b2, b3], 1)
    }

    fn block_d(&self, b: &str, x: &Tensor) -> Tensor {
        let c = |n: &str, x: &Tensor, s: i64, p: [i64; 2]| self.conv(&format!("{b}.{n}"), x, s, p);
        let b0 = c("tower.conv_1", &c("tower.conv", x, 1, [0, 0]), 2, [0, 0]);
        let t = c("tower_1.conv", x, 1, [0, 0]);
        let t = c("tower_1.conv_1", &t, 1, [0, 3]);
        let t = c("tower_1.conv_2", &t, 1, [3, 0]);
        let b1 = c("tower_1.conv_3", &t, 2, [0, 0]);
        Tensor::cat(&[b0, b1, Self::max3s2(x)], 1)
    }

    fn block_e(&self, b: &str, x: &Tensor, max_pool: bool) -> Tensor {
        let c = |n: &str, x: &Tensor, p: [i64; 2]| self.conv(&format!("{b}.{n}"), x, 1, p);
        let b0 = c("conv", x, [0, 0]);
        let a = c("tower_conv", x, [0, 0]);
        let t = c("tower_1_conv_1", &c("tower_1_conv", x, [0, 0]), [1, 1]);
        let pool = if max_pool {
            x.max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false)
        } else {
            Self::avg3(x)
        };
        Tensor::cat(
            &[
                b0,
                c("tower_mixed_conv", &a, [0, 1]),
                c("tower_mixed_conv_1", &a, [1, 0]),
                c("tower_1_mixed_conv", &t, [0, 1]),
                c("tower_1_mixed_conv_1", &t, [1, 0]),
                c("tower_2_conv", &pool, [0, 0]),
            ],
            1,
        )
    }

    /// Runs the network on normalised 299x299 input and returns the requested taps, each `[N, C]`.
    pub fn forward_taps(&self, x: &Tensor, taps: &[Tap]) -> Vec<Tensor> {
        let gap = |t: &Tensor| t.mean_dim(&[2i64, 3][..], false, Kind::Float);
        let mut out: Vec<(Tap, Tensor)> = Vec::new();
        let want = |t: Tap| taps.contains(&t);
        tch::no_grad(|| {
            let x = self.conv("conv", x, 2, [0, 0]);
            let x = self.conv("conv_1", &x, 1, [0, 0]);
            let x = self.conv("conv_2", &x, 1, [1, 1]);
            let x = Self::max3s2(&x);
            if want(Tap::Block64) {
                out.push((Tap::Block64, gap(&x)));
            }
            let x = self.conv("conv_3", &x, 1, [0, 0]);
            let x = self.conv("conv_4", &x, 1, [0, 0]);
            let x = Self::max3s2(&x);
            if want(Tap::Block192) {
                out.push((Tap::Block192, gap(&x)));
            }
            if taps
                .iter()
                .all(|t| matches!(t, Tap::Block64 | Tap::Block192))
            {
                return;
            }
            let x = self.block_a("mixed", &x);
            let x = self.block_a("mixed_1", &x);
            let x = self.block_a("mixed_2", &x);
            let x = self.block_b("mixed_3", &x);
            let x = self.block_c("mixed_4", &x);
            let x = self.block_c("mixed_5", &x);
            let x = self.block_c("mixed_6", &x);
            let x = self.block_c("mixed_7", &x);
            if want(Tap::Block768) {
                out.push((Tap::Block768, gap(&x)));
            }
            if !want(Tap::Pool3) {
                return;
            }
            let x = self.block_d("mixed_8", &x);
            let x = self.block_e("mixed_9", &x, false);
            let x = self.block_e("mixed_10", &x, true);
            let x = x.avg_pool2d([8, 8], [8, 8], [0, 0], false, true, None);
            out.push((Tap::Pool3, x.flatten(1, -1)));
        });
        taps.iter()
            .filter_map(|t| {
                out.iter()
                    .find(|(k, _)| k == t)
                    .map(|(_, v)| v.shallow_clone())
            })
            .collect()
    }

    /// Images `[N, 1 or 3, H, W]` in [0, 255] -> resized, normalised network input.
    pub fn preprocess(&self, images_0_255: &Tensor) -> Result<Tensor> {
        let s = images_0_255.size();
        let x = match s.as_slice() {
            [_, 3, _, _] => images_0_255.to_device(self.device).to_kind(Kind::Float),
            [_, 1, _, _] => images_0_255
                .to_device(self.device)
                .to_kind(Kind::Float)
                .repeat([1, 3, 1, 1]),
            _ => {
                return Err(Error::invalid(format!(
                    "FID Inception expects images [N, 1 or 3, H, W], got {s:?}"
                )))
            }
        };
        let x = resize(&x, 299, 299, self.resize)?;
        Ok(match self.resize {
            // pytorch-fid: [0, 1] input, then 2x - 1
            Resize::PytorchBilinear => x / 127.5 - 1.0,
            _ => (x - 128.0) / 128.0,
        })
    }
}

impl FeatureExtractor for FidInception {
    fn dim(&self) -> i64 {
        self.tap.dims()
    }
    fn features(&self, images_0_255: &Tensor) -> Result<Tensor> {
        let x = self.preprocess(images_0_255)?;
        Ok(self.forward_taps(&x, &[self.tap]).remove(0))
    }
    /// With the classifier: torch-fidelity's `logits_unbiased` (pool3 times `fc.weight`
    /// transposed, no bias), which its Inception Score uses.
    fn features_and_logits(&self, images_0_255: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let Some((hw, _)) = &self.head else {
            return Ok((self.features(images_0_255)?, None));
        };
        let x = self.preprocess(images_0_255)?;
        let mut taps = vec![self.tap];
        if self.tap != Tap::Pool3 {
            taps.push(Tap::Pool3);
        }
        let mut out = self.forward_taps(&x, &taps);
        let pool3 = out.pop().ok_or_else(|| Error::invalid("no pool3 output"))?;
        let logits = tch::no_grad(|| pool3.mm(&hw.tr()));
        let feats = if self.tap == Tap::Pool3 {
            pool3
        } else {
            out.remove(0)
        };
        Ok((feats, Some(logits)))
    }
    fn has_logits(&self) -> bool {
        self.head.is_some()
    }
    fn name(&self) -> String {
        format!(
            "FID Inception (TF 2015-12-05) {}, {} resize",
            match self.tap {
                Tap::Pool3 => "pool3".to_string(),
                t => format!("{}-d block", t.dims()),
            },
            self.resize.name()
        )
    }
}

/// [-1, 1] images (as models produce them) to [0, 255], quantised to whole values as saving them
/// to PNG would (clean-fid's convention for generator output).
pub fn unit_to_0_255(x: &Tensor) -> Tensor {
    ((x.to_kind(Kind::Float) + 1.0) * 127.5)
        .round()
        .clamp(0.0, 255.0)
}
