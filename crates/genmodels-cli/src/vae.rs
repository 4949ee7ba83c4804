//! The VAE family's verbs: `nll` (importance-sampled log-likelihood, bounds, active units) and
//! `traverse` (latent traversals).

use crate::bar;
use anyhow::{bail, Context, Result};
use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::{DataLoader, DataSpec};
use genmodels_core::device::{device_from_env_or, seed_everything};
use genmodels_core::model::load_model_state;
use genmodels_vae::vae::{Vae, VaeConfig};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

const VAE_MODELS: [&str; 3] = ["vae", "beta-vae", "iwae"];

fn load_vae(run_dir: &Path, device: tch::Device) -> Result<Vae> {
    let (ck, path) = crate::open_checkpoint(run_dir, None)?;
    vae_from(&ck, &path, run_dir, device)
}

fn vae_from(ck: &Checkpoint, path: &Path, run_dir: &Path, device: tch::Device) -> Result<Vae> {
    let Some(&name) = VAE_MODELS.iter().find(|n| **n == ck.meta.model) else {
        bail!(
            "this verb needs a VAE run ({}); {} holds a `{}` model",
            VAE_MODELS.join(", "),
            run_dir.display(),
            ck.meta.model
        );
    };
    let cfg: VaeConfig =
        serde_json::from_value(ck.meta.config.clone()).context("the checkpoint's VAE config")?;
    let mut m = Vae::new(name, cfg, device)?;
    load_model_state(&mut m, ck, path, false)?;
    Ok(m)
}

/// What `nll` and `reconstruct` score: a run, on some images, with a seed for the binarisation.
#[derive(clap::Args)]
pub struct ScoredSet {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Images to score.
    #[arg(long, default_value = "fashion-mnist:test")]
    pub data: String,
    /// At most this many images.
    #[arg(short, long, default_value_t = 10000)]
    pub n: usize,
    /// Seed of the one binarisation of the images (and of the importance samples).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub device: Option<String>,
    /// Also write the scores as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn nll(a: &ScoredSet, k: i64) -> Result<()> {
    if a.n == 0 || k < 1 {
        bail!("-n and -k must be at least 1");
    }
    let device = device_from_env_or(a.device.as_deref())?;
    let m = load_vae(&a.run_dir, device)?;
    let ds = DataSpec::parse(&a.data)?.dataset()?;
    let n = a.n.min(ds.len());
    // One fixed binarisation of the test images (the seed), as the published numbers use.
    seed_everything(a.seed);
    let per = 100usize;
    let chunk = (500_000 / per as i64).clamp(1, k);
    let b = bar(n as u64, &format!("log p(x), k = {}", k));
    let (mut ll, mut elbo, mut means) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    while done < n {
        let idx: Vec<usize> = (done..(done + per).min(n)).collect();
        let batch = DataLoader::collate(ds.as_ref(), &idx, device)?;
        let x = m.targets(&batch.x)?;
        ll.push(m.log_likelihood(&x, k, chunk)?);
        elbo.push(tch::no_grad(|| m.log_weights(&x, 1)).squeeze_dim(0));
        means.push(tch::no_grad(|| m.encode(&x).0));
        done += idx.len();
        b.set_position(done as u64);
    }
    b.finish_and_clear();
    let ll = Tensor::cat(&ll, 0).to_kind(Kind::Double);
    let elbo = Tensor::cat(&elbo, 0).to_kind(Kind::Double);
    let nll = -ll.mean(Kind::Double).double_value(&[]);
    let se = ll.std(true).double_value(&[]) / (n as f64).sqrt();
    let nelbo = -elbo.mean(Kind::Double).double_value(&[]);
    let activity = Tensor::cat(&means, 0).var_dim(0, false, false);
    let active = activity.gt(0.01).sum(Kind::Int64).int64_value(&[]);
    let z_dim = m.cfg.z_dim;
    let nll_name = format!("NLL (k = {})", k);
    println!("{:<28} {:>10}", "metric", "value");
    println!("{nll_name:<28} {nll:>10.3} nats (+- {se:.3} s.e.)");
    println!("{:<28} {nelbo:>10.3} nats", "negative ELBO (one sample)");
    println!(
        "{:<28} {active:>10} of {z_dim} (Cov_x E_q[z_u] > 0.01)",
        "active units"
    );
    println!(
        "{n} images of {}; binarisation: {} (seed {})",
        a.data,
        if m.cfg.binarize {
            "dynamic, drawn once"
        } else {
            "none (intensities)"
        },
        a.seed
    );
    if let Some(p) = &a.json {
        let v = serde_json::json!({
            "model": m.cfg,
            "data": a.data,
            "n": n,
            "k": k,
            "seed": a.seed,
            "nll_nats": nll,
            "nll_standard_error": se,
            "negative_elbo_nats": nelbo,
            "active_units": active,
            "z_dim": z_dim,
            "unit_activity": Vec::<f64>::try_from(activity.to_kind(Kind::Double))?,
        });
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Options of `genmodels traverse`.
pub struct TraverseArgs<'a> {
    pub run_dir: &'a Path,
    pub data: &'a str,
    pub index: usize,
    pub out: &'a Path,
    pub dims: Option<Vec<i64>>,
    pub rows: usize,
    pub steps: i64,
    pub range: f64,
    pub device: Option<&'a str>,
}

pub fn traverse(a: TraverseArgs) -> Result<()> {
    if a.steps < 2 || a.rows == 0 || a.range.is_nan() || a.range <= 0.0 {
        bail!("--steps must be at least 2, --rows at least 1 and --range positive");
    }
    let device = device_from_env_or(a.device)?;
    let m = load_vae(a.run_dir, device)?;
    let ds = DataSpec::parse(a.data)?.dataset()?;
    if a.index >= ds.len() {
        bail!(
            "--index {} is out of range: {} has {} images",
            a.index,
            a.data,
            ds.len()
        );
    }
    seed_everything(0);
    let dims = match a.dims {
        Some(d) => d,
        None => {
            // The most active units, measured on up to 1000 images of the same data.
            let idx: Vec<usize> = (0..ds.len().min(1000)).collect();
            let batch = DataLoader::collate(ds.as_ref(), &idx, device)?;
            let act = m.unit_activity(&m.targets(&batch.x)?);
            let order = act.argsort(0, true);
            let k = (a.rows as i64).min(m.cfg.z_dim);
            Vec::<i64>::try_from(order.narrow(0, 0, k))?
        }
    };
    let one = DataLoader::collate(ds.as_ref(), &[a.index], device)?;
    let x = m.targets(&one.x)?;
    let grid = m.traversal(&x, &dims, a.steps, a.range)?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    genmodels_core::image_io::save_grid(&grid, a.steps, 2, a.out)?;
    println!(
        "wrote a traversal of latent dimensions {dims:?} ({} values from -{r} to {r} each) to {}",
        a.steps,
        a.out.display(),
        r = a.range
    );
    Ok(())
}

/// Reconstructions of a VAE-family run: mean squared error in [-1, 1] over `n` images, a grid
/// of originals above their reconstructions, and for VQ-VAE the codebook perplexity and the
/// prior's NLL per code on these images.
pub fn reconstruct(a: &ScoredSet, out: Option<&Path>) -> Result<()> {
    use genmodels_vae::vaegan::{VaeGan, VaeGanConfig};
    use genmodels_vae::vqvae::{VqVae, VqVaeConfig};
    if a.n == 0 {
        bail!("-n must be at least 1");
    }
    let device = device_from_env_or(a.device.as_deref())?;
    let (ck, path) = crate::open_checkpoint(&a.run_dir, None)?;
    let model = ck.meta.model.clone();
    enum Which {
        Vae(Box<Vae>),
        Vq(Box<VqVae>),
        Gan(Box<VaeGan>),
    }
    let m = match model.as_str() {
        "vqvae" => {
            let cfg: VqVaeConfig = serde_json::from_value(ck.meta.config.clone())
                .context("the checkpoint's VQ-VAE config")?;
            let mut m = VqVae::new(cfg, device)?;
            load_model_state(&mut m, &ck, &path, false)?;
            Which::Vq(Box::new(m))
        }
        "vaegan" => {
            let cfg: VaeGanConfig = serde_json::from_value(ck.meta.config.clone())
                .context("the checkpoint's VAE-GAN config")?;
            let mut m = VaeGan::new(cfg, device)?;
            load_model_state(&mut m, &ck, &path, false)?;
            Which::Gan(Box::new(m))
        }
        m if VAE_MODELS.contains(&m) => {
            Which::Vae(Box::new(vae_from(&ck, &path, &a.run_dir, device)?))
        }
        other => bail!(
            "reconstruct needs a VAE-family run ({}, vqvae, vaegan); {} holds a `{other}` model",
            VAE_MODELS.join(", "),
            a.run_dir.display()
        ),
    };
    let ds = DataSpec::parse(&a.data)?.dataset()?;
    let n = a.n.min(ds.len());
    seed_everything(a.seed);
    let (mut se, mut codes, mut first) = (0.0, Vec::new(), None);
    let mut done = 0;
    while done < n {
        let idx: Vec<usize> = (done..(done + 100).min(n)).collect();
        let x = DataLoader::collate(ds.as_ref(), &idx, device)?.x;
        let y = match &m {
            Which::Vae(v) => v.reconstruct(&x)?,
            Which::Gan(v) => v.reconstruct(&x)?,
            Which::Vq(v) => {
                let c = v.encode_codes(&x)?;
                let y = v.decode_codes(&c);
                codes.push(c);
                y
            }
        };
        se += (&y - &x).square().sum(Kind::Double).double_value(&[]);
        if first.is_none() {
            first = Some((x, y));
        }
        done += idx.len();
    }
    let (c, h, w) = match ds.example_shape().as_slice() {
        &[c, h, w] => (c, h, w),
        s => bail!("{} does not hold images (examples of shape {s:?})", a.data),
    };
    let mse = se / (n as f64 * (c * h * w) as f64);
    println!("{:<28} {:>10}", "metric", "value");
    println!(
        "{:<28} {mse:>10.5} (pixels in [-1, 1])",
        "reconstruction MSE"
    );
    let mut extra = serde_json::Map::new();
    if let Which::Vq(v) = &m {
        let all = Tensor::cat(&codes, 0);
        let ppl = v.perplexity(&all);
        let nll = tch::no_grad(|| -> Result<f64> {
            let mut tot = 0.0;
            for c in &codes {
                tot += v.prior_nll(c, false)?.double_value(&[]) * c.size()[0] as f64;
            }
            Ok(tot / n as f64)
        })?;
        let l = all.size()[1];
        println!(
            "{:<28} {ppl:>10.2} of {} codes",
            "codebook perplexity", v.cfg.codes
        );
        println!(
            "{:<28} {nll:>10.4} nats ({:.1} bits per image of {l} codes)",
            "prior NLL per code",
            nll * l as f64 / std::f64::consts::LN_2
        );
        extra.insert("codebook_perplexity".into(), ppl.into());
        extra.insert("prior_nll_nats_per_code".into(), nll.into());
        extra.insert("codes_per_image".into(), l.into());
    }
    println!("{n} images of {}", a.data);
    if let (Some(out), Some((x, y))) = (out, first) {
        let k = x.size()[0].min(10);
        let grid = Tensor::cat(&[x.narrow(0, 0, k), y.narrow(0, 0, k)], 0);
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        genmodels_core::image_io::save_grid(&grid, k, 2, out)?;
        println!(
            "wrote originals (top) and reconstructions (bottom) to {}",
            out.display()
        );
    }
    if let Some(p) = &a.json {
        let mut v = serde_json::json!({
            "model": model,
            "data": a.data,
            "n": n,
            "reconstruction_mse": mse,
        });
        if let Some(o) = v.as_object_mut() {
            o.extend(extra);
        }
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
