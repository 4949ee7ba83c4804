//! Datasets behind one trait, and a loader that shuffles, batches and decodes in parallel.
//!
//! Images come out as NCHW `f32` in [-1, 1]; 2-D mixtures as `[N, 2]`; text as token ids.

mod csv;
mod folder;
mod idx;
pub mod limits;
mod loader;
mod synthetic;
mod text;

pub use csv::CsvDigits;
pub use folder::ImageFolder;
pub use idx::{IdxDataset, IdxSplit};
pub use loader::{train_test_split, Batch, BatchSource, DataLoader, InMemory, Subset};
pub use synthetic::{Mixture2d, MixtureKind};
pub use text::{TextBatches, TextCorpus, TextSplit, Vocab, VocabKind};

use crate::Result;
use std::sync::Arc;

/// A finite set of fixed-shape examples (images or points), each with an optional class label.
///
/// `get` writes one example into a caller-owned buffer so the loader can decode a batch in
/// parallel straight into the memory that becomes the batch tensor.
pub trait Dataset: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;
    /// True when there are no examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shape of one example: `[C, H, W]` for images, `[D]` for points.
    fn example_shape(&self) -> Vec<i64>;
    /// Number of classes when examples carry labels.
    fn num_classes(&self) -> Option<usize>;
    /// Writes example `idx` into `out` (of `example_shape().product()` values) and returns its label.
    fn get(&self, idx: usize, out: &mut [f32]) -> Result<Option<i64>>;
    /// One line naming the data, for logs and reports.
    fn describe(&self) -> String;
}

/// Shared handle to any dataset.
pub type DynDataset = Arc<dyn Dataset>;

/// Maps a u8 pixel to [-1, 1] (x / 127.5 - 1).
#[inline]
pub fn u8_to_unit(v: u8) -> f32 {
    v as f32 / 127.5 - 1.0
}

mod spec;
pub use loader::shared;
pub use spec::{portable_spec, recorded_spec, DataSpec, OpenData, DATA_HELP};
