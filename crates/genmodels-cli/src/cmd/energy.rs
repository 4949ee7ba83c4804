//! `genmodels energy`: what an energy-based model learned on 2-D points, as pictures: the
//! density exp(-E / T) (normalised over the grid shown; T = 1 is the model's own density) as a
//! heat map with the data over it, and the model's samples over the data; with the share of
//! that density within 3 standard deviations of a mixture mode.

use crate::common::{need, open_run, write_json, Weights};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_core::data::{DataLoader, DataSpec, Dataset, Mixture2d};
use genmodels_core::device::seed_everything;
use genmodels_core::image_io::{save_heatmap, save_scatter};
use genmodels_core::model::{Capability, Samples};
use serde::Serialize;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

#[derive(Args)]
pub struct EnergyArgs {
    /// The run folder of an energy model trained on 2-D points.
    run_dir: PathBuf,
    /// The heat map's PNG; the samples' scatter goes beside it as `<stem>-samples.png`.
    #[arg(long)]
    out: PathBuf,
    /// Grid cells per side.
    #[arg(long, default_value_t = 300)]
    size: i64,
    /// Samples drawn for the scatter.
    #[arg(short, long, default_value_t = 2500)]
    n: usize,
    /// Temperature T of the density exp(-E / T) whose mass near the modes is reported (1: the
    /// model's own density; SGLD with step s and noise sd samples about T = sd^2 / (2 s)).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Also write the numbers as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct EnergyReport {
    data: String,
    /// Half-width of the square shown, [-lim, lim]^2.
    lim: f64,
    energy_min: f64,
    energy_max: f64,
    /// The temperature of the density below.
    temperature: f64,
    /// Mass of exp(-E / T), normalised over the grid, within 3 standard deviations of a mode.
    density_mass_near_modes: f64,
    /// The same share for the uniform density on the grid (the baseline).
    uniform_mass_near_modes: f64,
    heat_map: PathBuf,
    samples: PathBuf,
}

pub fn energy(a: EnergyArgs) -> Result<()> {
    if !(a.temperature.is_finite() && a.temperature > 0.0) {
        bail!(
            "--temperature {} out of range: expected a number > 0",
            a.temperature
        );
    }
    if !(8..=2000).contains(&a.size) {
        bail!(
            "--size {} out of range: expected 8 to 2000 cells per side",
            a.size
        );
    }
    let (mut run, device) = open_run(
        &a.run_dir,
        a.device.as_deref(),
        Weights::Sampling { no_ema: false },
    )?;
    let name = run.name();
    let data = run.run.manifest.data.clone();
    let Ok(DataSpec::Mixture { mixture, .. }) = DataSpec::parse(&data) else {
        bail!(
            "energy draws 2-D energies; {} trained on `{data}`, not a mixture (ring8, grid25)",
            a.run_dir.display()
        );
    };
    let lim = if matches!(mixture, genmodels_core::data::MixtureKind::Ring8) {
        3.0
    } else {
        6.0
    };
    // Cell centres, row 0 at the top (y = +lim).
    let s = a.size;
    let ticks = Tensor::linspace(-lim, lim, s, (Kind::Float, Device::Cpu));
    let ys = ticks.flip([0]);
    let grid = Tensor::stack(
        &[
            ticks.unsqueeze(0).expand([s, s], false),
            ys.unsqueeze(1).expand([s, s], false),
        ],
        2,
    )
    .reshape([s * s, 2]);
    let e = {
        let en = need(run.model.as_energy(), "energy", Capability::Energy, name)?;
        let mut parts = Vec::new();
        for chunk in grid.split(16_384, 0) {
            parts.push(en.energy(&chunk.to_device(device))?.to_device(Device::Cpu));
        }
        Tensor::cat(&parts, 0)
    };
    let density = (-&e / a.temperature).softmax(0, Kind::Double);
    let centers: Vec<f32> = mixture
        .centers()
        .iter()
        .flat_map(|c| [c[0], c[1]])
        .collect();
    let c = Tensor::from_slice(&centers).reshape([-1, 2]);
    let near = Tensor::cdist(&grid, &c, 2.0, None)
        .min_dim(1, false)
        .0
        .le(3.0 * f64::from(mixture.std()));
    let mass = (&density * near.to_kind(Kind::Double))
        .sum(Kind::Double)
        .double_value(&[]);
    let uniform = near
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]);
    let real = Mixture2d::new(mixture, 500, 1)?;
    let idx: Vec<usize> = (0..real.len()).collect();
    let real_pts = DataLoader::collate(&real, &idx, Device::Cpu)?.x;
    save_heatmap(&density.reshape([s, s]), Some(&real_pts), lim, &a.out)?;
    seed_everything(a.seed);
    let Samples::Points(pts) = run.model.sample(a.n)? else {
        bail!("{name} does not generate 2-D points");
    };
    let stem = a
        .out
        .file_stem()
        .map(|x| x.to_string_lossy().into_owned())
        .unwrap_or_default();
    let samples = a.out.with_file_name(format!("{stem}-samples.png"));
    save_scatter(&pts, Some(&real_pts), lim, 400, &samples)?;
    let r = EnergyReport {
        data,
        lim,
        energy_min: e.min().double_value(&[]),
        energy_max: e.max().double_value(&[]),
        temperature: a.temperature,
        density_mass_near_modes: mass,
        uniform_mass_near_modes: uniform,
        heat_map: a.out.clone(),
        samples: samples.clone(),
    };
    println!(
        "energy from {:.3} to {:.3}; {:.1} % of exp(-E / {}) lies within 3 sigma of a mode (uniform: {:.1} %)",
        r.energy_min,
        r.energy_max,
        100.0 * mass,
        a.temperature,
        100.0 * uniform
    );
    println!(
        "heat map (data white): {}; samples: {}",
        a.out.display(),
        samples.display()
    );
    if let Some(p) = &a.json {
        write_json(p, &r)?;
    }
    Ok(())
}
