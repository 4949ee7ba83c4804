//! The layers and blocks of diffusers' `UNet2DModel`, one struct per diffusers module, with
//! diffusers' parameter names (`norm1`, `conv1`, `time_emb_proj`, `to_q`, `to_out.0`, ...).
//!
//! Sources (diffusers 0.42.1): `models/resnet.py` (`ResnetBlock2D`), `models/downsampling.py`
//! (`Downsample2D`), `models/upsampling.py` (`Upsample2D`), `models/attention_processor.py`
//! (`Attention` with `AttnProcessor2_0`), `models/embeddings.py` (`Timesteps`,
//! `TimestepEmbedding`, `GaussianFourierProjection`), `models/unets/unet_2d_blocks.py`
//! (`DownBlock2D`, `AttnDownBlock2D`, `UNetMidBlock2D`, `UpBlock2D`, `AttnUpBlock2D`).
//!
//! Parameters are initialised as PyTorch's layers are (what diffusers uses): convolution and
//! linear weights and biases uniform in +-1/sqrt(fan_in), embeddings N(0, 1), group-norm scales
//! 1 and shifts 0.

use super::Activation;
use genmodels_core::{Error, Result};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// `nn.Conv2d(in, out, k, stride, padding)` with PyTorch's initialisation.
pub(crate) fn conv2d(
    p: nn::Path,
    cin: i64,
    cout: i64,
    k: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let bound = 1.0 / ((cin * k * k) as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::conv2d(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding,
            ws_init: init,
            bs_init: init,
            ..Default::default()
        },
    )
}

/// `nn.Linear(in, out)` with PyTorch's initialisation.
pub(crate) fn linear(p: nn::Path, cin: i64, cout: i64) -> nn::Linear {
    let bound = 1.0 / (cin as f64).sqrt();
    nn::linear(
        p,
        cin,
        cout,
        nn::LinearConfig {
            ws_init: nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            bs_init: Some(nn::Init::Uniform {
                lo: -bound,
                up: bound,
            }),
            bias: true,
        },
    )
}

/// `nn.Embedding(n, d)` (weights N(0, 1), as PyTorch's).
pub(crate) fn embedding(p: nn::Path, n: i64, d: i64) -> nn::Embedding {
    nn::embedding(p, n, d, Default::default())
}

/// `nn.GroupNorm(groups, channels, eps)`, refusing a group count that does not divide the
/// channels (libtorch would fail only at the first forward pass).
pub(crate) fn group_norm(
    p: nn::Path,
    groups: i64,
    channels: i64,
    eps: f64,
) -> Result<nn::GroupNorm> {
    if groups < 1 || channels % groups != 0 {
        return Err(Error::invalid(format!(
            "unet2d config: {groups} groups do not divide the {channels} channels of the group norm `{}`",
            p.components().collect::<Vec<_>>().join(".")
        )));
    }
    Ok(nn::group_norm(
        p,
        groups,
        channels,
        nn::GroupNormConfig {
            eps,
            ..Default::default()
        },
    ))
}

impl Activation {
    /// The activation applied to `x` (diffusers' `get_activation`).
    pub(crate) fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Silu => x.silu(),
            Activation::Mish => x.mish(),
            Activation::Gelu => x.gelu("none"),
            Activation::Relu => x.relu(),
        }
    }
}

/// Nearest-neighbour upsampling by 2 (`F.interpolate(scale_factor=2.0)`), or to `size` when
/// given (`F.interpolate(size=...)`, as `Upsample2D(output_size=...)`). The two agree where
/// `size` is twice the input.
pub(crate) fn upsample_nearest(x: &Tensor, size: Option<[i64; 2]>) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    match size {
        Some(s) if s != [2 * h, 2 * w] => x.upsample_nearest2d(s, None, None),
        _ => x.upsample_nearest2d([2 * h, 2 * w], 2.0, 2.0),
    }
}

/// Resampling inside a ResNet block (`ResnetBlock2D(up=True)` / `down=True`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resample {
    None,
    /// Nearest-neighbour upsampling of the input and of the normalised map.
    Up,
    /// 2x2 average pooling of both.
    Down,
}

/// `ResnetBlock2D` (pre-norm, time-conditioned; optionally resampling inside, as with
/// `downsample_type`/`upsample_type = "resnet"`).
#[derive(Debug)]
pub(crate) struct ResnetBlock {
    norm1: nn::GroupNorm,
    conv1: nn::Conv2D,
    time_emb_proj: nn::Linear,
    norm2: nn::GroupNorm,
    conv2: nn::Conv2D,
    conv_shortcut: Option<nn::Conv2D>,
    act: Activation,
    scale_shift: bool,
    dropout: f64,
    output_scale_factor: f64,
    resample: Resample,
}

/// What every ResNet block of one U-Net shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResnetSettings {
    pub temb: i64,
    pub groups: i64,
    pub eps: f64,
    pub act: Activation,
    pub scale_shift: bool,
    pub dropout: f64,
}

impl ResnetBlock {
    pub(crate) fn new(
        p: nn::Path,
        cin: i64,
        cout: i64,
        s: &ResnetSettings,
        output_scale_factor: f64,
        resample: Resample,
    ) -> Result<Self> {
        let proj_out = if s.scale_shift { 2 * cout } else { cout };
        Ok(ResnetBlock {
            norm1: group_norm(&p / "norm1", s.groups, cin, s.eps)?,
            conv1: conv2d(&p / "conv1", cin, cout, 3, 1, 1),
            time_emb_proj: linear(&p / "time_emb_proj", s.temb, proj_out),
            norm2: group_norm(&p / "norm2", s.groups, cout, s.eps)?,
            conv2: conv2d(&p / "conv2", cout, cout, 3, 1, 1),
            conv_shortcut: (cin != cout).then(|| conv2d(&p / "conv_shortcut", cin, cout, 1, 1, 0)),
            act: s.act,
            scale_shift: s.scale_shift,
            dropout: s.dropout,
            output_scale_factor,
            resample,
        })
    }

    /// `x` `[N, cin, H, W]`, `temb` `[N, temb]`; `up_size` is the output size of an upsampling
    /// block (twice the input when `None`).
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        temb: &Tensor,
        train: bool,
        up_size: Option<[i64; 2]>,
    ) -> Tensor {
        let mut input = x.shallow_clone();
        let mut h = self.act.apply(&self.norm1.forward(x));
        match self.resample {
            Resample::None => {}
            Resample::Up => {
                input = upsample_nearest(&input, up_size);
                h = upsample_nearest(&h, up_size);
            }
            Resample::Down => {
                input = avg_pool2(&input);
                h = avg_pool2(&h);
            }
        }
        let h = self.conv1.forward(&h);
        let t = self
            .time_emb_proj
            .forward(&self.act.apply(temb))
            .unsqueeze(-1)
            .unsqueeze(-1);
        let h = if self.scale_shift {
            let st = t.chunk(2, 1);
            self.norm2.forward(&h) * (&st[0] + 1.0) + &st[1]
        } else {
            self.norm2.forward(&(h + t))
        };
        let h = self.act.apply(&h).dropout(self.dropout, train);
        let h = self.conv2.forward(&h);
        let input = match &self.conv_shortcut {
            Some(c) => c.forward(&input),
            None => input,
        };
        (input + h) / self.output_scale_factor
    }
}

/// `nn.AvgPool2d(2, 2)` (`Downsample2D(use_conv=False)`).
fn avg_pool2(x: &Tensor) -> Tensor {
    x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None)
}

/// `Downsample2D(use_conv=True, padding)`: a stride-2 3x3 convolution; with `padding = 0`
/// the input is first padded by one on the right and bottom (diffusers' `F.pad(x, (0, 1, 0, 1))`).
#[derive(Debug)]
pub(crate) struct Downsample {
    conv: nn::Conv2D,
    pub(crate) padding: i64,
}

impl Downsample {
    pub(crate) fn new(p: nn::Path, channels: i64, padding: i64) -> Self {
        Downsample {
            conv: conv2d(&p / "conv", channels, channels, 3, 2, padding),
            padding,
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        if self.padding == 0 {
            self.conv.forward(&x.constant_pad_nd([0, 1, 0, 1]))
        } else {
            self.conv.forward(x)
        }
    }
}

/// `Upsample2D(use_conv=True)`: nearest-neighbour upsampling then a 3x3 convolution.
#[derive(Debug)]
pub(crate) struct Upsample {
    conv: nn::Conv2D,
}

impl Upsample {
    pub(crate) fn new(p: nn::Path, channels: i64) -> Self {
        Upsample {
            conv: conv2d(&p / "conv", channels, channels, 3, 1, 1),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor, size: Option<[i64; 2]>) -> Tensor {
        self.conv.forward(&upsample_nearest(x, size))
    }
}

/// diffusers' spatial self-attention (`Attention(..., residual_connection=True, bias=True,
/// _from_deprecated_attn_block=True)` run by `AttnProcessor2_0`): optional group norm, q/k/v
/// projections of the `H*W` tokens, scaled dot-product attention with `heads` heads of
/// `dim_head`, output projection, residual, division by `rescale_output_factor`.
#[derive(Debug)]
pub(crate) struct Attention {
    group_norm: Option<nn::GroupNorm>,
    to_q: nn::Linear,
    to_k: nn::Linear,
    to_v: nn::Linear,
    to_out: nn::Linear,
    heads: i64,
    rescale_output_factor: f64,
}

impl Attention {
    /// `heads = channels / dim_head` (floor, as diffusers), `groups = None`: no group norm.
    pub(crate) fn new(
        p: nn::Path,
        channels: i64,
        dim_head: i64,
        groups: Option<i64>,
        eps: f64,
        rescale_output_factor: f64,
    ) -> Result<Self> {
        let heads = channels / dim_head;
        let inner = heads * dim_head;
        let group_norm = match groups {
            Some(g) => Some(group_norm(&p / "group_norm", g, channels, eps)?),
            None => None,
        };
        Ok(Attention {
            group_norm,
            to_q: linear(&p / "to_q", channels, inner),
            to_k: linear(&p / "to_k", channels, inner),
            to_v: linear(&p / "to_v", channels, inner),
            to_out: linear(&p / "to_out" / 0, inner, channels),
            heads,
            rescale_output_factor,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let (n, c, h, w) = match x.size()[..] {
            [n, c, h, w] => (n, c, h, w),
            _ => return x.shallow_clone(),
        };
        let hs = match &self.group_norm {
            Some(g) => g.forward(x),
            None => x.shallow_clone(),
        };
        let tokens = hs.view([n, c, h * w]).transpose(1, 2);
        let split = |t: Tensor| {
            t.view([n, -1, self.heads, t.size()[2] / self.heads])
                .transpose(1, 2)
        };
        let q = split(self.to_q.forward(&tokens));
        let k = split(self.to_k.forward(&tokens));
        let v = split(self.to_v.forward(&tokens));
        let a = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let a = a.transpose(1, 2).reshape([n, h * w, -1]);
        let out = self
            .to_out
            .forward(&a)
            .transpose(-1, -2)
            .reshape([n, c, h, w]);
        (out + x) / self.rescale_output_factor
    }
}

/// `Timesteps` (sinusoidal, Vaswani et al. 2017 Sec. 3.5 as in DDPM), `GaussianFourierProjection`
/// (`log=True`, scale 16, sin before cos) or a learned table (`nn.Embedding(num_train_timesteps, C)`).
#[derive(Debug)]
pub(crate) enum TimeProj {
    Positional {
        dim: i64,
        flip_sin_to_cos: bool,
        shift: f64,
    },
    Fourier {
        weight: Tensor,
    },
    Learned(nn::Embedding),
}

impl TimeProj {
    /// Embeddings `[N, D]` (float32) of timesteps `[N]`.
    pub(crate) fn forward(&self, t: &Tensor) -> Tensor {
        match self {
            TimeProj::Positional {
                dim,
                flip_sin_to_cos,
                shift,
            } => timestep_embedding(t, *dim, *flip_sin_to_cos, *shift),
            TimeProj::Fourier { weight } => {
                let x = t.to_kind(weight.kind()).log();
                let proj = x.unsqueeze(1) * weight.unsqueeze(0) * 2.0 * std::f64::consts::PI;
                Tensor::cat(&[proj.sin(), proj.cos()], -1)
            }
            TimeProj::Learned(e) => e.forward(&t.to_kind(Kind::Int64)),
        }
    }
}

/// diffusers' `get_timestep_embedding` (max period 10000, scale 1), computed as it does in
/// float32: frequencies `exp(-ln(10000) * i / (half - shift))`, `[sin, cos]` (or `[cos, sin]`
/// with `flip_sin_to_cos`), zero-padded to an odd `dim`.
pub(crate) fn timestep_embedding(
    t: &Tensor,
    dim: i64,
    flip_sin_to_cos: bool,
    shift: f64,
) -> Tensor {
    let half = dim / 2;
    let exponent = Tensor::arange(half, (Kind::Float, t.device())) * (-(10000f64).ln());
    let exponent = exponent / (half as f64 - shift);
    let freqs = exponent.exp();
    let args = t.to_kind(Kind::Float).unsqueeze(1) * freqs.unsqueeze(0);
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[args.cos(), args.sin()], -1)
    } else {
        Tensor::cat(&[args.sin(), args.cos()], -1)
    };
    if dim % 2 == 1 {
        emb.constant_pad_nd([0, 1, 0, 0])
    } else {
        emb
    }
}

/// `TimestepEmbedding`: `linear_1`, SiLU, `linear_2`.
#[derive(Debug)]
pub(crate) struct TimestepEmbedding {
    linear_1: nn::Linear,
    linear_2: nn::Linear,
}

impl TimestepEmbedding {
    pub(crate) fn new(p: nn::Path, cin: i64, dim: i64) -> Self {
        TimestepEmbedding {
            linear_1: linear(&p / "linear_1", cin, dim),
            linear_2: linear(&p / "linear_2", dim, dim),
        }
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        self.linear_2.forward(&self.linear_1.forward(x).silu())
    }
}

/// How a down block ends.
#[derive(Debug)]
pub(crate) enum Downsampler {
    Conv(Downsample),
    Resnet(Box<ResnetBlock>),
}

/// `DownBlock2D` (no attentions) or `AttnDownBlock2D` (one attention after each ResNet).
#[derive(Debug)]
pub(crate) struct DownBlock {
    pub(crate) resnets: Vec<ResnetBlock>,
    pub(crate) attentions: Vec<Attention>,
    pub(crate) downsampler: Option<Downsampler>,
}

impl DownBlock {
    /// The output and the states kept for the skip connections (each ResNet's or attention's
    /// output, then the downsampled map).
    pub(crate) fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> (Tensor, Vec<Tensor>) {
        let mut h = x.shallow_clone();
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, r) in self.resnets.iter().enumerate() {
            h = r.forward(&h, temb, train, None);
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h);
            }
            states.push(h.shallow_clone());
        }
        if let Some(d) = &self.downsampler {
            h = match d {
                Downsampler::Conv(c) => c.forward(&h),
                Downsampler::Resnet(r) => r.forward(&h, temb, train, None),
            };
            states.push(h.shallow_clone());
        }
        (h, states)
    }
}

/// How an up block ends.
#[derive(Debug)]
pub(crate) enum Upsampler {
    Conv(Upsample),
    Resnet(Box<ResnetBlock>),
}

/// `UpBlock2D` or `AttnUpBlock2D`: each ResNet takes the running map concatenated with one
/// skip state (the last one first).
#[derive(Debug)]
pub(crate) struct UpBlock {
    pub(crate) resnets: Vec<ResnetBlock>,
    pub(crate) attentions: Vec<Attention>,
    pub(crate) upsampler: Option<Upsampler>,
}

impl UpBlock {
    /// `skips` in the order the down path made them (consumed from the end); `up_size` is the
    /// size of the skip the next block meets.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        train: bool,
        up_size: Option<[i64; 2]>,
    ) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, (r, s)) in self.resnets.iter().zip(skips.iter().rev()).enumerate() {
            h = r.forward(&Tensor::cat(&[&h, s], 1), temb, train, None);
            if let Some(a) = self.attentions.get(i) {
                h = a.forward(&h);
            }
        }
        match &self.upsampler {
            Some(Upsampler::Conv(u)) => u.forward(&h, up_size),
            Some(Upsampler::Resnet(r)) => r.forward(&h, temb, train, up_size),
            None => h,
        }
    }
}

/// `UNetMidBlock2D` with one layer: ResNet, (attention), ResNet.
#[derive(Debug)]
pub(crate) struct MidBlock {
    pub(crate) resnets: Vec<ResnetBlock>,
    pub(crate) attention: Option<Attention>,
}

impl MidBlock {
    pub(crate) fn forward(&self, x: &Tensor, temb: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, r) in self.resnets.iter().enumerate() {
            if i > 0 {
                if let Some(a) = &self.attention {
                    h = a.forward(&h);
                }
            }
            h = r.forward(&h, temb, train, None);
        }
        h
    }
}
