//! The GPT verbs: `generate`, `perplexity`, `import-gpt2`.

use crate::{bar, vocab_of, GenerateArgs};
use anyhow::{bail, Context, Result};
use genmodels_core::checkpoint::{checkpoint_path, Checkpoint, TrainState};
use genmodels_core::data::{DataSpec, OpenData, TextSplit, Vocab};
use genmodels_core::device::{device_from_env_or, seed_everything};
use genmodels_core::samplers::LogitsProcessor;
use genmodels_transformer::generate::{generate, GenerateConfig, TextStream};
use genmodels_transformer::gpt::{sequence_nll, Gpt, GptConfig};
use std::io::Write;
use std::path::Path;
use tch::nn::VarStore;

/// A GPT run's network with its weights, and its tokenizer.
fn load_gpt(run_dir: &Path, device: tch::Device) -> Result<(Checkpoint, Gpt, VarStore)> {
    let (ck, path) =
        crate::open_checkpoint(run_dir, Some(("gpt", "text generation needs a GPT run")))?;
    let cfg: GptConfig =
        serde_json::from_value(ck.meta.config.clone()).context("the checkpoint's GPT config")?;
    let vs = VarStore::new(device);
    let gpt = Gpt::new(vs.root(), cfg)?;
    ck.load_var_store("model/gpt", &vs, &path)?;
    Ok((ck, gpt, vs))
}

fn need_vocab(gpt: &Gpt) -> Result<&Vocab> {
    gpt.cfg.vocab.as_ref().context(
        "this checkpoint stores no tokenizer (an imported GPT-2 without tokenizer.json); add one and re-import",
    )
}

pub fn generate_cmd(a: GenerateArgs) -> Result<()> {
    if a.num_samples == 0 || a.max_new_tokens == 0 {
        bail!("--num-samples and --max-new-tokens must be at least 1");
    }
    let device = device_from_env_or(a.device.as_deref())?;
    let (_, gpt, _vs) = load_gpt(&a.run_dir, device)?;
    let vocab = need_vocab(&gpt)?.clone();
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
    let rows = generate(&gpt, &prompts, &cfg, |row, tok| {
        so_far[row].push(tok);
        let text = vocab.decode(&so_far[row]).unwrap_or_default();
        let hit = longest_stop > 0 && a.stop.iter().any(|s| text.contains(s.as_str()));
        if stream && !hit {
            // Hold back the last few characters while they could still begin a stop text.
            let safe = text
                .char_indices()
                .rev()
                .nth(longest_stop.saturating_sub(1))
                .map_or(if longest_stop == 0 { text.len() } else { 0 }, |(i, _)| {
                    if longest_stop == 0 {
                        text.len()
                    } else {
                        i
                    }
                });
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

pub fn perplexity(
    run_dir: &Path,
    data: Option<&str>,
    device: Option<&str>,
    max_tokens: Option<usize>,
    json: Option<&Path>,
) -> Result<()> {
    let device = device_from_env_or(device)?;
    let (ck, gpt, _vs) = load_gpt(run_dir, device)?;
    let spec: DataSpec = match data {
        Some(d) => DataSpec::parse(d)?,
        None => serde_json::from_value(ck.meta.state.data.clone())
            .context("the run records no data; pass --data")?,
    };
    let vocab = vocab_of(&ck.meta.config)?;
    let OpenData::Text(corpus) = spec.load_with_vocab(vocab.as_ref())? else {
        bail!("perplexity needs text data (moby-dick, kjv, text:FILE)");
    };
    let all = corpus.tokens(TextSplit::Val);
    let toks = &all[..max_tokens.unwrap_or(all.len()).min(all.len())];
    if toks.len() < 2 {
        bail!(
            "too little to score: {} validation tokens (need at least 2)",
            toks.len()
        );
    }
    let b = bar(0, "validation");
    let (nll, n) = sequence_nll(&gpt, toks, 16, |d, t| {
        b.set_length(t as u64);
        b.set_position(d.min(t) as u64);
    })?;
    b.finish_and_clear();
    let chars = corpus.vocab.decode(toks)?.chars().count();
    let loss = nll / n as f64;
    let ln2 = std::f64::consts::LN_2;
    println!("validation tokens      {n}");
    println!("loss (nats/token)      {loss:.4}");
    println!("perplexity             {:.3}", loss.exp());
    println!("bits per token         {:.4}", loss / ln2);
    println!("bits per character     {:.4}", nll / ln2 / chars as f64);
    if let Some(p) = json {
        let v = serde_json::json!({
            "tokens": n,
            "loss_nats_per_token": loss,
            "perplexity": loss.exp(),
            "bits_per_token": loss / ln2,
            "bits_per_char": nll / ln2 / chars as f64,
            "split": "val",
        });
        std::fs::write(p, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

pub fn import_gpt2(dir: &Path, out: &Path) -> Result<()> {
    let (gpt, vs) = genmodels_transformer::gpt2_import::load_gpt2(dir, tch::Device::Cpu)?;
    let config = serde_json::to_value(&gpt.cfg)?;
    let mut ck = Checkpoint::new("gpt", config, TrainState::default());
    ck.add_var_store("model/gpt", &vs);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    ck.save(&checkpoint_path(out))?;
    println!(
        "imported GPT-2 ({} layers x {} heads x {}, context {}, vocab {}{}) into {}",
        gpt.cfg.n_layer,
        gpt.cfg.n_head,
        gpt.cfg.n_embd,
        gpt.cfg.block_size,
        gpt.cfg.vocab_size,
        if gpt.cfg.vocab.is_some() {
            ", with tokenizer"
        } else {
            ", no tokenizer.json"
        },
        out.display()
    );
    Ok(())
}
