//! `genmodels reconstruct`: reconstruction error of any model that encodes and decodes, with a
//! grid, and for a codebook model the codebook perplexity and the prior's NLL.

use crate::cmd::nll::ScoredSet;
use crate::common::{need, open_run, parent_dir, write_json, Weights};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_contracts::reports::{CodebookScores, ReconstructReport};
use genmodels_core::data::{DataLoader, DataSpec};
use genmodels_core::device::seed_everything;
use genmodels_core::model::Capability;
use std::path::PathBuf;
use tch::{Kind, Tensor};

#[derive(Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    set: ScoredSet,
    /// Write a grid of the first 10 originals and their reconstructions here (PNG).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn reconstruct(a: ReconstructArgs) -> Result<()> {
    let s = &a.set;
    if s.n == 0 {
        bail!("-n must be at least 1");
    }
    let (mut run, device) = open_run(&s.run_dir, s.device.as_deref(), Weights::Raw)?;
    let name = run.name();
    need(
        run.model.as_reconstruct(),
        "reconstruct",
        Capability::Reconstruction,
        name,
    )?;
    let ds = DataSpec::parse(&s.data)?.dataset()?;
    let (c, h, w) = match ds.example_shape().as_slice() {
        &[c, h, w] => (c, h, w),
        sh => bail!("{} does not hold images (examples of shape {sh:?})", s.data),
    };
    let n = s.n.min(ds.len());
    seed_everything(s.seed);
    let (mut se, mut codes, mut first) = (0.0, Vec::new(), None);
    let mut done = 0;
    while done < n {
        let idx: Vec<usize> = (done..(done + 100).min(n)).collect();
        let x = DataLoader::collate(ds.as_ref(), &idx, device)?.x;
        let y = match run.model.as_codebook() {
            Some(cb) => {
                let code = cb.encode_codes(&x)?;
                let y = cb.decode_codes(&code)?;
                codes.push(code);
                y
            }
            None => match run.model.as_reconstruct() {
                Some(r) => tch::no_grad(|| r.reconstruct(&x))?,
                None => unreachable!("checked above"),
            },
        };
        se += (&y - &x).square().sum(Kind::Double).double_value(&[]);
        if first.is_none() {
            first = Some((x, y));
        }
        done += idx.len();
    }
    let mse = se / (n as f64 * (c * h * w) as f64);
    println!("{:<28} {:>10}", "metric", "value");
    println!(
        "{:<28} {mse:>10.5} (pixels in [-1, 1])",
        "reconstruction MSE"
    );
    let codebook = match run.model.as_codebook() {
        Some(cb) if !codes.is_empty() => {
            let all = Tensor::cat(&codes, 0);
            let ppl = cb.perplexity(&all);
            let mut tot = 0.0;
            for c in &codes {
                tot += cb.prior_nll(c)? * c.size()[0] as f64;
            }
            let nll = tot / n as f64;
            let l = all.size()[1];
            println!(
                "{:<28} {ppl:>10.2} of {} codes",
                "codebook perplexity",
                cb.num_codes()
            );
            println!(
                "{:<28} {nll:>10.4} nats ({:.1} bits per image of {l} codes)",
                "prior NLL per code",
                nll * l as f64 / std::f64::consts::LN_2
            );
            Some(CodebookScores {
                codebook_perplexity: ppl,
                codes: cb.num_codes(),
                prior_nll_nats_per_code: nll,
                codes_per_image: l,
            })
        }
        _ => None,
    };
    println!("{n} images of {}", s.data);
    if let (Some(out), Some((x, y))) = (&a.out, first) {
        let k = x.size()[0].min(10);
        let grid = Tensor::cat(&[x.narrow(0, 0, k), y.narrow(0, 0, k)], 0);
        parent_dir(out)?;
        genmodels_core::image_io::save_grid(&grid, k, 2, out)?;
        println!(
            "wrote originals (top) and reconstructions (bottom) to {}",
            out.display()
        );
    }
    if let Some(p) = &s.json {
        write_json(
            p,
            &ReconstructReport {
                model: name.into(),
                data: s.data.clone(),
                n,
                reconstruction_mse: mse,
                codebook,
            },
        )?;
    }
    Ok(())
}
