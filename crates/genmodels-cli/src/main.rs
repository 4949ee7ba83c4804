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

mod text;
mod vae;

/// Every model the command line knows, from every family crate.
fn registry() -> Vec<ModelEntry> {
    let mut all = genmodels_gan::entries();
    all.extend(genmodels_transformer::entries());
    all.extend(genmodels_vae::entries());
    all
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
    /// CPU threads for libtorch (default: libtorch's choice, one per core). Small models run
    /// faster on 1 thread, and so does a machine shared with other jobs.
    #[arg(long, global = true)]
    threads: Option<i32>,
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
        /// Stop after this much training time (e.g. 90s, 10m, 1h), with a checkpoint.
        #[arg(long, value_parser = parse_duration)]
        time_budget: Option<f64>,
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
    /// Latent interpolation grid of an image run: each row walks between two latents (slerp in
    /// z; a conditional model keeps one class per row).
    Interpolate {
        run_dir: PathBuf,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 8)]
        rows: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        device: Option<String>,
        /// Use the raw weights even when the checkpoint holds an EMA.
        #[arg(long)]
        no_ema: bool,
    },
    /// Compare generated images with real ones: FID, KID, precision/recall, density/coverage.
    Metrics(MetricsArgs),
    /// Train the domain classifier used by `metrics --classifier` (features, domain IS, CAS).
    Classifier(ClassifierArgs),
    /// Classification Accuracy Score of a class-conditional run (BigGAN): train the domain
    /// classifier on generated labelled images, test it on real ones, beside the same classifier
    /// trained on as many real images.
    Cas(CasArgs),
    /// Translate images with a CycleGAN run (A -> B by default) into a folder of PNGs, e.g.
    /// for `metrics --real DATA@B --fake folder:DIR`.
    Translate {
        run_dir: PathBuf,
        /// Images to translate (e.g. fashion-mnist:test@7).
        #[arg(long)]
        data: String,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// At most this many images.
        #[arg(short, long, default_value_t = 1000)]
        n: usize,
        /// Translate B -> A instead.
        #[arg(long)]
        reverse: bool,
        #[arg(long)]
        device: Option<String>,
    },
    /// Generate text from a trained (or imported) GPT run, streaming to stdout.
    Generate(GenerateArgs),
    /// Validation loss, perplexity and bits per character of a GPT run.
    Perplexity {
        /// The run folder.
        run_dir: PathBuf,
        /// Text to score (default: the run's own data); its validation split is used.
        #[arg(long)]
        data: Option<String>,
        #[arg(long)]
        device: Option<String>,
        /// Score only the first N tokens of the validation split (default: all of it).
        #[arg(long)]
        max_tokens: Option<usize>,
        /// Also write the scores as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Test negative log-likelihood of a VAE / beta-VAE / IWAE run by importance sampling
    /// (k = 5000 as in the IWAE paper), its one-sample negative ELBO and its active units.
    Nll {
        #[command(flatten)]
        set: vae::ScoredSet,
        /// Importance samples per image.
        #[arg(short, long, default_value_t = 5000)]
        k: i64,
    },
    /// Latent traversals of a VAE run (beta-VAE's picture): one image's posterior mean, one
    /// latent dimension per row swept from -range to +range.
    Traverse {
        run_dir: PathBuf,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        /// Where the image comes from.
        #[arg(long, default_value = "fashion-mnist:test")]
        data: String,
        /// Which image of --data.
        #[arg(long, default_value_t = 0)]
        index: usize,
        /// Latent dimensions to sweep, comma-separated (default: the --rows most active).
        #[arg(long, value_delimiter = ',')]
        dims: Option<Vec<i64>>,
        #[arg(long, default_value_t = 10)]
        rows: usize,
        #[arg(long, default_value_t = 11)]
        steps: i64,
        #[arg(long, default_value_t = 3.0)]
        range: f64,
        #[arg(long)]
        device: Option<String>,
    },
    /// Reconstructions of a VAE / IWAE / VQ-VAE / VAE-GAN run: mean squared error, a grid of originals
    /// above reconstructions, and for VQ-VAE the codebook perplexity and the prior's NLL.
    Reconstruct {
        #[command(flatten)]
        set: vae::ScoredSet,
        /// Write a grid of the first 10 originals and their reconstructions here (PNG).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Import a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer.json) as a run.
    ImportGpt2 {
        /// Folder written by `save_pretrained`.
        dir: PathBuf,
        /// Run folder to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// List the models this build knows.
    List,
}

#[derive(Args)]
struct MetricsArgs {
    /// Real images (a data spec, e.g. fashion-mnist:test or folder:DIR).
    #[arg(long)]
    real: String,
    /// Generated images: a run folder (samples are drawn from its checkpoint) or a data spec.
    #[arg(long)]
    fake: String,
    /// How many generated samples (and at most how many real ones).
    #[arg(short, long, default_value_t = 10_000)]
    n: usize,
    /// Resize convention to 299x299: pil-bicubic (clean-fid), tf1-bilinear (torch-fidelity), pytorch-bilinear (pytorch-fid).
    #[arg(long, default_value = "pil-bicubic")]
    resize: String,
    /// Also write the scores as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
    /// Images per forward pass of the feature network.
    #[arg(long, default_value_t = 50)]
    batch_size: usize,
    /// Folder for cached real-set features (keyed by a hash of the images and the network).
    #[arg(long, default_value = "target/metrics-cache")]
    cache: PathBuf,
    /// A domain classifier (from `genmodels classifier`): adds FID in its feature space, a domain
    /// Inception Score and the KL of the generated class histogram from the real one.
    #[arg(long)]
    classifier: Option<PathBuf>,
    /// Training data: adds the memorisation check (nearest-training distances in pixel space).
    #[arg(long)]
    train: Option<String>,
    /// Feature network for FID, KID, precision/recall, density/coverage: inception (FID
    /// Inception pool3, the standard) or classifier (the --classifier's 128-d penultimate
    /// layer: a domain feature space, fast on a CPU, not comparable with published FIDs).
    #[arg(long, default_value = "inception")]
    features: String,
}

#[derive(Args)]
struct CasArgs {
    /// A class-conditional run folder (biggan).
    run_dir: PathBuf,
    /// Real labelled training images (baseline, and `--mix`).
    #[arg(long, default_value = "fashion-mnist")]
    real: String,
    /// Real labelled test images.
    #[arg(long, default_value = "fashion-mnist:test")]
    test: String,
    /// Generated images (balanced over classes); the baseline uses as many real ones.
    #[arg(short, long, default_value_t = 10_000)]
    n: usize,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Truncation threshold for the generated latents (0: none).
    #[arg(long, default_value_t = 0.0)]
    truncation: f64,
    /// Also train on real + generated (data augmentation) and report it.
    #[arg(long)]
    mix: bool,
    /// Write the scores as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args)]
struct GenerateArgs {
    /// The run folder (from `genmodels train gpt ...` or `genmodels import-gpt2`).
    run_dir: PathBuf,
    /// Prompt text; repeat for a batch of prompts (default: a newline).
    #[arg(long)]
    prompt: Vec<String>,
    /// New tokens per sample.
    #[arg(short = 'n', long, default_value_t = 200)]
    max_new_tokens: usize,
    /// Samples per prompt.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// 0 for greedy decoding.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    #[arg(long)]
    top_k: Option<i64>,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    repetition_penalty: Option<f64>,
    /// Stop a sample when it produces this text (repeatable; the stop text is not printed).
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recompute the whole context for every token instead of using the KV cache.
    #[arg(long)]
    no_cache: bool,
    /// Print samples when finished instead of streaming the first one token by token.
    #[arg(long)]
    no_stream: bool,
    #[arg(long)]
    device: Option<String>,
}

#[derive(Args)]
struct ClassifierArgs {
    /// Labelled training images.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Labelled test images.
    #[arg(long, default_value = "fashion-mnist:test")]
    test: String,
    /// Where to write the classifier.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    device: Option<String>,
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
    /// Validation every this many steps, for models that evaluate (text); 0: never.
    #[arg(long, default_value_t = 250)]
    eval_every: u64,
    /// Batches per validation.
    #[arg(long, default_value_t = 20)]
    eval_batches: usize,
    /// Stop after this much training time (e.g. 90s, 10m, 1h), with a checkpoint; `resume`
    /// continues.
    #[arg(long, value_parser = parse_duration)]
    time_budget: Option<f64>,
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

/// The tokenizer a model config stores, if any.
fn vocab_of(config: &serde_json::Value) -> Result<Option<genmodels_core::data::Vocab>> {
    match config.get("vocab") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => Ok(Some(
            serde_json::from_value(v.clone())
                .context("the checkpoint's tokenizer does not parse")?,
        )),
    }
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
        eval_every: a.eval_every,
        eval_batches: a.eval_batches,
        time_budget_s: a.time_budget,
    };
    // The data decides the default config (image shape, classes, vocabulary).
    let data = spec.load()?;
    let mut config = (entry.default_config)(&data.info())?;
    apply_overrides(&mut config, &a.overrides)?;
    seed_everything(a.seed);
    let mut model = (entry.build)(&config, device)?;
    let mut source = data.source(a.batch_size, block_of(&config), a.seed, device)?;
    let mut val = data.val_source(a.batch_size, block_of(&config), a.seed ^ 0x5eed, device)?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let run_json = serde_json::json!({"model": entry.name, "config": config, "trainer": tcfg, "data": spec, "device": device_name(device)});
    std::fs::write(
        a.out.join("run.json"),
        serde_json::to_string_pretty(&run_json)?,
    )?;
    let trainer = Trainer::new(tcfg, serde_json::to_value(&spec)?);
    let s = trainer.run_with_eval(
        model.as_mut(),
        source.as_mut(),
        val.as_mut()
            .map(|v| v.as_mut() as &mut dyn genmodels_core::data::BatchSource),
        &a.out,
        None,
    )?;
    println!(
        "trained {} for {} steps in {:.1}s{}; checkpoint {}",
        entry.name,
        s.steps,
        s.elapsed_s,
        budget_note(&s, a.steps),
        s.checkpoint.display()
    );
    Ok(())
}

fn budget_note(s: &genmodels_core::train::TrainSummary, total: u64) -> String {
    if s.completed {
        String::new()
    } else {
        format!(" (time budget spent; {total} planned, `genmodels resume` continues)")
    }
}

/// Parses a duration such as `90`, `90s`, `10m` or `1.5h` into seconds.
fn parse_duration(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let (num, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{s}`: use s, m or h (e.g. 90s, 10m)"
            ))
        }
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v * mult),
        _ => Err(format!(
            "`{s}` is not a duration: expected a non-negative number with s, m or h (e.g. 10m)"
        )),
    }
}

/// A run folder's checkpoint and its path; `kind = Some((prefix, what))` requires a model
/// whose name starts with `prefix`, else fails with `what`.
pub(crate) fn open_checkpoint(
    run_dir: &Path,
    kind: Option<(&str, &str)>,
) -> Result<(Checkpoint, PathBuf)> {
    let path = checkpoint_path(run_dir);
    if !path.exists() {
        bail!(
            "{} holds no checkpoint.safetensors: not a genmodels run folder",
            run_dir.display()
        );
    }
    let ck = Checkpoint::load(&path)?;
    if let Some((prefix, what)) = kind {
        if !ck.meta.model.starts_with(prefix) {
            bail!(
                "{what}; {} holds a `{}` model",
                run_dir.display(),
                ck.meta.model
            );
        }
    }
    Ok((ck, path))
}

fn load_run(
    run_dir: &Path,
    device: tch::Device,
) -> Result<(Checkpoint, ModelEntry, Box<dyn Model>)> {
    let (ck, _) = open_checkpoint(run_dir, None)?;
    let entry = find_model(&ck.meta.model)?;
    let model = (entry.build)(&ck.meta.config, device)?;
    Ok((ck, entry, model))
}

fn resume(
    run_dir: &Path,
    steps: Option<u64>,
    device: Option<&str>,
    time_budget: Option<f64>,
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
    tcfg.time_budget_s = time_budget;
    let total = tcfg.steps;
    let spec: DataSpec = serde_json::from_value(ck.meta.state.data.clone())
        .context("checkpoint holds no data spec")?;
    let data = spec.load_with_vocab(vocab_of(&ck.meta.config)?.as_ref())?;
    let block = block_of(&ck.meta.config);
    let mut source = data.source(tcfg.batch_size, block, tcfg.seed, device)?;
    let mut val = data.val_source(tcfg.batch_size, block, tcfg.seed ^ 0x5eed, device)?;
    let trainer = Trainer::new(tcfg, ck.meta.state.data.clone());
    let s = trainer.run_with_eval(
        model.as_mut(),
        source.as_mut(),
        val.as_mut()
            .map(|v| v.as_mut() as &mut dyn genmodels_core::data::BatchSource),
        run_dir,
        Some(&ck),
    )?;
    println!(
        "resumed {} to step {} ({:.1}s in all){}; checkpoint {}",
        entry.name,
        s.steps,
        s.elapsed_s,
        budget_note(&s, total),
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
    load_for_sampling(model.as_mut(), &ck, run_dir, no_ema)?;
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

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>24} [{elapsed_precise}] {bar:30} {pos}/{len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.set_message(what.to_string());
    b
}

fn metrics(a: MetricsArgs) -> Result<()> {
    use genmodels_metrics::inception::{FeatureExtractor, FidInception};
    use genmodels_metrics::report::{
        compare, dataset_features, features_cache_key, tensor_features,
    };
    if a.n < 2 || a.batch_size == 0 {
        bail!("-n must be at least 2 and --batch-size at least 1");
    }
    let device = device_from_env_or(a.device.as_deref())?;
    if let DataSpec::Mixture { mixture, .. } = DataSpec::parse(&a.real)? {
        return mode_metrics(&a, mixture, device);
    }
    let resize = genmodels_metrics::resize::Resize::parse(&a.resize)?;
    let (net, weights): (Box<dyn FeatureExtractor>, PathBuf) = match a.features.as_str() {
        "inception" => {
            let p = FidInception::default_path();
            (Box::new(FidInception::load(&p, resize, device)?), p)
        }
        "classifier" => {
            let Some(cp) = &a.classifier else {
                bail!(
                    "--features classifier needs --classifier FILE (from `genmodels classifier`)"
                );
            };
            (
                Box::new(genmodels_metrics::classifier::DomainClassifier::load(
                    cp, device,
                )?),
                cp.clone(),
            )
        }
        other => bail!("unknown --features `{other}`: expected inception or classifier"),
    };
    let net = net.as_ref();
    let real = DataSpec::parse(&a.real)?.dataset()?;
    let n_real = a.n.min(real.len());
    // Real features: cached by a hash of the images, the network and its weights.
    let key = features_cache_key(real.as_ref(), n_real, &net.name(), &weights)?;
    let cache = a.cache.join(format!("{key}.safetensors"));
    let real_feats = match tch::Tensor::read_safetensors(&cache) {
        Ok(mut v) if v.len() == 1 => v.remove(0).1,
        _ => {
            let b = bar(n_real as u64, "real features");
            let f = dataset_features(net, real.as_ref(), n_real, a.batch_size, &mut |d| {
                b.set_position(d as u64)
            })?;
            b.finish();
            std::fs::create_dir_all(&a.cache)
                .with_context(|| format!("creating {}", a.cache.display()))?;
            tch::Tensor::write_safetensors(&[("features", &f)], &cache)?;
            f
        }
    };
    let fake_images = fake_images(&a.fake, a.n, a.seed, a.batch_size, device)?;
    let b = bar(fake_images.size()[0] as u64, "generated features");
    let fake_feats = tensor_features(net, &fake_images, a.batch_size, &mut |d| {
        b.set_position(d as u64)
    })?;
    b.finish();
    let r = compare(&real_feats, &fake_feats, &net.name())?;
    let mut json = serde_json::to_value(&r)?;
    let mut rows = vec![
        ("FID", r.fid),
        ("KID", r.kid_mean),
        ("KID std", r.kid_std),
        ("precision", r.precision),
        ("recall", r.recall),
        ("density", r.density),
        ("coverage", r.coverage),
    ];
    let mut extra: Vec<(&str, f64)> = Vec::new();
    if let Some(cp) = &a.classifier {
        use genmodels_metrics::classifier::{class_histogram_kl, DomainClassifier};
        let clf = DomainClassifier::load(cp, device)?;
        let real_imgs = genmodels_core::data::DataLoader::collate(
            real.as_ref(),
            &(0..n_real).collect::<Vec<_>>(),
            device,
        )?;
        let (rf, ff) = (clf.embed(&real_imgs.x), clf.embed(&fake_images));
        let domain_fid = genmodels_metrics::fid::fid_from_features(&rf, &ff)?;
        let logits = clf.logits(&fake_images);
        let is = genmodels_metrics::isc::inception_score(&logits)?;
        let labels = real_imgs.y.ok_or_else(|| {
            anyhow!("the real data has no labels; the class histogram needs them")
        })?;
        let (kl, hist) = class_histogram_kl(&logits, &labels, clf.cfg.classes)?;
        extra.extend([
            ("domain FID", domain_fid),
            ("domain IS", is.mean),
            ("domain IS std", is.std),
            ("class KL", kl),
        ]);
        json["domain_fid"] = domain_fid.into();
        json["domain_is_mean"] = is.mean.into();
        json["domain_is_std"] = is.std.into();
        json["class_kl"] = kl.into();
        json["class_histogram"] = serde_json::to_value(hist)?;
        json["domain_feature_network"] = clf.name().into();
    }
    if let Some(t) = &a.train {
        let train = DataSpec::parse(t)?.dataset()?;
        let all: Vec<usize> = (0..train.len()).collect();
        let train_x =
            genmodels_core::data::DataLoader::collate(train.as_ref(), &all, tch::Device::Cpu)?.x;
        let held = genmodels_core::data::DataLoader::collate(
            real.as_ref(),
            &(0..n_real).collect::<Vec<_>>(),
            tch::Device::Cpu,
        )?
        .x;
        let m = genmodels_metrics::novelty::memorisation(
            &fake_images.to_device(tch::Device::Cpu),
            &train_x,
            &held,
        )?;
        extra.extend([
            ("near copies", m.near_copy_share),
            ("NN dist fake", m.fake_median),
            ("NN dist real", m.heldout_median),
        ]);
        json["memorisation"] = serde_json::to_value(&m)?;
    }
    rows.extend(extra);
    println!("{:<14} {:>12}", "metric", "value");
    for (k, v) in rows {
        println!("{k:<14} {v:>12.5}");
    }
    println!(
        "{} real vs {} generated images; features: {}",
        r.num_real, r.num_fake, r.feature_network
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Mode coverage of a run trained on a 2-D mixture, with a scatter plot beside the JSON.
fn mode_metrics(
    a: &MetricsArgs,
    mixture: genmodels_core::data::MixtureKind,
    device: tch::Device,
) -> Result<()> {
    let path = Path::new(&a.fake);
    let (ck, _, mut model) = load_run(path, device)?;
    load_for_sampling(model.as_mut(), &ck, path, false)?;
    seed_everything(a.seed);
    let Samples::Points(pts) = model.sample(a.n)? else {
        bail!("{} does not generate 2-D points", path.display())
    };
    // a mode counts as covered with at least 1% of its fair share of high-quality samples
    let fair = a.n as i64 / mixture.centers().len() as i64;
    let m = genmodels_metrics::novelty::mode_coverage(&pts, mixture, (fair / 100).max(1))?;
    println!(
        "modes covered {}/{}, high-quality share {:.4}, KL(modes || uniform) {:.4}",
        m.modes_covered, m.modes, m.high_quality_share, m.kl_to_uniform
    );
    let real = genmodels_core::data::Mixture2d::new(mixture, 2000, 1)?;
    let real_pts = genmodels_core::data::DataLoader::collate(
        &real,
        &(0..2000).collect::<Vec<_>>(),
        tch::Device::Cpu,
    )?
    .x;
    if let Some(p) = &a.json {
        let mut v = serde_json::to_value(&m)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("centers".into(), serde_json::to_value(mixture.centers())?);
            o.insert("mode_std".into(), f64::from(mixture.std()).into());
        }
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))?;
        let plot = p.with_extension("png");
        genmodels_core::image_io::save_scatter(
            &pts,
            Some(&real_pts),
            if matches!(mixture, genmodels_core::data::MixtureKind::Ring8) {
                3.0
            } else {
                6.0
            },
            400,
            &plot,
        )?;
        println!("scatter plot (data grey, samples blue): {}", plot.display());
    }
    Ok(())
}

/// `n` generated images in [-1, 1]: sampled from a run folder, or read from a data spec.
fn fake_images(
    fake: &str,
    n: usize,
    seed: u64,
    batch: usize,
    device: tch::Device,
) -> Result<tch::Tensor> {
    let path = Path::new(fake);
    if checkpoint_path(path).exists() {
        let (ck, _, mut model) = load_run(path, device)?;
        load_for_sampling(model.as_mut(), &ck, path, false)?;
        seed_everything(seed);
        let b = bar(n as u64, "sampling");
        let mut parts = Vec::new();
        let mut done = 0;
        while done < n {
            let k = batch.min(n - done);
            let Samples::Images(imgs) = model.sample(k)? else {
                bail!("{} does not generate images", path.display())
            };
            parts.push(imgs.to_device(tch::Device::Cpu));
            done += k;
            b.set_position(done as u64);
        }
        b.finish();
        Ok(tch::Tensor::cat(&parts, 0))
    } else {
        let ds = DataSpec::parse(fake)?.dataset()?;
        let idx: Vec<usize> = (0..n.min(ds.len())).collect();
        Ok(genmodels_core::data::DataLoader::collate(ds.as_ref(), &idx, tch::Device::Cpu)?.x)
    }
}

fn classifier(a: ClassifierArgs) -> Result<()> {
    use genmodels_metrics::classifier::{ClassifierConfig, DomainClassifier};
    let device = device_from_env_or(a.device.as_deref())?;
    let train = DataSpec::parse(&a.data)?.dataset()?;
    let test = DataSpec::parse(&a.test)?.dataset()?;
    let shape = train.example_shape();
    let (&[c, h, w], Some(k)) = (shape.as_slice(), train.num_classes()) else {
        bail!("the classifier needs labelled images, got examples of shape {shape:?}");
    };
    if h != w {
        bail!("the classifier needs square images, got {h}x{w}");
    }
    seed_everything(a.seed);
    let mut clf = DomainClassifier::new(
        ClassifierConfig {
            channels: c,
            image_size: h,
            classes: k as i64,
            feature_dim: 128,
        },
        device,
    )?;
    let b = bar(0, "training classifier");
    let t0 = std::time::Instant::now();
    clf.fit(train, a.epochs, a.seed, &mut |s, total, loss| {
        b.set_length(total as u64);
        b.set_position(s as u64);
        if s % 50 == 0 {
            b.set_message(format!("loss {loss:.3}"));
        }
    })?;
    b.finish();
    let acc = clf.accuracy(test.as_ref())?;
    clf.save(&a.out)?;
    println!(
        "classifier: test accuracy {:.4} after {} epochs ({:.0}s); written to {}",
        acc,
        a.epochs,
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

/// Loads a run's weights for sampling: the EMA when the checkpoint has one (unless `no_ema`).
fn load_for_sampling(
    model: &mut dyn Model,
    ck: &Checkpoint,
    run_dir: &Path,
    no_ema: bool,
) -> Result<()> {
    let path = checkpoint_path(run_dir);
    load_model_state(model, ck, &path, false)?;
    if !no_ema && ck.has_prefix("ema") {
        if let Some(vs) = model.ema_store() {
            let mut ema = Ema::new(vs, 0.0)?;
            ema.load_state("ema", ck, &path)?;
            ema.copy_into_live();
        }
    }
    Ok(())
}

fn cas(a: CasArgs) -> Result<()> {
    use genmodels_core::data::{Dataset, DynDataset, InMemory, Subset};
    use genmodels_gan::biggan::{BigGan, BigGanConfig};
    use genmodels_metrics::classifier::{classification_accuracy_score, ClassifierConfig};
    use std::sync::Arc;
    if a.n == 0 || a.epochs == 0 {
        bail!("-n and --epochs must be at least 1");
    }
    let device = device_from_env_or(a.device.as_deref())?;
    let (ck, _) = open_checkpoint(
        &a.run_dir,
        Some(("biggan", "CAS needs a class-conditional run (biggan)")),
    )?;
    let cfg: BigGanConfig =
        serde_json::from_value(ck.meta.config.clone()).context("BigGAN config")?;
    let mut g = BigGan::new(cfg.clone(), device)?;
    load_for_sampling(&mut g, &ck, &a.run_dir, false)?;
    let real = DataSpec::parse(&a.real)?.dataset()?;
    let test = DataSpec::parse(&a.test)?.dataset()?;
    let k = cfg.num_classes as usize;
    if real.num_classes() != Some(k) || test.num_classes() != Some(k) {
        bail!("the run has {k} classes; --real and --test must be labelled with the same classes");
    }
    seed_everything(a.seed);
    let b = bar(a.n as u64, "generating");
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    let mut done = 0;
    while done < a.n {
        let m = 500.min(a.n - done);
        let y: Vec<i64> = (done..done + m).map(|i| (i % k) as i64).collect();
        let y = tch::Tensor::from_slice(&y).to_device(device);
        xs.push(g.generate(&y, a.truncation)?.to_device(tch::Device::Cpu));
        ys.push(y.to_device(tch::Device::Cpu));
        done += m;
        b.set_position(done as u64);
    }
    b.finish();
    let fake: DynDataset = Arc::new(InMemory::new(
        &tch::Tensor::cat(&xs, 0),
        &tch::Tensor::cat(&ys, 0),
        k,
        "generated",
    )?);
    let n_real = a.n.min(real.len());
    let real_sub: DynDataset = Arc::new(Subset::new(real.clone(), (0..n_real).collect())?);
    let shape = real.example_shape();
    let ccfg = ClassifierConfig {
        channels: shape[0],
        image_size: shape[1],
        classes: k as i64,
        feature_dim: 128,
    };
    let t0 = std::time::Instant::now();
    let score = |train: DynDataset, what: &str| -> Result<f64> {
        eprintln!("training the classifier on {what} ...");
        Ok(classification_accuracy_score(
            ccfg.clone(),
            train,
            test.as_ref(),
            a.epochs,
            a.seed,
            device,
        )?)
    };
    let cas = score(fake.clone(), "generated images")?;
    let base = score(real_sub.clone(), "real images")?;
    let mut out = serde_json::json!({"cas": cas, "real_baseline": base, "num_train": a.n, "epochs": a.epochs, "truncation": a.truncation});
    println!("CAS (train on {} generated, test on real)  {cas:.4}", a.n);
    println!("baseline (train on {n_real} real)           {base:.4}");
    if a.mix {
        struct Concat(DynDataset, DynDataset);
        impl Dataset for Concat {
            fn len(&self) -> usize {
                self.0.len() + self.1.len()
            }
            fn example_shape(&self) -> Vec<i64> {
                self.0.example_shape()
            }
            fn num_classes(&self) -> Option<usize> {
                self.0.num_classes()
            }
            fn get(&self, i: usize, o: &mut [f32]) -> genmodels_core::Result<Option<i64>> {
                if i < self.0.len() {
                    self.0.get(i, o)
                } else {
                    self.1.get(i - self.0.len(), o)
                }
            }
            fn describe(&self) -> String {
                format!("{} + {}", self.0.describe(), self.1.describe())
            }
        }
        let mixed = score(Arc::new(Concat(real_sub, fake)), "real + generated images")?;
        println!("real + generated                         {mixed:.4}");
        out["real_plus_generated"] = mixed.into();
    }
    eprintln!("({:.0}s)", t0.elapsed().as_secs_f64());
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn translate(
    run_dir: &Path,
    data: &str,
    out: &Path,
    n: usize,
    reverse: bool,
    device: Option<&str>,
) -> Result<()> {
    use genmodels_gan::cyclegan::{CycleGan, CycleGanConfig};
    if n == 0 {
        bail!("-n must be at least 1");
    }
    let device = device_from_env_or(device)?;
    let (ck, path) = open_checkpoint(
        run_dir,
        Some(("cyclegan", "translate needs a CycleGAN run")),
    )?;
    let cfg: CycleGanConfig =
        serde_json::from_value(ck.meta.config.clone()).context("CycleGAN config")?;
    let mut m = CycleGan::new(cfg, device)?;
    load_model_state(&mut m, &ck, &path, false)?;
    let ds = DataSpec::parse(data)?.dataset()?;
    let n = n.min(ds.len());
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let b = bar(n as u64, "translating");
    let mut done = 0;
    while done < n {
        let k = 100.min(n - done);
        let idx: Vec<usize> = (done..done + k).collect();
        let batch = genmodels_core::data::DataLoader::collate(ds.as_ref(), &idx, device)?;
        let y = m.translate(&batch.x, !reverse);
        genmodels_core::image_io::save_each(&y, out, "translated", done)?;
        done += k;
        b.set_position(done as u64);
    }
    b.finish();
    println!("translated {n} images into {}", out.display());
    Ok(())
}

fn interpolate(
    run_dir: &Path,
    out: &Path,
    rows: usize,
    steps: usize,
    seed: u64,
    device: Option<&str>,
    no_ema: bool,
) -> Result<()> {
    if rows == 0 || steps < 2 {
        bail!("--rows must be at least 1 and --steps at least 2");
    }
    let device = device_from_env_or(device)?;
    let (ck, entry, mut model) = load_run(run_dir, device)?;
    load_for_sampling(model.as_mut(), &ck, run_dir, no_ema)?;
    seed_everything(seed);
    let Some(grid) = model.interpolate(rows, steps)? else {
        bail!("model `{}` has no latent space to interpolate", entry.name);
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    genmodels_core::image_io::save_grid(&grid, steps as i64, 2, out)?;
    println!(
        "wrote a {rows} x {steps} interpolation grid to {}",
        out.display()
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
        // libtorch's messages carry a C++ backtrace (as real or escaped newlines): keep the cause.
        let first = msg
            .split("Exception raised from")
            .next()
            .unwrap_or(msg)
            .split("\\n")
            .next()
            .unwrap_or(msg)
            .lines()
            .next()
            .unwrap_or(msg);
        eprintln!("error: internal error: {first}");
        std::process::exit(2);
    }));
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        if t < 1 {
            eprintln!("error: --threads must be at least 1");
            std::process::exit(2);
        }
        tch::set_num_threads(t);
    }
    if matches!(cli.cmd, Cmd::Train(_) | Cmd::Resume { .. }) {
        if let Err(e) = genmodels_core::train::install_stop_handler() {
            eprintln!("warning: {e}");
        }
    }
    let res = match cli.cmd {
        Cmd::Train(a) => train(a),
        Cmd::Resume {
            run_dir,
            steps,
            device,
            time_budget,
            no_progress,
        } => resume(&run_dir, steps, device.as_deref(), time_budget, no_progress),
        Cmd::Sample {
            run_dir,
            n,
            out,
            seed,
            device,
            no_ema,
        } => sample(&run_dir, n, &out, seed, device.as_deref(), no_ema),
        Cmd::Metrics(a) => metrics(a),
        Cmd::Classifier(a) => classifier(a),
        Cmd::Generate(a) => text::generate_cmd(a),
        Cmd::Cas(a) => cas(a),
        Cmd::Translate {
            run_dir,
            data,
            out,
            n,
            reverse,
            device,
        } => translate(&run_dir, &data, &out, n, reverse, device.as_deref()),
        Cmd::Interpolate {
            run_dir,
            out,
            rows,
            steps,
            seed,
            device,
            no_ema,
        } => interpolate(&run_dir, &out, rows, steps, seed, device.as_deref(), no_ema),
        Cmd::Perplexity {
            run_dir,
            data,
            device,
            max_tokens,
            json,
        } => text::perplexity(
            &run_dir,
            data.as_deref(),
            device.as_deref(),
            max_tokens,
            json.as_deref(),
        ),
        Cmd::ImportGpt2 { dir, out } => text::import_gpt2(&dir, &out),
        Cmd::Nll { set, k } => vae::nll(&set, k),
        Cmd::Reconstruct { set, out } => vae::reconstruct(&set, out.as_deref()),
        Cmd::Traverse {
            run_dir,
            out,
            data,
            index,
            dims,
            rows,
            steps,
            range,
            device,
        } => vae::traverse(vae::TraverseArgs {
            run_dir: &run_dir,
            data: &data,
            index,
            out: &out,
            dims,
            rows,
            steps,
            range,
            device: device.as_deref(),
        }),
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
