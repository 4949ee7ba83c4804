//! Variational autoencoders with a Bernoulli decoder on binarised images:
//!
//! - **VAE** (Kingma & Welling 2014): Gaussian encoder `q(z|x) = N(mu(x), diag exp(logvar(x)))`,
//!   standard normal prior, reparameterised samples `z = mu + sigma * eps`, loss = -ELBO =
//!   `-E_q log p(x|z) + KL(q(z|x) || p(z))` with the KL in closed form (App. B);
//! - **beta-VAE** (Higgins et al. 2017): the same with the KL weighted by `beta > 1`, which
//!   pushes the posterior toward the factorised prior (latent traversals: [`Vae::traversal`]);
//! - **IWAE** (Burda, Grosse & Salakhutdinov 2016): `k` samples per input and the tighter bound
//!   `L_k = E[log (1/k) sum_i w_i]`, `w_i = p(x, z_i) / q(z_i|x)` (Eq. 8), optimised directly.
//!
//! Networks: `vae` defaults to the PyTorch examples' VAE (`D -> 400 -> (20 mu, 20 logvar)`,
//! decoder `20 -> 400 -> D` logits, ReLU, Adam 1e-3), which reached a better test NLL at 20
//! epochs than the IWAE paper's networks (3.5 nats on Fashion-MNIST, docs/results.md);
//! `iwae` and `beta-vae` keep the IWAE paper's one-stochastic-layer models (Sec. 5,
//! [`VaeConfig::iwae_paper`]): `D -> 200 -> 200 -> (50, 50)` and back, tanh, Adam with eps
//! 1e-4. Inputs are dynamically binarised (each pixel drawn as Bernoulli(intensity)
//! every time it is seen), the protocol behind the published MNIST likelihoods.
//!
//! The log-likelihood is estimated by importance sampling with the encoder as proposal,
//! `log p(x) ~ log (1/K) sum_k p(x, z_k) / q(z_k|x)` with K = 5000 in the papers
//! ([`Vae::log_likelihood`], `genmodels nll`).

use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::Batch;
use genmodels_core::losses::gaussian_kl;
use genmodels_core::model::check::{Check, MAX_LAYER_WEIGHTS, MAX_SIDE, MAX_WIDTH};
use genmodels_core::model::{
    Capability, DataInfo, Likelihood, Losses, Model, ModelEntry, Output, Reconstruct, Samples,
    Traversal,
};
use genmodels_core::optim::{Adam, AdamConfig, StepCtx};
use genmodels_core::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

/// The hidden layers' nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// As the IWAE paper's networks.
    Tanh,
    /// As the PyTorch examples' VAE.
    Relu,
}

/// How the linear layers' weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearInit {
    /// PyTorch's `nn.Linear`: weights and biases uniform in `+-1 / sqrt(fan_in)`.
    Pytorch,
    /// tch's `nn::linear` default: Kaiming uniform with the ReLU gain, `+-sqrt(6 / fan_in)`
    /// (2.45 times wider), biases as PyTorch. What runs before session 8 used.
    Tch,
}

/// The bound a model trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The ELBO with the closed-form KL, its reconstruction term averaged over `k` samples.
    Elbo,
    /// The importance-weighted bound `L_k`.
    Iwae,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaeConfig {
    pub channels: i64,
    pub image_size: i64,
    /// Width of the hidden layers, and how many there are in each network.
    pub hidden: i64,
    pub hidden_layers: i64,
    /// Missing in a run folder written before this setting existed: tanh, what it ran.
    #[serde(default = "Activation::legacy")]
    pub activation: Activation,
    /// Missing in a run folder written before this setting existed: tch's, what it ran.
    #[serde(default = "LinearInit::legacy")]
    pub init: LinearInit,
    pub z_dim: i64,
    pub objective: Objective,
    /// Samples per input (`k` of the IWAE bound; for the ELBO, of its reconstruction term).
    pub k: i64,
    /// Weight of the KL term of the ELBO (1: VAE; > 1: beta-VAE). Only with `objective = elbo`.
    pub beta: f64,
    /// Draw binary pixels from the intensities at every use (dynamic binarisation); `false`
    /// takes the intensities in [0, 1] as targets of the Bernoulli likelihood.
    pub binarize: bool,
    pub lr: f64,
    pub adam_eps: f64,
}

impl Default for VaeConfig {
    fn default() -> Self {
        VaeConfig {
            channels: 1,
            image_size: 28,
            hidden: 400,
            hidden_layers: 1,
            activation: Activation::Relu,
            init: LinearInit::Pytorch,
            z_dim: 20,
            objective: Objective::Elbo,
            k: 1,
            beta: 1.0,
            binarize: true,
            lr: 1e-3,
            adam_eps: 1e-8,
        }
    }
}

impl Activation {
    fn legacy() -> Self {
        Activation::Tanh
    }
}

impl LinearInit {
    fn legacy() -> Self {
        LinearInit::Tch
    }
}

fn linear(p: nn::Path, inp: i64, out: i64, init: LinearInit) -> nn::Linear {
    let cfg = match init {
        LinearInit::Tch => Default::default(),
        LinearInit::Pytorch => {
            let b = 1.0 / (inp.max(1) as f64).sqrt();
            nn::LinearConfig {
                ws_init: nn::Init::Uniform { lo: -b, up: b },
                bs_init: Some(nn::Init::Uniform { lo: -b, up: b }),
                bias: true,
            }
        }
    };
    nn::linear(p, inp, out, cfg)
}

impl VaeConfig {
    /// The IWAE paper's one-stochastic-layer networks (Burda et al. 2016, Sec. 5): 784 -> 200
    /// -> 200 -> 50 and back, tanh, Adam with eps 1e-4 (the `iwae` and `beta-vae` defaults).
    pub fn iwae_paper() -> Self {
        VaeConfig {
            hidden: 200,
            hidden_layers: 2,
            activation: Activation::Tanh,
            z_dim: 50,
            adam_eps: 1e-4,
            ..Default::default()
        }
    }
}

impl VaeConfig {
    /// Every field in range, before any network is made; errors name `model` and the key.
    pub fn validate(&self, model: &str) -> Result<()> {
        let c = Check::model(model);
        c.image(self.channels, self.image_size, 1, MAX_SIDE)?;
        c.int("hidden", self.hidden, 1, MAX_WIDTH)?;
        // The first encoder layer and the last decoder layer are pixels x hidden.
        let dim = self.dim();
        c.ensure(
            dim * self.hidden <= MAX_LAYER_WEIGHTS,
            "hidden",
            self.hidden,
            format_args!(
                "at most {} for {dim} pixels per image (one layer's weights at most 2^30)",
                MAX_LAYER_WEIGHTS / dim
            ),
        )?;
        c.int("hidden_layers", self.hidden_layers, 1, 64)?;
        c.int("z_dim", self.z_dim, 1, MAX_WIDTH)?;
        c.int("k", self.k, 1, 5000)?;
        c.positive("beta", self.beta)?;
        c.ensure(
            self.objective == Objective::Elbo || self.beta == 1.0,
            "beta",
            self.beta,
            "1 with objective = iwae: beta weights the KL of the ELBO, the IWAE bound has no separate KL term (use objective = elbo)",
        )?;
        c.non_negative("lr", self.lr)?;
        c.positive("adam_eps", self.adam_eps)
    }

    /// Pixels per image.
    pub fn dim(&self) -> i64 {
        self.channels * self.image_size * self.image_size
    }
}

/// The hidden layers `h0, h1, ...` of an MLP under `p`; the output layer (`p / "out"`) is made
/// apart, so that the decoder's can be used in closed form.
fn mlp_body(p: &nn::Path, inp: i64, cfg: &VaeConfig) -> nn::Sequential {
    let (hidden, act) = (cfg.hidden, cfg.activation);
    let mut s = nn::seq();
    let mut d = inp;
    for i in 0..cfg.hidden_layers {
        s = s
            .add(linear(p / format!("h{i}"), d, hidden, cfg.init))
            .add_fn(move |x| match act {
                Activation::Tanh => x.tanh(),
                Activation::Relu => x.relu(),
            });
        d = hidden;
    }
    s
}

fn mlp(p: nn::Path, inp: i64, cfg: &VaeConfig, out: i64) -> nn::Sequential {
    mlp_body(&p, inp, cfg).add(linear(&p / "out", cfg.hidden, out, cfg.init))
}

pub struct Vae {
    pub cfg: VaeConfig,
    name: &'static str,
    vs: VarStore,
    opt: Adam,
    enc: nn::Sequential,
    dec: nn::Sequential,
    dec_out: nn::Linear,
    device: Device,
}

/// One input's share of the terms of a bound, averaged over a batch.
#[derive(Debug, Clone, Copy)]
pub struct BoundParts {
    /// What is minimised.
    pub loss: f64,
    /// `-E_q log p(x|z)` (ELBO) or `-L_k` (IWAE), nats.
    pub nats: f64,
    /// `KL(q(z|x) || p(z))` (ELBO only; 0 for IWAE).
    pub kl: f64,
}

impl Vae {
    pub fn new(name: &'static str, cfg: VaeConfig, device: Device) -> Result<Self> {
        cfg.validate(name)?;
        let vs = VarStore::new(device);
        let (d, h, z) = (cfg.dim(), cfg.hidden, cfg.z_dim);
        let enc = mlp(vs.root() / "enc", d, &cfg, 2 * z);
        let dec = mlp_body(&(vs.root() / "dec"), z, &cfg);
        let dec_out = linear(vs.root() / "dec" / "out", h, d, cfg.init);
        let opt = Adam::new(
            &vs,
            AdamConfig {
                eps: cfg.adam_eps,
                ..AdamConfig::new(cfg.lr, 0.9, 0.999)
            },
        );
        Ok(Vae {
            cfg,
            name,
            vs,
            opt,
            enc,
            dec,
            dec_out,
            device,
        })
    }

    /// Images `[N, C, H, W]` in [-1, 1] to Bernoulli targets `[N, D]`: intensities in [0, 1],
    /// drawn to {0, 1} when the model binarises.
    pub fn targets(&self, x: &Tensor) -> Result<Tensor> {
        let want = [self.cfg.channels, self.cfg.image_size, self.cfg.image_size];
        if x.dim() != 4 || x.size()[1..] != want {
            return Err(Error::invalid(format!(
                "{} configured for images {want:?}, got a batch of {:?}",
                self.name,
                x.size()
            )));
        }
        let p = ((x.to_device(self.device) + 1.0) * 0.5)
            .clamp(0.0, 1.0)
            .flatten(1, -1);
        // Dynamic binarisation; in training, rows of one draw for the global batch (see
        // genmodels_core::rng::bernoulli_rows), so data-parallel runs binarise as one process.
        Ok(if self.cfg.binarize {
            genmodels_core::rng::bernoulli_rows(&p, 0)
        } else {
            p
        })
    }

    /// `(mu, logvar)` of q(z|x), each `[N, Z]`.
    pub fn encode(&self, x: &Tensor) -> (Tensor, Tensor) {
        let h = self.enc.forward(x);
        let mut parts = h.split(self.cfg.z_dim, 1);
        let logvar = parts.pop().unwrap_or_default();
        let mu = parts.pop().unwrap_or_default();
        (mu, logvar)
    }

    /// Decoder logits `[..., D]` for latents `[..., Z]`.
    pub fn decode(&self, z: &Tensor) -> Tensor {
        self.dec_out.forward(&self.dec.forward(z))
    }

    /// `log p(x | z)` `[k, N]` of targets `x` `[N, D]` under the decoder at latents `z`
    /// `[k, N, Z]`. With logits `l = W h + b`, `log p = x . l - sum_d softplus(l_d)`, and
    /// `x . l = (x W) . h + x . b` is computed per image, not per sample: of the `[k, N, D]`
    /// tensors only the logits and their softplus are made (the BCE-with-logits form makes
    /// several more, which is where the 5000-sample estimate spent its time).
    pub fn log_px(&self, x: &Tensor, z: &Tensor) -> Tensor {
        let h = self.dec.forward(z); // [k, N, H]
        let w = &self.dec_out.ws; // [D, H]
        let xw = x.matmul(w); // [N, H]
        let mut xl = (&h * xw.unsqueeze(0)).sum_dim_intlist(-1, false, Kind::Float);
        if let Some(b) = &self.dec_out.bs {
            xl += x.matmul(b).unsqueeze(0);
        }
        let logits = self.dec_out.forward(&h);
        xl - logits.softplus().sum_dim_intlist(-1, false, Kind::Float)
    }

    /// Log importance weights `log p(x, z_i) - log q(z_i | x)` of `k` reparameterised
    /// posterior samples per input: `[k, N]`.
    pub fn log_weights(&self, x: &Tensor, k: i64) -> Tensor {
        let (mu, logvar) = self.encode(x);
        self.log_weights_from(x, &mu, &logvar, k)
    }

    fn log_weights_from(&self, x: &Tensor, mu: &Tensor, logvar: &Tensor, k: i64) -> Tensor {
        let n = x.size()[0];
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        let eps =
            genmodels_core::rng::randn_rows(&[k, n, self.cfg.z_dim], 1, (Kind::Float, self.device));
        let z = mu + (logvar * 0.5).exp() * &eps;
        // log q(z|x) = sum_j log N(z_j; mu_j, sigma_j^2), with (z - mu) / sigma = eps.
        let log_q =
            ((eps.square() + logvar + ln2pi) * -0.5).sum_dim_intlist(-1, false, Kind::Float);
        let log_prior = ((z.square() + ln2pi) * -0.5).sum_dim_intlist(-1, false, Kind::Float);
        self.log_px(x, &z) + log_prior - log_q
    }

    /// The training objective on Bernoulli targets `[N, D]` (from [`Vae::targets`]).
    pub fn bound(&self, x: &Tensor) -> (Tensor, BoundParts) {
        let k = self.cfg.k;
        match self.cfg.objective {
            Objective::Elbo => {
                let (mu, logvar) = self.encode(x);
                let n = x.size()[0];
                let eps = genmodels_core::rng::randn_rows(
                    &[k, n, self.cfg.z_dim],
                    1,
                    (Kind::Float, self.device),
                );
                let z = &mu + (&logvar * 0.5).exp() * eps;
                let log_px = self.log_px(x, &z).mean_dim(0, false, Kind::Float);
                let kl = gaussian_kl(&mu, &logvar);
                let rec = -log_px.mean(Kind::Float);
                let kl_m = kl.mean(Kind::Float);
                let loss = &rec + &kl_m * self.cfg.beta;
                let parts = BoundParts {
                    loss: loss.double_value(&[]),
                    nats: rec.double_value(&[]) + kl_m.double_value(&[]),
                    kl: kl_m.double_value(&[]),
                };
                (loss, parts)
            }
            Objective::Iwae => {
                let lw = self.log_weights(x, k);
                let bound = lw.logsumexp([0], false) - (k as f64).ln();
                let loss = -bound.mean(Kind::Float);
                let v = loss.double_value(&[]);
                (
                    loss,
                    BoundParts {
                        loss: v,
                        nats: v,
                        kl: 0.0,
                    },
                )
            }
        }
    }

    /// Importance-sampled `log p(x)` per input `[N]` with `k` samples (drawn `chunk` at a time),
    /// the estimator behind the published negative log-likelihoods (Burda et al. 2016, Sec. 5,
    /// k = 5000). No gradients.
    pub fn log_likelihood(&self, x: &Tensor, k: i64, chunk: i64) -> Result<Tensor> {
        if k < 1 || chunk < 1 {
            return Err(Error::invalid(format!(
                "importance samples and chunk size must be positive, got k = {k}, chunk = {chunk}"
            )));
        }
        Ok(tch::no_grad(|| {
            let (mu, logvar) = self.encode(x);
            let mut parts = Vec::new();
            let mut done = 0;
            while done < k {
                let m = chunk.min(k - done);
                parts.push(
                    self.log_weights_from(x, &mu, &logvar, m)
                        .logsumexp([0], false),
                );
                done += m;
            }
            // log sum over all k = logsumexp of the chunks' log sums.
            Tensor::stack(&parts, 0).logsumexp([0], false) - (k as f64).ln()
        }))
    }

    /// Active units (Burda et al. 2016, Sec. 6): latent dimensions whose posterior mean varies
    /// across inputs, `Cov_x(E_q[z_u]) > threshold` (0.01 in the paper). Returns the per-unit
    /// variances `[Z]`.
    pub fn unit_activity(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.encode(x).0.var_dim(0, false, false))
    }

    /// A latent traversal (Higgins et al. 2017, Fig. 1): starting from the posterior mean of
    /// `x` `[1, D]`, each of `dims` in turn is set to `steps` values from -`range` to +`range`
    /// while the others stay. Returns images `[dims.len() * steps, C, H, W]` in [-1, 1].
    pub fn traversal(&self, x: &Tensor, dims: &[i64], steps: i64, range: f64) -> Result<Tensor> {
        if let Some(&bad) = dims.iter().find(|&&d| d < 0 || d >= self.cfg.z_dim) {
            return Err(Error::invalid(format!(
                "latent dimension {bad} out of range (the model has {})",
                self.cfg.z_dim
            )));
        }
        let steps = steps.max(2);
        Ok(tch::no_grad(|| {
            let (mu, _) = self.encode(x);
            let base = mu.narrow(0, 0, 1);
            let vals = Tensor::linspace(-range, range, steps, (Kind::Float, self.device));
            let rows: Vec<Tensor> = dims
                .iter()
                .map(|&d| {
                    let z = base.repeat([steps, 1]);
                    z.narrow(1, d, 1).copy_(&vals.view([steps, 1]));
                    z
                })
                .collect();
            self.images(&self.decode(&Tensor::cat(&rows, 0)))
        }))
    }

    /// Bernoulli means as images in [-1, 1].
    fn images(&self, logits: &Tensor) -> Tensor {
        let c = &self.cfg;
        (logits.sigmoid() * 2.0 - 1.0).view([-1, c.channels, c.image_size, c.image_size])
    }

    /// Reconstructions (decoder means at the posterior mean) of images in [-1, 1].
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.targets(x)?;
        Ok(tch::no_grad(|| {
            self.images(&self.decode(&self.encode(&t).0))
        }))
    }

    fn prior(&self, n: i64) -> Tensor {
        Tensor::randn([n, self.cfg.z_dim], (Kind::Float, self.device))
    }
}

impl Model for Vae {
    fn as_likelihood(&mut self) -> Option<&mut dyn Likelihood> {
        Some(self)
    }

    fn as_reconstruct(&mut self) -> Option<&mut dyn Reconstruct> {
        Some(self)
    }

    fn as_traversal(&mut self) -> Option<&mut dyn Traversal> {
        Some(self)
    }

    fn name(&self) -> &str {
        self.name
    }

    fn config_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or_default()
    }

    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let x = self.targets(&batch.x)?;
        let (loss, parts) = self.bound(&x);
        self.opt.backward_step(&loss, ctx);
        let mut out = vec![("loss".to_string(), parts.loss)];
        match self.cfg.objective {
            Objective::Elbo => {
                out.push(("nelbo".into(), parts.nats));
                out.push(("kl".into(), parts.kl));
            }
            Objective::Iwae => out.push((format!("nll_bound_k{}", self.cfg.k), parts.nats)),
        }
        Ok(out)
    }

    /// Held-out bounds: the negative ELBO (beta 1, one sample) and, for IWAE, `-L_k`.
    fn eval_step(&mut self, batch: &Batch) -> Result<Option<Losses>> {
        let x = self.targets(&batch.x)?;
        tch::no_grad(|| {
            let lw1 = self.log_weights(&x, 1);
            let mut out = vec![(
                "nelbo".to_string(),
                -lw1.mean(Kind::Float).double_value(&[]),
            )];
            if self.cfg.objective == Objective::Iwae {
                let k = self.cfg.k;
                let b = self.log_weights(&x, k).logsumexp([0], false) - (k as f64).ln();
                out.push((
                    format!("nll_bound_k{k}"),
                    -b.mean(Kind::Float).double_value(&[]),
                ));
            }
            Ok(Some(out))
        })
    }

    fn sample(&mut self, n: usize) -> Result<Samples> {
        let z = self.prior(n as i64);
        Ok(Samples::Images(tch::no_grad(|| {
            self.images(&self.decode(&z))
        })))
    }

    fn interpolate(&mut self, rows: usize, steps: usize) -> Result<Option<Tensor>> {
        let (a, b) = (self.prior(rows as i64), self.prior(rows as i64));
        let z = genmodels_core::samplers::slerp_grid(&a, &b, steps);
        Ok(Some(tch::no_grad(|| self.images(&self.decode(&z)))))
    }

    fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        vec![("vae", &self.vs)]
    }

    fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.opt.save_state("vae", ckpt);
    }

    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.opt.load_state("vae", ckpt, path)
    }
}

fn default_for(info: &DataInfo, name: &str, base: VaeConfig) -> Result<serde_json::Value> {
    crate::image_config(
        info,
        name,
        |channels, image_size| VaeConfig {
            channels,
            image_size,
            ..base
        },
        |cfg| cfg.validate(name),
    )
}

fn build(name: &'static str, json: &serde_json::Value, device: Device) -> Result<Box<dyn Model>> {
    let cfg: VaeConfig = Check::model(name).parse(json)?;
    Ok(Box::new(Vae::new(name, cfg, device)?))
}

impl Likelihood for Vae {
    fn prepare(&self, x: &Tensor) -> Result<Tensor> {
        self.targets(x)
    }

    fn preparation(&self) -> String {
        if self.cfg.binarize {
            "dynamic binarisation (pixels drawn to {0, 1} with their intensity), drawn once".into()
        } else {
            "none (intensities in [0, 1])".into()
        }
    }

    fn log_likelihood(&self, x: &Tensor, samples: i64) -> Result<Tensor> {
        // Importance samples per forward pass: about 4k decoder rows (a few MB per tensor).
        // Passes of half a million rows spent most of their time in the kernel, mapping and
        // zeroing fresh pages for gigabyte-sized intermediates (75 % system time measured);
        // 1k-32k rows were within 25 % of each other, 4k the fastest.
        let rows = x.size()[0].max(1);
        let chunk = (4096 / rows).clamp(1, samples.max(1));
        Vae::log_likelihood(self, x, samples, chunk)
    }

    fn bound(&self, x: &Tensor) -> Result<Tensor> {
        Ok(tch::no_grad(|| self.log_weights(x, 1)).squeeze_dim(0))
    }

    fn posterior_means(&self, x: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(tch::no_grad(|| self.encode(x).0)))
    }
}

impl Reconstruct for Vae {
    fn reconstruct(&mut self, x: &Tensor) -> Result<Tensor> {
        Vae::reconstruct(self, x)
    }
}

impl Traversal for Vae {
    fn latent_dims(&self) -> i64 {
        self.cfg.z_dim
    }

    fn unit_activity(&self, x: &Tensor) -> Result<Tensor> {
        Ok(Vae::unit_activity(self, &self.targets(x)?))
    }

    fn traversal(&self, x: &Tensor, dims: &[i64], steps: i64, range: f64) -> Result<Tensor> {
        Vae::traversal(self, &self.targets(x)?, dims, steps, range)
    }
}

pub fn vae_entry() -> ModelEntry {
    ModelEntry {
        name: "vae",
        family: "vae",
        output: Output::Images,
        capabilities: &[Capability::Interpolation, Capability::Likelihood, Capability::Reconstruction, Capability::Traversal],
        interpolation: Some("slerp in z"),
        summary: "VAE (Kingma & Welling 2014): Gaussian encoder, Bernoulli decoder on dynamically binarised images, ELBO",
        default_config: |info| default_for(info, "vae", VaeConfig::default()),
        build: |json, device| build("vae", json, device),
    }
}

pub fn beta_vae_entry() -> ModelEntry {
    ModelEntry {
        name: "beta-vae",
        family: "vae",
        output: Output::Images,
        capabilities: &[Capability::Interpolation, Capability::Likelihood, Capability::Reconstruction, Capability::Traversal],
        interpolation: Some("slerp in z"),
        summary: "beta-VAE (Higgins et al. 2017): the VAE with the KL weighted by beta (4); latent traversals",
        default_config: |info| {
            default_for(
                info,
                "beta-vae",
                VaeConfig {
                    beta: 4.0,
                    ..VaeConfig::iwae_paper()
                },
            )
        },
        build: |json, device| build("beta-vae", json, device),
    }
}

pub fn iwae_entry() -> ModelEntry {
    ModelEntry {
        name: "iwae",
        family: "vae",
        output: Output::Images,
        capabilities: &[
            Capability::Interpolation,
            Capability::Likelihood,
            Capability::Reconstruction,
            Capability::Traversal,
        ],
        interpolation: Some("slerp in z"),
        summary: "IWAE (Burda et al. 2016): the importance-weighted bound with k = 50 samples",
        default_config: |info| {
            default_for(
                info,
                "iwae",
                VaeConfig {
                    objective: Objective::Iwae,
                    k: 50,
                    ..VaeConfig::iwae_paper()
                },
            )
        },
        build: |json, device| build("iwae", json, device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genmodels_core::losses::bernoulli_log_likelihood;

    #[test]
    fn bad_config_values_are_one_line_errors_naming_the_key() {
        use serde_json::json;
        let bad = [
            ("channels", json!(0)),
            ("image_size", json!(-28)),
            ("image_size", json!(100_000)),
            ("hidden", json!(0)),
            ("hidden", json!(5_000_000)), // over the width cap
            ("hidden_layers", json!(0)),
            ("z_dim", json!(-50)),
            ("k", json!(0)),
            ("k", json!(1_000_000)),
            ("beta", json!(0.0)),
            ("beta", json!(-4.0)),
            ("objective", json!("bogus")),
            ("binarize", json!("no")),
            ("lr", json!(-1e-3)),
            ("adam_eps", json!(0.0)),
        ];
        for entry in [vae_entry(), beta_vae_entry(), iwae_entry()] {
            genmodels_core::model::check::assert_rejects(&entry, &crate::fashion_info(), &bad);
        }
        // The IWAE bound has no KL term to weight.
        genmodels_core::model::check::assert_rejects(
            &iwae_entry(),
            &crate::fashion_info(),
            &[("beta", json!(4.0))],
        );
        // 3 x 1024 x 1024 pixels times 8192 hidden units is over the weight cap of one layer.
        let big = VaeConfig {
            channels: 3,
            image_size: 1024,
            hidden: 8192,
            ..Default::default()
        };
        let e = big.validate("vae").unwrap_err().to_string();
        assert!(
            e.starts_with("vae config: `hidden` = 8192, expected at most 341"),
            "{e}"
        );
    }

    fn tiny(objective: Objective, k: i64, beta: f64) -> Vae {
        let cfg = VaeConfig {
            image_size: 2,
            hidden: 8,
            hidden_layers: 1,
            z_dim: 1,
            objective,
            k,
            beta,
            ..Default::default()
        };
        Vae::new("vae", cfg, Device::Cpu).unwrap()
    }

    #[test]
    fn pytorch_init_bounds_and_legacy_run_configs() {
        let _rng = crate::test_lock();
        tch::manual_seed(0);
        let m = Vae::new("vae", VaeConfig::default(), Device::Cpu).unwrap();
        let v = m.vs.variables();
        // PyTorch's nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std = bound / sqrt(3).
        let w = &v["enc.h0.weight"];
        let b = 1.0 / 784f64.sqrt();
        assert!(w.abs().max().double_value(&[]) <= b);
        let std = w.std(true).double_value(&[]);
        assert!((std - b / 3f64.sqrt()).abs() < 0.02 * b, "{std}");
        // tch's default is 2.45 times wider: the legacy setting keeps it.
        let tch_cfg = VaeConfig {
            init: LinearInit::Tch,
            ..Default::default()
        };
        let t = Vae::new("vae", tch_cfg, Device::Cpu).unwrap();
        let tw = t.vs.variables()["enc.h0.weight"]
            .std(true)
            .double_value(&[]);
        assert!((tw / std - 6f64.sqrt()).abs() < 0.1, "{tw} {std}");
        // A run folder from before `activation` and `init` existed ran tanh and tch's init.
        let mut old = serde_json::to_value(VaeConfig::iwae_paper()).unwrap();
        let o = old.as_object_mut().unwrap();
        o.remove("activation");
        o.remove("init");
        let cfg: VaeConfig = serde_json::from_value(old).unwrap();
        assert_eq!(
            (cfg.activation, cfg.init),
            (Activation::Tanh, LinearInit::Tch)
        );
    }

    #[test]
    fn closed_form_decoder_likelihood_equals_the_bce_of_the_logits() {
        // log_px takes x . l per image through the output layer's weights: the same value as
        // -BCE-with-logits of the decoded logits, sample by sample, for both activations.
        let _rng = crate::test_lock();
        tch::manual_seed(3);
        for activation in [Activation::Tanh, Activation::Relu] {
            let cfg = VaeConfig {
                image_size: 3,
                hidden: 16,
                z_dim: 4,
                activation,
                ..Default::default()
            };
            let m = Vae::new("vae", cfg, Device::Cpu).unwrap();
            let x = Tensor::rand([5, 9], (Kind::Float, Device::Cpu)).bernoulli();
            let z = Tensor::randn([7, 5, 4], (Kind::Float, Device::Cpu)) * 3.0;
            let got = m.log_px(&x, &z);
            let want = bernoulli_log_likelihood(
                &m.decode(&z).view([35, 9]),
                &x.unsqueeze(0).expand([7, 5, 9], false).reshape([35, 9]),
            )
            .view([7, 5]);
            assert!(got.allclose(&want, 1e-5, 1e-4, false), "{got} {want}");
        }
    }

    /// log p(x) = log integral p(x|z) N(z; 0, 1) dz for a one-dimensional latent, by the
    /// trapezoid rule on a dense grid: the ground truth for the estimators.
    fn exact_log_likelihood(m: &Vae, x: &Tensor) -> Vec<f64> {
        let (lo, hi, n) = (-10.0, 10.0, 40_001i64);
        let z = Tensor::linspace(lo, hi, n, (Kind::Float, Device::Cpu)).view([n, 1]);
        let dz = (hi - lo) / (n - 1) as f64;
        let ln2pi = (2.0 * std::f64::consts::PI).ln();
        tch::no_grad(|| {
            let logits = m.decode(&z); // [n, D]
            (0..x.size()[0])
                .map(|i| {
                    let xi = x.get(i).unsqueeze(0).expand([n, x.size()[1]], false);
                    let lp = bernoulli_log_likelihood(&logits, &xi)
                        + (z.squeeze_dim(1).square() + ln2pi) * -0.5;
                    (lp.to_kind(Kind::Double).logsumexp([0], false) + dz.ln()).double_value(&[])
                })
                .collect()
        })
    }

    #[test]
    fn importance_sampling_converges_to_the_exact_likelihood_and_bounds_are_ordered() {
        let _rng = crate::test_lock();
        tch::manual_seed(1);
        let m = tiny(Objective::Iwae, 5, 1.0);
        let x = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]).view([2, 4]);
        let exact = exact_log_likelihood(&m, &x);
        let est = m.log_likelihood(&x, 20_000, 3_000).unwrap();
        for (i, e) in exact.iter().enumerate() {
            let v = est.double_value(&[i as i64]);
            assert!(
                (v - e).abs() < 0.02,
                "input {i}: IS estimate {v} vs exact {e}"
            );
        }
        // E[L_1] <= E[L_5] <= E[L_50] <= log p(x) (Burda et al. Theorem 1), by averaging many
        // draws of each bound; the ELBO with the closed-form KL has the same mean as L_1.
        let mean_bound = |k: i64| {
            tch::no_grad(|| {
                let lw = m.log_weights(&x.repeat([2000, 1]), k);
                let b = lw.logsumexp([0], false) - (k as f64).ln();
                b.view([2000, 2]).mean_dim(0, false, Kind::Double)
            })
        };
        let (l1, l5, l50) = (mean_bound(1), mean_bound(5), mean_bound(50));
        let (mu, logvar) = tch::no_grad(|| m.encode(&x));
        let elbo_kl = tch::no_grad(|| {
            let z = mu.unsqueeze(0)
                + (&logvar * 0.5).exp().unsqueeze(0)
                    * Tensor::randn([20_000, 2, 1], (Kind::Float, Device::Cpu));
            let logits = m.decode(&z).view([40_000, 4]);
            let lp = bernoulli_log_likelihood(&logits, &x.repeat([20_000, 1])).view([20_000, 2]);
            lp.mean_dim(0, false, Kind::Double) - gaussian_kl(&mu, &logvar).to_kind(Kind::Double)
        });
        for i in 0..2 {
            let [a, b, c] = [&l1, &l5, &l50].map(|t| t.double_value(&[i]));
            assert!(
                a < b && b < c && c < exact[i as usize] + 0.01,
                "input {i}: {a} {b} {c} vs {}",
                exact[i as usize]
            );
            let e = elbo_kl.double_value(&[i]);
            assert!(
                (e - a).abs() < 0.05,
                "input {i}: ELBO with closed-form KL {e} vs E[L_1] {a}"
            );
        }
    }

    #[test]
    fn beta_weights_the_kl_and_every_parameter_learns() {
        let _rng = crate::test_lock();
        let x = Tensor::rand([6, 4], (Kind::Float, Device::Cpu)).round();
        let parts = |beta: f64| {
            tch::manual_seed(7);
            let m = tiny(Objective::Elbo, 3, beta);
            tch::manual_seed(8);
            m.bound(&x).1
        };
        let (p1, p4) = (parts(1.0), parts(4.0));
        assert!(p1.kl > 0.0);
        assert!((p1.kl - p4.kl).abs() < 1e-9 && (p1.nats - p4.nats).abs() < 1e-9);
        assert!(
            (p4.loss - p1.loss - 3.0 * p1.kl).abs() < 1e-5,
            "{p1:?} {p4:?}"
        );
        // For the ELBO objective with beta 1 the loss is the negative ELBO.
        assert!((p1.loss - p1.nats).abs() < 1e-6);
        for obj in [Objective::Elbo, Objective::Iwae] {
            let mut m = tiny(obj, 4, 1.0);
            let images = x.view([6, 1, 2, 2]) * 2.0 - 1.0;
            let losses = m
                .train_step(
                    &Batch {
                        x: images.shallow_clone(),
                        y: None,
                    },
                    &StepCtx::default(),
                )
                .unwrap();
            assert!(losses.iter().all(|(_, v)| v.is_finite()), "{losses:?}");
            for (name, t) in m.vs.variables() {
                let g = t.grad();
                assert!(
                    g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                    "{obj:?}: {name} got no gradient"
                );
            }
            let val = m.eval_step(&Batch { x: images, y: None }).unwrap().unwrap();
            assert_eq!(val[0].0, "nelbo");
            assert_eq!(val.len(), if obj == Objective::Iwae { 2 } else { 1 });
        }
    }

    #[test]
    fn shapes_traversals_and_clear_errors() {
        let _rng = crate::test_lock();
        let mut m = Vae::new(
            "vae",
            VaeConfig {
                z_dim: 4,
                ..Default::default()
            },
            Device::Cpu,
        )
        .unwrap();
        let Samples::Images(s) = m.sample(3).unwrap() else {
            panic!("images")
        };
        assert_eq!(s.size(), [3, 1, 28, 28]);
        assert!(s.min().double_value(&[]) >= -1.0 && s.max().double_value(&[]) <= 1.0);
        let x = Tensor::rand([2, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        assert_eq!(m.reconstruct(&x).unwrap().size(), [2, 1, 28, 28]);
        let t = m.targets(&x).unwrap();
        let tr = m.traversal(&t, &[0, 3], 5, 3.0).unwrap();
        assert_eq!(tr.size(), [10, 1, 28, 28]);
        // within a row only the traversed dimension moves: its ends differ
        assert!((tr.get(0) - tr.get(4)).abs().max().double_value(&[]) > 0.0);
        assert!(m
            .traversal(&t, &[4], 5, 3.0)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!(m.interpolate(2, 4).unwrap().unwrap().size() == [8, 1, 28, 28]);
        let wrong = Tensor::zeros([2, 1, 32, 32], (Kind::Float, Device::Cpu));
        assert!(m
            .targets(&wrong)
            .unwrap_err()
            .to_string()
            .contains("[1, 28, 28]"));
        let bad = |c: VaeConfig| {
            Vae::new("vae", c, Device::Cpu)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(bad(VaeConfig {
            k: 0,
            ..Default::default()
        })
        .contains("vae config: `k` = 0"));
        assert!(bad(VaeConfig {
            objective: Objective::Iwae,
            beta: 4.0,
            ..Default::default()
        })
        .contains("objective = elbo"));
        assert!(m.log_likelihood(&t, 0, 10).is_err());
        // dynamic binarisation: targets are 0/1
        assert!(t.eq(0.0).logical_or(&t.eq(1.0)).all().int64_value(&[]) == 1);
    }
}
