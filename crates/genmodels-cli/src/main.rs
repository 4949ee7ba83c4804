//! `genmodels`: train, resume, sample and score generative models from the command line.
//!
//! Every family registers its models in [`common::registry`]; each verb lives in its own
//! module under [`cmd`] and asks the model for a capability (class conditioning, likelihood,
//! reconstruction, translation, text), never for a model by name. `cargo xtask eval` drives
//! the same binary and reads the reports through `genmodels-contracts`.

use clap::{Parser, Subcommand};

mod cmd;
mod common;

#[derive(Parser)]
#[command(
    name = "genmodels",
    version,
    about = "Train, resume, sample and score generative models on libtorch"
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
    /// Train MODEL on some data into a run folder (checkpoint, log, sample grids), or remake
    /// the run a manifest describes (--config run.json).
    Train(cmd::train::TrainArgs),
    /// Continue a run from its checkpoint (optionally to a new total of steps).
    Resume(cmd::train::ResumeArgs),
    /// Draw N samples from a trained run and write them to a folder.
    Sample(cmd::sample::SampleArgs),
    /// Latent interpolation grid of an image run: each row walks between two latents.
    Interpolate(cmd::interpolate::InterpolateArgs),
    /// Compare generated images with real ones: FID, KID, precision/recall, density/coverage.
    Metrics(cmd::metrics::MetricsArgs),
    /// pytorch-fid's command: FID between two folders or statistics files (.npz), or
    /// --save-stats FOLDER OUT.npz.
    Fid(cmd::fid::FidArgs),
    /// Train the domain classifier used by `metrics --classifier` (features, domain IS, CAS).
    Classifier(cmd::classifier::ClassifierArgs),
    /// Classification Accuracy Score of a class-conditional run: train the domain classifier
    /// on generated labelled images, test it on real ones, beside the same classifier trained
    /// on as many real images.
    Cas(cmd::cas::CasArgs),
    /// Translate images with a translation run (A -> B by default) into a folder of PNGs, e.g.
    /// for `metrics --real DATA@B --fake folder:DIR`.
    Translate(cmd::translate::TranslateArgs),
    /// Generate text from a trained (or imported) text run, streaming to stdout.
    Generate(cmd::generate::GenerateArgs),
    /// Validation loss, perplexity and bits per character of a text run.
    Perplexity(cmd::perplexity::PerplexityArgs),
    /// An energy model on 2-D points: its density exp(-E) as a heat map over the data, and
    /// its samples.
    Energy(cmd::energy::EnergyArgs),
    /// An energy model's Langevin chains over their steps: from noise, or restoring images
    /// corrupted by noise or masks (denoising, inpainting) with PSNR and LPIPS.
    Langevin(cmd::langevin::LangevinArgs),
    /// Out-of-distribution detection with an energy model: AUROC of log p(x), max softmax and
    /// the input-gradient norm, in-distribution set against each --out-data set.
    Ood(cmd::ood::OodArgs),
    /// Expected calibration error and reliability diagram of a model with class logits.
    Calibration(cmd::ood::CalibrationArgs),
    /// Test negative log-likelihood of an image run by importance sampling (k = 5000 as in
    /// the IWAE paper), in nats and bits per dimension, its one-sample bound and active units.
    Nll(cmd::nll::NllArgs),
    /// Latent traversals: one image's posterior mean, one latent dimension per row swept from
    /// -range to +range.
    Traverse(cmd::traverse::TraverseArgs),
    /// Reconstructions: mean squared error, a grid of originals above reconstructions, and for
    /// codebook models the codebook perplexity and the prior's NLL.
    Reconstruct(cmd::reconstruct::ReconstructArgs),
    /// Import a Hugging Face GPT-2 folder (config.json, model.safetensors, tokenizer.json) as a run.
    ImportGpt2(cmd::import::ImportGpt2Args),
    /// Import a diffusers UNet2DModel folder (or a pipeline folder with unet/ and scheduler/)
    /// as a diffusion run.
    ImportDiffusers(cmd::import::ImportDiffusersArgs),
    /// List the models this build knows, with their capabilities (--json for tools).
    List(cmd::list::ListArgs),
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
    if matches!(cli.cmd, Cmd::Train(_) | Cmd::Resume(_)) {
        if let Err(e) = genmodels_core::train::install_stop_handler() {
            eprintln!("warning: {e}");
        }
    }
    let res = match cli.cmd {
        Cmd::Train(a) => cmd::train::train(a),
        Cmd::Resume(a) => cmd::train::resume(a),
        Cmd::Sample(a) => cmd::sample::sample(a),
        Cmd::Interpolate(a) => cmd::interpolate::interpolate(a),
        Cmd::Metrics(a) => cmd::metrics::metrics(a),
        Cmd::Fid(a) => cmd::fid::fid(a),
        Cmd::Classifier(a) => cmd::classifier::classifier(a),
        Cmd::Cas(a) => cmd::cas::cas(a),
        Cmd::Translate(a) => cmd::translate::translate(a),
        Cmd::Generate(a) => cmd::generate::generate(a),
        Cmd::Perplexity(a) => cmd::perplexity::perplexity(a),
        Cmd::Nll(a) => cmd::nll::nll(a),
        Cmd::Energy(a) => cmd::energy::energy(a),
        Cmd::Langevin(a) => cmd::langevin::langevin(a),
        Cmd::Ood(a) => cmd::ood::ood(a),
        Cmd::Calibration(a) => cmd::ood::calibration_cmd(a),
        Cmd::Traverse(a) => cmd::traverse::traverse(a),
        Cmd::Reconstruct(a) => cmd::reconstruct::reconstruct(a),
        Cmd::ImportGpt2(a) => cmd::import::import_gpt2(a),
        Cmd::ImportDiffusers(a) => cmd::import::import_diffusers(a),
        Cmd::List(a) => cmd::list::list(a),
    };
    if let Err(e) = res {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use genmodels_core::model::{probe_capabilities, DataInfo};

    /// Every registered model declares exactly the capabilities its built model answers for
    /// (so `list --json`, the verbs and `xtask eval` agree with the code).
    #[test]
    fn declared_capabilities_match_the_models() {
        let reg = crate::common::registry();
        for e in reg.entries() {
            let info = match e.output {
                genmodels_core::model::Output::Images => DataInfo {
                    example_shape: vec![1, 28, 28],
                    num_classes: Some(10),
                    vocab_size: None,
                    vocab: None,
                },
                genmodels_core::model::Output::Points => DataInfo {
                    example_shape: vec![2],
                    num_classes: None,
                    vocab_size: None,
                    vocab: None,
                },
                genmodels_core::model::Output::Text => DataInfo {
                    example_shape: vec![],
                    num_classes: None,
                    vocab_size: Some(16),
                    vocab: None,
                },
            };
            let cfg = (e.default_config)(&info).unwrap();
            let mut m = (e.build)(&cfg, tch::Device::Cpu).unwrap();
            let mut declared = e.capabilities.to_vec();
            declared.sort();
            assert_eq!(
                probe_capabilities(m.as_mut()).unwrap(),
                declared,
                "{}: declared capabilities differ from the model's",
                e.name
            );
            assert_eq!(
                e.interpolation.is_some(),
                e.has(genmodels_core::model::Capability::Interpolation),
                "{}: an interpolating model says how it walks",
                e.name
            );
        }
    }
}
