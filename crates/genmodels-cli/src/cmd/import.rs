//! `genmodels import-gpt2`: a Hugging Face GPT-2 folder as a run folder.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ImportGpt2Args {
    /// Folder written by `save_pretrained`.
    dir: PathBuf,
    /// Run folder to create.
    #[arg(long)]
    out: PathBuf,
}

pub fn import_gpt2(a: ImportGpt2Args) -> Result<()> {
    let cfg = genmodels_transformer::gpt2_import::import_as_run(&a.dir, &a.out)?;
    println!(
        "imported GPT-2 ({} layers x {} heads x {}, context {}, vocab {}{}) into {}",
        cfg.n_layer,
        cfg.n_head,
        cfg.n_embd,
        cfg.block_size,
        cfg.vocab_size,
        if cfg.vocab.is_some() {
            ", with tokenizer"
        } else {
            ", no tokenizer.json"
        },
        a.out.display()
    );
    Ok(())
}

#[derive(Args)]
pub struct ImportDiffusersArgs {
    /// A diffusers `UNet2DModel` folder (config.json, diffusion_pytorch_model.safetensors) or a
    /// pipeline folder with `unet/` and `scheduler/`.
    dir: PathBuf,
    /// Run folder to create.
    #[arg(long)]
    out: PathBuf,
}

pub fn import_diffusers(a: ImportDiffusersArgs) -> Result<()> {
    let (name, cfg) = genmodels_diffusion::ddpm::import_diffusers_as_run(&a.dir, &a.out)?;
    println!(
        "imported a diffusers UNet2DModel ({}x{}x{}{}; {} training timesteps, {} prediction) as a `{name}` run into {}",
        cfg.channels,
        cfg.image_size,
        cfg.image_size,
        cfg.num_classes
            .map(|k| format!(", {k} classes + null"))
            .unwrap_or_default(),
        cfg.scheduler.num_train_timesteps,
        cfg.scheduler.prediction_type,
        a.out.display()
    );
    Ok(())
}
