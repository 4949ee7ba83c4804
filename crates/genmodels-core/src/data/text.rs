//! Text corpora for autoregressive models: character- or byte-level vocabularies and a
//! train/validation split, batched as random windows the way nanoGPT does.

use super::limits::{
    one_line, torch_error_line, MAX_TENSOR_ELEMENTS, MAX_TOKENIZER_BYTES, MAX_VOCAB,
};
use super::{Batch, BatchSource};
use crate::device::step_seed;
use crate::rng::SplitMix64;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// Vocabulary granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VocabKind {
    /// The sorted set of characters in the corpus (nanoGPT's `shakespeare_char`).
    Char,
    /// The 256 byte values; any file works.
    Byte,
    /// Byte-level BPE (GPT-2's scheme) with this many tokens, trained on the corpus with the
    /// `tokenizers` crate.
    Bpe(u32),
}

/// A character-, byte- or BPE vocabulary; stored in checkpoints as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocab {
    pub kind: VocabKind,
    /// For `Char`: the characters, in id order.
    #[serde(default)]
    pub chars: Vec<char>,
    /// For `Bpe`: the tokenizer, in the `tokenizers` crate's JSON (a Hugging Face `tokenizer.json`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bpe: String,
    #[serde(skip)]
    cache: BpeCache,
}

/// The parsed BPE tokenizer, built once on first use.
#[derive(Default, Clone)]
struct BpeCache(std::sync::OnceLock<std::sync::Arc<tokenizers::Tokenizer>>);

impl PartialEq for BpeCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for BpeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BpeCache")
    }
}

impl Vocab {
    /// The byte vocabulary.
    pub fn bytes() -> Self {
        Vocab {
            kind: VocabKind::Byte,
            chars: Vec::new(),
            bpe: String::new(),
            cache: BpeCache::default(),
        }
    }

    /// Trains a byte-level BPE of `size` tokens on `text` (line by line; GPT-2's byte-to-unicode
    /// alphabet as the initial 256 tokens, merges of pairs seen at least twice).
    pub fn train_bpe(text: &str, size: u32) -> Result<Self> {
        use tokenizers::models::bpe::{BpeTrainer, BPE};
        use tokenizers::models::TrainerWrapper;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        if size < 257 {
            return Err(Error::invalid(format!(
                "a byte-level BPE needs more than the 256 byte tokens; asked for {size}"
            )));
        }
        if size as usize > MAX_VOCAB {
            return Err(Error::invalid(format!(
                "a BPE of {size} tokens is more than the {MAX_VOCAB} a vocabulary may have"
            )));
        }
        let bpe_err = |e: tokenizers::Error| Error::invalid(format!("BPE training: {e}"));
        let mut tok = tokenizers::Tokenizer::new(BPE::default());
        tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tok.with_decoder(Some(ByteLevel::new(false, true, true)));
        let mut trainer = TrainerWrapper::BpeTrainer(
            BpeTrainer::builder()
                .vocab_size(size as usize)
                .min_frequency(2)
                .show_progress(false)
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                .build(),
        );
        tok.train(&mut trainer, text.split_inclusive('\n'))
            .map_err(bpe_err)?;
        let json = tok.to_string(false).map_err(bpe_err)?;
        let v = Vocab {
            kind: VocabKind::Bpe(tok.get_vocab_size(true) as u32),
            chars: Vec::new(),
            bpe: json,
            cache: BpeCache::default(),
        };
        let _ = v.cache.0.set(std::sync::Arc::new(tok));
        Ok(v)
    }

    /// A BPE vocabulary from a tokenizer already parsed from `json`.
    fn from_parsed(json: String, tok: tokenizers::Tokenizer) -> Self {
        let v = Vocab {
            kind: VocabKind::Bpe(tok_size(&tok)),
            chars: Vec::new(),
            bpe: json,
            cache: BpeCache::default(),
        };
        let _ = v.cache.0.set(std::sync::Arc::new(tok));
        v
    }

    /// A vocabulary from a `tokenizer.json` (any model the `tokenizers` crate reads, e.g. GPT-2's).
    pub fn from_tokenizer_json(json: String) -> Result<Self> {
        let tok =
            parse_tokenizer(&json).map_err(|m| Error::invalid(format!("tokenizer.json: {m}")))?;
        Ok(Self::from_parsed(json, tok))
    }

    /// [`Vocab::from_tokenizer_json`] of a file; errors name the file.
    pub fn from_tokenizer_file(path: &Path) -> Result<Self> {
        let len = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        if len > MAX_TOKENIZER_BYTES {
            return Err(Error::bad_data(
                path,
                format!(
                    "{len} bytes, more than the {MAX_TOKENIZER_BYTES} a tokenizer.json may have"
                ),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let json = String::from_utf8(bytes).map_err(|e| {
            Error::bad_data(path, format!("not UTF-8 ({e}): expected a tokenizer.json"))
        })?;
        let tok = parse_tokenizer(&json).map_err(|m| Error::bad_data(path, m))?;
        Ok(Self::from_parsed(json, tok))
    }

    /// Checks a vocabulary read back from somewhere (a checkpoint's config): the characters of
    /// a `Char` vocabulary sorted and distinct, a `Bpe` tokenizer that parses and whose ids all
    /// fall below the stated size, no more than [`MAX_VOCAB`] tokens.
    pub fn validate(&self) -> Result<()> {
        if self.size() > MAX_VOCAB {
            return Err(Error::invalid(format!(
                "a vocabulary of {} tokens is more than the {MAX_VOCAB} allowed",
                self.size()
            )));
        }
        match self.kind {
            VocabKind::Byte => Ok(()),
            VocabKind::Char => {
                if self.chars.is_empty() {
                    return Err(Error::invalid("a character vocabulary without characters"));
                }
                if let Some(w) = self.chars.windows(2).find(|w| w[0] >= w[1]) {
                    return Err(Error::invalid(format!(
                        "character vocabulary not sorted and distinct ({:?} before {:?})",
                        w[0], w[1]
                    )));
                }
                Ok(())
            }
            VocabKind::Bpe(n) => {
                let tok = self.bpe_tokenizer()?;
                let need = tok_size(tok);
                if need > n || n == 0 {
                    return Err(Error::invalid(format!(
                        "the stored BPE tokenizer has ids up to {} but the vocabulary says {n} tokens",
                        need.saturating_sub(1)
                    )));
                }
                Ok(())
            }
        }
    }

    fn bpe_tokenizer(&self) -> Result<&tokenizers::Tokenizer> {
        if let Some(t) = self.cache.0.get() {
            return Ok(t);
        }
        let tok = parse_tokenizer(&self.bpe)
            .map_err(|m| Error::invalid(format!("stored BPE tokenizer: {m}")))?;
        Ok(self.cache.0.get_or_init(|| std::sync::Arc::new(tok)))
    }

    /// The sorted characters of `text`.
    pub fn chars_of(text: &str) -> Self {
        let mut chars: Vec<char> = text
            .chars()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        chars.shrink_to_fit();
        Vocab {
            kind: VocabKind::Char,
            chars,
            bpe: String::new(),
            cache: BpeCache::default(),
        }
    }

    pub fn size(&self) -> usize {
        match self.kind {
            VocabKind::Byte => 256,
            VocabKind::Char => self.chars.len(),
            VocabKind::Bpe(n) => n as usize,
        }
    }

    /// Token ids of `text`; an unknown character is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self.kind {
            VocabKind::Bpe(_) => Ok(self
                .bpe_tokenizer()?
                .encode(text, false)
                .map_err(|e| Error::invalid(format!("BPE encoding: {e}")))?
                .get_ids()
                .to_vec()),
            VocabKind::Byte => Ok(text.bytes().map(u32::from).collect()),
            VocabKind::Char => text
                .chars()
                .map(|c| {
                    self.chars.binary_search(&c).map(|i| i as u32).map_err(|_| {
                        Error::invalid(format!("character {c:?} is not in the vocabulary"))
                    })
                })
                .collect(),
        }
    }

    /// Text of token ids (invalid UTF-8 from byte tokens is replaced with U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self.kind {
            VocabKind::Bpe(n) => {
                if let Some(bad) = ids.iter().find(|&&i| i >= n) {
                    return Err(Error::invalid(format!(
                        "token {bad} is outside the vocabulary of {n}"
                    )));
                }
                self.bpe_tokenizer()?
                    .decode(ids, false)
                    .map_err(|e| Error::invalid(format!("BPE decoding: {e}")))
            }
            VocabKind::Byte => {
                let bytes: Vec<u8> = ids
                    .iter()
                    .map(|&i| {
                        u8::try_from(i)
                            .map_err(|_| Error::invalid(format!("token {i} is not a byte")))
                    })
                    .collect::<Result<_>>()?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            VocabKind::Char => ids
                .iter()
                .map(|&i| {
                    self.chars.get(i as usize).copied().ok_or_else(|| {
                        Error::invalid(format!(
                            "token {i} is outside the vocabulary of {}",
                            self.chars.len()
                        ))
                    })
                })
                .collect(),
        }
    }
}

/// Parses a tokenizer JSON and checks its ids: at most [`MAX_VOCAB`] of them, every id (model
/// vocabulary and added tokens) below that, so the model's embedding covers them.
fn parse_tokenizer(json: &str) -> std::result::Result<tokenizers::Tokenizer, String> {
    // The JSON syntax first: `tokenizers` 0.22 panics (an `expect` in its decoder
    // deserialiser) on a syntax error inside the `decoder` object.
    serde_json::from_str::<serde::de::IgnoredAny>(json)
        .map_err(|e| format!("not JSON ({})", one_line(e)))?;
    // And any other panic of the third-party parser on hostile input becomes an error.
    let parsed = std::panic::catch_unwind(|| json.parse::<tokenizers::Tokenizer>())
        .map_err(|_| "the tokenizers crate failed on this file (it panicked)".to_string())?;
    let tok = parsed.map_err(|e| format!("does not parse as a tokenizer: {}", one_line(e)))?;
    let ids = tok.get_vocab(true);
    if ids.is_empty() {
        return Err("the tokenizer has no tokens".into());
    }
    if let Some((t, id)) = ids.iter().find(|(_, &id)| id as usize >= MAX_VOCAB) {
        return Err(format!(
            "token {t:?} has id {id}: at most {MAX_VOCAB} tokens (ids 0 to {}) are accepted",
            MAX_VOCAB - 1
        ));
    }
    if tok.get_vocab_size(true) > MAX_VOCAB {
        return Err(format!(
            "{} tokens: at most {MAX_VOCAB} are accepted",
            tok.get_vocab_size(true)
        ));
    }
    Ok(tok)
}

/// Vocabulary size of a checked tokenizer: one past its largest id (a sparse vocabulary gets
/// an embedding that covers every id it can emit), at least its token count.
fn tok_size(tok: &tokenizers::Tokenizer) -> u32 {
    let max_id = tok.get_vocab(true).values().copied().max().unwrap_or(0);
    (max_id + 1).max(tok.get_vocab_size(true) as u32)
}

/// Which part of a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSplit {
    Train,
    Val,
}

/// A tokenised corpus split into a training head and a validation tail (nanoGPT: 90/10).
pub struct TextCorpus {
    pub vocab: Vocab,
    pub train: Vec<u32>,
    pub val: Vec<u32>,
    pub source: PathBuf,
}

impl TextCorpus {
    /// Reads and tokenises `path`; `val_fraction` of the tokens (at the end) go to validation.
    pub fn open(path: &Path, kind: VocabKind, val_fraction: f64) -> Result<Self> {
        Self::open_with(path, kind, val_fraction, None)
    }

    /// Like [`TextCorpus::open`], but tokenised with an existing vocabulary (a checkpoint's), so
    /// a resumed run or an evaluation sees the ids its model was trained on.
    pub fn open_with(
        path: &Path,
        kind: VocabKind,
        val_fraction: f64,
        existing: Option<&Vocab>,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&val_fraction) {
            return Err(Error::invalid(format!(
                "val_fraction must be in [0, 1), got {val_fraction}"
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.is_empty() {
            return Err(Error::bad_data(
                path,
                "text file is empty: a corpus needs at least a few hundred characters",
            ));
        }
        let (vocab, ids) = match (kind, existing) {
            (_, Some(v)) => {
                v.validate()?;
                let ids = match v.kind {
                    VocabKind::Byte => bytes.iter().map(|&b| b as u32).collect::<Vec<_>>(),
                    _ => {
                        let text = String::from_utf8(bytes)
                            .map_err(|e| Error::bad_data(path, format!("not UTF-8 ({e})")))?;
                        v.encode(&text).map_err(|e| {
                            Error::bad_data(
                                path,
                                format!("does not fit the model's tokenizer: {e}"),
                            )
                        })?
                    }
                };
                (v.clone(), ids)
            }
            (VocabKind::Bpe(size), None) => {
                let text = String::from_utf8(bytes).map_err(|e| {
                    Error::bad_data(
                        path,
                        format!("not UTF-8 ({e}); BPE here trains on UTF-8 text"),
                    )
                })?;
                // Trained on the training head only, so validation text stays unseen.
                let n_train_chars = text
                    .char_indices()
                    .nth(((text.chars().count() as f64) * (1.0 - val_fraction)) as usize)
                    .map_or(text.len(), |(i, _)| i);
                let v = Vocab::train_bpe(&text[..n_train_chars], size)?;
                let ids = v.encode(&text)?;
                (v, ids)
            }
            (VocabKind::Byte, None) => (
                Vocab::bytes(),
                bytes.iter().map(|&b| b as u32).collect::<Vec<_>>(),
            ),
            (VocabKind::Char, None) => {
                let text = String::from_utf8(bytes).map_err(|e| {
                    Error::bad_data(path, format!("not UTF-8 ({e}); use a byte-level vocabulary for binary or mixed encodings"))
                })?;
                let v = Vocab::chars_of(&text);
                if v.size() > MAX_VOCAB {
                    return Err(Error::bad_data(
                        path,
                        format!(
                            "{} distinct characters, more than the {MAX_VOCAB} a vocabulary may have; use a byte-level vocabulary",
                            v.size()
                        ),
                    ));
                }
                let ids = v.encode(&text)?;
                (v, ids)
            }
        };
        let n_val = (ids.len() as f64 * val_fraction) as usize;
        let n_train = ids.len() - n_val;
        if n_train < 2 {
            return Err(Error::bad_data(
                path,
                format!(
                    "only {} training tokens: too short for next-token training",
                    n_train
                ),
            ));
        }
        let val = ids[n_train..].to_vec();
        let mut train = ids;
        train.truncate(n_train);
        Ok(TextCorpus {
            vocab,
            train,
            val,
            source: path.to_path_buf(),
        })
    }

    pub fn tokens(&self, split: TextSplit) -> &[u32] {
        match split {
            TextSplit::Train => &self.train,
            TextSplit::Val => &self.val,
        }
    }
}

/// Random windows of `block + 1` tokens: inputs `x = w[..block]`, targets `y = w[1..]`.
pub struct TextBatches {
    corpus: Arc<TextCorpus>,
    split: TextSplit,
    block: usize,
    batch: usize,
    seed: u64,
    device: Device,
}

impl TextBatches {
    pub fn new(
        corpus: Arc<TextCorpus>,
        split: TextSplit,
        block: usize,
        batch: usize,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        let n = corpus.tokens(split).len();
        if block == 0 || batch == 0 {
            return Err(Error::invalid("block size and batch size must be positive"));
        }
        if n <= block {
            return Err(Error::invalid(format!(
                "the {:?} split has {n} tokens, fewer than block size {block} + 1",
                split
            )));
        }
        if block
            .checked_mul(batch)
            .is_none_or(|t| t > MAX_TENSOR_ELEMENTS)
        {
            return Err(Error::invalid(format!(
                "batches of {batch} x {block} tokens are more than {MAX_TENSOR_ELEMENTS} values"
            )));
        }
        Ok(TextBatches {
            corpus,
            split,
            block,
            batch,
            seed,
            device,
        })
    }
}

impl BatchSource for TextBatches {
    fn batch_at(&mut self, step: u64) -> Result<Batch> {
        let toks = self.corpus.tokens(self.split);
        let mut rng = SplitMix64::new(step_seed(self.seed, step));
        let mut x = Vec::with_capacity(self.batch * self.block);
        let mut y = Vec::with_capacity(self.batch * self.block);
        for _ in 0..self.batch {
            let o = rng.below(toks.len() - self.block);
            x.extend(toks[o..o + self.block].iter().map(|&t| t as i64));
            y.extend(toks[o + 1..o + 1 + self.block].iter().map(|&t| t as i64));
        }
        let shape = [self.batch as i64, self.block as i64];
        let torch = |e: tch::TchError| {
            Error::invalid(format!(
                "building a batch of {shape:?} tokens on {:?}: {}",
                self.device,
                torch_error_line(&e)
            ))
        };
        let x = Tensor::f_from_slice(&x)
            .and_then(|t| t.f_reshape(shape))
            .and_then(|t| t.f_to_kind(Kind::Int64))
            .and_then(|t| t.f_to_device(self.device))
            .map_err(torch)?;
        let y = Tensor::f_from_slice(&y)
            .and_then(|t| t.f_reshape(shape))
            .and_then(|t| t.f_to_device(self.device))
            .map_err(torch)?;
        Ok(Batch { x, y: Some(y) })
    }

    fn describe(&self) -> String {
        format!(
            "text {} ({:?}, vocab {})",
            self.corpus.source.display(),
            self.split,
            self.corpus.vocab.size()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_vocab_round_trip_and_split() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "hello world, hello whales!").unwrap();
        let c = TextCorpus::open(&p, VocabKind::Char, 0.2).unwrap();
        assert_eq!(c.train.len() + c.val.len(), 26);
        assert_eq!(c.val.len(), 5);
        let s = "hello whales";
        assert_eq!(c.vocab.decode(&c.vocab.encode(s).unwrap()).unwrap(), s);
        assert!(c.vocab.encode("z").is_err());
        let b = Vocab::bytes();
        assert_eq!(b.decode(&b.encode("naïve").unwrap()).unwrap(), "naïve");
        let json = serde_json::to_string(&c.vocab).unwrap();
        assert_eq!(serde_json::from_str::<Vocab>(&json).unwrap(), c.vocab);
    }

    #[test]
    fn bpe_trains_round_trips_and_survives_json() {
        let text =
            "the whale, the white whale! the sea and the ship; the whale again.\n".repeat(30);
        let v = Vocab::train_bpe(&text, 300).unwrap();
        assert!(v.size() > 256 && v.size() <= 300, "{}", v.size());
        let ids = v.encode("the white whale and the sea").unwrap();
        assert!(
            ids.len() < 27,
            "merges should shorten the text: {}",
            ids.len()
        );
        assert_eq!(v.decode(&ids).unwrap(), "the white whale and the sea");
        // Unseen characters still encode (byte fallback through the byte-level alphabet).
        assert_eq!(v.decode(&v.encode("Ahab ü").unwrap()).unwrap(), "Ahab ü");
        let back: Vocab = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(
            back.encode("the whale").unwrap(),
            v.encode("the whale").unwrap()
        );
        assert!(v.decode(&[v.size() as u32]).is_err());
        assert!(Vocab::train_bpe(&text, 100).is_err());
    }

    #[test]
    fn empty_text_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.txt");
        std::fs::write(&p, "").unwrap();
        let err = TextCorpus::open(&p, VocabKind::Char, 0.1)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("empty.txt") && err.contains("empty"), "{err}");
        std::fs::write(&p, [0xff, 0xfe, 0x41]).unwrap();
        assert!(TextCorpus::open(&p, VocabKind::Char, 0.1)
            .err()
            .unwrap()
            .to_string()
            .contains("byte-level"));
        assert!(TextCorpus::open(&p, VocabKind::Byte, 0.0).is_ok());
    }

    #[test]
    fn batches_are_shifted_windows_and_reproducible() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(&p, "abcdefghijklmnopqrstuvwxyz".repeat(4)).unwrap();
        let c = Arc::new(TextCorpus::open(&p, VocabKind::Char, 0.1).unwrap());
        let mut tb = TextBatches::new(c.clone(), TextSplit::Train, 8, 3, 5, Device::Cpu).unwrap();
        let b = tb.batch_at(7).unwrap();
        let y = b.y.unwrap();
        assert_eq!(b.x.size(), vec![3, 8]);
        // next-character targets: y[t] = x[t] + 1 (mod 26) in this alphabet
        let expect = (b.x.narrow(1, 1, 7) - y.narrow(1, 0, 7))
            .abs()
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(expect, 0);
        assert!(tb.batch_at(7).unwrap().x.equal(&b.x));
        assert!(TextBatches::new(c, TextSplit::Val, 200, 1, 0, Device::Cpu).is_err());
    }
}
