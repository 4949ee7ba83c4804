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
