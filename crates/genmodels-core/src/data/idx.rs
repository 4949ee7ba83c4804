//! IDX files (MNIST, Fashion-MNIST), gzip-compressed or raw.
//!
//! Format (LeCun): a 4-byte magic `0x00 0x00 type ndim` (type 0x08 = u8), then `ndim` big-endian
//! u32 sizes, then the data. Images have ndim 3 (N, H, W), labels ndim 1 (N).

use super::limits::{checked_product, MAX_IDX_SIDE, MAX_TENSOR_ELEMENTS};
use super::{u8_to_unit, Dataset};
use crate::{Error, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads a whole file, transparently un-gzipping it when it starts with the gzip magic; a file
/// larger than `max_bytes`, or a stream that decompresses to more (a zip bomb), is refused.
pub(crate) fn read_maybe_gz(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    if len > max_bytes {
        return Err(Error::bad_data(
            path,
            format!("{len} bytes, more than the {max_bytes} this kind of file may have"),
        ));
    }
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    GzDecoder::new(&raw[..])
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| Error::bad_data(path, format!("gzip stream is corrupt or truncated: {e}")))?;
    if out.len() as u64 > max_bytes {
        return Err(Error::bad_data(
            path,
            format!("gzip stream decompresses to more than {max_bytes} bytes (the limit for this kind of file)"),
        ));
    }
    Ok(out)
}

/// The dimensions an IDX header claims, checked against the caps in [`super::limits`]: every
/// size at least 1, images at most [`MAX_IDX_SIDE`] on a side, at most
/// [`MAX_TENSOR_ELEMENTS`] values in all. Returns the number of data bytes they need.
fn check_idx_dims(path: &Path, dims: &[usize]) -> Result<usize> {
    if let Some(i) = dims.iter().position(|&d| d == 0) {
        return Err(Error::bad_data(
            path,
            format!("IDX header {dims:?}: dimension {i} is 0, expected at least 1"),
        ));
    }
    if dims.len() == 3 && (dims[1] > MAX_IDX_SIDE || dims[2] > MAX_IDX_SIDE) {
        return Err(Error::bad_data(
            path,
            format!(
                "IDX header claims {}x{} images: at most {MAX_IDX_SIDE}x{MAX_IDX_SIDE} are accepted",
                dims[1], dims[2]
            ),
        ));
    }
    match checked_product(dims.iter().copied()) {
        Some(n) if n <= MAX_TENSOR_ELEMENTS => Ok(n),
        _ => Err(Error::bad_data(
            path,
            format!(
                "IDX header {dims:?} claims more than {MAX_TENSOR_ELEMENTS} values (the limit per array)"
            ),
        )),
    }
}

/// Parses the magic number and dimensions at the start of an IDX array: returns the dims and
/// the header length. `bytes` may hold only the start of the file.
fn parse_idx_header(path: &Path, bytes: &[u8], expect_ndim: u8) -> Result<(Vec<usize>, usize)> {
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
        return Err(Error::bad_data(
            path,
            format!(
                "IDX header truncated: {} bytes, the {ndim} sizes need {header}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    Ok((dims, header))
}

/// Reads an IDX file (gz or raw) with the header checked before the data is read: a raw file's
/// length must be what the (capped) header needs before its data is read, and a gzip stream is
/// decompressed only as far as the header says the data goes.
pub fn read_idx(path: &Path, expect_ndim: u8) -> Result<(Vec<usize>, Vec<u8>)> {
    let io = |e: std::io::Error| Error::io(path, e);
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut magic = [0u8; 2];
    let got = read_full(&mut f, &mut magic).map_err(io)?;
    let stream = (&magic[..got]).chain(std::io::BufReader::new(f));
    if magic[..got] == GZIP_MAGIC {
        read_idx_stream(path, GzDecoder::new(stream), expect_ndim, None)
    } else {
        read_idx_stream(path, stream, expect_ndim, Some(len))
    }
}

/// The IDX array of a stream; `file_len` is the whole stream's length when known (a raw file).
fn read_idx_stream(
    path: &Path,
    mut r: impl Read,
    expect_ndim: u8,
    file_len: Option<u64>,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let read_err = |e: std::io::Error| match file_len {
        Some(_) => Error::io(path, e),
        None => Error::bad_data(path, format!("gzip stream is corrupt or truncated: {e}")),
    };
    // The magic, then the sizes (ndim of them, when ndim is the expected one).
    let mut head = vec![0u8; 4];
    let got = read_full(&mut r, &mut head).map_err(read_err)?;
    head.truncate(got);
    if got == 4 && head[3] == expect_ndim {
        head.resize(4 + 4 * expect_ndim as usize, 0);
        let got = read_full(&mut r, &mut head[4..]).map_err(read_err)?;
        head.truncate(4 + got);
    }
    let (dims, header) = parse_idx_header(path, &head, expect_ndim)?;
    let need = check_idx_dims(path, &dims)?;
    let mismatch = |have: String| {
        Error::bad_data(
            path,
            format!(
                "IDX data is {have} bytes but the header {dims:?} needs {need} (file truncated or padded)"
            ),
        )
    };
    if let Some(len) = file_len {
        let have = len - header as u64;
        if have != need as u64 {
            return Err(mismatch(have.to_string()));
        }
    }
    // Grow with the data actually read, never to what the header claims up front.
    let mut data = Vec::new();
    r.take(need as u64 + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() != need {
        return Err(mismatch(if data.len() > need {
            format!("more than {need}")
        } else {
            data.len().to_string()
        }));
    }
    Ok((dims, data))
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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
        let (dims, data) = read_idx(images, 3)?;
        let (n, h, w) = (dims[0], dims[1], dims[2]);
        let labels = match labels {
            Some(lp) => {
                let (ld, l) = read_idx(lp, 1)?;
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

    /// Raw u8 pixels of image `i` (row-major H x W); panics when `i >= len()`.
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
        if out.len() != self.h * self.w {
            return Err(Error::invalid(format!(
                "a buffer of {} values for a {}x{} image",
                out.len(),
                self.h,
                self.w
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
