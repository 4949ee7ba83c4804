//! `genmodels perplexity`: a text model's validation loss, perplexity and bits per character.

use crate::common::{bar, need, open_run, write_json, Weights};
use anyhow::{bail, Result};
use clap::Args;
use genmodels_contracts::reports::PerplexityReport;
use genmodels_core::data::{DataSpec, OpenData, TextSplit};
use genmodels_core::model::Capability;
use std::path::PathBuf;

#[derive(Args)]
pub struct PerplexityArgs {
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
}

pub fn perplexity(a: PerplexityArgs) -> Result<()> {
    let (mut run, _) = open_run(&a.run_dir, a.device.as_deref(), Weights::Raw)?;
    let name = run.name();
    let data = match &a.data {
        Some(d) => {
            let vocab = run.model.as_text().and_then(|t| t.vocab().cloned());
            DataSpec::parse(d)?.load_with_vocab(vocab.as_ref())?
        }
        None => run.run.open_data(run.model.as_mut())?,
    };
    let text = need(
        run.model.as_text(),
        "perplexity",
        Capability::Likelihood,
        name,
    )?;
    let OpenData::Text(corpus) = data else {
        bail!("perplexity needs text data (moby-dick, kjv, text:FILE)");
    };
    let all = corpus.tokens(TextSplit::Val);
    let toks = &all[..a.max_tokens.unwrap_or(all.len()).min(all.len())];
    if toks.len() < 2 {
        bail!(
            "too little to score: {} validation tokens (need at least 2)",
            toks.len()
        );
    }
    let b = bar(0, "validation");
    let (nll, n) = text.sequence_nll(toks, 16, &mut |d, t| {
        b.set_length(t as u64);
        b.set_position(d.min(t) as u64);
    })?;
    b.finish_and_clear();
    let chars = corpus.vocab.decode(toks)?.chars().count();
    let loss = nll / n as f64;
    let ln2 = std::f64::consts::LN_2;
    let r = PerplexityReport {
        tokens: n,
        loss_nats_per_token: loss,
        perplexity: loss.exp(),
        bits_per_token: loss / ln2,
        bits_per_char: nll / ln2 / chars as f64,
        split: "val".into(),
    };
    println!("validation tokens      {}", r.tokens);
    println!("loss (nats/token)      {:.4}", r.loss_nats_per_token);
    println!("perplexity             {:.3}", r.perplexity);
    println!("bits per token         {:.4}", r.bits_per_token);
    println!("bits per character     {:.4}", r.bits_per_char);
    if let Some(p) = &a.json {
        write_json(p, &r)?;
    }
    Ok(())
}
