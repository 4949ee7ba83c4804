//! A GPT decoder (Radford et al. 2018, "Improving Language Understanding by Generative
//! Pre-Training"; 2019, "Language Models are Unsupervised Multitask Learners"), laid out as in
//! nanoGPT (Karpathy) and Hugging Face's GPT-2 so that GPT-2 checkpoints load by name.
//!
//! Each block is pre-norm: `x + attn(norm_1(x))`, then `x + mlp(norm_2(x))`, and a final norm
//! before the language-model head, whose matrix is the token embedding (weight tying, Press &
//! Wolf 2017) unless `tie_weights` is off. Attention is causal multi-head self-attention through
//! libtorch's `scaled_dot_product_attention` (flash / memory-efficient kernels where available).
//!
//! Defaults (`GptConfig::default`) are GPT-2 small's as nanoGPT writes them: 12 layers, 12
//! heads, 768 wide, context 1024, learned positions, LayerNorm with bias, GELU MLP of width
//! 4x, dropout 0, AdamW(6e-4, 0.9, 0.95, weight decay 0.1 on matrices only). Options:
//! - `positions = "rotary"`: RoPE (Su et al. 2021), rotate-half layout, base `rope_theta`;
//! - `norm = "rms_norm"`: RMSNorm (Zhang & Sennrich 2019);
//! - `mlp = "swiglu"`: SwiGLU (Shazeer 2020), hidden width 2/3 of 4x rounded up to 32;
//! - `mlp = "gelu_tanh"`: GPT-2's tanh approximation of GELU (what its checkpoints expect).
//!
//! Initialisation follows GPT-2 / nanoGPT: N(0, 0.02) for matrices and embeddings, residual
//! projections N(0, 0.02 / sqrt(2 n_layer)), zero biases, unit norm gains.

use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::{Batch, Vocab};
use genmodels_core::model::check::{Check, MAX_LAYER_WEIGHTS, MAX_WIDTH};
use genmodels_core::model::{
    Capability, DataInfo, Losses, Model, ModelEntry, Output, Samples, TextModel,
};
use genmodels_core::optim::{Adam, AdamConfig, StepCtx};
use genmodels_core::samplers::LogitsProcessor;
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

use crate::generate::{generate, GenerateConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// A learned table of `block_size` position embeddings added to the tokens (GPT-2).
    Learned,
    /// Rotary embeddings applied to queries and keys (RoPE).
    Rotary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    LayerNorm,
    RmsNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// Exact (erf) GELU, as nanoGPT's `nn.GELU()`.
    Gelu,
    /// GPT-2's tanh approximation (`gelu_new` in `transformers`).
    GeluTanh,
    SwiGlu,
}

/// GPT settings; the defaults are GPT-2 small's (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GptConfig {
    pub vocab_size: i64,
    /// Context length.
    pub block_size: i64,
    pub n_layer: i64,
    pub n_head: i64,
    pub n_embd: i64,
    /// Dropout after embeddings, on attention weights, and on each residual branch.
    pub dropout: f64,
    /// Biases in the linear layers and LayerNorms.
    pub bias: bool,
    pub positions: Positions,
    pub rope_theta: f64,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub mlp: MlpKind,
    pub tie_weights: bool,
    /// AdamW.
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// The tokenizer, stored with the weights so that a checkpoint decodes its own samples.
    pub vocab: Option<Vocab>,
}

impl Default for GptConfig {
    fn default() -> Self {
        GptConfig {
            vocab_size: 50304,
            block_size: 1024,
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            dropout: 0.0,
            bias: true,
            positions: Positions::Learned,
            rope_theta: 10_000.0,
            norm: NormKind::LayerNorm,
            norm_eps: 1e-5,
            mlp: MlpKind::Gelu,
            tie_weights: true,
            lr: 6e-4,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            vocab: None,
        }
    }
}

impl GptConfig {
    /// nanoGPT's `shakespeare_char` configuration (6 x 6 x 384, context 256, dropout 0.2,
    /// lr 1e-3, beta2 0.99): about 10 M parameters.
    pub fn char_small() -> Self {
        GptConfig {
            block_size: 256,
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            dropout: 0.2,
            lr: 1e-3,
            beta2: 0.99,
            ..Default::default()
        }
    }

    /// nanoGPT's README configuration for a CPU (4 x 4 x 128, context 64, dropout 0; with
    /// batch 12, 2000 iterations, cosine decay to 1e-4 after 100 warm-up steps).
    pub fn cpu_mini() -> Self {
        GptConfig {
            block_size: 64,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            dropout: 0.0,
            ..Self::char_small()
        }
    }

    /// Every field in range, before any variable is made (errors name the model `gpt`).
    pub fn validate(&self) -> Result<()> {
        self.validate_for("gpt")
    }

    /// [`GptConfig::validate`] with errors naming `model`.
    pub fn validate_for(&self, model: &str) -> Result<()> {
        let c = Check::model(model);
        c.int("vocab_size", self.vocab_size, 1, 1 << 20)?;
        c.int("block_size", self.block_size, 1, 65536)?;
        c.int("n_layer", self.n_layer, 1, 256)?;
        c.int("n_embd", self.n_embd, 1, MAX_WIDTH)?;
        c.int("n_head", self.n_head, 1, self.n_embd)?;
        c.ensure(
            self.n_embd % self.n_head == 0,
            "n_embd",
            self.n_embd,
            format_args!("a multiple of n_head ({})", self.n_head),
        )?;
        c.ensure(
            self.positions == Positions::Learned || self.head_dim() % 2 == 0,
            "n_embd",
            self.n_embd,
            format_args!(
                "an even head size n_embd / n_head with rotary positions (it is {})",
                self.head_dim()
            ),
        )?;
        // The token embedding (and the untied head) is vocab_size x n_embd.
        c.ensure(
            self.vocab_size * self.n_embd <= MAX_LAYER_WEIGHTS,
            "vocab_size",
            self.vocab_size,
            format_args!(
                "at most {} with n_embd = {} (the embedding's weights at most 2^30)",
                MAX_LAYER_WEIGHTS / self.n_embd,
                self.n_embd
            ),
        )?;
        c.fraction("dropout", self.dropout)?;
        // RoPE's frequencies are rope_theta^(-2i/d): a base above 1 makes them fall.
        c.ensure(
            self.rope_theta.is_finite() && self.rope_theta > 1.0,
            "rope_theta",
            self.rope_theta,
            "a finite number > 1",
        )?;
        c.positive("norm_eps", self.norm_eps)?;
        c.adam("lr", self.lr, self.beta1, self.beta2)?;
        c.non_negative("weight_decay", self.weight_decay)?;
        if let Some(v) = &self.vocab {
            c.ensure(
                v.size() as i64 <= self.vocab_size,
                "vocab_size",
                self.vocab_size,
                format_args!("at least the tokenizer's {} tokens", v.size()),
            )?;
        }
        Ok(())
    }

    pub fn head_dim(&self) -> i64 {
        self.n_embd / self.n_head.max(1)
    }

    /// SwiGLU hidden width: 2/3 of 4 n_embd, rounded up to a multiple of 32.
    pub fn swiglu_hidden(&self) -> i64 {
        let h = 8 * self.n_embd / 3;
        (h + 31) / 32 * 32
    }
}

fn normal(std: f64) -> nn::Init {
    nn::Init::Randn {
        mean: 0.0,
        stdev: std,
    }
}

fn linear(p: nn::Path, i: i64, o: i64, bias: bool, std: f64) -> nn::Linear {
    nn::linear(
        p,
        i,
        o,
        nn::LinearConfig {
            ws_init: normal(std),
            bs_init: Some(nn::Init::Const(0.0)),
            bias,
        },
    )
}

/// LayerNorm or RMSNorm over the last dimension.
#[derive(Debug)]
pub struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
    kind: NormKind,
    eps: f64,
    dim: i64,
}

impl Norm {
    fn new(p: nn::Path, c: &GptConfig) -> Self {
        let weight = p.var("weight", &[c.n_embd], nn::Init::Const(1.0));
        let bias = (c.bias && c.norm == NormKind::LayerNorm)
            .then(|| p.var("bias", &[c.n_embd], nn::Init::Const(0.0)));
        Norm {
            weight,
            bias,
            kind: c.norm,
            eps: c.norm_eps,
            dim: c.n_embd,
        }
    }
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self.kind {
            NormKind::LayerNorm => x.layer_norm(
                [self.dim],
                Some(&self.weight),
                self.bias.as_ref(),
                self.eps,
                true,
            ),
            NormKind::RmsNorm => {
                let ms = x.square().mean_dim(-1, true, Kind::Float);
                x * (ms + self.eps).rsqrt() * &self.weight
            }
        }
    }
}

/// Cached keys and values of one layer, `[B, H, S, D]` each.
pub type LayerKv = Option<(Tensor, Tensor)>;

/// Causal multi-head self-attention (`c_attn` makes q, k, v; `c_proj` mixes the heads).
#[derive(Debug)]
pub struct Attention {
    c_attn: nn::Linear,
    c_proj: nn::Linear,
    n_head: i64,
    dropout: f64,
}

/// What a query may attend to.
pub enum AttnMask<'a> {
    /// Plain causal mask over a fresh sequence.
    Causal,
    /// Everything in the cache (one new token per row, no padding).
    All,
    /// Explicit `[B, 1, T, S]` boolean mask (true = may attend).
    Explicit(&'a Tensor),
}

impl Attention {
    fn new(p: nn::Path, c: &GptConfig) -> Self {
        let proj_std = 0.02 / (2.0 * c.n_layer as f64).sqrt();
        Attention {
            c_attn: linear(&p / "c_attn", c.n_embd, 3 * c.n_embd, c.bias, 0.02),
            c_proj: linear(&p / "c_proj", c.n_embd, c.n_embd, c.bias, proj_std),
            n_head: c.n_head,
            dropout: c.dropout,
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: Option<&(Tensor, Tensor)>,
        kv: Option<&mut LayerKv>,
        mask: &AttnMask,
        train: bool,
    ) -> Tensor {
        let (b, t, c) = x.size3().unwrap_or((0, 0, 0));
        let hd = c / self.n_head;
        let heads = |u: &Tensor| u.view([b, t, self.n_head, hd]).transpose(1, 2);
        let qkv = self.c_attn.forward(x).split(c, 2);
        let (mut q, mut k, mut v) = (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]));
        if let Some((cos, sin)) = rope {
            q = apply_rope(&q, cos, sin);
            k = apply_rope(&k, cos, sin);
        }
        if let Some(cache) = kv {
            if let Some((pk, pv)) = cache.as_ref() {
                k = Tensor::cat(&[pk, &k], 2);
                v = Tensor::cat(&[pv, &v], 2);
            }
            *cache = Some((k.shallow_clone(), v.shallow_clone()));
        }
        let p = if train { self.dropout } else { 0.0 };
        let y = match mask {
            AttnMask::Causal => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                p,
                true,
                None,
                false,
            ),
            AttnMask::All => Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                p,
                false,
                None,
                false,
            ),
            AttnMask::Explicit(m) => {
                Tensor::scaled_dot_product_attention(&q, &k, &v, Some(*m), p, false, None, false)
            }
        };
        let y = y.transpose(1, 2).contiguous().view([b, t, c]);
        self.c_proj.forward(&y).dropout(p, train)
    }
}

/// Rotate-half RoPE: `x * cos + rotate_half(x) * sin`, with `cos`/`sin` `[B, 1, T, D]`.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let rot = Tensor::cat(&[-x2, x1], 3);
    x * cos + rot * sin
}

/// Position-wise MLP.
#[derive(Debug)]
pub enum Mlp {
    Gelu {
        c_fc: nn::Linear,
        c_proj: nn::Linear,
        tanh: bool,
    },
    SwiGlu {
        w1: nn::Linear,
        w3: nn::Linear,
        w2: nn::Linear,
    },
}

impl Mlp {
    fn new(p: nn::Path, c: &GptConfig) -> Self {
        let proj_std = 0.02 / (2.0 * c.n_layer as f64).sqrt();
        match c.mlp {
            MlpKind::Gelu | MlpKind::GeluTanh => Mlp::Gelu {
                c_fc: linear(&p / "c_fc", c.n_embd, 4 * c.n_embd, c.bias, 0.02),
                c_proj: linear(&p / "c_proj", 4 * c.n_embd, c.n_embd, c.bias, proj_std),
                tanh: c.mlp == MlpKind::GeluTanh,
            },
            MlpKind::SwiGlu => {
                let h = c.swiglu_hidden();
                Mlp::SwiGlu {
                    w1: linear(&p / "w1", c.n_embd, h, c.bias, 0.02),
                    w3: linear(&p / "w3", c.n_embd, h, c.bias, 0.02),
                    w2: linear(&p / "w2", h, c.n_embd, c.bias, proj_std),
                }
            }
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Mlp::Gelu { c_fc, c_proj, tanh } => {
                c_proj.forward(&c_fc.forward(x).gelu(if *tanh { "tanh" } else { "none" }))
            }
            Mlp::SwiGlu { w1, w3, w2 } => w2.forward(&(w1.forward(x).silu() * w3.forward(x))),
        }
    }
}

#[derive(Debug)]
pub struct Block {
    ln_1: Norm,
    attn: Attention,
    ln_2: Norm,
    mlp: Mlp,
    dropout: f64,
}

/// Per-layer keys and values of the sequence so far, for generation.
#[derive(Debug, Default)]
pub struct KvCache {
    pub layers: Vec<LayerKv>,
    /// `[B, S]`: which cached positions are real tokens (false = left padding); `None` when
    /// there is no padding.
    pub valid: Option<Tensor>,
    /// Cached positions `S`.
    pub len: i64,
}

/// The decoder.
#[derive(Debug)]
pub struct Gpt {
    pub cfg: GptConfig,
    wte: Tensor,
    wpe: Option<Tensor>,
    blocks: Vec<Block>,
    ln_f: Norm,
    lm_head: Option<Tensor>,
}

impl Gpt {
    /// Creates the variables under `p` with GPT-2's names (`wte`, `wpe`, `h.{i}.attn.c_attn`,
    /// `h.{i}.mlp.c_fc`, `ln_f`, ...).
    pub fn new(p: nn::Path, cfg: GptConfig) -> Result<Self> {
        cfg.validate()?;
        let wte = (&p / "wte").var("weight", &[cfg.vocab_size, cfg.n_embd], normal(0.02));
        let wpe = (cfg.positions == Positions::Learned)
            .then(|| (&p / "wpe").var("weight", &[cfg.block_size, cfg.n_embd], normal(0.02)));
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let b = &p / "h" / i;
                Block {
                    ln_1: Norm::new(&b / "ln_1", &cfg),
                    attn: Attention::new(&b / "attn", &cfg),
                    ln_2: Norm::new(&b / "ln_2", &cfg),
                    mlp: Mlp::new(&b / "mlp", &cfg),
                    dropout: cfg.dropout,
                }
            })
            .collect();
        let ln_f = Norm::new(&p / "ln_f", &cfg);
        let lm_head = (!cfg.tie_weights)
            .then(|| (&p / "lm_head").var("weight", &[cfg.vocab_size, cfg.n_embd], normal(0.02)));
        Ok(Gpt {
            cfg,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }

    pub fn device(&self) -> Device {
        self.wte.device()
    }

    /// Logits `[B, T, V]` of a fresh batch of token ids `[B, T]` (T <= block_size).
    pub fn forward(&self, idx: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_inner(idx, None, None, train)
    }

    /// Logits `[B, T, V]` of `idx` following the cached sequence, which is extended in place.
    /// `valid` `[B, T]` marks real tokens (false for left padding) when rows differ in length.
    pub fn forward_cached(
        &self,
        idx: &Tensor,
        cache: &mut KvCache,
        valid: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_inner(idx, Some(cache), valid, false)
    }

    // `x = x + y` on purpose: tch's `+=` is in place, and autograd needs the old `x`.
    #[allow(clippy::assign_op_pattern)]
    fn forward_inner(
        &self,
        idx: &Tensor,
        mut cache: Option<&mut KvCache>,
        valid: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let size = idx.size();
        if size.len() != 2 {
            return Err(Error::invalid(format!(
                "GPT input must be token ids [B, T], got shape {size:?}"
            )));
        }
        let (b, t) = (size[0], size[1]);
        let past = cache.as_ref().map_or(0, |c| c.len);
        if past + t > self.cfg.block_size {
            return Err(Error::invalid(format!(
                "sequence of {} tokens exceeds the context length {}",
                past + t,
                self.cfg.block_size
            )));
        }
        let dev = idx.device();
        // Key validity over the whole (cached + new) sequence, and each token's position: the
        // number of real tokens before it, so left padding does not shift positions.
        let prior_valid = cache
            .as_ref()
            .and_then(|c| c.valid.as_ref().map(|v| v.shallow_clone()));
        let all_valid = match (prior_valid, valid) {
            (None, None) => None,
            (p, v) => {
                let p = p.unwrap_or_else(|| Tensor::ones([b, past], (Kind::Bool, dev)));
                let v = v
                    .map(|v| v.to_kind(Kind::Bool))
                    .unwrap_or_else(|| Tensor::ones([b, t], (Kind::Bool, dev)));
                Some(Tensor::cat(&[p, v], 1))
            }
        };
        let pos = match &all_valid {
            None => (Tensor::arange(t, (Kind::Int64, dev)) + past)
                .unsqueeze(0)
                .expand([b, t], false),
            Some(v) => (v.cumsum(1, Kind::Int64) - 1)
                .clamp_min(0)
                .narrow(1, past, t),
        };
        let mut x = Tensor::embedding(&self.wte, idx, -1, false, false);
        if let Some(wpe) = &self.wpe {
            x = x + Tensor::embedding(wpe, &pos, -1, false, false);
        }
        let x0 = x.dropout(self.cfg.dropout, train);
        let rope = (self.cfg.positions == Positions::Rotary).then(|| self.rope_tables(&pos));
        let mask_t;
        let mask = match &all_valid {
            None if past == 0 => AttnMask::Causal,
            None if t == 1 => AttnMask::All,
            v => {
                let s = past + t;
                let q = Tensor::arange(t, (Kind::Int64, dev)).unsqueeze(1) + past;
                let k = Tensor::arange(s, (Kind::Int64, dev)).unsqueeze(0);
                let causal = k.le_tensor(&q).view([1, 1, t, s]);
                mask_t = match v {
                    None => causal,
                    // Padding keys are hidden; each query always sees itself, so no row of the
                    // softmax is empty (a padding query would otherwise produce NaNs).
                    Some(v) => {
                        let keys = v.view([b, 1, 1, s]);
                        causal
                            .logical_and(&keys)
                            .logical_or(&k.eq_tensor(&q).view([1, 1, t, s]))
                    }
                };
                AttnMask::Explicit(&mask_t)
            }
        };
        let mut x = x0;
        if let Some(c) = cache.as_deref_mut() {
            if c.layers.len() != self.blocks.len() {
                c.layers = (0..self.blocks.len()).map(|_| None).collect();
            }
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            let a = blk
                .attn
                .forward(&blk.ln_1.forward(&x), rope.as_ref(), kv, &mask, train);
            x = x + a;
            let m = blk
                .mlp
                .forward(&blk.ln_2.forward(&x))
                .dropout(blk.dropout, train);
            x = x + m;
        }
        if let Some(c) = cache {
            c.len = past + t;
            c.valid = all_valid;
        }
        let x = self.ln_f.forward(&x);
        let head = self.lm_head.as_ref().unwrap_or(&self.wte);
        Ok(x.matmul(&head.tr()))
    }

    /// cos/sin tables `[B, 1, T, D]` for the given positions `[B, T]`.
    fn rope_tables(&self, pos: &Tensor) -> (Tensor, Tensor) {
        let d = self.cfg.head_dim();
        let dev = pos.device();
        let inv = (Tensor::arange_start_step(0, d, 2, (Kind::Float, dev)) / d as f64
            * -(self.cfg.rope_theta.ln()))
        .exp();
        let ang = pos.to_kind(Kind::Float).unsqueeze(-1) * inv; // [B, T, D/2]
        let ang = Tensor::cat(&[&ang, &ang], -1).unsqueeze(1);
        (ang.cos(), ang.sin())
    }

    /// Mean next-token cross-entropy (nats) of `x` against targets `y`, both `[B, T]`.
    pub fn loss(&self, x: &Tensor, y: &Tensor, train: bool) -> Result<Tensor> {
        let logits = self.forward(x, train)?;
        let v = logits.size()[2];
        Ok(logits.view([-1, v]).cross_entropy_loss(
            &y.view([-1]),
            None::<Tensor>,
            tch::Reduction::Mean,
            -100,
            0.0,
        ))
    }
}

/// Summed next-token negative log-likelihood (nats) of a token sequence and the number of
/// predicted tokens, over non-overlapping windows of the full context (each window starts with
/// an empty context, the usual non-overlapping estimate). `progress(done, total)` per batch.
pub fn sequence_nll(
    gpt: &Gpt,
    tokens: &[u32],
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<(f64, usize)> {
    if tokens.len() < 2 {
        return Err(Error::invalid("perplexity needs at least two tokens"));
    }
    let block = gpt.cfg.block_size as usize;
    let starts: Vec<usize> = (0..tokens.len() - 1).step_by(block).collect();
    let dev = gpt.device();
    let (mut nll, mut count) = (0.0, 0usize);
    for (bi, chunk) in starts.chunks(batch.max(1)).enumerate() {
        for &s in chunk {
            let len = block.min(tokens.len() - 1 - s);
            let x: Vec<i64> = tokens[s..s + len].iter().map(|&t| t as i64).collect();
            let y: Vec<i64> = tokens[s + 1..s + 1 + len]
                .iter()
                .map(|&t| t as i64)
                .collect();
            let x = Tensor::from_slice(&x).view([1, len as i64]).to_device(dev);
            let y = Tensor::from_slice(&y).to_device(dev);
            let logits = tch::no_grad(|| gpt.forward(&x, false))?;
            let l = logits.view([len as i64, -1]).cross_entropy_loss(
                &y,
                None::<Tensor>,
                tch::Reduction::Sum,
                -100,
                0.0,
            );
            nll += l.double_value(&[]);
            count += len;
        }
        progress((bi + 1) * batch.max(1), starts.len());
    }
    Ok((nll, count))
}

/// A GPT with its AdamW, as the trainer drives it.
pub struct GptModel {
    pub gpt: Gpt,
    pub vs: VarStore,
    opt: Adam,
    name: &'static str,
    /// How `sample` generates (the trainer's text samples).
    pub sampling: GenerateConfig,
}

impl GptModel {
    pub fn new(name: &'static str, cfg: GptConfig, device: Device) -> Result<Self> {
        cfg.validate_for(name)?;
        let vs = VarStore::new(device);
        let gpt = Gpt::new(vs.root(), cfg)?;
        let c = &gpt.cfg;
        let adam = AdamConfig {
            weight_decay: c.weight_decay,
            decoupled: true,
            ..AdamConfig::new(c.lr, c.beta1, c.beta2)
        };
        // nanoGPT's groups: decay the matrices and embeddings (dim >= 2), not biases or gains.
        let opt = Adam::new(&vs, adam).with_decay_filter(|_, t| t.dim() >= 2);
        Ok(GptModel {
            gpt,
            vs,
            opt,
            name,
            sampling: GenerateConfig {
                max_new_tokens: 256,
                processor: LogitsProcessor {
                    temperature: 0.8,
                    top_k: Some(200),
                    ..Default::default()
                },
                ..Default::default()
            },
        })
    }

    /// The prompt the trainer's samples start from: a newline when the tokenizer has one,
    /// else token 0 (nanoGPT's `START`).
    pub fn default_prompt(&self) -> Vec<u32> {
        self.gpt
            .cfg
            .vocab
            .as_ref()
            .and_then(|v| v.encode("\n").ok())
            .filter(|ids| !ids.is_empty())
            .unwrap_or_else(|| vec![0])
    }

    fn check_batch(&self, batch: &Batch) -> Result<Tensor> {
        let y = batch.y.as_ref().ok_or_else(|| {
            Error::invalid("GPT trains on text: batches need next-token targets (use text data)")
        })?;
        if batch.x.kind() != Kind::Int64 || batch.x.dim() != 2 {
            return Err(Error::invalid(format!(
                "GPT needs token ids [B, T] (int64), got {:?} of {:?}",
                batch.x.size(),
                batch.x.kind()
            )));
        }
        Ok(y.shallow_clone())
    }
}

impl Model for GptModel {
    fn as_text(&mut self) -> Option<&mut dyn TextModel> {
        Some(self)
    }

    fn name(&self) -> &str {
        self.name
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.gpt.cfg).unwrap_or_default()
    }

    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let y = self.check_batch(batch)?;
        let loss = self.gpt.loss(&batch.x, &y, true)?;
        self.opt.backward_step(&loss, ctx);
        Ok(vec![("loss".into(), loss.double_value(&[]))])
    }

    fn eval_step(&mut self, batch: &Batch) -> Result<Option<Losses>> {
        let y = self.check_batch(batch)?;
        let loss = tch::no_grad(|| self.gpt.loss(&batch.x, &y, false))?.double_value(&[]);
        Ok(Some(vec![("loss".into(), loss)]))
    }

    fn sample(&mut self, n: usize) -> Result<Samples> {
        let n = n.clamp(1, 8);
        let prompts = vec![self.default_prompt(); n];
        let out = generate(&self.gpt, &prompts, &self.sampling, |_, _| false)?;
        let texts = match &self.gpt.cfg.vocab {
            Some(v) => out
                .iter()
                .map(|ids| v.decode(ids))
                .collect::<Result<Vec<_>>>()?,
            None => out.iter().map(|ids| format!("{ids:?}")).collect(),
        };
        Ok(Samples::Text(texts))
    }

    fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        vec![("gpt", &self.vs)]
    }

    fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.opt.save_state("gpt", ckpt);
    }

    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.opt.load_state("gpt", ckpt, path)
    }
}

impl TextModel for GptModel {
    fn vocab(&self) -> Option<&Vocab> {
        self.gpt.cfg.vocab.as_ref()
    }

    fn block_size(&self) -> usize {
        self.gpt.cfg.block_size as usize
    }

    fn generate(
        &self,
        prompts: &[Vec<u32>],
        cfg: &GenerateConfig,
        on_token: &mut dyn FnMut(usize, u32) -> bool,
    ) -> Result<Vec<Vec<u32>>> {
        generate(&self.gpt, prompts, cfg, on_token)
    }

    fn sequence_nll(
        &self,
        tokens: &[u32],
        batch: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(f64, usize)> {
        sequence_nll(&self.gpt, tokens, batch, progress)
    }
}

fn text_config(name: &str, info: &DataInfo, base: GptConfig) -> Result<serde_json::Value> {
    let v = info.vocab_size.ok_or_else(|| {
        Error::invalid(format!(
            "{name} trains on text (moby-dick, kjv, text:FILE); this data has examples of shape {:?}",
            info.example_shape
        ))
    })?;
    let cfg = GptConfig {
        vocab_size: v as i64,
        vocab: info.vocab.clone(),
        ..base
    };
    cfg.validate_for(name)?;
    Ok(serde_json::to_value(cfg)?)
}

fn build(name: &'static str, json: &serde_json::Value, device: Device) -> Result<Box<dyn Model>> {
    let cfg: GptConfig = Check::model(name).parse(json)?;
    Ok(Box::new(GptModel::new(name, cfg, device)?))
}

/// `gpt`: nanoGPT's character-level configuration (6 x 6 x 384, context 256).
pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "gpt",
        family: "transformer",
        output: Output::Text,
        capabilities: &[Capability::Likelihood, Capability::TextGeneration],
        interpolation: None,
        summary: "GPT decoder (nanoGPT shakespeare_char: 6 layers x 6 heads x 384, context 256, dropout 0.2, AdamW 1e-3); options: rotary, rms_norm, swiglu",
        default_config: |info| text_config("gpt", info, GptConfig::char_small()),
        build: |json, device| build("gpt", json, device),
    }
}

/// `gpt-mini`: nanoGPT's CPU configuration (4 x 4 x 128, context 64, no dropout).
pub fn mini_entry() -> ModelEntry {
    ModelEntry {
        name: "gpt-mini",
        family: "transformer",
        output: Output::Text,
        capabilities: &[Capability::Likelihood, Capability::TextGeneration],
        interpolation: None,
        summary: "GPT decoder, nanoGPT's CPU configuration (4 layers x 4 heads x 128, context 64, no dropout, AdamW 1e-3)",
        default_config: |info| text_config("gpt-mini", info, GptConfig::cpu_mini()),
        build: |json, device| build("gpt-mini", json, device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_config_values_are_one_line_errors_naming_the_key() {
        let text = DataInfo {
            example_shape: vec![64],
            num_classes: None,
            vocab_size: Some(65),
            vocab: None,
        };
        let bad = [
            ("vocab_size", json!(0)),
            ("vocab_size", json!(10_000_000)),
            ("block_size", json!(-1)),
            ("block_size", json!(1 << 20)),
            ("n_layer", json!(0)),
            ("n_layer", json!(10_000)),
            ("n_head", json!(0)),
            ("n_head", json!(1000)), // more heads than n_embd
            ("n_embd", json!(99)),   // not a multiple of the 6 (gpt) or 4 (gpt-mini) heads
            ("n_embd", json!(100_000)),
            ("dropout", json!(1.0)),
            ("dropout", json!(-0.1)),
            ("rope_theta", json!(0.5)),
            ("norm_eps", json!(0.0)),
            ("lr", json!(-1e-3)),
            ("weight_decay", json!(-0.1)),
            ("beta1", json!(1.0)),
            ("beta2", json!(-0.95)),
            ("positions", json!("absolute")),
            ("bias", json!("yes")),
        ];
        for entry in [entry(), mini_entry()] {
            for (key, value) in &bad {
                let e =
                    genmodels_core::model::check::build_error(&entry, &text, key, value.clone());
                let head = format!("{} config: `{key}` = ", entry.name);
                assert!(
                    e.starts_with(&head) && !e.contains('\n'),
                    "{key} = {value}: {e}"
                );
            }
        }
        // Rotary positions need an even head size (here 390 / 6 = 65).
        let odd = GptConfig {
            positions: Positions::Rotary,
            n_embd: 390,
            ..GptConfig::char_small()
        };
        let e = odd.validate_for("gpt").unwrap_err().to_string();
        assert!(
            e.contains("`n_embd` = 390, expected an even head size"),
            "{e}"
        );
        // 2^20 tokens x 2048 is over the weight cap of one layer.
        let wide = GptConfig {
            vocab_size: 1 << 20,
            n_embd: 2048,
            n_head: 16,
            ..GptConfig::char_small()
        };
        let e = wide.validate().unwrap_err().to_string();
        assert!(
            e.contains("`vocab_size` = 1048576, expected at most 524288"),
            "{e}"
        );
        // A tokenizer larger than the vocabulary.
        let small = GptConfig {
            vocab_size: 3,
            vocab: Some(Vocab::chars_of("abcdef")),
            ..GptConfig::cpu_mini()
        };
        let e = small.validate().unwrap_err().to_string();
        assert!(
            e.contains("`vocab_size` = 3, expected at least the tokenizer's"),
            "{e}"
        );
    }
}
