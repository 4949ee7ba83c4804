//! `genmodels langevin`: an energy model's own Langevin chain, shown and measured.
//!
//! Without `--data`: `n` chains from the model's noise distribution, one row per chain, one
//! column per recorded step (how a sample forms), with the cost of the chain per sample.
//!
//! With `--data SPEC --corrupt KIND`: restoration by Langevin dynamics from a corrupted image
//! (Du & Mordatch 2019, Sec. 4.4, IGEBM's denoising and inpainting): `noise:SD` adds Gaussian
//! noise and lets every pixel move; `mask:center|top|bottom|left|right|random:P` replaces the
//! missing pixels by the model's chain noise and moves only those, the known ones stay. Each
//! row shows the clean image, the corrupted one and the chain; the report gives PSNR (on the
//! [0, 1] scale, per image, averaged) and LPIPS to the clean image, for the corrupted input and
//! for every recorded step.

use crate::common::{first_batches, need, open_run, parent_dir, write_json, Weights};
use anyhow::{bail, Context, Result};
use clap::Args;
use genmodels_contracts::reports::{LangevinReport, Restoration, RestorationFrame};
use genmodels_core::data::DataSpec;
use genmodels_core::device::seed_everything;
use genmodels_core::image_io::save_grid;
use genmodels_core::model::Capability;
use genmodels_metrics::lpips::{Lpips, LpipsNet};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Args)]
pub struct LangevinArgs {
    /// The run folder of a model with an energy (igebm, jem, ...).
    run_dir: PathBuf,
    /// The grid's PNG.
    #[arg(long)]
    out: PathBuf,
    /// Clean images to corrupt and restore (the first N); without it, chains start from noise.
    #[arg(long)]
    data: Option<String>,
    /// The corruption: noise:SD (Gaussian, on the [-1, 1] scale; every pixel moves), or
    /// mask:center | mask:top | mask:bottom | mask:left | mask:right | mask:random:P (missing
    /// pixels restart from the model's noise and only they move).
    #[arg(long)]
    corrupt: Option<String>,
    /// Chains (images).
    #[arg(short, long, default_value_t = 8)]
    n: usize,
    /// Langevin steps of each chain (the model's step size and noise).
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Recorded steps shown per chain (evenly spaced, the last the chain's end).
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Chains shown in the grid (the first ones; all of them are scored).
    #[arg(long, default_value_t = 16)]
    grid_rows: usize,
    /// LPIPS network for restorations: vgg16 (images of at least 16 pixels a side), alex (31)
    /// or none.
    #[arg(long, default_value = "vgg16")]
    lpips: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Also write the numbers as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A corruption of clean images `[N, C, H, W]` in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub enum Corruption {
    /// Additive Gaussian noise of this standard deviation; the whole image is free.
    Noise(f64),
    /// The central square of half the side is missing.
    Center,
    /// That half of the image is missing.
    Half(Side),
    /// Each pixel is missing with this probability.
    Random(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Side {
    Top,
    Bottom,
    Left,
    Right,
}

impl Corruption {
    pub fn parse(s: &str) -> Result<Self> {
        let prob = |v: &str| -> Result<f64> {
            match v.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 1.0 => Ok(p),
                _ => bail!("--corrupt {s}: probability `{v}` out of range: expected (0, 1]"),
            }
        };
        Ok(match s.split(':').collect::<Vec<_>>().as_slice() {
            ["noise", sd] => match sd.parse::<f64>() {
                Ok(v) if v.is_finite() && v > 0.0 && v <= 10.0 => Corruption::Noise(v),
                _ => bail!(
                    "--corrupt {s}: noise level `{sd}` out of range: expected a standard \
                     deviation in (0, 10] on the [-1, 1] scale"
                ),
            },
            ["mask", "center"] => Corruption::Center,
            ["mask", "top"] => Corruption::Half(Side::Top),
            ["mask", "bottom"] => Corruption::Half(Side::Bottom),
            ["mask", "left"] => Corruption::Half(Side::Left),
            ["mask", "right"] => Corruption::Half(Side::Right),
            ["mask", "random", p] => Corruption::Random(prob(p)?),
            _ => bail!(
                "unknown --corrupt `{s}`: expected noise:SD, mask:center, mask:top, \
                 mask:bottom, mask:left, mask:right or mask:random:P"
            ),
        })
    }

    /// The mask of free pixels (1 = missing or noisy, moved by the chain) for `x`.
    pub fn mask(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let (h, w) = (size[2], size[3]);
        let opts = (Kind::Float, x.device());
        let m = Tensor::zeros(size.as_slice(), opts);
        let fill = |t: &Tensor, dim: i64, start: i64, len: i64| {
            let _ = t.narrow(dim, start, len).fill_(1.0);
        };
        match self {
            Corruption::Noise(_) => {
                let _ = m.shallow_clone().fill_(1.0);
            }
            Corruption::Center => {
                let (ch, cw) = (h / 2, w / 2);
                fill(&m.narrow(2, (h - ch) / 2, ch), 3, (w - cw) / 2, cw);
            }
            Corruption::Half(Side::Top) => fill(&m, 2, 0, h / 2),
            Corruption::Half(Side::Bottom) => fill(&m, 2, h / 2, h - h / 2),
            Corruption::Half(Side::Left) => fill(&m, 3, 0, w / 2),
            Corruption::Half(Side::Right) => fill(&m, 3, w / 2, w - w / 2),
            Corruption::Random(p) => {
                // one draw per pixel, shared by its channels
                let mut s = size.clone();
                s[1] = 1;
                let r = Tensor::rand(s.as_slice(), opts).lt(*p).to_kind(Kind::Float);
                return r.expand(size.as_slice(), false).contiguous();
            }
        }
        m
    }

    /// The corrupted images and the free-pixel mask; `noise` gives the model's chain starts
    /// for missing pixels.
    pub fn apply(&self, x: &Tensor, noise: &Tensor) -> (Tensor, Tensor) {
        let m = self.mask(x);
        let y = match self {
            Corruption::Noise(sd) => x + Tensor::randn_like(x) * *sd,
            _ => x * (1.0 - &m) + noise * &m,
        };
        (y, m)
    }
}

/// Mean PSNR in dB of `a` against the clean `b` (both in [-1, 1]), per image on the [0, 1]
/// scale (`10 log10(1 / MSE)`), averaged over images.
pub fn psnr(a: &Tensor, b: &Tensor) -> f64 {
    let d = ((a.clamp(-1.0, 1.0) - b) / 2.0).square().flatten(1, -1);
    let mse = d.mean_dim(1, false, Kind::Double).clamp_min(1e-10);
    (mse.reciprocal().log10() * 10.0)
        .mean(Kind::Double)
        .double_value(&[])
}

/// `x` with its free pixels (`m` = 1) set to the mean of its known ones, per image.
fn mean_fill(x: &Tensor, m: &Tensor) -> Tensor {
    let known = 1.0 - m;
    let mean = (x * &known).sum_dim_intlist(&[1i64, 2, 3][..], true, Kind::Float)
        / known
            .sum_dim_intlist(&[1i64, 2, 3][..], true, Kind::Float)
            .clamp_min(1.0);
    x * &known + mean * m
}

pub fn langevin(a: LangevinArgs) -> Result<()> {
    if !(1..=10_000).contains(&a.n) {
        bail!("-n {} out of range: expected 1 to 10000 chains", a.n);
    }
    if !(1..=100_000).contains(&a.steps) {
        bail!("--steps {} out of range: expected 1 to 100000", a.steps);
    }
    if !(1..=64).contains(&a.frames) || a.frames > a.steps {
        bail!(
            "--frames {} out of range: expected 1 to 64 and at most --steps ({})",
            a.frames,
            a.steps
        );
    }
    let corrupt = match (&a.data, &a.corrupt) {
        (Some(_), Some(c)) => Some(Corruption::parse(c)?),
        (None, None) => None,
        (Some(_), None) => bail!("--data needs --corrupt (noise:SD or mask:...) to restore"),
        (None, Some(_)) => bail!("--corrupt needs --data: the clean images to corrupt"),
    };
    let lpips_net = match a.lpips.as_str() {
        "none" => None,
        s => Some(LpipsNet::parse(s)?),
    };
    parent_dir(&a.out)?;
    let (mut run, device) = open_run(
        &a.run_dir,
        a.device.as_deref(),
        Weights::Sampling { no_ema: false },
    )?;
    let name = run.name().to_string();
    let e = need(run.model.as_energy(), "langevin", Capability::Energy, &name)?;
    seed_everything(a.seed);
    let n = a.n;
    // clean images (restoration) or nothing, and the chains' starts
    let (clean, start, mask) = match (&a.data, &corrupt) {
        (Some(spec), Some(c)) => {
            let ds = DataSpec::parse(spec)?.dataset()?;
            if ds.len() < n {
                bail!("`{spec}` holds {} images, fewer than -n {n}", ds.len());
            }
            let x = Tensor::cat(
                &first_batches(ds.as_ref(), n, n, device)?
                    .into_iter()
                    .map(|b| b.x)
                    .collect::<Vec<_>>(),
                0,
            );
            if x.dim() != 4 {
                bail!(
                    "`{spec}` is not a set of images (examples of shape {:?})",
                    &x.size()[1..]
                );
            }
            let noise = e.chain_noise(n)?.to_device(device);
            if noise.size() != x.size() {
                bail!(
                    "`{spec}` has images of shape {:?}; {name} was trained on {:?}",
                    &x.size()[1..],
                    &noise.size()[1..]
                );
            }
            let (y, m) = c.apply(&x, &noise);
            (Some(x), y, Some(m))
        }
        _ => (None, e.chain_noise(n)?.to_device(device), None),
    };
    let t0 = Instant::now();
    let frames = e.langevin(&start, mask.as_ref(), a.steps, a.frames)?;
    let secs = t0.elapsed().as_secs_f64();
    let at: Vec<usize> = (1..=a.frames)
        .map(|k| ((k * a.steps) as f64 / a.frames as f64).round() as usize)
        .collect();
    let restoration = match (&clean, &corrupt) {
        (Some(x), Some(c)) => {
            let lp = match lpips_net {
                Some(net) => {
                    // the smallest input whose every tapped layer is non-empty
                    let (least, other) = match net {
                        LpipsNet::Alex => (31, "vgg16"),
                        LpipsNet::Vgg16 => (16, "none"),
                    };
                    let s = x.size();
                    if s[2] < least || s[3] < least {
                        bail!(
                            "--lpips {} needs images of at least {least} x {least} pixels, \
                             these are {} x {}: use --lpips {other}",
                            a.lpips,
                            s[2],
                            s[3]
                        );
                    }
                    Some(
                        Lpips::load(net, &net.default_path(), device)
                            .context("loading the LPIPS weights (cargo xtask setup)")?,
                    )
                }
                None => None,
            };
            let lpips = |y: &Tensor| -> Result<Option<f64>> {
                Ok(match &lp {
                    Some(l) => Some(
                        l.distance(&y.clamp(-1.0, 1.0), x)?
                            .mean(Kind::Double)
                            .double_value(&[]),
                    ),
                    None => None,
                })
            };
            let mut fs = Vec::new();
            for (i, step) in at.iter().enumerate() {
                let f = frames.get(i as i64);
                fs.push(RestorationFrame {
                    step: *step,
                    psnr_db: psnr(&f, x),
                    lpips: lpips(&f)?,
                });
            }
            // the chain's end is the last recorded frame, already scored
            let (psnr_restored_db, lpips_restored) =
                fs.last().map_or((f64::NAN, None), |f| (f.psnr_db, f.lpips));
            Some(Restoration {
                data: a.data.clone().unwrap_or_default(),
                corrupt: a.corrupt.clone().unwrap_or_default(),
                free_fraction: mask
                    .as_ref()
                    .map_or(1.0, |m| m.mean(Kind::Double).double_value(&[])),
                psnr_corrupted_db: psnr(&start, x),
                psnr_mean_fill_db: match (c, &mask) {
                    (Corruption::Noise(_), _) | (_, None) => None,
                    (_, Some(m)) => Some(psnr(&mean_fill(x, m), x)),
                },
                lpips_corrupted: lpips(&start)?,
                psnr_restored_db,
                lpips_restored,
                lpips_net: lpips_net.map(|n| format!("{n:?}").to_lowercase()),
                frames: fs,
            })
        }
        _ => None,
    };
    // rows: [clean, corrupted,] frames... for the first `grid_rows` chains
    let rows = a.grid_rows.clamp(1, n) as i64;
    let shown = |t: &Tensor| t.narrow(0, 0, rows).to_device(Device::Cpu);
    let mut cols: Vec<Tensor> = Vec::new();
    if let Some(x) = &clean {
        cols.push(shown(x));
        cols.push(shown(&start.clamp(-1.0, 1.0)));
    }
    for i in 0..a.frames as i64 {
        cols.push(shown(&frames.get(i)));
    }
    let ncol = cols.len() as i64;
    let grid = Tensor::stack(&cols, 1).flatten(0, 1);
    save_grid(&grid, ncol, 2, &a.out)?;
    let report = LangevinReport {
        model: name,
        chains: n,
        steps: a.steps,
        seed: a.seed,
        chain_seconds: secs,
        ms_per_step_per_image: 1000.0 * secs / (a.steps * n) as f64,
        threads: tch::get_num_threads(),
        device: format!("{device:?}"),
        restoration,
        grid: a.out.clone(),
    };
    println!(
        "{n} chains x {} steps in {secs:.1} s ({:.2} ms per step per image, {} threads)",
        a.steps, report.ms_per_step_per_image, report.threads
    );
    if let Some(r) = &report.restoration {
        let l = |v: Option<f64>| v.map_or(String::new(), |v| format!(", LPIPS {v:.4}"));
        println!(
            "{} ({:.0} % of the pixels free): corrupted PSNR {:.2} dB{}; restored {:.2} dB{}{}",
            r.corrupt,
            100.0 * r.free_fraction,
            r.psnr_corrupted_db,
            l(r.lpips_corrupted),
            r.psnr_restored_db,
            l(r.lpips_restored),
            r.psnr_mean_fill_db.map_or(String::new(), |v| format!(
                " (mean fill, no model: {v:.2} dB)"
            ))
        );
        for f in &r.frames {
            println!(
                "  step {:>6}: PSNR {:.2} dB{}",
                f.step,
                f.psnr_db,
                l(f.lpips)
            );
        }
    }
    let what = if clean.is_some() {
        "rows: clean, corrupted, then the chain"
    } else {
        "rows: chains from noise over their steps"
    };
    println!("grid ({what}): {}", a.out.display());
    if let Some(p) = &a.json {
        write_json(p, &report)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruptions_parse_and_mask_what_they_name() {
        let x = Tensor::zeros([2, 1, 8, 6], (Kind::Float, Device::Cpu));
        let sum = |c: &str| {
            Corruption::parse(c)
                .unwrap()
                .mask(&x)
                .sum(Kind::Double)
                .double_value(&[])
        };
        assert_eq!(sum("noise:0.3"), 96.0);
        assert_eq!(sum("mask:center"), 2.0 * 4.0 * 3.0);
        assert_eq!(sum("mask:top"), 2.0 * 4.0 * 6.0);
        assert_eq!(sum("mask:right"), 2.0 * 8.0 * 3.0);
        let m = Corruption::parse("mask:center").unwrap().mask(&x);
        // rows 2..6, columns 1..4 (w 6: half 3, from 1)
        assert_eq!(m.get(0).get(0).get(2).get(1).double_value(&[]), 1.0);
        assert_eq!(m.get(0).get(0).get(1).get(1).double_value(&[]), 0.0);
        assert_eq!(m.get(0).get(0).get(2).get(4).double_value(&[]), 0.0);
        tch::manual_seed(0);
        let big = Tensor::zeros([4, 3, 64, 64], (Kind::Float, Device::Cpu));
        let r = Corruption::parse("mask:random:0.25").unwrap().mask(&big);
        let share = r.mean(Kind::Double).double_value(&[]);
        assert!((share - 0.25).abs() < 0.02, "{share}");
        // channels of a pixel go together
        assert!(r.select(1, 0).equal(&r.select(1, 2)));
        for bad in [
            "noise",
            "noise:-1",
            "mask:middle",
            "mask:random:1.5",
            "blur:2",
        ] {
            let e = Corruption::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn a_mask_keeps_the_known_pixels_and_noise_moves_all() {
        let x = Tensor::full([1, 1, 4, 4], 0.5, (Kind::Float, Device::Cpu));
        let noise = Tensor::full([1, 1, 4, 4], -1.0, (Kind::Float, Device::Cpu));
        let (y, m) = Corruption::parse("mask:left").unwrap().apply(&x, &noise);
        assert_eq!(m.sum(Kind::Double).double_value(&[]), 8.0);
        assert!(y.narrow(3, 0, 2).eq(-1.0).all().int64_value(&[]) == 1);
        assert!(y.narrow(3, 2, 2).eq(0.5).all().int64_value(&[]) == 1);
        let (y, _) = Corruption::parse("noise:0.5").unwrap().apply(&x, &noise);
        assert!(y.ne(0.5).all().int64_value(&[]) == 1);
    }

    #[test]
    fn the_mean_fill_uses_the_known_pixels_of_each_image() {
        let x = Tensor::from_slice(&[1.0f32, 0.0, 0.5, 9.0, -1.0, -0.5, 0.0, 9.0])
            .reshape([2, 1, 2, 2]);
        let m =
            Tensor::from_slice(&[0.0f32, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]).reshape([2, 1, 2, 2]);
        let f = mean_fill(&x, &m);
        let want = Tensor::from_slice(&[1.0f32, 0.0, 0.5, 0.5, -1.0, -0.5, 0.0, -0.5])
            .reshape([2, 1, 2, 2]);
        assert!(f.allclose(&want, 1e-6, 1e-6, false), "{f}");
    }

    #[test]
    fn psnr_has_its_closed_form() {
        // a difference of 0.2 on [-1, 1] is 0.1 on [0, 1]: MSE 0.01, 20 dB
        let a = Tensor::zeros([3, 1, 5, 5], (Kind::Float, Device::Cpu));
        let b = &a + 0.2;
        assert!((psnr(&b, &a) - 20.0).abs() < 1e-6);
        // out-of-range values are clamped before scoring
        let c = Tensor::full([1, 1, 2, 2], 3.0, (Kind::Float, Device::Cpu));
        let d = Tensor::full([1, 1, 2, 2], 1.0, (Kind::Float, Device::Cpu));
        assert!(psnr(&c, &d) > 90.0);
    }
}
