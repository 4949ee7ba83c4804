//! Batching: a loader over any [`Dataset`] with seeded shuffling per epoch, parallel decoding
//! (rayon) and a train/test split.
//!
//! Every batch is a pure function of `(seed, step)`, so a resumed run sees exactly the batches
//! an uninterrupted one would have seen, with no loader state in the checkpoint.

use super::limits::{checked_product, torch_error_line, MAX_TENSOR_ELEMENTS};
use super::{Dataset, DynDataset};
use crate::device::step_seed;
use crate::rng::SplitMix64;
use crate::{Error, Result};
use rayon::prelude::*;
use std::sync::Arc;
use tch::{Device, Tensor};

/// One batch: inputs and, where the data has them, labels or targets.
#[derive(Debug)]
pub struct Batch {
    /// Images `[N, C, H, W]` in [-1, 1], points `[N, D]`, or token ids `[N, T]`.
    pub x: Tensor,
    /// Class labels `[N]` (i64) or next-token targets `[N, T]`.
    pub y: Option<Tensor>,
}

/// Anything the trainer can pull batches from.
pub trait BatchSource {
    /// The batch used at training step `step` (deterministic in the source's seed and `step`).
    fn batch_at(&mut self, step: u64) -> Result<Batch>;
    /// One line naming the data.
    fn describe(&self) -> String;
}

/// A view of a dataset restricted to some indices.
pub struct Subset {
    inner: DynDataset,
    indices: Vec<usize>,
}

impl Subset {
    pub fn new(inner: DynDataset, indices: Vec<usize>) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= inner.len()) {
            return Err(Error::invalid(format!(
                "subset index {bad} out of range for {} examples",
                inner.len()
            )));
        }
        Ok(Subset { inner, indices })
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn example_shape(&self) -> Vec<i64> {
        self.inner.example_shape()
    }
    fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes()
    }
    fn get(&self, idx: usize, out: &mut [f32]) -> Result<Option<i64>> {
        let i = *self.indices.get(idx).ok_or_else(|| {
            Error::invalid(format!(
                "index {idx} out of range for a subset of {}",
                self.indices.len()
            ))
        })?;
        self.inner.get(i, out)
    }
    fn describe(&self) -> String {
        format!(
            "{} examples of {}",
            self.indices.len(),
            self.inner.describe()
        )
    }
}

/// Splits a dataset at random (seeded) into train and test parts; `test_fraction` in (0, 1).
pub fn train_test_split(ds: DynDataset, test_fraction: f64, seed: u64) -> Result<(Subset, Subset)> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(Error::invalid(format!(
            "test fraction must be in (0, 1), got {test_fraction}"
        )));
    }
    let mut idx: Vec<usize> = (0..ds.len()).collect();
    SplitMix64::new(seed).shuffle(&mut idx);
    let n_test = ((ds.len() as f64) * test_fraction).round() as usize;
    if n_test == 0 || n_test == ds.len() {
        return Err(Error::invalid(format!(
            "a test fraction of {test_fraction} of {} examples leaves one side empty",
            ds.len()
        )));
    }
    let train = idx.split_off(n_test);
    Ok((Subset::new(ds.clone(), train)?, Subset::new(ds, idx)?))
}

/// Shuffling, batching loader. Drops the last incomplete batch of each epoch so every batch has
/// the same size (what GAN and diffusion training expect).
pub struct DataLoader {
    ds: DynDataset,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    device: Device,
    epoch_cache: Option<(u64, Vec<usize>)>,
}

impl DataLoader {
    pub fn new(
        ds: DynDataset,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid("batch size must be positive"));
        }
        example_size(ds.as_ref())?;
        if ds.len() < batch_size {
            return Err(Error::invalid(format!(
                "batch size {batch_size} is larger than the dataset ({} examples: {})",
                ds.len(),
                ds.describe()
            )));
        }
        Ok(DataLoader {
            ds,
            batch_size,
            shuffle,
            seed,
            device,
            epoch_cache: None,
        })
    }

    /// Full batches per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        (self.ds.len() / self.batch_size) as u64
    }

    pub fn dataset(&self) -> &DynDataset {
        &self.ds
    }

    fn order(&mut self, epoch: u64) -> &[usize] {
        let fresh = !matches!(&self.epoch_cache, Some((e, _)) if *e == epoch);
        if fresh {
            let mut idx: Vec<usize> = (0..self.ds.len()).collect();
            if self.shuffle {
                SplitMix64::new(step_seed(self.seed ^ 0x5EED_DA7A, epoch)).shuffle(&mut idx);
            }
            self.epoch_cache = Some((epoch, idx));
        }
        self.epoch_cache
            .as_ref()
            .map(|c| c.1.as_slice())
            .unwrap_or(&[])
    }

    /// Decodes the examples `indices` into one batch, in parallel.
    pub fn collate(ds: &dyn Dataset, indices: &[usize], device: Device) -> Result<Batch> {
        let shape = ds.example_shape();
        let per = example_size(ds)?;
        let total = per
            .checked_mul(indices.len())
            .filter(|&t| t <= MAX_TENSOR_ELEMENTS)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "a batch of {} examples of shape {shape:?} is more than {MAX_TENSOR_ELEMENTS} values ({})",
                    indices.len(),
                    ds.describe()
                ))
            })?;
        let mut data = vec![0f32; total];
        let labels: Vec<Option<i64>> = data
            .par_chunks_mut(per)
            .zip(indices.par_iter())
            .map(|(out, &i)| ds.get(i, out))
            .collect::<Result<_>>()?;
        let mut full = vec![indices.len() as i64];
        full.extend(&shape);
        let torch = |e: tch::TchError| {
            Error::invalid(format!(
                "building a batch of {} examples of shape {shape:?} on {device:?}: {}",
                indices.len(),
                torch_error_line(&e)
            ))
        };
        let x = Tensor::f_from_slice(&data)
            .and_then(|t| t.f_reshape(&full))
            .and_then(|t| t.f_to_device(device))
            .map_err(torch)?;
        let y = if labels.iter().all(|l| l.is_some()) && !labels.is_empty() {
            let l: Vec<i64> = labels.into_iter().flatten().collect();
            Some(
                Tensor::f_from_slice(&l)
                    .and_then(|t| t.f_to_device(device))
                    .map_err(torch)?,
            )
        } else {
            None
        };
        Ok(Batch { x, y })
    }

    /// Iterates once over the dataset in order (last batch may be smaller): for evaluation.
    pub fn for_each_in_order(
        ds: &dyn Dataset,
        batch_size: usize,
        device: Device,
        mut f: impl FnMut(Batch) -> Result<()>,
    ) -> Result<()> {
        let idx: Vec<usize> = (0..ds.len()).collect();
        for chunk in idx.chunks(batch_size.max(1)) {
            f(Self::collate(ds, chunk, device)?)?;
        }
        Ok(())
    }
}

impl BatchSource for DataLoader {
    fn batch_at(&mut self, step: u64) -> Result<Batch> {
        let bpe = self.batches_per_epoch();
        let (epoch, pos) = (step / bpe, (step % bpe) as usize);
        let bs = self.batch_size;
        let idx = self.order(epoch)[pos * bs..(pos + 1) * bs].to_vec();
        Self::collate(self.ds.as_ref(), &idx, self.device)
    }

    fn describe(&self) -> String {
        self.ds.describe()
    }
}

/// Values in one example of `ds` (the product of its example shape), checked: every dimension
/// at least 1 and at most [`MAX_TENSOR_ELEMENTS`] values in all.
pub fn example_size(ds: &dyn Dataset) -> Result<usize> {
    let shape = ds.example_shape();
    match checked_product(shape.iter().copied()) {
        Some(n) if (1..=MAX_TENSOR_ELEMENTS).contains(&n) => Ok(n),
        _ => Err(Error::invalid(format!(
            "examples of shape {shape:?}: expected every dimension at least 1 and at most {MAX_TENSOR_ELEMENTS} values ({})",
            ds.describe()
        ))),
    }
}

/// Convenience: wrap a concrete dataset in an `Arc`.
pub fn shared<D: Dataset + 'static>(d: D) -> DynDataset {
    Arc::new(d)
}

/// Labelled examples held in memory (e.g. generated images for the Classification Accuracy
/// Score); images `[N, ...]` as f32, labels `[N]`.
pub struct InMemory {
    data: Vec<f32>,
    shape: Vec<i64>,
    labels: Vec<i64>,
    classes: usize,
    what: String,
}

impl InMemory {
    pub fn new(x: &Tensor, labels: &Tensor, classes: usize, what: &str) -> Result<Self> {
        let n = x.size().first().copied().unwrap_or(0);
        if x.dim() == 0 || labels.size() != [n] {
            return Err(Error::invalid(format!(
                "{n} examples but labels of shape {:?}",
                labels.size()
            )));
        }
        let data = Vec::<f32>::try_from(
            x.to_kind(tch::Kind::Float)
                .to_device(Device::Cpu)
                .flatten(0, -1),
        )
        .map_err(|e| Error::invalid(format!("in-memory dataset: {e}")))?;
        let labels = Vec::<i64>::try_from(labels.to_kind(tch::Kind::Int64).to_device(Device::Cpu))
            .map_err(|e| Error::invalid(format!("in-memory dataset: {e}")))?;
        if let Some(bad) = labels.iter().find(|&&l| l < 0 || l as usize >= classes) {
            return Err(Error::invalid(format!(
                "label {bad} outside {classes} classes"
            )));
        }
        Ok(InMemory {
            data,
            shape: x.size()[1..].to_vec(),
            labels,
            classes,
            what: what.to_string(),
        })
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn example_shape(&self) -> Vec<i64> {
        self.shape.clone()
    }
    fn num_classes(&self) -> Option<usize> {
        Some(self.classes)
    }
    fn get(&self, idx: usize, out: &mut [f32]) -> Result<Option<i64>> {
        let per = out.len();
        let src = self.data.get(idx * per..(idx + 1) * per).ok_or_else(|| {
            Error::invalid(format!("index {idx} out of range for {}", self.len()))
        })?;
        out.copy_from_slice(src);
        Ok(Some(self.labels[idx]))
    }
    fn describe(&self) -> String {
        format!("{} ({} in memory)", self.what, self.labels.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Mixture2d, MixtureKind};

    #[test]
    fn epochs_cover_everything_once_and_reproduce() {
        let ds: DynDataset = Arc::new(Mixture2d::new(MixtureKind::Ring8, 40, 0).unwrap());
        let mut dl = DataLoader::new(ds.clone(), 8, true, 3, Device::Cpu).unwrap();
        assert_eq!(dl.batches_per_epoch(), 5);
        let mut seen = Vec::new();
        for s in 0..5 {
            let b = dl.batch_at(s).unwrap();
            assert_eq!(b.x.size(), vec![8, 2]);
            seen.push(b.x);
        }
        let all = Tensor::cat(&seen, 0);
        let sorted = all.select(1, 0).sort(0, false).0;
        let mut ref_x = Vec::new();
        DataLoader::for_each_in_order(ds.as_ref(), 16, Device::Cpu, |b| {
            ref_x.push(b.x);
            Ok(())
        })
        .unwrap();
        let ref_sorted = Tensor::cat(&ref_x, 0).select(1, 0).sort(0, false).0;
        assert!(sorted.equal(&ref_sorted));
        // a fresh loader (as after a resume) gives the same batch for the same step
        let mut dl2 = DataLoader::new(ds.clone(), 8, true, 3, Device::Cpu).unwrap();
        assert!(dl2.batch_at(7).unwrap().x.equal(&dl.batch_at(7).unwrap().x));
        // a new epoch is a new order
        assert!(!dl.batch_at(0).unwrap().x.equal(&dl.batch_at(5).unwrap().x));
        assert!(DataLoader::new(ds, 41, true, 0, Device::Cpu).is_err());
    }

    #[test]
    fn split_is_disjoint_and_complete() {
        let ds: DynDataset = Arc::new(Mixture2d::new(MixtureKind::Grid25, 100, 0).unwrap());
        let (tr, te) = train_test_split(ds.clone(), 0.2, 1).unwrap();
        assert_eq!((tr.len(), te.len()), (80, 20));
        let mut all: Vec<usize> = tr
            .indices
            .iter()
            .chain(te.indices.iter())
            .copied()
            .collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(train_test_split(ds, 1.0, 0).is_err());
    }
}
