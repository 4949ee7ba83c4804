//! The VAE family's verbs: `nll` (importance-sampled log-likelihood, bounds, active units) and
//! `traverse` (latent traversals).

use crate::bar;
use anyhow::{bail, Context, Result};
use genmodels_core::checkpoint::{checkpoint_path, Checkpoint};
use genmodels_core::data::{DataLoader, DataSpec};
use genmodels_core::device::{device_from_env_or, seed_everything};
use genmodels_core::model::load_model_state;
use genmodels_vae::vae::{Vae, VaeConfig};
use std::path::Path;
use tch::{Kind, Tensor};

const VAE_MODELS: [&str; 3] = ["vae", "beta-vae", "iwae"];

fn load_vae(run_dir: &Path, device: tch::Device) -> Result<Vae> {
    let path = checkpoint_path(run_dir);
    if !path.exists() {
        bail!(
            "{} holds no checkpoint.safetensors: not a genmodels run folder",
            run_dir.display()
        );
    }
    let ck = Checkpoint::load(&path)?;
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
    load_model_state(&mut m, &ck, &path, false)?;
    Ok(m)
}

/// Options of `genmodels nll`.
pub struct NllArgs<'a> {
    pub run_dir: &'a Path,
    pub data: &'a str,
    pub n: usize,
    pub k: i64,
    pub seed: u64,
    pub device: Option<&'a str>,
    pub json: Option<&'a Path>,
}

pub fn nll(a: NllArgs) -> Result<()> {
    if a.n == 0 || a.k < 1 {
        bail!("-n and -k must be at least 1");
    }
    let device = device_from_env_or(a.device)?;
    let m = load_vae(a.run_dir, device)?;
    let ds = DataSpec::parse(a.data)?.dataset()?;
    let n = a.n.min(ds.len());
    // One fixed binarisation of the test images (the seed), as the published numbers use.
    seed_everything(a.seed);
    let per = 100usize;
    let chunk = (500_000 / per as i64).clamp(1, a.k);
    let b = bar(n as u64, &format!("log p(x), k = {}", a.k));
    let (mut ll, mut elbo, mut means) = (Vec::new(), Vec::new(), Vec::new());
    let mut done = 0;
    while done < n {
        let idx: Vec<usize> = (done..(done + per).min(n)).collect();
        let batch = DataLoader::collate(ds.as_ref(), &idx, device)?;
        let x = m.targets(&batch.x)?;
        ll.push(m.log_likelihood(&x, a.k, chunk)?);
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
    let nll_name = format!("NLL (k = {})", a.k);
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
    if let Some(p) = a.json {
        let v = serde_json::json!({
            "model": m.cfg,
            "data": a.data,
            "n": n,
            "k": a.k,
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
