//! diffusers' `UNet2DModel` (the DDPM U-Net of Ho et al. 2020, App. B, as diffusers builds it),
//! natively on `tch`, with diffusers' parameter names so that a diffusers folder
//! (`config.json` + `diffusion_pytorch_model.safetensors`) loads by name and gives the same
//! outputs (tests/unet_parity.rs, fixtures made by scripts/make_unet_fixtures.py).
//!
//! Structure (`models/unets/unet_2d.py`): `conv_in`; a time embedding (`time_proj` then
//! `time_embedding`, plus an optional `class_embedding`); down blocks of ResNet blocks (with
//! self-attention in `AttnDownBlock2D`) each ending in a stride-2 downsampler except the last;
//! a mid block (ResNet, attention, ResNet); up blocks of `layers_per_block + 1` ResNet blocks
//! that each take one skip state, ending in an upsampler except the last; then
//! `conv_norm_out`, SiLU, `conv_out`.
//!
//! One deliberate difference: diffusers' `UNet2DModel` always upsamples by 2, so a side that
//! does not halve evenly down the path (7 -> 4 -> 8 against a 7x7 skip) raises there; here each
//! upsampler then outputs the size of the skip it meets next, as `UNet2DConditionModel` does
//! (`forward_upsample_size`). Where diffusers runs, the two are the same computation.
//!
//! ```no_run
//! # fn main() -> genmodels_core::Result<()> {
//! use genmodels_diffusion::unet::UNet2D;
//! use tch::{Device, Kind, Tensor};
//! let (unet, _vs) = UNet2D::from_diffusers_folder("ddpm-cifar10/unet", Device::Cpu)?;
//! let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let t = Tensor::from_slice(&[10i64, 500]);
//! let eps = tch::no_grad(|| unet.forward(&x, &t, None, false))?;
//! # let _ = eps;
//! # Ok(())
//! # }
//! ```

mod blocks;

use blocks::{
    Attention, DownBlock, Downsample, Downsampler, MidBlock, Resample, ResnetBlock, ResnetSettings,
    TimeProj, TimestepEmbedding, UpBlock, Upsample, Upsampler,
};
use genmodels_core::checkpoint::read_safetensors;
use genmodels_core::model::check::{Check, MAX_LAYER_WEIGHTS, MAX_SIDE, MAX_WIDTH};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The model's name in config errors.
const NAME: &str = "unet2d";
/// The config file of a diffusers model folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights file of a diffusers model folder.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";
/// The diffusers class this module ports (`_class_name` of its folders).
pub const DIFFUSERS_CLASS: &str = "UNet2DModel";
/// The diffusers version written into saved folders (the version the parity fixtures pin).
pub const DIFFUSERS_VERSION: &str = "0.42.1";

/// `sample_size`: one side or `[height, width]` (recorded only; the network takes any size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// A square side.
    Square(i64),
    /// `[height, width]`.
    Rect([i64; 2]),
}

/// `time_embedding_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeEmbeddingType {
    /// Sinusoidal embedding of the timestep (`Timesteps`).
    #[default]
    Positional,
    /// Random Fourier features of log(sigma), scale 16 (`GaussianFourierProjection`); the
    /// output is divided by sigma (score-SDE parameterisation).
    Fourier,
    /// A learned table of `num_train_timesteps` rows.
    Learned,
}

/// An entry of `down_block_types` (diffusers also accepts the `UNetRes` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    /// `DownBlock2D`: ResNet blocks only.
    #[serde(rename = "DownBlock2D", alias = "UNetResDownBlock2D")]
    Plain,
    /// `AttnDownBlock2D`: a self-attention after each ResNet block.
    #[serde(rename = "AttnDownBlock2D", alias = "UNetResAttnDownBlock2D")]
    Attn,
}

/// An entry of `up_block_types` (diffusers also accepts the `UNetRes` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    /// `UpBlock2D`: ResNet blocks only.
    #[serde(rename = "UpBlock2D", alias = "UNetResUpBlock2D")]
    Plain,
    /// `AttnUpBlock2D`: a self-attention after each ResNet block.
    #[serde(rename = "AttnUpBlock2D", alias = "UNetResAttnUpBlock2D")]
    Attn,
}

/// `mid_block_type` (`null`: no mid block).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MidBlockType {
    /// `UNetMidBlock2D`: ResNet, attention (unless `add_attention` is false), ResNet.
    #[serde(rename = "UNetMidBlock2D")]
    UNetMidBlock2D,
}

/// `downsample_type` / `upsample_type` of the attention blocks (`DownBlock2D` and `UpBlock2D`
/// always use a convolution, as in diffusers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResampleType {
    /// A (stride-2) 3x3 convolution.
    #[default]
    Conv,
    /// A ResNet block that average-pools or nearest-upsamples inside.
    Resnet,
}

/// `act_fn`, the ResNet blocks' activation (the time MLP and the output use SiLU regardless).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// SiLU (`swish` is the same).
    #[default]
    #[serde(alias = "swish")]
    Silu,
    /// Mish.
    Mish,
    /// GELU (exact).
    Gelu,
    /// ReLU.
    Relu,
}

/// `resnet_time_scale_shift`: how the time embedding enters a ResNet block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeScaleShift {
    /// Added before the second group norm.
    #[default]
    Default,
    /// `norm2(h) * (1 + scale) + shift` (FiLM, Nichol & Dhariwal 2021 "AdaGN").
    ScaleShift,
}

/// `class_embed_type` (`null` with `num_class_embeds` set: a learned table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassEmbedType {
    /// Class labels through the time projection and their own `TimestepEmbedding`.
    Timestep,
    /// Class labels are `[N, time_embed_dim]` vectors added as they are.
    Identity,
}

/// `null` read as the type's default (diffusers treats `downsample_type: null` as `conv`).
fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `UNet2DModel`'s config, field for field (diffusers' names and defaults), so that a
/// diffusers `config.json` parses as it is (unknown keys such as `_class_name` are ignored)
/// and a saved one loads in diffusers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNet2DConfig {
    /// Image side(s) the model was made for (diffusers: `None`).
    pub sample_size: Option<SampleSize>,
    /// Input channels (3).
    pub in_channels: i64,
    /// Output channels (3); twice `in_channels` for a learned variance.
    pub out_channels: i64,
    /// Map the input from [0, 1] to [-1, 1] first (false).
    pub center_input_sample: bool,
    /// `positional` (default), `fourier` or `learned`.
    pub time_embedding_type: TimeEmbeddingType,
    /// Width of the time embedding (`None`: 4 x `block_out_channels[0]`).
    pub time_embedding_dim: Option<i64>,
    /// `downscale_freq_shift` of the sinusoidal embedding (0).
    pub freq_shift: f64,
    /// `[cos, sin]` instead of `[sin, cos]` (true).
    pub flip_sin_to_cos: bool,
    /// One per level (diffusers: `DownBlock2D` then three `AttnDownBlock2D`).
    pub down_block_types: Vec<DownBlockType>,
    /// `UNetMidBlock2D` (default) or `None`.
    pub mid_block_type: Option<MidBlockType>,
    /// One per level, lowest resolution first (diffusers: three `AttnUpBlock2D` then `UpBlock2D`).
    pub up_block_types: Vec<UpBlockType>,
    /// Channels per level (224, 448, 672, 896).
    pub block_out_channels: Vec<i64>,
    /// ResNet blocks per down block (2); up blocks have one more.
    pub layers_per_block: i64,
    /// Output divisor of the mid block's ResNets and attention (1).
    pub mid_block_scale_factor: f64,
    /// Padding of the downsampling convolution (1; 0 pads right and bottom by one first).
    pub downsample_padding: i64,
    /// Downsampler of `AttnDownBlock2D` (`conv`).
    #[serde(deserialize_with = "null_as_default")]
    pub downsample_type: ResampleType,
    /// Upsampler of `AttnUpBlock2D` (`conv`).
    #[serde(deserialize_with = "null_as_default")]
    pub upsample_type: ResampleType,
    /// Dropout inside the ResNet blocks (0).
    pub dropout: f64,
    /// Activation of the ResNet blocks (`silu`).
    pub act_fn: Activation,
    /// Channels per attention head (8; `None`: one head over all channels).
    pub attention_head_dim: Option<i64>,
    /// Groups of every group norm (32).
    pub norm_num_groups: i64,
    /// Groups of the mid attention's norm (`None`: `norm_num_groups` with the `default` time
    /// shift, no norm with `scale_shift`, as diffusers).
    pub attn_norm_num_groups: Option<i64>,
    /// Group-norm epsilon (1e-5).
    pub norm_eps: f64,
    /// `default` or `scale_shift`.
    pub resnet_time_scale_shift: TimeScaleShift,
    /// Self-attention in the mid block (true).
    pub add_attention: bool,
    /// `None`, `timestep` or `identity`.
    pub class_embed_type: Option<ClassEmbedType>,
    /// Classes of the learned class table (with `class_embed_type = None`).
    pub num_class_embeds: Option<i64>,
    /// Rows of the `learned` time table.
    pub num_train_timesteps: Option<i64>,
}

impl Default for UNet2DConfig {
    /// diffusers' defaults (`UNet2DModel.__init__`).
    fn default() -> Self {
        UNet2DConfig {
            sample_size: None,
            in_channels: 3,
            out_channels: 3,
            center_input_sample: false,
            time_embedding_type: TimeEmbeddingType::Positional,
            time_embedding_dim: None,
            freq_shift: 0.0,
            flip_sin_to_cos: true,
            down_block_types: vec![
                DownBlockType::Plain,
                DownBlockType::Attn,
                DownBlockType::Attn,
                DownBlockType::Attn,
            ],
            mid_block_type: Some(MidBlockType::UNetMidBlock2D),
            up_block_types: vec![
                UpBlockType::Attn,
                UpBlockType::Attn,
                UpBlockType::Attn,
                UpBlockType::Plain,
            ],
            block_out_channels: vec![224, 448, 672, 896],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 1,
            downsample_type: ResampleType::Conv,
            upsample_type: ResampleType::Conv,
            dropout: 0.0,
            act_fn: Activation::Silu,
            attention_head_dim: Some(8),
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-5,
            resnet_time_scale_shift: TimeScaleShift::Default,
            add_attention: true,
            class_embed_type: None,
            num_class_embeds: None,
            num_train_timesteps: None,
        }
    }
}

impl UNet2DConfig {
    /// A small U-Net for 28x28 or 32x32 images with `channels` channels (about 1.6 M
    /// parameters): levels of 32, 64, 64 channels (28 -> 14 -> 7, or 32 -> 16 -> 8), two ResNet
    /// blocks per level, single-head self-attention at the middle level and in the mid block
    /// (DDPM's choice of attention at 16x16, Ho et al. 2020 App. B), 8 groups, dropout 0.1 (the
    /// paper's CIFAR-10 value); `num_classes` adds a class table for conditional models.
    pub fn small(channels: i64, side: i64, num_classes: Option<i64>) -> Self {
        UNet2DConfig {
            sample_size: Some(SampleSize::Square(side)),
            in_channels: channels,
            out_channels: channels,
            down_block_types: vec![
                DownBlockType::Plain,
                DownBlockType::Attn,
                DownBlockType::Plain,
            ],
            up_block_types: vec![UpBlockType::Plain, UpBlockType::Attn, UpBlockType::Plain],
            block_out_channels: vec![32, 64, 64],
            layers_per_block: 2,
            attention_head_dim: None,
            norm_num_groups: 8,
            dropout: 0.1,
            num_class_embeds: num_classes,
            ..Default::default()
        }
    }

    /// The config of a diffusers `config.json`; a bad or unsupported value is a one-line error
    /// naming the file, the key and what is supported.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_data(path, format!("not JSON: {e}")))?;
        if let Some(class) = json.get("_class_name") {
            if class != DIFFUSERS_CLASS {
                return Err(Error::bad_data(
                    path,
                    format!("`_class_name` = {class}, expected \"{DIFFUSERS_CLASS}\" (the only diffusers model class this loader ports)"),
                ));
            }
        }
        Self::from_json(&json).map_err(|e| Error::bad_data(path, e.to_string()))
    }

    /// The config from JSON (diffusers' keys; unknown keys ignored), validated.
    pub fn from_json(json: &serde_json::Value) -> Result<Self> {
        let cfg: UNet2DConfig = Check::model(NAME).parse(json)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as diffusers writes it (with `_class_name` and `_diffusers_version`).
    pub fn to_diffusers_json(&self) -> Result<serde_json::Value> {
        let mut json = serde_json::to_value(self)?;
        if let Some(obj) = json.as_object_mut() {
            obj.insert("_class_name".into(), DIFFUSERS_CLASS.into());
            obj.insert("_diffusers_version".into(), DIFFUSERS_VERSION.into());
        }
        Ok(json)
    }

    /// Width of the time embedding: `time_embedding_dim`, else 4 x `block_out_channels[0]`.
    pub fn time_embed_dim(&self) -> i64 {
        self.time_embedding_dim
            .unwrap_or(4 * self.block_out_channels.first().copied().unwrap_or(0))
    }

    /// Input width of the time MLP (twice the first level's channels for Fourier features).
    fn timestep_input_dim(&self) -> i64 {
        let c0 = self.block_out_channels.first().copied().unwrap_or(0);
        match self.time_embedding_type {
            TimeEmbeddingType::Fourier => 2 * c0,
            _ => c0,
        }
    }

    /// Groups of the mid attention's norm (diffusers' `attn_groups` rule).
    fn mid_attn_groups(&self) -> Option<i64> {
        self.attn_norm_num_groups
            .or((self.resnet_time_scale_shift == TimeScaleShift::Default)
                .then_some(self.norm_num_groups))
    }

    /// `(in, out, prev_out)` channels of up block `i` (diffusers' channel bookkeeping).
    fn up_channels(&self, i: usize) -> (i64, i64, i64) {
        let rev: Vec<i64> = self.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let prev = if i == 0 { rev[0] } else { rev[i - 1] };
        (rev[(i + 1).min(n - 1)], rev[i], prev)
    }

    /// Every value in range and every layer buildable, before any parameter is made; errors
    /// are one line: ``unet2d config: `key` = value, expected ...``.
    pub fn validate(&self) -> Result<()> {
        let c = Check::model(NAME);
        let list = |v: &[i64]| format!("{v:?}");
        c.int("in_channels", self.in_channels, 1, MAX_WIDTH)?;
        c.int("out_channels", self.out_channels, 1, MAX_WIDTH)?;
        let n = self.block_out_channels.len();
        let chans = list(&self.block_out_channels);
        c.ensure(
            (1..=16).contains(&n),
            "block_out_channels",
            &chans,
            "1 to 16 channel counts",
        )?;
        c.ensure(
            self.block_out_channels
                .iter()
                .all(|&ch| (1..=MAX_WIDTH).contains(&ch)),
            "block_out_channels",
            &chans,
            format_args!("channel counts from 1 to {MAX_WIDTH}"),
        )?;
        c.ensure(
            self.down_block_types.len() == n,
            "down_block_types",
            format_args!("{} block types", self.down_block_types.len()),
            format_args!("{n}, one per entry of block_out_channels"),
        )?;
        c.ensure(
            self.up_block_types.len() == n,
            "up_block_types",
            format_args!("{} block types", self.up_block_types.len()),
            format_args!("{n}, one per entry of block_out_channels"),
        )?;
        c.int("layers_per_block", self.layers_per_block, 1, 64)?;
        let temb = self.time_embed_dim();
        c.ensure(
            (1..=4 * MAX_WIDTH).contains(&temb) && temb * temb <= MAX_LAYER_WEIGHTS,
            "time_embedding_dim",
            temb,
            format_args!("an integer from 1 to {}", 1i64 << 15),
        )?;
        c.finite("freq_shift", self.freq_shift)?;
        let half = self.block_out_channels[0] / 2;
        if self.time_embedding_type == TimeEmbeddingType::Positional && half > 0 {
            c.ensure(
                half as f64 != self.freq_shift,
                "freq_shift",
                self.freq_shift,
                format_args!(
                    "a value other than {half} (half of block_out_channels[0]: the frequencies would divide by zero)"
                ),
            )?;
        }
        c.positive("mid_block_scale_factor", self.mid_block_scale_factor)?;
        c.int("downsample_padding", self.downsample_padding, 0, 8)?;
        c.fraction("dropout", self.dropout)?;
        c.positive("norm_eps", self.norm_eps)?;
        if let Some(d) = self.attention_head_dim {
            c.int("attention_head_dim", d, 1, MAX_WIDTH)?;
            for (layer, ch) in self.attention_layers() {
                c.ensure(
                    d <= ch,
                    "attention_head_dim",
                    d,
                    format_args!("at most the {ch} channels of {layer} (it would have no head)"),
                )?;
            }
        }
        let g = self.norm_num_groups;
        c.int("norm_num_groups", g, 1, MAX_WIDTH)?;
        for (layer, ch) in self.normalised_layers() {
            c.ensure(
                ch % g == 0,
                "norm_num_groups",
                g,
                format_args!("a divisor of {ch}, the channels of {layer}"),
            )?;
        }
        if let Some(ga) = self.attn_norm_num_groups {
            c.int("attn_norm_num_groups", ga, 1, MAX_WIDTH)?;
        }
        if let (Some(_), true, Some(ga)) = (
            self.mid_block_type,
            self.add_attention,
            self.mid_attn_groups(),
        ) {
            let ch = self.block_out_channels[n - 1];
            c.ensure(
                ch % ga == 0,
                "attn_norm_num_groups",
                ga,
                format_args!("a divisor of {ch}, the channels of mid_block.attentions.0"),
            )?;
        }
        if self.class_embed_type.is_none() {
            if let Some(k) = self.num_class_embeds {
                c.int("num_class_embeds", k, 1, 1 << 24)?;
            }
        }
        if self.time_embedding_type == TimeEmbeddingType::Learned {
            match self.num_train_timesteps {
                Some(t) => c.int("num_train_timesteps", t, 1, 1 << 24)?,
                None => {
                    return Err(c.error(
                        "num_train_timesteps",
                        "null",
                        "the number of rows of the learned time table (time_embedding_type = \"learned\")",
                    ))
                }
            }
        }
        match self.sample_size {
            Some(SampleSize::Square(s)) => c.int("sample_size", s, 1, MAX_SIDE)?,
            Some(SampleSize::Rect([h, w])) => {
                c.int("sample_size", h, 1, MAX_SIDE)?;
                c.int("sample_size", w, 1, MAX_SIDE)?;
            }
            None => {}
        }
        Ok(())
    }

    /// `(layer, channels)` of every self-attention.
    fn attention_layers(&self) -> Vec<(String, i64)> {
        let mut v = Vec::new();
        for (i, t) in self.down_block_types.iter().enumerate() {
            if *t == DownBlockType::Attn {
                v.push((
                    format!("down_blocks.{i}.attentions"),
                    self.block_out_channels[i],
                ));
            }
        }
        if self.mid_block_type.is_some() && self.add_attention {
            let last = self.block_out_channels[self.block_out_channels.len() - 1];
            v.push(("mid_block.attentions.0".into(), last));
        }
        for (i, t) in self.up_block_types.iter().enumerate() {
            if *t == UpBlockType::Attn {
                v.push((format!("up_blocks.{i}.attentions"), self.up_channels(i).1));
            }
        }
        v
    }

    /// `(layer, channels)` of every group norm that uses `norm_num_groups`.
    fn normalised_layers(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = self
            .block_out_channels
            .iter()
            .enumerate()
            .map(|(i, &ch)| (format!("down_blocks.{i}"), ch))
            .collect();
        let l = self.layers_per_block as usize;
        for i in 0..self.up_block_types.len() {
            let (cin, cout, prev) = self.up_channels(i);
            for j in 0..=l {
                let res = if j == l { cin } else { cout };
                let rin = if j == 0 { prev } else { cout };
                v.push((format!("up_blocks.{i}.resnets.{j}.norm1"), rin + res));
            }
        }
        v
    }
}

/// What `class_embedding` is.
#[derive(Debug)]
enum ClassEmbedding {
    Table(nn::Embedding),
    Timestep(TimestepEmbedding),
    Identity,
}

/// diffusers' `UNet2DModel`: predicts noise (or whatever it was trained for) of the shape of
/// its input from a noisy sample, timesteps and optional class labels.
#[derive(Debug)]
pub struct UNet2D {
    config: UNet2DConfig,
    /// Name of the path the parameters live under (`""` at the root of a store).
    prefix: String,
    conv_in: nn::Conv2D,
    time_proj: TimeProj,
    time_embedding: TimestepEmbedding,
    class_embedding: Option<ClassEmbedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: nn::GroupNorm,
    conv_out: nn::Conv2D,
}

impl UNet2D {
    /// A freshly initialised U-Net (PyTorch's default initialisation, as diffusers) under `p`,
    /// parameters named as diffusers names them. The config is validated first.
    pub fn new(p: &nn::Path, config: &UNet2DConfig) -> Result<Self> {
        config.validate()?;
        let cfg = config;
        let boc = &cfg.block_out_channels;
        let n = boc.len();
        let c0 = boc[0];
        let temb = cfg.time_embed_dim();
        let t_in = cfg.timestep_input_dim();
        let eps = cfg.norm_eps;
        let rs = ResnetSettings {
            temb,
            groups: cfg.norm_num_groups,
            eps,
            act: cfg.act_fn,
            scale_shift: cfg.resnet_time_scale_shift == TimeScaleShift::ScaleShift,
            dropout: cfg.dropout,
        };
        let head_dim = |ch: i64| cfg.attention_head_dim.unwrap_or(ch);

        let conv_in = blocks::conv2d(p / "conv_in", cfg.in_channels, c0, 3, 1, 1);
        let time_proj = match cfg.time_embedding_type {
            TimeEmbeddingType::Positional => TimeProj::Positional {
                dim: c0,
                flip_sin_to_cos: cfg.flip_sin_to_cos,
                shift: cfg.freq_shift,
            },
            TimeEmbeddingType::Fourier => {
                let weight = (p / "time_proj").zeros_no_train("weight", &[c0]);
                tch::no_grad(|| {
                    let mut w = weight.shallow_clone();
                    w.copy_(&(Tensor::randn([c0], (Kind::Float, p.device())) * 16.0));
                });
                TimeProj::Fourier { weight }
            }
            TimeEmbeddingType::Learned => TimeProj::Learned(blocks::embedding(
                p / "time_proj",
                cfg.num_train_timesteps.unwrap_or(1),
                c0,
            )),
        };
        let time_embedding = TimestepEmbedding::new(p / "time_embedding", t_in, temb);
        let class_embedding = match (cfg.class_embed_type, cfg.num_class_embeds) {
            (None, None) => None,
            (None, Some(k)) => Some(ClassEmbedding::Table(blocks::embedding(
                p / "class_embedding",
                k,
                temb,
            ))),
            (Some(ClassEmbedType::Timestep), _) => Some(ClassEmbedding::Timestep(
                TimestepEmbedding::new(p / "class_embedding", t_in, temb),
            )),
            (Some(ClassEmbedType::Identity), _) => Some(ClassEmbedding::Identity),
        };

        let mut down_blocks = Vec::with_capacity(n);
        for (i, &kind) in cfg.down_block_types.iter().enumerate() {
            let bp = p / "down_blocks" / i;
            let cin = if i == 0 { c0 } else { boc[i - 1] };
            let cout = boc[i];
            let last = i == n - 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..cfg.layers_per_block {
                let rin = if j == 0 { cin } else { cout };
                resnets.push(ResnetBlock::new(
                    &bp / "resnets" / j,
                    rin,
                    cout,
                    &rs,
                    1.0,
                    Resample::None,
                )?);
                if kind == DownBlockType::Attn {
                    attentions.push(Attention::new(
                        &bp / "attentions" / j,
                        cout,
                        head_dim(cout),
                        Some(cfg.norm_num_groups),
                        eps,
                        1.0,
                    )?);
                }
            }
            let dp = &bp / "downsamplers" / 0;
            let downsampler = match (last, kind, cfg.downsample_type) {
                (true, _, _) => None,
                (false, DownBlockType::Attn, ResampleType::Resnet) => Some(Downsampler::Resnet(
                    Box::new(ResnetBlock::new(dp, cout, cout, &rs, 1.0, Resample::Down)?),
                )),
                _ => Some(Downsampler::Conv(Downsample::new(
                    dp,
                    cout,
                    cfg.downsample_padding,
                ))),
            };
            down_blocks.push(DownBlock {
                resnets,
                attentions,
                downsampler,
            });
        }

        let mid_block = match cfg.mid_block_type {
            None => None,
            Some(MidBlockType::UNetMidBlock2D) => {
                let mp = p / "mid_block";
                let ch = boc[n - 1];
                let osf = cfg.mid_block_scale_factor;
                let r0 = ResnetBlock::new(&mp / "resnets" / 0, ch, ch, &rs, osf, Resample::None)?;
                let attention = if cfg.add_attention {
                    Some(Attention::new(
                        &mp / "attentions" / 0,
                        ch,
                        head_dim(ch),
                        cfg.mid_attn_groups(),
                        eps,
                        osf,
                    )?)
                } else {
                    None
                };
                let r1 = ResnetBlock::new(&mp / "resnets" / 1, ch, ch, &rs, osf, Resample::None)?;
                Some(MidBlock {
                    resnets: vec![r0, r1],
                    attention,
                })
            }
        };

        let mut up_blocks = Vec::with_capacity(n);
        let l = cfg.layers_per_block;
        for (i, &kind) in cfg.up_block_types.iter().enumerate() {
            let bp = p / "up_blocks" / i;
            let (cin, cout, prev) = cfg.up_channels(i);
            let last = i == n - 1;
            let mut resnets = Vec::new();
            let mut attentions = Vec::new();
            for j in 0..=l {
                let res = if j == l { cin } else { cout };
                let rin = if j == 0 { prev } else { cout };
                resnets.push(ResnetBlock::new(
                    &bp / "resnets" / j,
                    rin + res,
                    cout,
                    &rs,
                    1.0,
                    Resample::None,
                )?);
                if kind == UpBlockType::Attn {
                    attentions.push(Attention::new(
                        &bp / "attentions" / j,
                        cout,
                        head_dim(cout),
                        Some(cfg.norm_num_groups),
                        eps,
                        1.0,
                    )?);
                }
            }
            let up = &bp / "upsamplers" / 0;
            let upsampler = match (last, kind, cfg.upsample_type) {
                (true, _, _) => None,
                (false, UpBlockType::Attn, ResampleType::Resnet) => Some(Upsampler::Resnet(
                    Box::new(ResnetBlock::new(up, cout, cout, &rs, 1.0, Resample::Up)?),
                )),
                _ => Some(Upsampler::Conv(Upsample::new(up, cout))),
            };
            up_blocks.push(UpBlock {
                resnets,
                attentions,
                upsampler,
            });
        }

        let conv_norm_out = blocks::group_norm(p / "conv_norm_out", cfg.norm_num_groups, c0, eps)?;
        let conv_out = blocks::conv2d(p / "conv_out", c0, cfg.out_channels, 3, 1, 1);
        Ok(UNet2D {
            config: cfg.clone(),
            prefix: p.components().collect::<Vec<_>>().join("."),
            conv_in,
            time_proj,
            time_embedding,
            class_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
        })
    }

    /// A diffusers `UNet2DModel` folder (`config.json` + `diffusion_pytorch_model.safetensors`)
    /// on `device`, in a store of its own whose names are diffusers'.
    pub fn from_diffusers_folder(
        dir: impl AsRef<Path>,
        device: Device,
    ) -> Result<(Self, nn::VarStore)> {
        let dir = dir.as_ref();
        let config = UNet2DConfig::from_json_file(dir.join(CONFIG_FILE))?;
        let weights = dir.join(WEIGHTS_FILE);
        if !weights.exists() {
            let bin = dir.join("diffusion_pytorch_model.bin");
            let msg = if bin.exists() {
                "not found; the folder has diffusion_pytorch_model.bin, which is not read (save it again with `save_pretrained(..., safe_serialization=True)`)"
            } else {
                "not found (sharded or non-safetensors weights are not read)"
            };
            return Err(Error::bad_data(weights, msg));
        }
        let vs = nn::VarStore::new(device);
        let unet = UNet2D::new(&vs.root(), &config)?;
        unet.load_diffusers_weights(&vs, &weights)?;
        Ok((unet, vs))
    }

    /// The U-Net's variables in `vs`, by their diffusers names.
    fn named_variables(&self, vs: &nn::VarStore) -> BTreeMap<String, Tensor> {
        let pre = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}.", self.prefix)
        };
        vs.variables()
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(&pre).map(|s| (s.to_string(), v)))
            .collect()
    }

    /// Copies a diffusers weights file into this U-Net's variables in `vs`, by name (diffusers'
    /// pre-0.14 attention names `query`/`key`/`value`/`proj_attn` are read as
    /// `to_q`/`to_k`/`to_v`/`to_out.0`, as diffusers converts them). Every tensor is checked
    /// before any is copied: a missing tensor, an unexpected one, a wrong shape or a non-float
    /// dtype is a one-line error naming the tensor, the shape found and the shape expected.
    pub fn load_diffusers_weights(&self, vs: &nn::VarStore, file: impl AsRef<Path>) -> Result<()> {
        let file = file.as_ref();
        let (_, raw) = read_safetensors(file)?;
        let bad = |m: String| Error::bad_data(file, m);
        let vars = self.named_variables(vs);
        let mut tensors: HashMap<String, (String, Tensor)> = HashMap::new();
        for (name, t) in raw {
            let canon = canonical_name(&name);
            if let Some((first, _)) = tensors.get(&canon) {
                return Err(bad(format!(
                    "tensors `{first}` and `{name}` are both the parameter `{canon}`"
                )));
            }
            tensors.insert(canon, (name, t));
        }
        let missing: Vec<&String> = vars.keys().filter(|k| !tensors.contains_key(*k)).collect();
        if let Some(first) = missing.first() {
            return Err(bad(format!(
                "tensor `{first}` of shape {:?} is missing (the config asks for it){}",
                vars[*first].size(),
                more(missing.len())
            )));
        }
        let mut unexpected: Vec<&String> =
            tensors.keys().filter(|k| !vars.contains_key(*k)).collect();
        unexpected.sort();
        if let Some(first) = unexpected.first() {
            let (name, t) = &tensors[*first];
            return Err(bad(format!(
                "unexpected tensor `{name}` of shape {:?} (the config has no such parameter){}",
                t.size(),
                more(unexpected.len())
            )));
        }
        for (k, v) in &vars {
            let (name, t) = &tensors[k];
            if t.size() != v.size() {
                return Err(bad(format!(
                    "tensor `{name}` has shape {:?}, the config expects {:?}",
                    t.size(),
                    v.size()
                )));
            }
            if !t.is_floating_point() {
                return Err(bad(format!(
                    "tensor `{name}` is {:?}, expected a floating-point tensor",
                    t.kind()
                )));
            }
        }
        tch::no_grad(|| {
            for (k, v) in &vars {
                let mut v = v.shallow_clone();
                v.f_copy_(&tensors[k].1).map_err(|e| {
                    bad(format!(
                        "copying `{k}`: {}",
                        e.to_string().lines().next().unwrap_or("")
                    ))
                })?;
            }
            Ok(())
        })
    }

    /// Writes a diffusers folder (`config.json`, `diffusion_pytorch_model.safetensors`) that
    /// `UNet2DModel.from_pretrained` and [`UNet2D::from_diffusers_folder`] load.
    pub fn save_diffusers_folder(&self, vs: &nn::VarStore, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let named: Vec<(String, Tensor)> = self
            .named_variables(vs)
            .into_iter()
            .map(|(k, v)| (k, v.detach().to_device(Device::Cpu).contiguous()))
            .collect();
        let weights = dir.join(WEIGHTS_FILE);
        let tmp = dir.join(format!("{WEIGHTS_FILE}.tmp"));
        Tensor::write_safetensors(&named, &tmp)?;
        std::fs::rename(&tmp, &weights).map_err(|e| Error::io(&weights, e))?;
        let config = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&self.config.to_diffusers_json()?)?;
        std::fs::write(&config, text + "\n").map_err(|e| Error::io(&config, e))
    }

    /// The config the U-Net was built from.
    pub fn config(&self) -> &UNet2DConfig {
        &self.config
    }

    /// `UNet2DModel.forward(...).sample`: `sample` `[N, in_channels, H, W]` (the model's float
    /// kind and device), `timesteps` `[N]`, `[1]` or a scalar (integer or float; sigmas for a
    /// Fourier embedding), `class_labels` `[N]` int64 for a class table, `[N]` for a `timestep`
    /// class embedding, `[N, time_embed_dim]` for `identity`; `train` turns dropout on.
    /// Returns `[N, out_channels, H, W]`. Inputs that do not fit the model are one-line errors.
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let (n, h, w) = self.check_sample(sample)?;
        self.check_sizes(h, w)?;
        let device = sample.device();
        let t = self.check_timesteps(timesteps, n, device)?;
        let kind = sample.kind();

        let x = if self.config.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample.shallow_clone()
        };
        let t_emb = self.time_proj.forward(&t).to_kind(kind);
        let emb = self.time_embedding.forward(&t_emb);
        let emb = match self.check_class_labels(class_labels, n, device)? {
            Some(ce) => emb + ce.to_kind(kind),
            None => emb,
        };

        let mut h = self.conv_in.forward(&x);
        let mut skips = vec![h.shallow_clone()];
        for b in &self.down_blocks {
            let (out, states) = b.forward(&h, &emb, train);
            h = out;
            skips.extend(states);
        }
        if let Some(m) = &self.mid_block {
            h = m.forward(&h, &emb, train);
        }
        for b in &self.up_blocks {
            let k = b.resnets.len();
            let res = skips.split_off(skips.len().saturating_sub(k));
            let up_size = skips.last().map(|s| [s.size()[2], s.size()[3]]);
            h = b.forward(&h, &res, &emb, train, up_size);
        }
        let h = self.conv_norm_out.forward(&h).silu();
        let out = self.conv_out.forward(&h);
        Ok(match self.config.time_embedding_type {
            TimeEmbeddingType::Fourier => out / t.to_kind(kind).reshape([n, 1, 1, 1]),
            _ => out,
        })
    }

    /// `(N, H, W)` of a sample that fits the model.
    fn check_sample(&self, sample: &Tensor) -> Result<(i64, i64, i64)> {
        let size = sample.size();
        let want = self.config.in_channels;
        let (n, c, h, w) = match size[..] {
            [n, c, h, w] => (n, c, h, w),
            _ => {
                return Err(Error::invalid(format!(
                    "UNet2D: sample has shape {size:?}, expected [N, {want}, H, W]"
                )))
            }
        };
        if c != want || n < 1 || h < 1 || w < 1 {
            return Err(Error::invalid(format!(
                "UNet2D: sample has shape {size:?}, expected [N, {want}, H, W] with N, H, W >= 1"
            )));
        }
        let wkind = self.conv_in.ws.kind();
        if sample.kind() != wkind {
            return Err(Error::invalid(format!(
                "UNet2D: sample is {:?}, the model's weights are {wkind:?}",
                sample.kind()
            )));
        }
        let wdev = self.conv_in.ws.device();
        if sample.device() != wdev {
            return Err(Error::invalid(format!(
                "UNet2D: sample is on {:?}, the model on {wdev:?}",
                sample.device()
            )));
        }
        Ok((n, h, w))
    }

    /// Every downsampler has a map large enough for its window.
    fn check_sizes(&self, h: i64, w: i64) -> Result<()> {
        let (mut h, mut w) = (h, w);
        for (i, b) in self.down_blocks.iter().enumerate() {
            // The side after the downsampler, `None` when the map is smaller than its window.
            let out = |s: i64| match &b.downsampler {
                None => Some(s),
                Some(Downsampler::Conv(d)) if d.padding == 0 => (s >= 2).then(|| (s - 2) / 2 + 1),
                Some(Downsampler::Conv(d)) => {
                    let padded = s + 2 * d.padding;
                    (padded >= 3).then(|| (padded - 3) / 2 + 1)
                }
                Some(Downsampler::Resnet(_)) => (s >= 2).then_some(s / 2),
            };
            match (out(h), out(w)) {
                (Some(a), Some(b)) => (h, w) = (a, b),
                _ => {
                    return Err(Error::invalid(format!(
                        "UNet2D: the sample is too small: down_blocks.{i} cannot downsample a {h}x{w} map"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Timesteps `[N]` (float or integer) on `device`, from `[N]`, `[1]` or a scalar.
    fn check_timesteps(&self, t: &Tensor, n: i64, device: Device) -> Result<Tensor> {
        let size = t.size();
        let ok_shape = size.len() <= 1 && (t.numel() == 1 || size == [n]);
        let numeric = t.is_floating_point() || is_integer(t.kind());
        if !ok_shape || !numeric {
            return Err(Error::invalid(format!(
                "UNet2D: timesteps are {:?} of shape {size:?}, expected a number or [{n}] numbers (integer or float)",
                t.kind()
            )));
        }
        let t = t.to_device(device).reshape([-1]);
        let t = if t.numel() == 1 {
            t.expand([n], false).contiguous()
        } else {
            t
        };
        if let TimeProj::Learned(e) = &self.time_proj {
            let rows = e.ws.size()[0];
            in_table("timesteps", &t, rows)?;
        }
        Ok(t)
    }

    /// The class embedding `[N, time_embed_dim]` of `labels`, or `None` without one.
    fn check_class_labels(
        &self,
        labels: Option<&Tensor>,
        n: i64,
        device: Device,
    ) -> Result<Option<Tensor>> {
        let (ce, labels) = match (&self.class_embedding, labels) {
            (None, None) => return Ok(None),
            (None, Some(_)) => {
                return Err(Error::invalid(
                    "UNet2D: class_labels given, but the model has no class embedding (num_class_embeds and class_embed_type are null)",
                ))
            }
            (Some(_), None) => {
                return Err(Error::invalid(
                    "UNet2D: the model is class-conditional; class_labels are needed",
                ))
            }
            (Some(ce), Some(l)) => (ce, l.to_device(device)),
        };
        let size = labels.size();
        let kind = labels.kind();
        match ce {
            ClassEmbedding::Table(e) => {
                if size != [n] || !is_integer(kind) {
                    return Err(Error::invalid(format!(
                        "UNet2D: class_labels are {kind:?} of shape {size:?}, expected [{n}] integers"
                    )));
                }
                let labels = labels.to_kind(Kind::Int64);
                in_table("class_labels", &labels, e.ws.size()[0])?;
                Ok(Some(e.forward(&labels)))
            }
            ClassEmbedding::Timestep(te) => {
                if size != [n] || !(labels.is_floating_point() || is_integer(kind)) {
                    return Err(Error::invalid(format!(
                        "UNet2D: class_labels are {kind:?} of shape {size:?}, expected [{n}] numbers (a timestep class embedding)"
                    )));
                }
                if let TimeProj::Learned(e) = &self.time_proj {
                    in_table("class_labels", &labels, e.ws.size()[0])?;
                }
                let proj = self
                    .time_proj
                    .forward(&labels)
                    .to_kind(self.conv_in.ws.kind());
                Ok(Some(te.forward(&proj)))
            }
            ClassEmbedding::Identity => {
                let d = self.config.time_embed_dim();
                if size != [n, d] || !labels.is_floating_point() {
                    return Err(Error::invalid(format!(
                        "UNet2D: class_labels are {kind:?} of shape {size:?}, expected [{n}, {d}] floats (an identity class embedding)"
                    )));
                }
                Ok(Some(labels))
            }
        }
    }
}

/// Integer (not bool) tensor kinds.
fn is_integer(k: Kind) -> bool {
    matches!(
        k,
        Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64
    )
}

/// Integer values in `0..rows` (indices into a table of `rows` rows).
fn in_table(what: &str, t: &Tensor, rows: i64) -> Result<()> {
    if !is_integer(t.kind()) {
        return Err(Error::invalid(format!(
            "UNet2D: {what} are {:?}, expected integers (indices into a learned table)",
            t.kind()
        )));
    }
    let (lo, hi) = (t.min().int64_value(&[]), t.max().int64_value(&[]));
    if lo < 0 || hi >= rows {
        return Err(Error::invalid(format!(
            "UNet2D: {what} range from {lo} to {hi}, expected 0 to {} (a table of {rows} rows)",
            rows - 1
        )));
    }
    Ok(())
}

/// ` (and k more)` for a list of `count` problems.
fn more(count: usize) -> String {
    if count > 1 {
        format!(" (and {} more)", count - 1)
    } else {
        String::new()
    }
}

/// The current name of a parameter that old diffusers folders name the pre-0.14 way
/// (`attentions.i.query` -> `attentions.i.to_q`, `proj_attn` -> `to_out.0`).
fn canonical_name(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let k = parts.len();
    if k < 4 || parts[k - 4] != "attentions" {
        return name.to_string();
    }
    let new = match parts[k - 2] {
        "query" => "to_q",
        "key" => "to_k",
        "value" => "to_v",
        "proj_attn" => "to_out.0",
        _ => return name.to_string(),
    };
    let mut out: Vec<&str> = parts[..k - 2].to_vec();
    out.push(new);
    out.push(parts[k - 1]);
    out.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_attention_names_are_renamed() {
        assert_eq!(
            canonical_name("mid_block.attentions.0.query.weight"),
            "mid_block.attentions.0.to_q.weight"
        );
        assert_eq!(
            canonical_name("up_blocks.1.attentions.2.proj_attn.bias"),
            "up_blocks.1.attentions.2.to_out.0.bias"
        );
        assert_eq!(
            canonical_name("down_blocks.0.resnets.0.key.weight"),
            "down_blocks.0.resnets.0.key.weight"
        );
    }

    #[test]
    fn defaults_are_diffusers_and_round_trip() {
        let cfg =
            UNet2DConfig::from_json(&serde_json::json!({"_class_name": "UNet2DModel"})).unwrap();
        assert_eq!(cfg, UNet2DConfig::default());
        let small = UNet2DConfig::small(1, 28, Some(10));
        let json = small.to_diffusers_json().unwrap();
        assert_eq!(json["down_block_types"][1], "AttnDownBlock2D");
        assert_eq!(UNet2DConfig::from_json(&json).unwrap(), small);
    }

    #[test]
    fn unsupported_values_are_one_line_errors() {
        for (key, value, needle) in [
            (
                "down_block_types",
                serde_json::json!(["DownBlock2D", "CrossAttnDownBlock2D"]),
                "CrossAttnDownBlock2D",
            ),
            (
                "resnet_time_scale_shift",
                serde_json::json!("spatial"),
                "scale_shift",
            ),
            ("act_fn", serde_json::json!("tanh"), "mish"),
            (
                "time_embedding_type",
                serde_json::json!("sinusoidal"),
                "fourier",
            ),
        ] {
            let mut json = serde_json::to_value(UNet2DConfig::default()).unwrap();
            json[key] = value;
            let e = UNet2DConfig::from_json(&json).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("unet2d config: `{key}`"))
                    && e.contains(needle)
                    && !e.contains('\n'),
                "{e}"
            );
        }
        let mut cfg = UNet2DConfig::small(1, 28, None);
        cfg.norm_num_groups = 5;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(
            e.contains("`norm_num_groups` = 5") && e.contains("a divisor of"),
            "{e}"
        );
        cfg = UNet2DConfig::small(1, 28, None);
        cfg.attention_head_dim = Some(128);
        assert!(cfg.validate().unwrap_err().to_string().contains("no head"));
    }

    #[test]
    fn small_config_runs_at_28_and_32_and_odd_sizes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let unet = UNet2D::new(&vs.root(), &UNet2DConfig::small(1, 28, Some(10))).unwrap();
        let params: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert!((1_000_000..3_000_000).contains(&params), "{params}");
        for side in [28, 32, 13] {
            let x = Tensor::randn([2, 1, side, side], (Kind::Float, Device::Cpu));
            let t = Tensor::from_slice(&[3i64, 917]);
            let y = Tensor::from_slice(&[0i64, 9]);
            let out = tch::no_grad(|| unet.forward(&x, &t, Some(&y), false)).unwrap();
            assert_eq!(out.size(), [2, 1, side, side]);
        }
        let x = Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[3i64, 917]);
        let bad = Tensor::from_slice(&[0i64, 10]);
        let e = unet
            .forward(&x, &t, Some(&bad), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0 to 9"), "{e}");
        let e = unet.forward(&x, &t, None, false).unwrap_err().to_string();
        assert!(e.contains("class_labels are needed"), "{e}");
        let e = unet
            .forward(&x.repeat([1, 3, 1, 1]), &t, Some(&bad), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected [N, 1, H, W]"), "{e}");
        let cfg = UNet2DConfig {
            downsample_padding: 0,
            ..UNet2DConfig::small(1, 28, None)
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let unet = UNet2D::new(&vs.root(), &cfg).unwrap();
        let x = Tensor::randn([1, 1, 2, 3], (Kind::Float, Device::Cpu));
        let e = unet
            .forward(&x, &t.get(0), None, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("down_blocks.1 cannot downsample a 1x1 map"),
            "{e}"
        );
    }

    #[test]
    fn every_trainable_parameter_gets_a_gradient() {
        for cfg in [
            UNet2DConfig::small(1, 28, Some(10)),
            UNet2DConfig {
                time_embedding_type: TimeEmbeddingType::Fourier,
                downsample_type: ResampleType::Resnet,
                upsample_type: ResampleType::Resnet,
                resnet_time_scale_shift: TimeScaleShift::ScaleShift,
                block_out_channels: vec![8, 16],
                norm_num_groups: 4,
                layers_per_block: 1,
                down_block_types: vec![DownBlockType::Attn, DownBlockType::Attn],
                up_block_types: vec![UpBlockType::Attn, UpBlockType::Attn],
                in_channels: 1,
                out_channels: 2,
                ..Default::default()
            },
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let unet = UNet2D::new(&vs.root(), &cfg).unwrap();
            let x = Tensor::randn([2, 1, 12, 12], (Kind::Float, Device::Cpu));
            let t = Tensor::from_slice(&[0.5f32, 3.0]);
            let y = cfg.num_class_embeds.map(|_| Tensor::from_slice(&[1i64, 2]));
            let out = unet.forward(&x, &t, y.as_ref(), true).unwrap();
            out.square().mean(Kind::Float).backward();
            for (name, v) in vs.variables() {
                if v.requires_grad() {
                    let g = v.grad();
                    assert!(
                        g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                        "{name}"
                    );
                } else {
                    assert_eq!(name, "time_proj.weight");
                }
            }
        }
    }
}
