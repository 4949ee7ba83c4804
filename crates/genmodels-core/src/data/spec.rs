//! Naming data on the command line: a short spec string that also travels in checkpoints, so a
//! resumed run reopens the same data.

use super::{
    shared, CsvDigits, DataLoader, IdxDataset, IdxSplit, ImageFolder, Mixture2d, MixtureKind,
    TextBatches, TextCorpus, TextSplit, Vocab, VocabKind,
};
use crate::data::limits::MAX_TENSOR_ELEMENTS;
use crate::data::{BatchSource, DynDataset};
use crate::model::DataInfo;
use crate::{assets_dir, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Device;

/// A data source, as named on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// An MNIST-style IDX folder.
    Idx { dir: PathBuf, test: bool },
    /// A folder of PNG/JPEG images. Size 0 (the default) reads every image at its own size,
    /// which must be the first image's (as pytorch-fid and torch-fidelity read folders); a
    /// size resizes the shorter side and centre-crops. Channels 0 (the default) follow the
    /// first image (grey -> 1, colour -> 3).
    Folder {
        dir: PathBuf,
        size: u32,
        channels: u8,
    },
    /// A CSV digit set.
    Csv { path: PathBuf },
    /// A synthetic 2-D mixture.
    Mixture { mixture: MixtureKind, n: usize },
    /// A text corpus.
    Text {
        path: PathBuf,
        vocab: VocabKind,
        val_fraction: f64,
    },
    /// Only the examples of some classes of labelled data (`SPEC@7,9`), labels unchanged.
    Classes {
        inner: Box<DataSpec>,
        classes: Vec<i64>,
    },
}

/// `char`, `byte`, `bpe` (2048 tokens) or `bpe=N`; `None` for anything else.
fn parse_vocab(t: &str) -> Result<Option<VocabKind>> {
    Ok(match t {
        "char" => Some(VocabKind::Char),
        "byte" => Some(VocabKind::Byte),
        "bpe" => Some(VocabKind::Bpe(2048)),
        _ => match t.strip_prefix("bpe=") {
            Some(n) => Some(VocabKind::Bpe(n.parse().map_err(|_| {
                Error::invalid(format!("`{t}`: the BPE size must be a whole number"))
            })?)),
            None => None,
        },
    })
}

/// The spec strings the command line accepts, for help texts.
pub const DATA_HELP: &str = "fashion-mnist[:test] | mnist-5k | digits | moby-dick[:TOK] | kjv[:TOK] | ring8 | grid25 | \
idx:DIR[:test] | folder:DIR[:SIZE[:CHANNELS]] (SIZE and CHANNELS 0 or left out: the images' own) | csv:FILE | text:FILE[:TOK] (TOK: char, byte, bpe, bpe=N) | a path (IDX folder, image folder, .csv[.gz], text file); \
SPEC@C1,C2 keeps only those classes (e.g. fashion-mnist@7,9)";

impl DataSpec {
    /// Parses a spec string (see [`DATA_HELP`]).
    pub fn parse(s: &str) -> Result<Self> {
        if let Some((inner, list)) = s.rsplit_once('@') {
            let classes = list
                .split(',')
                .map(|c| {
                    c.trim().parse::<i64>().map_err(|_| {
                        Error::invalid(format!(
                            "`{s}`: after `@` give class numbers separated by commas (e.g. @7,9)"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(DataSpec::Classes {
                inner: Box::new(Self::parse(inner)?),
                classes,
            });
        }
        let a = assets_dir();
        let (head, rest) = s.split_once(':').unwrap_or((s, ""));
        let text = |path: PathBuf| -> Result<DataSpec> {
            Ok(DataSpec::Text {
                path,
                vocab: if rest.is_empty() {
                    VocabKind::Char
                } else {
                    parse_vocab(rest)?.ok_or_else(|| {
                        Error::invalid(format!(
                            "`{s}`: unknown tokenizer `{rest}`; expected char, byte or bpe[=SIZE]"
                        ))
                    })?
                },
                val_fraction: 0.1,
            })
        };
        Ok(match head {
            "fashion-mnist" => DataSpec::Idx {
                dir: a.join("fashion-mnist"),
                test: rest == "test",
            },
            "mnist-5k" => DataSpec::Csv {
                path: a.join("mnist_5k.csv.gz"),
            },
            "digits" => DataSpec::Csv {
                path: a.join("digits.csv.gz"),
            },
            "moby-dick" => text(a.join("text").join("moby-dick.txt"))?,
            "kjv" => text(a.join("text").join("kjv.txt"))?,
            "ring8" | "grid25" => DataSpec::Mixture {
                mixture: MixtureKind::parse(head)?,
                n: 100_000,
            },
            "idx" => {
                let (dir, split) = rest
                    .rsplit_once(':')
                    .filter(|(_, t)| *t == "test")
                    .map_or((rest, false), |(d, _)| (d, true));
                DataSpec::Idx {
                    dir: dir.into(),
                    test: split,
                }
            }
            "folder" => {
                let mut parts = rest.split(':');
                let dir = parts.next().unwrap_or_default();
                let size = parts
                    .next()
                    .map(|v| {
                        v.parse().map_err(|_| {
                            Error::invalid(format!("folder spec `{s}`: SIZE must be a number"))
                        })
                    })
                    .transpose()?
                    .unwrap_or(0);
                let channels = parts
                    .next()
                    .map(|v| {
                        v.parse().map_err(|_| {
                            Error::invalid(format!("folder spec `{s}`: CHANNELS must be 1 or 3"))
                        })
                    })
                    .transpose()?
                    .unwrap_or(0);
                DataSpec::Folder {
                    dir: dir.into(),
                    size,
                    channels,
                }
            }
            "csv" => DataSpec::Csv { path: rest.into() },
            "text" => {
                let (p, vocab) = match rest.rsplit_once(':') {
                    Some((p, t)) => match parse_vocab(t)? {
                        Some(v) => (p, v),
                        None => (rest, VocabKind::Char),
                    },
                    None => (rest, VocabKind::Char),
                };
                DataSpec::Text {
                    path: p.into(),
                    vocab,
                    val_fraction: 0.1,
                }
            }
            _ => Self::from_path(Path::new(s))?,
        })
    }

    fn from_path(p: &Path) -> Result<Self> {
        if p.is_dir() {
            let has_idx = std::fs::read_dir(p)
                .map_err(|e| Error::io(p, e))?
                .filter_map(|e| e.ok())
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .contains("-images-idx3-ubyte")
                });
            return Ok(if has_idx {
                DataSpec::Idx {
                    dir: p.into(),
                    test: false,
                }
            } else {
                DataSpec::Folder {
                    dir: p.into(),
                    size: 0,
                    channels: 0,
                }
            });
        }
        if p.is_file() {
            let name = p.to_string_lossy();
            return Ok(if name.ends_with(".csv") || name.ends_with(".csv.gz") {
                DataSpec::Csv { path: p.into() }
            } else {
                DataSpec::Text {
                    path: p.into(),
                    vocab: VocabKind::Char,
                    val_fraction: 0.1,
                }
            });
        }
        Err(Error::invalid(format!(
            "unknown data `{}`: not a known name and no such file or folder; expected {DATA_HELP}",
            p.display()
        )))
    }

    /// The spec string that parses back to this spec (for specs stored by older versions, which
    /// kept the resolved value rather than the string).
    pub fn to_spec_string(&self) -> String {
        match self {
            DataSpec::Idx { dir, test } => {
                format!("idx:{}{}", dir.display(), if *test { ":test" } else { "" })
            }
            DataSpec::Folder {
                dir,
                size,
                channels,
            } => format!("folder:{}:{size}:{channels}", dir.display()),
            DataSpec::Csv { path } => format!("csv:{}", path.display()),
            DataSpec::Mixture { mixture, .. } => mixture.name().to_string(),
            DataSpec::Text { path, vocab, .. } => format!(
                "text:{}:{}",
                path.display(),
                match vocab {
                    VocabKind::Char => "char".to_string(),
                    VocabKind::Byte => "byte".to_string(),
                    VocabKind::Bpe(n) => format!("bpe={n}"),
                }
            ),
            DataSpec::Classes { inner, classes } => format!(
                "{}@{}",
                inner.to_spec_string(),
                classes
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    /// Opens the fixed-shape dataset behind an image or point spec.
    pub fn dataset(&self) -> Result<DynDataset> {
        Ok(match self {
            DataSpec::Idx { dir, test } => shared(IdxDataset::open_dir(
                dir,
                if *test {
                    IdxSplit::Test
                } else {
                    IdxSplit::Train
                },
            )?),
            DataSpec::Folder {
                dir,
                size,
                channels,
            } => shared(ImageFolder::open(dir, *size, *channels)?),
            DataSpec::Csv { path } => shared(CsvDigits::open(path, None)?),
            DataSpec::Mixture { mixture, n } => {
                // A spec read back from a run folder may say anything; 2 values per point.
                if *n > MAX_TENSOR_ELEMENTS / 2 {
                    return Err(Error::invalid(format!(
                        "a mixture of {n} points is more than the {} a data set may hold",
                        MAX_TENSOR_ELEMENTS / 2
                    )));
                }
                shared(Mixture2d::new(*mixture, *n, 0)?)
            }
            DataSpec::Text { path, .. } => {
                return Err(Error::invalid(format!(
                    "{} is text; this model needs images or points",
                    path.display()
                )))
            }
            DataSpec::Classes { inner, classes } => {
                let ds = inner.dataset()?;
                let k = ds.num_classes().ok_or_else(|| {
                    Error::invalid(format!(
                        "{} has no labels to select classes from",
                        ds.describe()
                    ))
                })?;
                if let Some(bad) = classes.iter().find(|&&c| c < 0 || c as usize >= k) {
                    return Err(Error::invalid(format!(
                        "class {bad} does not exist in {} ({k} classes)",
                        ds.describe()
                    )));
                }
                let mut buf = vec![0f32; super::loader::example_size(ds.as_ref())?];
                let mut keep = Vec::new();
                for i in 0..ds.len() {
                    if let Some(l) = ds.get(i, &mut buf)? {
                        if classes.contains(&l) {
                            keep.push(i);
                        }
                    }
                }
                if keep.is_empty() {
                    return Err(Error::invalid(format!(
                        "no example of classes {classes:?} in {}",
                        ds.describe()
                    )));
                }
                shared(super::Subset::new(ds, keep)?)
            }
        })
    }

    /// Opens the data once; ask the result for its [`DataInfo`] and then for a batch source.
    pub fn load(&self) -> Result<OpenData> {
        self.load_with_vocab(None)
    }

    /// [`DataSpec::load`], text tokenised with `vocab` when given (a checkpoint's tokenizer).
    pub fn load_with_vocab(&self, existing: Option<&Vocab>) -> Result<OpenData> {
        match self {
            DataSpec::Text {
                path,
                vocab,
                val_fraction,
            } => Ok(OpenData::Text(Arc::new(TextCorpus::open_with(
                path,
                *vocab,
                *val_fraction,
                existing,
            )?))),
            _ => Ok(OpenData::Fixed(self.dataset()?)),
        }
    }
}

/// Names that resolve inside the asset folder (or are synthetic): a run stores them as written.
const NAMED: [&str; 7] = [
    "fashion-mnist",
    "mnist-5k",
    "digits",
    "moby-dick",
    "kjv",
    "ring8",
    "grid25",
];

/// A spec as a run folder stores it: named data exactly as written (they resolve against the
/// asset folder of whichever machine opens the run), file and folder paths made absolute (so
/// the run does not depend on the directory it was started from). Checks the spec parses.
pub fn portable_spec(s: &str) -> Result<String> {
    DataSpec::parse(s)?;
    let (body, classes) = match s.rsplit_once('@') {
        Some((b, c)) => (b, Some(c)),
        None => (s, None),
    };
    let (head, rest) = body.split_once(':').unwrap_or((body, ""));
    let abs = |p: &str| -> Result<String> {
        Ok(std::path::absolute(p)
            .map_err(|e| Error::io(p, e))?
            .display()
            .to_string())
    };
    let out = match head {
        "idx" | "folder" | "csv" | "text" => {
            let (path, tail) = match rest.split_once(':') {
                Some((p, t)) => (p, format!(":{t}")),
                None => (rest, String::new()),
            };
            format!("{head}:{}{tail}", abs(path)?)
        }
        h if NAMED.contains(&h) => body.to_string(),
        _ => abs(body)?,
    };
    Ok(match classes {
        Some(c) => format!("{out}@{c}"),
        None => out,
    })
}

/// The data spec a checkpoint's training state records: the string (current runs) or the
/// resolved spec that older versions stored.
pub fn recorded_spec(v: &serde_json::Value) -> Result<String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Null => Err(Error::invalid("the run records no data spec")),
        other => Ok(serde_json::from_value::<DataSpec>(other.clone())
            .map_err(|e| Error::invalid(format!("the run's recorded data does not parse: {e}")))?
            .to_spec_string()),
    }
}

/// Data opened from a [`DataSpec`].
pub enum OpenData {
    /// Images or points.
    Fixed(DynDataset),
    /// A tokenised corpus.
    Text(Arc<TextCorpus>),
}

impl OpenData {
    /// What a model needs to know to choose its default config.
    pub fn info(&self) -> DataInfo {
        match self {
            OpenData::Fixed(ds) => DataInfo {
                example_shape: ds.example_shape(),
                num_classes: ds.num_classes(),
                vocab_size: None,
                vocab: None,
            },
            OpenData::Text(c) => DataInfo {
                example_shape: vec![],
                num_classes: None,
                vocab_size: Some(c.vocab.size()),
                vocab: Some(c.vocab.clone()),
            },
        }
    }

    /// Shuffled training batches; `block` is the context length for text.
    pub fn source(
        &self,
        batch_size: usize,
        block: Option<usize>,
        seed: u64,
        device: Device,
    ) -> Result<Box<dyn BatchSource>> {
        match self {
            OpenData::Fixed(ds) => Ok(Box::new(DataLoader::new(
                ds.clone(),
                batch_size,
                true,
                seed,
                device,
            )?)),
            OpenData::Text(c) => {
                let block = block.ok_or_else(|| {
                    Error::invalid("text data needs a model with a context length (block_size)")
                })?;
                Ok(Box::new(TextBatches::new(
                    c.clone(),
                    TextSplit::Train,
                    block,
                    batch_size,
                    seed,
                    device,
                )?))
            }
        }
    }
}

impl OpenData {
    /// Held-out batches for evaluation during training: the validation split of a corpus
    /// (fixed windows drawn from `seed`); `None` for image and point data.
    pub fn val_source(
        &self,
        batch_size: usize,
        block: Option<usize>,
        seed: u64,
        device: Device,
    ) -> Result<Option<Box<dyn BatchSource>>> {
        match (self, block) {
            (OpenData::Text(c), Some(block)) if !c.val.is_empty() => Ok(Some(Box::new(
                TextBatches::new(c.clone(), TextSplit::Val, block, batch_size, seed, device)?,
            ))),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_prefixes() {
        assert!(matches!(
            DataSpec::parse("ring8").unwrap(),
            DataSpec::Mixture {
                mixture: MixtureKind::Ring8,
                ..
            }
        ));
        assert!(matches!(
            DataSpec::parse("fashion-mnist:test").unwrap(),
            DataSpec::Idx { test: true, .. }
        ));
        assert_eq!(
            DataSpec::parse("folder:/x:64:1").unwrap(),
            DataSpec::Folder {
                dir: "/x".into(),
                size: 64,
                channels: 1
            }
        );
        assert!(matches!(
            DataSpec::parse("text:/a.txt:byte").unwrap(),
            DataSpec::Text {
                vocab: VocabKind::Byte,
                ..
            }
        ));
        assert!(matches!(
            DataSpec::parse("moby-dick:bpe=500").unwrap(),
            DataSpec::Text {
                vocab: VocabKind::Bpe(500),
                ..
            }
        ));
        assert!(DataSpec::parse("kjv:words").is_err());
        assert_eq!(
            DataSpec::parse("ring8@1,2").unwrap(),
            DataSpec::Classes {
                inner: Box::new(DataSpec::parse("ring8").unwrap()),
                classes: vec![1, 2]
            }
        );
        assert!(DataSpec::parse("ring8@x").is_err());
        assert!(DataSpec::parse("folder:/x:big").is_err());
        // no size: the images' own size and channels, never a silent thumbnail
        assert_eq!(
            DataSpec::parse("folder:/x").unwrap(),
            DataSpec::Folder {
                dir: "/x".into(),
                size: 0,
                channels: 0
            }
        );
        let err = DataSpec::parse("/definitely/not/here")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown data"), "{err}");
        let spec = DataSpec::parse("grid25").unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(serde_json::from_value::<DataSpec>(json).unwrap(), spec);
    }

    #[test]
    fn runs_store_named_data_as_written_and_paths_absolute() {
        assert_eq!(portable_spec("grid25@1,2").unwrap(), "grid25@1,2");
        assert_eq!(
            portable_spec("moby-dick:bpe=500").unwrap(),
            "moby-dick:bpe=500"
        );
        let here = std::env::current_dir().unwrap();
        let want = format!("folder:{}:28:1", here.join("imgs").display());
        assert_eq!(portable_spec("folder:imgs:28:1").unwrap(), want);
        for s in [
            "idx:/x/y:test",
            "folder:/x:64:1",
            "csv:/a.csv",
            "text:/a.txt:bpe=300",
            "ring8@1,2",
        ] {
            let spec = DataSpec::parse(s).unwrap();
            assert_eq!(
                DataSpec::parse(&spec.to_spec_string()).unwrap(),
                spec,
                "{s}"
            );
            let old = serde_json::to_value(&spec).unwrap();
            assert_eq!(
                DataSpec::parse(&recorded_spec(&old).unwrap()).unwrap(),
                spec
            );
        }
    }
}
