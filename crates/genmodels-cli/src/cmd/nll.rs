//! `genmodels nll`: the importance-sampled test log-likelihood of any image model with a
//! likelihood, its one-sample bound, and its active units.

use crate::common::{bar, first_batches, need, open_run, write_json, Weights};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_contracts::reports::NllReport;
use genmodels_core::data::DataSpec;
use genmodels_core::device::seed_everything;
use genmodels_core::model::Capability;
use std::path::PathBuf;
use tch::{Kind, Tensor};

/// What `nll` and `reconstruct` score: a run, on some images, with a seed.
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
    /// Seed of the one binarisation of the images (drawn before, and apart from, the
    /// importance samples: the test set does not change with -k or the model).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub device: Option<String>,
    /// Also write the scores as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct NllArgs {
    #[command(flatten)]
    set: ScoredSet,
    /// Importance samples per image (a diffusion model: network evaluations per image for its
    /// variational bound, all of them at k >= its training timesteps).
    #[arg(short, long, default_value_t = 5000)]
    k: i64,
    /// Score the EMA weights when the run keeps them (diffusion models are sampled from them).
    #[arg(long)]
    ema: bool,
}

/// SHA-256 of the prepared images as little-endian float32, in order: the identity of the
/// test set a likelihood was scored on (`scripts/vae_reference.py` prints the same digest).
fn test_set_sha256(prepared: &[Tensor]) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for x in prepared {
        let v = Vec::<f32>::try_from(
            x.to_kind(Kind::Float)
                .to_device(tch::Device::Cpu)
                .flatten(0, -1),
        )?;
        for f in v {
            h.update(f.to_le_bytes());
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Images scored per pass.
const PER: usize = 100;

pub fn nll(a: NllArgs) -> Result<()> {
    let (s, k) = (&a.set, a.k);
    if s.n == 0 || k < 1 {
        bail!("-n and -k must be at least 1");
    }
    let weights = if a.ema {
        Weights::Sampling { no_ema: false }
    } else {
        Weights::Raw
    };
    let (mut run, device) = open_run(&s.run_dir, s.device.as_deref(), weights)?;
    let name = run.name();
    let m = need(
        run.model.as_likelihood(),
        "nll",
        Capability::Likelihood,
        name,
    )?;
    let ds = DataSpec::parse(&s.data)?.dataset()?;
    let n = s.n.min(ds.len());
    // The test set as the likelihood sees it (one binarisation), drawn first from the seed
    // alone; the importance samples then come from a generator seeded apart.
    seed_everything(s.seed);
    let mut prepared = Vec::new();
    for b in first_batches(ds.as_ref(), n, PER, device)? {
        prepared.push(m.prepare(&b.x)?);
    }
    let digest = test_set_sha256(&prepared)?;
    // The bounds first, then the importance samples: the bound's draws do not depend on -k.
    seed_everything(s.seed ^ 0x15_a3_9e);
    let (mut ll, mut bound, mut means) = (Vec::new(), Vec::new(), Vec::new());
    for x in &prepared {
        bound.push(m.bound(x)?);
        if let Some(mu) = m.posterior_means(x)? {
            means.push(mu);
        }
    }
    let b = bar(n as u64, &format!("log p(x), k = {k}"));
    let mut done = 0;
    for x in &prepared {
        ll.push(m.log_likelihood(x, k)?);
        done += x.size()[0] as u64;
        b.set_position(done);
    }
    b.finish_and_clear();
    let ll = Tensor::cat(&ll, 0).to_kind(Kind::Double);
    let bound = Tensor::cat(&bound, 0).to_kind(Kind::Double);
    let nll = -ll.mean(Kind::Double).double_value(&[]);
    let se = ll.std(true).double_value(&[]) / (n as f64).sqrt();
    let nelbo = -bound.mean(Kind::Double).double_value(&[]);
    let dims: i64 = ds.example_shape().iter().product();
    let (active, z_dim, activity) = if means.is_empty() {
        (None, None, Vec::new())
    } else {
        let act = Tensor::cat(&means, 0).var_dim(0, false, false);
        (
            Some(act.gt(0.01).sum(Kind::Int64).int64_value(&[])),
            Some(act.size()[0]),
            Vec::<f64>::try_from(act.to_kind(Kind::Double))?,
        )
    };
    let r = NllReport {
        model: name.into(),
        data: s.data.clone(),
        n,
        k,
        seed: s.seed,
        nll_nats: nll,
        nll_standard_error: se,
        bits_per_dim: nll / (dims as f64 * std::f64::consts::LN_2),
        negative_elbo_nats: nelbo,
        active_units: active,
        z_dim,
        unit_activity: activity,
        preparation: m.preparation(),
        estimator: m.estimator(k),
        ema: a.ema,
        test_set_sha256: digest,
    };
    println!("{:<28} {:>10}", "metric", "value");
    println!(
        "{:<28} {nll:>10.3} nats (+- {se:.3} s.e.)",
        format!("NLL (k = {k})")
    );
    println!("{:<28} {:>10.4} bits/dim ({dims} dims)", "", r.bits_per_dim);
    println!("{:<28} {nelbo:>10.3} nats", "negative ELBO (one sample)");
    if let (Some(a), Some(z)) = (active, z_dim) {
        println!(
            "{:<28} {a:>10} of {z} (Cov_x E_q[z_u] > 0.01)",
            "active units"
        );
    }
    println!(
        "{n} images of {}; preparation: {} (seed {})",
        s.data, r.preparation, s.seed
    );
    println!("estimator: {}", r.estimator);
    println!("test set sha256: {}", r.test_set_sha256);
    if let Some(p) = &s.json {
        write_json(p, &r)?;
    }
    Ok(())
}
