//! `genmodels generate`: text from any text model, streamed to stdout.

use crate::common::{need, open_run, Weights};
use anyhow::{bail, Context, Result};
use clap::Args;
use genmodels_core::device::seed_everything;
use genmodels_core::model::{Capability, TextModel};
use genmodels_core::samplers::{GenerateConfig, LogitsProcessor};
use genmodels_transformer::generate::TextStream;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args)]
pub struct GenerateArgs {
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

/// The tokenizer of a text model, or the error that says how to get one.
pub fn need_vocab(m: &dyn TextModel) -> Result<genmodels_core::data::Vocab> {
    m.vocab().cloned().context(
        "this checkpoint stores no tokenizer (an imported GPT-2 without tokenizer.json); add one and re-import",
    )
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    if a.num_samples == 0 || a.max_new_tokens == 0 {
        bail!("--num-samples and --max-new-tokens must be at least 1");
    }
    let (mut run, _) = open_run(&a.run_dir, a.device.as_deref(), Weights::Raw)?;
    let name = run.name();
    let text = need(
        run.model.as_text(),
        "generate",
        Capability::TextGeneration,
        name,
    )?;
    let vocab = need_vocab(text)?;
    let prompts_text = if a.prompt.is_empty() {
        vec!["\n".to_string()]
    } else {
        a.prompt.clone()
    };
    let mut prompts = Vec::new();
    for p in &prompts_text {
        let ids = vocab
            .encode(p)
            .with_context(|| format!("prompt {p:?} does not fit the model's tokenizer"))?;
        if ids.is_empty() {
            bail!("prompt {p:?} encodes to no tokens");
        }
        for _ in 0..a.num_samples {
            prompts.push(ids.clone());
        }
    }
    let cfg = GenerateConfig {
        max_new_tokens: a.max_new_tokens,
        processor: LogitsProcessor {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
        },
        use_cache: !a.no_cache,
    };
    seed_everything(a.seed);
    let stream = !a.no_stream && prompts.len() == 1;
    let mut so_far: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut streamer = TextStream::default();
    let mut out = std::io::stdout().lock();
    if stream {
        write!(out, "{}", prompts_text[0])?;
    }
    let longest_stop = a.stop.iter().map(|s| s.len()).max().unwrap_or(0);
    let t0 = std::time::Instant::now();
    let mut io_err = None;
    let rows = text.generate(&prompts, &cfg, &mut |row, tok| {
        so_far[row].push(tok);
        let text = vocab.decode(&so_far[row]).unwrap_or_default();
        let hit = longest_stop > 0 && a.stop.iter().any(|s| text.contains(s.as_str()));
        if stream && !hit {
            // Hold back the last few characters while they could still begin a stop text.
            let safe = if longest_stop == 0 {
                text.len()
            } else {
                text.char_indices()
                    .rev()
                    .nth(longest_stop.saturating_sub(1))
                    .map_or(0, |(i, _)| i)
            };
            let piece = streamer.push(&text[..safe]);
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                io_err = Some(e);
            }
        }
        hit
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    let secs = t0.elapsed().as_secs_f64();
    let cut = |t: String| -> String {
        let end = a
            .stop
            .iter()
            .filter_map(|s| t.find(s.as_str()))
            .min()
            .unwrap_or(t.len());
        t[..end].to_string()
    };
    if stream {
        let full = cut(vocab.decode(&rows[0])?);
        write!(out, "{}", streamer.push(&full))?;
        writeln!(out)?;
    } else {
        for (i, r) in rows.iter().enumerate() {
            let p = &prompts_text[i / a.num_samples];
            writeln!(
                out,
                "--- sample {} ---\n{}{}",
                i + 1,
                p,
                cut(vocab.decode(r)?)
            )?;
        }
    }
    let n: usize = rows.iter().map(|r| r.len()).sum();
    eprintln!(
        "{n} tokens in {secs:.2}s ({:.1} tokens/s{})",
        n as f64 / secs,
        if cfg.use_cache { ", KV cache" } else { "" }
    );
    Ok(())
}
