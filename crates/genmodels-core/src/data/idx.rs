//! IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw.
//!
//! Format (LeCun): a 4-byte magic `0x00 0x00 type ndim` (type 0x08 = u8), then `ndim` big-endian
//! u32 sizes, then the data. Images have ndim 3 (N, H, W), labels ndim 1 (N).

use super::{u8_to_unit, Dataset};
use crate::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads a whole file, transparently un-gzipping it when it starts with the gzip magic.
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 4);
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::bad_data(path, format!("gzip stream is corrupt or truncated: {e}"))
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX u8 array and checks its dimensionality: returns (dims, data).
pub fn parse_idx(path: &Path, bytes: &[u8], expect_ndim: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    if bytes.len() < 4 {
        return Err(Error::bad_data(
            path,
            format!(
                "IDX file too short ({} bytes) to hold a header",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(Error::bad_data(
            path,
            format!(
                "wrong IDX magic number {:02x}{:02x}{:02x}{:02x}: expected 000008{:02x} (unsigned bytes, {} dimensions)",
                bytes[0], bytes[1], bytes[2], bytes[3], expect_ndim, expect_ndim
            ),
        ));
    }
    let ndim = bytes[3];
    if ndim != expect_ndim {
        return Err(Error::bad_data(
            path,
            format!("IDX array has {ndim} dimensions, expected {expect_ndim}"),
        ));
    }
    let header = 4 + 4 * ndim as usize;
    if bytes.len() < header {
        return Err(Error::bad_data(path, "IDX header truncated"));
    }
    let dims: Vec<usize> = (0..ndim as usize)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let need: usize = dims.iter().product();
    let have = bytes.len() - header;
    if have != need {
        return Err(Error::bad_data(
            path,
            format!(
                "IDX data is {} bytes but the header {:?} needs {} (file truncated or padded)",
                have, dims, need
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Which half of a standard IDX dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxSplit {
    /// `train-images-idx3-ubyte` / `train-labels-idx1-ubyte` (60k for MNIST and Fashion-MNIST).
    Train,
    /// `t10k-images-idx3-ubyte` / `t10k-labels-idx1-ubyte` (10k).
    Test,
}

/// Grey images from IDX files with optional labels, held in memory as u8.
pub struct IdxDataset {
    images: Vec<u8>,
    labels: Option<Vec<u8>>,
    n: usize,
    h: usize,
    w: usize,
    source: PathBuf,
}

impl IdxDataset {
    /// Opens an images file and, optionally, its labels file (each gz or raw).
    pub fn open(images: &Path, labels: Option<&Path>) -> Result<Self> {
        let (dims, data) = parse_idx(images, &read_maybe_gz(images)?, 3)?;
        let (n, h, w) = (dims[0], dims[1], dims[2]);
        if n == 0 {
            return Err(Error::bad_data(images, "IDX file holds no images"));
        }
        let labels = match labels {
            Some(lp) => {
                let (ld, l) = parse_idx(lp, &read_maybe_gz(lp)?, 1)?;
                if ld[0] != n {
                    return Err(Error::bad_data(
                        lp,
                        format!("{} labels for {} images in {}", ld[0], n, images.display()),
                    ));
                }
                Some(l)
            }
            None => None,
        };
        Ok(IdxDataset {
            images: data,
            labels,
            n,
            h,
            w,
            source: images.to_path_buf(),
        })
    }

    /// Opens the standard file names in `dir` (with or without `.gz`), e.g. the Fashion-MNIST
    /// folder of Debian's `dataset-fashion-mnist`.
    pub fn open_dir(dir: &Path, split: IdxSplit) -> Result<Self> {
        let prefix = match split {
            IdxSplit::Train => "train",
            IdxSplit::Test => "t10k",
        };
        let find = |stem: &str| -> Result<PathBuf> {
            for cand in [format!("{stem}.gz"), stem.to_string()] {
                let p = dir.join(&cand);
                if p.is_file() {
                    return Ok(p);
                }
            }
            Err(Error::bad_data(
                dir,
                format!("no {stem}[.gz] here: expected an MNIST-style IDX folder (run `cargo xtask setup` or point --data at one)"),
            ))
        };
        let images = find(&format!("{prefix}-images-idx3-ubyte"))?;
        let labels = find(&format!("{prefix}-labels-idx1-ubyte"))?;
        Self::open(&images, Some(&labels))
    }

    /// Raw u8 pixels of image `i` (row-major H x W).
    pub fn pixels(&self, i: usize) -> &[u8] {
        &self.images[i * self.h * self.w..(i + 1) * self.h * self.w]
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.n
    }
    fn example_shape(&self) -> Vec<i64> {
        vec![1, self.h as i64, self.w as i64]
    }
    fn num_classes(&self) -> Option<usize> {
        self.labels
            .as_ref()
            .map(|l| l.iter().copied().max().map_or(0, |m| m as usize + 1))
    }
    fn get(&self, idx: usize, out: &mut [f32]) -> Result<Option<i64>> {
        if idx >= self.n {
            return Err(Error::invalid(format!(
                "index {idx} out of range for {} images",
                self.n
            )));
        }
        for (o, &p) in out.iter_mut().zip(self.pixels(idx)) {
            *o = u8_to_unit(p);
        }
        Ok(self.labels.as_ref().map(|l| l[idx] as i64))
    }
    fn describe(&self) -> String {
        format!(
            "IDX {} ({} images {}x{})",
            self.source.display(),
            self.n,
            self.h,
            self.w
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_images(n: u32, h: u32, w: u32) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 3];
        for d in [n, h, w] {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend((0..n * h * w).map(|i| (i % 256) as u8));
        v
    }

    fn idx_labels(n: u32) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 1];
        v.extend_from_slice(&n.to_be_bytes());
        v.extend((0..n).map(|i| (i % 10) as u8));
        v
    }

    #[test]
    fn reads_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        let ip = dir.path().join("train-images-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&idx_images(3, 2, 2)).unwrap();
        std::fs::write(&ip, enc.finish().unwrap()).unwrap();
        std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx_labels(3)).unwrap();
        let ds = IdxDataset::open_dir(dir.path(), IdxSplit::Train).unwrap();
        assert_eq!(ds.len(), 3);
        assert_eq!(ds.example_shape(), vec![1, 2, 2]);
        let mut buf = [0f32; 4];
        let label = ds.get(1, &mut buf).unwrap();
        assert_eq!(label, Some(1));
        assert_eq!(buf[0], u8_to_unit(4));
        assert!(ds.get(3, &mut buf).is_err());
    }

    #[test]
    fn truncated_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imgs");
        let mut bytes = idx_images(4, 3, 3);
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&p, bytes).unwrap();
        let err = IdxDataset::open(&p, None).err().unwrap().to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(err.contains("imgs"), "{err}");
    }

    #[test]
    fn wrong_magic_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imgs");
        let mut bytes = idx_images(1, 2, 2);
        bytes[2] = 0x0D; // float32 type code
        std::fs::write(&p, bytes).unwrap();
        let err = IdxDataset::open(&p, None).err().unwrap().to_string();
        assert!(err.contains("wrong IDX magic"), "{err}");
        // labels file passed where images are expected
        std::fs::write(&p, idx_labels(3)).unwrap();
        let err = IdxDataset::open(&p, None).err().unwrap().to_string();
        assert!(err.contains("expected 3"), "{err}");
    }

    #[test]
    fn corrupt_gzip_and_label_count_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imgs.gz");
        std::fs::write(&p, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        assert!(IdxDataset::open(&p, None)
            .err()
            .unwrap()
            .to_string()
            .contains("gzip"));
        let ip = dir.path().join("i");
        let lp = dir.path().join("l");
        std::fs::write(&ip, idx_images(3, 2, 2)).unwrap();
        std::fs::write(&lp, idx_labels(2)).unwrap();
        let err = IdxDataset::open(&ip, Some(&lp)).err().unwrap().to_string();
        assert!(err.contains("2 labels for 3 images"), "{err}");
        let err = IdxDataset::open_dir(dir.path(), IdxSplit::Test)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("t10k-images-idx3-ubyte"), "{err}");
    }
}
