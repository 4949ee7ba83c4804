//! `genmodels`: train, resume and sample generative models from the command line.
//!
//! Every family registers its models in [`registry`]; `cargo xtask eval` drives the same code.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use genmodels_core::checkpoint::{checkpoint_path, Checkpoint};
use genmodels_core::data::{DataSpec, DATA_HELP};
use genmodels_core::device::{device_from_env_or, device_name, seed_everything};
use genmodels_core::model::{apply_overrides, load_model_state, Model, ModelEntry, Samples};
use genmodels_core::optim::{Ema, LrSchedule};
use genmodels_core::train::{write_samples_to, Trainer, TrainerConfig};
use std::path::{Path, PathBuf};

/// Every model the command line knows, from every family crate.
fn registry() -> Vec<ModelEntry> {
    genmodels_gan::entries()
}

fn find_model(name: &str) -> Result<ModelEntry> {
    let all = registry();
    let names: Vec<&str> = all.iter().map(|e| e.name).collect();
    let joined = names.join(", ");
    all.into_iter()
        .find(|e| e.name == name)
        .ok_or_else(|| anyhow!("unknown model `{name}`; known models: {joined}"))
}

#[derive(Parser)]
#[command(
    name = "genmodels",
    version,
    about = "Train, resume and sample generative models on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train MODEL on some data into a run folder (checkpoint, log, sample grids).
    Train(TrainArgs),
    /// Continue a run from its checkpoint (optionally to a new total of steps).
    Resume {
        /// The run folder written by `genmodels train`.
        run_dir: PathBuf,
        /// New total number of steps (default: the run's own).
        #[arg(long)]
        steps: Option<u64>,
        /// cpu, cuda, cuda:N or auto (default: $GENMODELS_DEVICE, else auto).
        #[arg(long)]
        device: Option<String>,
        /// Hide the progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Draw N samples from a trained run and write them to a folder.
    Sample {
        /// The run folder written by `genmodels train`.
        run_dir: PathBuf,
        /// Number of samples.
        #[arg(short, long, default_value_t = 64)]
        n: usize,
        /// Output folder (PNG files and grid.png for images; points.csv and scatter.png for points).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        device: Option<String>,
        /// Use the raw weights even when the checkpoint holds an EMA.
        #[arg(long)]
        no_ema: bool,
    },
    /// List the models this build knows.
    List,
}

#[derive(Args)]
struct TrainArgs {
    /// Model name (see `genmodels list`).
    model: String,
    /// Training data.
    #[arg(long, help = format!("Training data: {DATA_HELP}"))]
    data: String,
    /// Run folder to create.
    #[arg(long)]
    out: PathBuf,
    /// Optimisation steps.
    #[arg(long, default_value_t = 5000)]
    steps: u64,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda, cuda:N or auto (default: $GENMODELS_DEVICE, else auto).
    #[arg(long)]
    device: Option<String>,
    /// Model config overrides, e.g. --set lr=1e-4 --set z_dim=64.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Learning-rate schedule: constant, warmup:W, cosine:W:TOTAL[:MIN], linear:W:TOTAL.
    #[arg(long, default_value = "constant")]
    lr_schedule: String,
    /// Keep an EMA of the generator's weights with this decay (e.g. 0.999).
    #[arg(long)]
    ema: Option<f64>,
    /// Clip each optimiser's global gradient norm.
    #[arg(long)]
    grad_clip: Option<f64>,
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 500)]
    sample_every: u64,
    #[arg(long, default_value_t = 64)]
    sample_count: usize,
    /// Reproducible kernels (slower on GPUs).
    #[arg(long)]
    deterministic: bool,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Start over even if the folder already holds a run.
    #[arg(long)]
    force: bool,
}

fn block_of(config: &serde_json::Value) -> Option<usize> {
    config
        .get("block_size")
        .and_then(|b| b.as_u64())
        .map(|b| b as usize)
}

fn train(a: TrainArgs) -> Result<()> {
    let entry = find_model(&a.model)?;
    let ck = checkpoint_path(&a.out);
    if ck.exists() && !a.force {
        bail!("{} already holds a run; continue it with `genmodels resume {}` or start over with --force", a.out.display(), a.out.display());
    }
    let device = device_from_env_or(a.device.as_deref())?;
    let spec = DataSpec::parse(&a.data)?;
    let tcfg = TrainerConfig {
        steps: a.steps,
        seed: a.seed,
        batch_size: a.batch_size,
        log_every: a.log_every,
        checkpoint_every: a.checkpoint_every,
        sample_every: a.sample_every,
        sample_count: a.sample_count,
        ema_decay: a.ema,
        grad_clip: a.grad_clip,
        lr_schedule: LrSchedule::parse(&a.lr_schedule)?,
        progress: !a.no_progress,
        deterministic: a.deterministic,
    };
    // The data decides the default config (image shape, classes, vocabulary).
    let data = spec.load()?;
    let mut config = (entry.default_config)(&data.info())?;
    apply_overrides(&mut config, &a.overrides)?;
    seed_everything(a.seed);
    let mut model = (entry.build)(&config, device)?;
    let mut source = data.source(a.batch_size, block_of(&config), a.seed, device)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let run_json = serde_json::json!({"model": entry.name, "config": config, "trainer": tcfg, "data": spec, "device": device_name(device)});
    std::fs::write(
        a.out.join("run.json"),
        serde_json::to_string_pretty(&run_json)?,
    )?;
    let trainer = Trainer::new(tcfg, serde_json::to_value(&spec)?);
    let s = trainer.run(model.as_mut(), source.as_mut(), &a.out, None)?;
    println!(
        "trained {} for {} steps in {:.1}s; checkpoint {}",
        entry.name,
        s.steps,
        s.elapsed_s,
        s.checkpoint.display()
    );
    Ok(())
}

fn load_run(
    run_dir: &Path,
    device: tch::Device,
) -> Result<(Checkpoint, ModelEntry, Box<dyn Model>)> {
    let path = checkpoint_path(run_dir);
    if !path.exists() {
        bail!(
            "{} holds no checkpoint.safetensors: not a genmodels run folder",
            run_dir.display()
        );
    }
    let ck = Checkpoint::load(&path)?;
    let entry = find_model(&ck.meta.model)?;
    let model = (entry.build)(&ck.meta.config, device)?;
    Ok((ck, entry, model))
}

fn resume(
    run_dir: &Path,
    steps: Option<u64>,
    device: Option<&str>,
    no_progress: bool,
) -> Result<()> {
    let device = device_from_env_or(device)?;
    let (ck, entry, mut model) = load_run(run_dir, device)?;
    let mut tcfg: TrainerConfig = serde_json::from_value(ck.meta.state.trainer.clone())
        .context("checkpoint holds no trainer settings")?;
    if let Some(s) = steps {
        tcfg.steps = s;
    }
    tcfg.progress = !no_progress;
    let spec: DataSpec = serde_json::from_value(ck.meta.state.data.clone())
        .context("checkpoint holds no data spec")?;
    let mut source = spec.load()?.source(
        tcfg.batch_size,
        block_of(&ck.meta.config),
        tcfg.seed,
        device,
    )?;
    let trainer = Trainer::new(tcfg, ck.meta.state.data.clone());
    let s = trainer.run(model.as_mut(), source.as_mut(), run_dir, Some(&ck))?;
    println!(
        "resumed {} to step {} ({:.1}s in all); checkpoint {}",
        entry.name,
        s.steps,
        s.elapsed_s,
        s.checkpoint.display()
    );
    Ok(())
}

fn sample(
    run_dir: &Path,
    n: usize,
    out: &Path,
    seed: u64,
    device: Option<&str>,
    no_ema: bool,
) -> Result<()> {
    if n == 0 {
        bail!("-n must be at least 1");
    }
    let device = device_from_env_or(device)?;
    let (ck, _, mut model) = load_run(run_dir, device)?;
    let path = checkpoint_path(run_dir);
    load_model_state(model.as_mut(), &ck, &path, false)?;
    if !no_ema && ck.has_prefix("ema") {
        if let Some(vs) = model.ema_store() {
            let mut ema = Ema::new(vs, 0.0)?;
            ema.load_state("ema", &ck, &path)?;
            ema.copy_into_live();
        }
    }
    seed_everything(seed);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let samples = model.sample(n)?;
    match &samples {
        Samples::Images(t) => {
            genmodels_core::image_io::save_each(t, out, "sample", 0)?;
        }
        Samples::Points(t) => {
            let v: Vec<f32> = Vec::try_from(t.to_device(tch::Device::Cpu).flatten(0, -1))?;
            let d = t.size()[1] as usize;
            let csv: String = v
                .chunks(d)
                .map(|r| {
                    r.iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                        + "\n"
                })
                .collect();
            std::fs::write(out.join("points.csv"), csv)?;
        }
        Samples::Text(_) => {}
    }
    let grid = write_samples_to(
        &samples,
        &out.join(match samples {
            Samples::Images(_) => "grid",
            Samples::Points(_) => "scatter",
            Samples::Text(_) => "samples",
        }),
    )?;
    println!(
        "wrote {n} samples to {} (overview: {})",
        out.display(),
        grid.display()
    );
    Ok(())
}

fn list() {
    println!("{:<12} {:<12} summary", "model", "family");
    for e in registry() {
        println!("{:<12} {:<12} {}", e.name, e.family, e.summary);
    }
}

fn main() {
    // libtorch errors surface as panics in some tch calls: report them in one line, no backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        let first = msg.lines().next().unwrap_or(msg);
        eprintln!("error: internal error: {first}");
        std::process::exit(2);
    }));
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Train(a) => train(a),
        Cmd::Resume {
            run_dir,
            steps,
            device,
            no_progress,
        } => resume(&run_dir, steps, device.as_deref(), no_progress),
        Cmd::Sample {
            run_dir,
            n,
            out,
            seed,
            device,
            no_ema,
        } => sample(&run_dir, n, &out, seed, device.as_deref(), no_ema),
        Cmd::List => {
            list();
            Ok(())
        }
    };
    if let Err(e) = res {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(2);
    }
}
