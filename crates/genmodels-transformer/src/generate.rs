//! Autoregressive generation: batched (left-padded) prompts, a KV cache, the sampling filters
//! of [`LogitsProcessor`] (temperature, top-k, top-p, repetition penalty), per-row stopping
//! through a callback (which is also how tokens are streamed and stop sequences are matched).

use crate::gpt::{Gpt, KvCache};
use genmodels_core::{Error, Result};
use tch::{Device, Kind, Tensor};

pub use genmodels_core::samplers::GenerateConfig;

/// Generates up to `max_new_tokens` after each prompt. `on_token(row, token)` sees every new
/// token of every unfinished row in order and returns true to finish that row (stop sequence,
/// end-of-text token, ...). Returns the new tokens of each row.
///
/// When the context fills up, the cache is rebuilt from the last half context of each row (a
/// sliding window; positions restart inside the window, as in nanoGPT's cropping).
pub fn generate(
    gpt: &Gpt,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    mut on_token: impl FnMut(usize, u32) -> bool,
) -> Result<Vec<Vec<u32>>> {
    cfg.processor.validate()?;
    if prompts.is_empty() || prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::invalid(
            "every prompt needs at least one token (an empty string encodes to none)",
        ));
    }
    let v = gpt.cfg.vocab_size;
    if let Some(bad) = prompts.iter().flatten().find(|&&t| t as i64 >= v) {
        return Err(Error::invalid(format!(
            "prompt token {bad} is outside the vocabulary of {v}"
        )));
    }
    let block = gpt.cfg.block_size as usize;
    let dev = gpt_device(gpt);
    // Crop each prompt to the context, then left-pad to a rectangle (padding repeats the row's
    // first token, which the mask hides; it also keeps the repetition penalty honest).
    let prompts: Vec<&[u32]> = prompts
        .iter()
        .map(|p| &p[p.len().saturating_sub(block)..])
        .collect();
    let width = prompts.iter().map(|p| p.len()).max().unwrap_or(1);
    let b = prompts.len();
    let mut ids = Vec::with_capacity(b * width);
    let mut valid = Vec::with_capacity(b * width);
    for p in &prompts {
        let pad = width - p.len();
        ids.extend(std::iter::repeat_n(p[0] as i64, pad));
        ids.extend(p.iter().map(|&t| t as i64));
        valid.extend(std::iter::repeat_n(false, pad));
        valid.extend(std::iter::repeat_n(true, p.len()));
    }
    let mut seq = Tensor::from_slice(&ids)
        .view([b as i64, width as i64])
        .to_device(dev);
    let ragged = valid.iter().any(|v| !v);
    let mut seq_valid = ragged.then(|| {
        Tensor::from_slice(&valid)
            .view([b as i64, width as i64])
            .to_device(dev)
    });
    let mut out = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut cache = KvCache::default();
    tch::no_grad(|| -> Result<()> {
        let mut logits = if cfg.use_cache {
            last(&gpt.forward_cached(&seq, &mut cache, seq_valid.as_ref())?)
        } else {
            Tensor::new()
        };
        for _ in 0..cfg.max_new_tokens {
            if !cfg.use_cache {
                // Full recomputation over the last `block` tokens.
                let l = seq.size()[1];
                let s = (l as usize).min(block) as i64;
                let ctx = seq.narrow(1, l - s, s);
                let ctx_valid = seq_valid.as_ref().map(|m| m.narrow(1, l - s, s));
                let mut fresh = KvCache::default();
                logits = last(&gpt.forward_cached(&ctx, &mut fresh, ctx_valid.as_ref())?);
            }
            let next = cfg.processor.sample(&logits, Some(&seq))?;
            let toks: Vec<i64> = Vec::<i64>::try_from(&next.to_device(Device::Cpu))
                .map_err(|e| Error::invalid(format!("sampling: {e}")))?;
            for (row, &t) in toks.iter().enumerate() {
                if !done[row] {
                    out[row].push(t as u32);
                    done[row] = on_token(row, t as u32);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            let next = next.view([b as i64, 1]);
            seq = Tensor::cat(&[&seq, &next], 1);
            if let Some(m) = seq_valid.as_mut() {
                *m = Tensor::cat(&[&*m, &Tensor::ones([b as i64, 1], (Kind::Bool, dev))], 1);
            }
            if cfg.use_cache {
                if cache.len as usize + 1 > block {
                    let keep = (block / 2).max(1) as i64;
                    let l = seq.size()[1];
                    let tail = seq.narrow(1, l - keep, keep);
                    let tail_valid = seq_valid.as_ref().map(|m| m.narrow(1, l - keep, keep));
                    cache = KvCache::default();
                    logits = last(&gpt.forward_cached(&tail, &mut cache, tail_valid.as_ref())?);
                } else {
                    logits = last(&gpt.forward_cached(&next, &mut cache, None)?);
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn last(logits: &Tensor) -> Tensor {
    let t = logits.size()[1];
    logits.select(1, t - 1)
}

fn gpt_device(gpt: &Gpt) -> Device {
    gpt.device()
}

/// Streams decoded text: feed it the row's tokens so far, get back the new printable suffix
/// (held back while a byte-level token leaves a UTF-8 character incomplete).
#[derive(Debug, Default)]
pub struct TextStream {
    printed: usize,
}

impl TextStream {
    pub fn push(&mut self, decoded_so_far: &str) -> String {
        let ready = decoded_so_far.trim_end_matches('\u{FFFD}');
        if ready.len() <= self.printed || !ready.is_char_boundary(self.printed) {
            return String::new();
        }
        let s = ready[self.printed..].to_string();
        self.printed = ready.len();
        s
    }
}
