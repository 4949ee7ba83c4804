//! VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017) with its autoregressive prior.
//!
//! - Encoder: two 4x4 stride-2 convolutions and two residual blocks (ReLU, 3x3 conv, ReLU, 1x1
//!   conv), then a 1x1 convolution to the code dimension: `[N, D, H/4, W/4]` (Sec. 4.1, with
//!   64 channels instead of 256 for CPU time). The decoder mirrors it with two 4x4 stride-2
//!   transposed convolutions.
//! - Vector quantisation: each encoder vector is replaced by its nearest codebook entry (Eq. 1-2);
//!   gradients pass straight through from decoder input to encoder output (Sec. 3.2).
//! - Loss (Eq. 3): reconstruction + `beta * ||z_e - sg[e]||^2` (the commitment loss, beta
//!   0.25) + the codebook term `||sg[z_e] - e||^2`, or, with `ema` (the default), codebook
//!   entries kept as exponential moving averages of the vectors assigned to them (App. A.1,
//!   decay 0.99, Laplace-smoothed counts).
//! - Prior: the paper fits an autoregressive model over the grid of codes after the VQ-VAE is
//!   trained; here a GPT (`genmodels-transformer`) over the `(H/4)(W/4)` codes in raster order
//!   after a start token. From step `prior_start` on, `train_step` trains only the prior, on the
//!   codes of the frozen encoder; sampling draws codes from it and decodes them.
//!
//! Logged: reconstruction MSE, commitment loss, codebook perplexity (exp of the entropy of the
//! batch's code histogram: how many codes are in use), then the prior's NLL per code.

use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::Batch;
use genmodels_core::model::check::{Check, MAX_WIDTH};
use genmodels_core::model::{
    Capability, Codebook as CodebookCapability, DataInfo, Losses, Model, ModelEntry, Output,
    Reconstruct, Samples,
};
use genmodels_core::optim::{Adam, AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use genmodels_transformer::generate::{generate, GenerateConfig};
use genmodels_transformer::gpt::{Gpt, GptConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VqVaeConfig {
    pub channels: i64,
    /// Side of the images; a multiple of 4.
    pub image_size: i64,
    /// Channels of the convolutions and of the residual blocks' inner layer.
    pub hidden: i64,
    pub res_hidden: i64,
    /// Codebook size K and code dimension D.
    pub codes: i64,
    pub code_dim: i64,
    /// Commitment weight beta.
    pub beta: f64,
    /// Codebook as exponential moving averages (App. A.1) instead of the codebook loss.
    pub ema: bool,
    pub ema_decay: f64,
    pub lr: f64,
    /// Step from which only the prior trains (the VQ-VAE frozen).
    pub prior_start: u64,
    pub prior_layers: i64,
    pub prior_heads: i64,
    pub prior_embd: i64,
    pub prior_lr: f64,
    /// Sampling temperature of the prior.
    pub temperature: f64,
}

impl Default for VqVaeConfig {
    fn default() -> Self {
        VqVaeConfig {
            channels: 1,
            image_size: 28,
            hidden: 64,
            res_hidden: 32,
            codes: 128,
            code_dim: 16,
            beta: 0.25,
            ema: true,
            ema_decay: 0.99,
            lr: 2e-4,
            prior_start: 3000,
            prior_layers: 4,
            prior_heads: 4,
            prior_embd: 128,
            prior_lr: 1e-3,
            temperature: 1.0,
        }
    }
}

impl VqVaeConfig {
    /// Every field in range, the prior's included, before any network is made.
    pub fn validate(&self) -> Result<()> {
        let c = Check::model("vqvae");
        // At most 1024: the prior's context, (image_size / 4)^2 codes, stays within 65536.
        c.image(self.channels, self.image_size, 4, 1024)?;
        c.ensure(
            self.image_size % 4 == 0,
            "image_size",
            self.image_size,
            "a multiple of 4 (two stride-2 layers)",
        )?;
        // The first convolution has hidden / 2 channels.
        c.int("hidden", self.hidden, 2, MAX_WIDTH)?;
        c.int("res_hidden", self.res_hidden, 1, MAX_WIDTH)?;
        c.int("codes", self.codes, 1, 65536)?;
        c.int("code_dim", self.code_dim, 1, MAX_WIDTH)?;
        c.non_negative("beta", self.beta)?;
        c.fraction("ema_decay", self.ema_decay)?;
        c.non_negative("lr", self.lr)?;
        c.int("prior_layers", self.prior_layers, 1, 256)?;
        c.int("prior_embd", self.prior_embd, 1, MAX_WIDTH)?;
        c.int("prior_heads", self.prior_heads, 1, self.prior_embd)?;
        c.ensure(
            self.prior_embd % self.prior_heads == 0,
            "prior_embd",
            self.prior_embd,
            format_args!("a multiple of prior_heads ({})", self.prior_heads),
        )?;
        c.non_negative("prior_lr", self.prior_lr)?;
        c.positive("temperature", self.temperature)
    }

    /// Side of the code grid.
    pub fn grid(&self) -> i64 {
        self.image_size / 4
    }

    fn prior_config(&self) -> GptConfig {
        GptConfig {
            vocab_size: self.codes + 1,
            block_size: self.grid() * self.grid(),
            n_layer: self.prior_layers,
            n_head: self.prior_heads,
            n_embd: self.prior_embd,
            dropout: 0.0,
            lr: self.prior_lr,
            beta2: 0.99,
            ..Default::default()
        }
    }
}

/// ReLU, 3x3 conv, ReLU, 1x1 conv, added to the input.
#[derive(Debug)]
struct Residual {
    c1: nn::Conv2D,
    c2: nn::Conv2D,
}

impl Residual {
    fn new(p: nn::Path, ch: i64, hidden: i64) -> Self {
        let pad1 = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Residual {
            c1: nn::conv2d(&p / "c1", ch, hidden, 3, pad1),
            c2: nn::conv2d(&p / "c2", hidden, ch, 1, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x + self.c2.forward(&self.c1.forward(&x.relu()).relu())
    }
}

#[derive(Debug)]
struct Encoder {
    down1: nn::Conv2D,
    down2: nn::Conv2D,
    res: [Residual; 2],
    to_code: nn::Conv2D,
}

#[derive(Debug)]
struct Decoder {
    from_code: nn::Conv2D,
    res: [Residual; 2],
    up1: nn::ConvTranspose2D,
    up2: nn::ConvTranspose2D,
}

fn stride2() -> nn::ConvConfig {
    nn::ConvConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    }
}

fn tstride2() -> nn::ConvTransposeConfig {
    nn::ConvTransposeConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    }
}

impl Encoder {
    fn new(p: nn::Path, c: &VqVaeConfig) -> Self {
        let h = c.hidden;
        Encoder {
            down1: nn::conv2d(&p / "down1", c.channels, h / 2, 4, stride2()),
            down2: nn::conv2d(&p / "down2", h / 2, h, 4, stride2()),
            res: [
                Residual::new(&p / "res0", h, c.res_hidden),
                Residual::new(&p / "res1", h, c.res_hidden),
            ],
            to_code: nn::conv2d(&p / "to_code", h, c.code_dim, 1, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.down2.forward(&self.down1.forward(x).relu());
        let h = self.res[1].forward(&self.res[0].forward(&h));
        self.to_code.forward(&h.relu())
    }
}

impl Decoder {
    fn new(p: nn::Path, c: &VqVaeConfig) -> Self {
        let h = c.hidden;
        let pad1 = nn::ConvConfig {
            padding: 1,
            ..Default::default()
        };
        Decoder {
            from_code: nn::conv2d(&p / "from_code", c.code_dim, h, 3, pad1),
            res: [
                Residual::new(&p / "res0", h, c.res_hidden),
                Residual::new(&p / "res1", h, c.res_hidden),
            ],
            up1: nn::conv_transpose2d(&p / "up1", h, h / 2, 4, tstride2()),
            up2: nn::conv_transpose2d(&p / "up2", h / 2, c.channels, 4, tstride2()),
        }
    }

    fn forward(&self, z: &Tensor) -> Tensor {
        let h = self.from_code.forward(z);
        let h = self.res[1].forward(&self.res[0].forward(&h)).relu();
        self.up2.forward(&self.up1.forward(&h).relu())
    }
}

/// The codebook `[K, D]` with, for the EMA variant, its running counts and sums.
#[derive(Debug)]
pub struct Codebook {
    pub embed: Tensor,
    cluster_size: Tensor,
    embed_avg: Tensor,
}

impl Codebook {
    fn new(p: nn::Path, c: &VqVaeConfig) -> Self {
        let (k, d) = (c.codes, c.code_dim);
        let bound = 1.0 / k as f64;
        let embed = if c.ema {
            let e = p.zeros_no_train("embed", &[k, d]);
            tch::no_grad(|| {
                let _ = e.shallow_clone().uniform_(-bound, bound);
            });
            e
        } else {
            p.var(
                "embed",
                &[k, d],
                nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )
        };
        let cluster_size = p.zeros_no_train("cluster_size", &[k]);
        let embed_avg = p.zeros_no_train("embed_avg", &[k, d]);
        tch::no_grad(|| embed_avg.shallow_clone().copy_(&embed));
        Codebook {
            embed,
            cluster_size,
            embed_avg,
        }
    }

    /// Index of the nearest entry (squared Euclidean) for each row of `z` `[M, D]`: `[M]`.
    pub fn nearest(&self, z: &Tensor) -> Tensor {
        let d = z.square().sum_dim_intlist(1, true, Kind::Float) - z.matmul(&self.embed.tr()) * 2.0
            + self
                .embed
                .square()
                .sum_dim_intlist(1, false, Kind::Float)
                .unsqueeze(0);
        d.argmin(1, false)
    }

    /// EMA update (App. A.1) from encoder vectors `z` `[M, D]` and their codes `[M]`:
    /// `N_k <- g N_k + (1-g) n_k`, `m_k <- g m_k + (1-g) sum_{i: k} z_i`, `e_k = m_k / N_k`
    /// with the counts Laplace-smoothed so unused entries do not divide by zero.
    pub fn ema_update(&mut self, z: &Tensor, codes: &Tensor, decay: f64) {
        tch::no_grad(|| {
            let k = self.embed.size()[0];
            let onehot = codes.one_hot(k).to_kind(Kind::Float); // [M, K]
            let n = onehot.sum_dim_intlist(0, false, Kind::Float);
            let sums = onehot.tr().matmul(z);
            let cs = &self.cluster_size * decay + n * (1.0 - decay);
            let avg = &self.embed_avg * decay + sums * (1.0 - decay);
            let total = cs.sum(Kind::Float);
            let eps = 1e-5;
            let smoothed = (&cs + eps) / (&total + k as f64 * eps) * &total;
            self.cluster_size.copy_(&cs);
            self.embed_avg.copy_(&avg);
            self.embed.copy_(&(avg / smoothed.unsqueeze(1)));
        })
    }
}

pub struct VqVae {
    pub cfg: VqVaeConfig,
    vs: VarStore,
    prior_vs: VarStore,
    opt: Adam,
    prior_opt: Adam,
    enc: Encoder,
    dec: Decoder,
    pub codebook: Codebook,
    prior: Gpt,
    device: Device,
}

/// What one forward pass of the autoencoder gives.
pub struct VqOut {
    pub recon: Tensor,
    /// Encoder output `[N, D, h, w]` and its quantised version (straight-through).
    pub z_e: Tensor,
    pub z_q: Tensor,
    /// Codes `[N, h, w]`.
    pub codes: Tensor,
}

impl VqVae {
    pub fn new(cfg: VqVaeConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let vs = VarStore::new(device);
        let prior_vs = VarStore::new(device);
        let enc = Encoder::new(vs.root() / "enc", &cfg);
        let dec = Decoder::new(vs.root() / "dec", &cfg);
        let codebook = Codebook::new(vs.root() / "codebook", &cfg);
        let prior = Gpt::new(prior_vs.root() / "prior", cfg.prior_config())?;
        let opt = Adam::new(&vs, AdamConfig::new(cfg.lr, 0.9, 0.999));
        let prior_opt = Adam::new(
            &prior_vs,
            AdamConfig {
                weight_decay: 0.1,
                decoupled: true,
                ..AdamConfig::new(cfg.prior_lr, 0.9, 0.99)
            },
        )
        .with_decay_filter(|_, t| t.dim() >= 2);
        Ok(VqVae {
            cfg,
            vs,
            prior_vs,
            opt,
            prior_opt,
            enc,
            dec,
            codebook,
            prior,
            device,
        })
    }

    fn check(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.cfg;
        let want = [c.channels, c.image_size, c.image_size];
        if x.dim() != 4 || x.size()[1..] != want {
            return Err(Error::invalid(format!(
                "vqvae configured for images {want:?}, got a batch of {:?}",
                x.size()
            )));
        }
        Ok(x.to_device(self.device))
    }

    /// Encoder vectors as rows `[N*h*w, D]` of `z_e` `[N, D, h, w]`.
    fn rows(z: &Tensor) -> Tensor {
        let d = z.size()[1];
        z.permute([0, 2, 3, 1]).reshape([-1, d])
    }

    /// Encode, quantise (straight-through), decode.
    pub fn forward(&self, x: &Tensor) -> VqOut {
        let z_e = self.enc.forward(x);
        let (n, d, h, w) = z_e.size4().unwrap_or((0, 0, 0, 0));
        let flat = Self::rows(&z_e);
        let codes = tch::no_grad(|| self.codebook.nearest(&flat.detach()));
        let e = self
            .codebook
            .embed
            .index_select(0, &codes)
            .view([n, h, w, d])
            .permute([0, 3, 1, 2]);
        // Straight-through: the decoder sees e, the encoder gets the decoder's gradient.
        let z_q = &z_e + (&e - &z_e).detach();
        let recon = self.dec.forward(&z_q);
        VqOut {
            recon,
            z_e,
            z_q: e,
            codes: codes.view([n, h, w]),
        }
    }

    /// Codes `[N, h*w]` of images in [-1, 1] (no gradients).
    pub fn encode_codes(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.check(x)?;
        Ok(tch::no_grad(|| {
            let z = self.enc.forward(&x);
            let n = z.size()[0];
            self.codebook.nearest(&Self::rows(&z)).view([n, -1])
        }))
    }

    /// Images `[N, C, H, W]` from codes `[N, h*w]`.
    pub fn decode_codes(&self, codes: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let g = self.cfg.grid();
            let n = codes.size()[0];
            let e = self
                .codebook
                .embed
                .index_select(0, &codes.reshape([-1]))
                .view([n, g, g, self.cfg.code_dim])
                .permute([0, 3, 1, 2]);
            self.dec.forward(&e).clamp(-1.0, 1.0)
        })
    }

    /// Reconstructions of images in [-1, 1].
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.decode_codes(&self.encode_codes(x)?))
    }

    /// Codebook perplexity of a batch of codes: `exp(-sum_k p_k log p_k)`.
    pub fn perplexity(&self, codes: &Tensor) -> f64 {
        let p = codes
            .reshape([-1])
            .bincount::<Tensor>(None, self.cfg.codes)
            .to_kind(Kind::Double);
        let p = &p / p.sum(Kind::Double);
        let ent = -(&p * (&p + 1e-12).log()).sum(Kind::Double);
        ent.exp().double_value(&[])
    }

    /// The VQ-VAE loss on images `x`: `(total, recon, commit, codebook, out)`.
    pub fn loss(&self, x: &Tensor) -> (Tensor, Tensor, Tensor, Tensor, VqOut) {
        let out = self.forward(x);
        let recon = out.recon.mse_loss(x, Reduction::Mean);
        let commit = out.z_e.mse_loss(&out.z_q.detach(), Reduction::Mean);
        let book = if self.cfg.ema {
            Tensor::zeros([], (Kind::Float, self.device))
        } else {
            out.z_q.mse_loss(&out.z_e.detach(), Reduction::Mean)
        };
        let total = &recon + &commit * self.cfg.beta + &book;
        (total, recon, commit, book, out)
    }

    /// Prior inputs and targets for codes `[N, L]`: `[BOS, c_1 .. c_{L-1}]` and `[c_1 .. c_L]`.
    fn prior_pair(&self, codes: &Tensor) -> (Tensor, Tensor) {
        let n = codes.size()[0];
        let bos = Tensor::full([n, 1], self.cfg.codes, (Kind::Int64, self.device));
        let l = codes.size()[1];
        (
            Tensor::cat(&[&bos, &codes.narrow(1, 0, l - 1)], 1),
            codes.shallow_clone(),
        )
    }

    /// The prior's mean NLL per code (nats) of codes `[N, L]`.
    pub fn prior_nll(&self, codes: &Tensor, train: bool) -> Result<Tensor> {
        let (x, y) = self.prior_pair(codes);
        self.prior.loss(&x, &y, train)
    }

    /// Codes `[n, h*w]` drawn from the prior.
    pub fn sample_codes(&self, n: usize) -> Result<Tensor> {
        let l = self.cfg.grid() * self.cfg.grid();
        let gen = GenerateConfig {
            max_new_tokens: l as usize,
            processor: genmodels_core::samplers::LogitsProcessor {
                temperature: self.cfg.temperature,
                ..Default::default()
            },
            use_cache: true,
        };
        let prompts = vec![vec![self.cfg.codes as u32]; n];
        let rows = tch::no_grad(|| generate(&self.prior, &prompts, &gen, |_, _| false))?;
        let flat: Vec<i64> = rows
            .iter()
            // The start token is never a target, so the prior gives it almost no mass; a draw
            // of it is mapped to the last code rather than indexing past the codebook.
            .flat_map(|r| r.iter().map(|&t| (t as i64).min(self.cfg.codes - 1)))
            .collect();
        Ok(Tensor::from_slice(&flat)
            .view([n as i64, l])
            .to_device(self.device))
    }
}

impl Model for VqVae {
    fn as_reconstruct(&mut self) -> Option<&mut dyn Reconstruct> {
        Some(self)
    }

    fn as_codebook(&mut self) -> Option<&mut dyn CodebookCapability> {
        Some(self)
    }

    fn name(&self) -> &str {
        "vqvae"
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    /// Before `prior_start`: one VQ-VAE update (and the EMA codebook update); from it on: one
    /// prior update on the codes of the batch.
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let x = self.check(&batch.x)?;
        if ctx.step >= self.cfg.prior_start {
            let codes = self.encode_codes(&x)?;
            let nll = self.prior_nll(&codes, true)?;
            self.prior_opt.backward_step(&nll, ctx);
            return Ok(vec![
                ("prior_nll".into(), nll.double_value(&[])),
                ("perplexity".into(), self.perplexity(&codes)),
            ]);
        }
        let (total, recon, commit, book, out) = self.loss(&x);
        self.opt.backward_step(&total, ctx);
        if self.cfg.ema {
            let flat = Self::rows(&out.z_e.detach());
            self.codebook
                .ema_update(&flat, &out.codes.reshape([-1]), self.cfg.ema_decay);
        }
        let mut l = vec![
            ("loss".to_string(), total.double_value(&[])),
            ("recon_mse".into(), recon.double_value(&[])),
            ("commit".into(), commit.double_value(&[])),
            ("perplexity".into(), self.perplexity(&out.codes)),
        ];
        if !self.cfg.ema {
            l.push(("codebook".into(), book.double_value(&[])));
        }
        Ok(l)
    }

    fn sample(&mut self, n: usize) -> Result<Samples> {
        let codes = self.sample_codes(n)?;
        Ok(Samples::Images(self.decode_codes(&codes)))
    }

    fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        vec![("vq", &self.vs), ("prior", &self.prior_vs)]
    }

    fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.opt.save_state("vq", ckpt);
        self.prior_opt.save_state("prior", ckpt);
    }

    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.opt.load_state("vq", ckpt, path)?;
        self.prior_opt.load_state("prior", ckpt, path)
    }
}

impl Reconstruct for VqVae {
    fn reconstruct(&mut self, x: &Tensor) -> Result<Tensor> {
        VqVae::reconstruct(self, x)
    }
}

impl CodebookCapability for VqVae {
    fn num_codes(&self) -> i64 {
        self.cfg.codes
    }

    fn encode_codes(&self, x: &Tensor) -> Result<Tensor> {
        VqVae::encode_codes(self, x)
    }

    fn decode_codes(&self, codes: &Tensor) -> Result<Tensor> {
        Ok(VqVae::decode_codes(self, codes))
    }

    fn perplexity(&self, codes: &Tensor) -> f64 {
        VqVae::perplexity(self, codes)
    }

    fn prior_nll(&self, codes: &Tensor) -> Result<f64> {
        Ok(tch::no_grad(|| VqVae::prior_nll(self, codes, false))?.double_value(&[]))
    }
}

pub fn entry() -> ModelEntry {
    ModelEntry {
        name: "vqvae",
        family: "vae",
        output: Output::Images,
        capabilities: &[Capability::Reconstruction, Capability::Codebook],
        interpolation: None,
        summary: "VQ-VAE (van den Oord et al. 2017): EMA codebook, straight-through, commitment 0.25; a GPT prior over the codes from step prior_start",
        default_config: |info: &DataInfo| {
            crate::image_config(
                info,
                "vqvae",
                |channels, image_size| VqVaeConfig {
                    channels,
                    image_size,
                    ..Default::default()
                },
                VqVaeConfig::validate,
            )
        },
        build: |json, device| {
            let cfg: VqVaeConfig = Check::model("vqvae").parse(json)?;
            Ok(Box::new(VqVae::new(cfg, device)?))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_config_values_are_one_line_errors_naming_the_key() {
        use serde_json::json;
        let bad = [
            ("channels", json!(-1)),
            ("image_size", json!(30)),
            ("image_size", json!(2048)),
            ("hidden", json!(1)),
            ("res_hidden", json!(0)),
            ("codes", json!(0)),
            ("codes", json!(10_000_000)),
            ("code_dim", json!(-16)),
            ("beta", json!(-0.25)),
            ("ema", json!("on")),
            ("ema_decay", json!(1.0)),
            ("lr", json!(-2e-4)),
            ("prior_start", json!(-1)),
            ("prior_layers", json!(0)),
            ("prior_heads", json!(0)),
            ("prior_heads", json!(256)), // more heads than prior_embd (128)
            ("prior_embd", json!(130)),  // not a multiple of the 4 heads
            ("prior_lr", json!(-1e-3)),
            ("temperature", json!(0.0)),
        ];
        genmodels_core::model::check::assert_rejects(&entry(), &crate::fashion_info(), &bad);
    }

    fn tiny(ema: bool) -> VqVae {
        let cfg = VqVaeConfig {
            image_size: 8,
            hidden: 8,
            res_hidden: 4,
            codes: 6,
            code_dim: 3,
            ema,
            prior_start: 2,
            prior_layers: 1,
            prior_heads: 2,
            prior_embd: 8,
            ..Default::default()
        };
        VqVae::new(cfg, Device::Cpu).unwrap()
    }

    #[test]
    fn quantiser_picks_the_nearest_code_and_passes_gradients_straight_through() {
        let _rng = crate::test_lock();
        let m = tiny(false);
        let z = Tensor::randn([20, 3], (Kind::Float, Device::Cpu)) * 0.01;
        let got = m.codebook.nearest(&z);
        // brute force
        let d = (z.unsqueeze(1) - m.codebook.embed.unsqueeze(0))
            .square()
            .sum_dim_intlist(2, false, Kind::Float);
        assert!(got.equal(&d.argmin(1, false)));
        // The model's forward: the decoder sees the codebook vectors, and the encoder gets the
        // decoder's gradient at them unchanged (straight-through, van den Oord et al. 2017,
        // Sec. 3.2). The reference chain: d loss / d e with e as a leaf, pushed through the
        // encoder by backpropagating (z_e * that gradient).
        let x = Tensor::rand([2, 1, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let r = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
        let out = m.forward(&x);
        let enc_vars: Vec<Tensor> =
            m.vs.variables()
                .into_iter()
                .filter(|(name, _)| name.starts_with("enc."))
                .map(|(_, t)| t)
                .collect();
        assert!(!enc_vars.is_empty());
        let got = Tensor::run_backward(
            &[(&out.recon * &r).sum(Kind::Float)],
            &enc_vars,
            false,
            false,
        );
        let e = out.z_q.detach().set_requires_grad(true);
        let g_e = Tensor::run_backward(
            &[(m.dec.forward(&e) * &r).sum(Kind::Float)],
            &[&e],
            false,
            false,
        );
        let z_e = m.enc.forward(&x);
        let want = Tensor::run_backward(
            &[(&z_e * &g_e[0]).sum(Kind::Float)],
            &enc_vars,
            false,
            false,
        );
        let mut nonzero = 0.0;
        for (a, b) in got.iter().zip(&want) {
            let diff = (a - b).abs().max().double_value(&[]);
            let scale = b.abs().max().double_value(&[]);
            assert!(diff <= 1e-4 * scale.max(1e-3), "{diff} of {scale}");
            nonzero += a.abs().sum(Kind::Float).double_value(&[]);
        }
        // Without the straight-through term the reconstruction would not reach the encoder.
        assert!(nonzero > 0.0);
        assert!(out
            .recon
            .allclose(&m.dec.forward(&out.z_q), 1e-6, 1e-6, false));
    }

    #[test]
    fn ema_update_follows_its_formula() {
        let _rng = crate::test_lock();
        let mut m = tiny(true);
        let before = m.codebook.embed.copy();
        let z = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 3.0, 2.0, 1.0, 5.0, 5.0, 5.0]).view([3, 3]);
        let codes = Tensor::from_slice(&[0i64, 0, 4]);
        let g = 0.9;
        m.codebook.ema_update(&z, &codes, g);
        // counts: 0.1 * [2, 0, 0, 0, 1, 0]; sums: initial embed * 0.9 + 0.1 * assigned sums
        let cs = Tensor::from_slice(&[0.2f32, 0.0, 0.0, 0.0, 0.1, 0.0]);
        let sums = Tensor::zeros([6, 3], (Kind::Float, Device::Cpu));
        sums.get(0).copy_(&Tensor::from_slice(&[4.0f32, 4.0, 4.0]));
        sums.get(4).copy_(&Tensor::from_slice(&[5.0f32, 5.0, 5.0]));
        let avg = &before * g + sums * (1.0 - g);
        let total = 0.3;
        let smoothed = (&cs + 1e-5) / (total + 6.0 * 1e-5) * total;
        let want = &avg / smoothed.unsqueeze(1);
        assert!(m.codebook.embed.allclose(&want, 1e-4, 1e-4, false));
        // A used code moves to the mean of its vectors as the averages settle.
        for _ in 0..300 {
            m.codebook.ema_update(&z, &codes, g);
        }
        let e0 = m.codebook.embed.get(0);
        assert!(
            e0.allclose(&Tensor::from_slice(&[2.0f32, 2.0, 2.0]), 1e-3, 1e-3, false),
            "{e0}"
        );
    }

    #[test]
    fn loss_terms_phases_and_sampling() {
        let _rng = crate::test_lock();
        for ema in [true, false] {
            let mut m = tiny(ema);
            let x = Tensor::rand([4, 1, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
            let (total, recon, commit, book, out) = m.loss(&x);
            let want = out.recon.mse_loss(&x, Reduction::Mean)
                + (&out.z_e - &out.z_q).square().mean(Kind::Float) * 0.25
                + if ema {
                    0.0
                } else {
                    (&out.z_e - &out.z_q)
                        .square()
                        .mean(Kind::Float)
                        .double_value(&[])
                };
            assert!((total.double_value(&[]) - want.double_value(&[])).abs() < 1e-5);
            assert!(recon.double_value(&[]) > 0.0 && commit.double_value(&[]) > 0.0);
            assert_eq!(book.double_value(&[]) == 0.0, ema);
            let batch = Batch {
                x: x.shallow_clone(),
                y: None,
            };
            // Phase 1 trains the autoencoder (every trainable variable), not the prior.
            let l = m.train_step(&batch, &StepCtx::default()).unwrap();
            assert_eq!(l[1].0, "recon_mse");
            for (name, t) in m.vs.variables() {
                if t.requires_grad() {
                    assert!(
                        t.grad().defined()
                            && t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0,
                        "{name}"
                    );
                }
            }
            assert!(m.prior_vs.variables().values().all(|t| !t.grad().defined()));
            // Phase 2 trains the prior on frozen codes.
            let frozen: Vec<Tensor> =
                m.vs.trainable_variables()
                    .iter()
                    .map(|t| t.copy())
                    .collect();
            let ctx = StepCtx {
                step: 2,
                ..Default::default()
            };
            let l = m.train_step(&batch, &ctx).unwrap();
            assert_eq!(l[0].0, "prior_nll");
            assert!(l[0].1 > 0.0);
            for (a, b) in frozen.iter().zip(m.vs.trainable_variables()) {
                assert!(a.equal(&b));
            }
            let Samples::Images(s) = m.sample(3).unwrap() else {
                panic!("images")
            };
            assert_eq!(s.size(), [3, 1, 8, 8]);
            assert_eq!(m.encode_codes(&x).unwrap().size(), [4, 4]);
        }
        // perplexity of uniform use of all codes is the codebook size
        let m = tiny(true);
        let codes = Tensor::arange(6, (Kind::Int64, Device::Cpu)).repeat([5]);
        assert!((m.perplexity(&codes) - 6.0).abs() < 1e-6);
        let bad = VqVaeConfig {
            image_size: 30,
            ..Default::default()
        };
        assert!(VqVae::new(bad, Device::Cpu)
            .err()
            .unwrap()
            .to_string()
            .contains("multiple of 4"));
    }
}
