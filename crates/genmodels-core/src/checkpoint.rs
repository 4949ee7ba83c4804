//! Checkpoints: one safetensors file holding the weights, the optimiser moments and the EMA,
//! with the model's config and the training state as JSON in the file's metadata, so that
//! `load(path)` needs nothing else and a resumed run continues exactly where it stopped.
//!
//! Tensor names are prefixed by their role: `model/<store>/<var>`, `ema/<store>/<var>`,
//! `optim/<name>/<var>/{exp_avg,exp_avg_sq}`. Writes are atomic: a temporary file in the same
//! folder, flushed to disk, then renamed over the target.

use crate::data::limits::{checked_product, torch_error_line, MAX_TENSOR_ELEMENTS};
use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Format version written into every checkpoint.
pub const FORMAT_VERSION: u32 = 1;

/// Where training stood when the checkpoint was written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimisation steps completed.
    pub step: u64,
    /// The run's seed: batches and per-step random draws are functions of (seed, step).
    pub seed: u64,
    /// Seconds of training so far (summed over resumes).
    pub elapsed_s: f64,
    /// The trainer settings of the run, so `resume` needs only the run folder.
    #[serde(default)]
    pub trainer: serde_json::Value,
    /// The data the run trains on (as given on the command line).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// The JSON half of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: u32,
    /// Registered model name (e.g. `dcgan`).
    pub model: String,
    /// The model's config, as its serde struct.
    pub config: serde_json::Value,
    pub state: TrainState,
}

/// Weights plus metadata, in memory on the CPU.
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub tensors: BTreeMap<String, Tensor>,
}

fn to_dtype(k: Kind) -> Result<Dtype> {
    Ok(match k {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        other => {
            return Err(Error::invalid(format!(
                "cannot store tensors of kind {other:?} in a checkpoint"
            )))
        }
    })
}

fn to_kind(d: Dtype) -> Option<Kind> {
    Some(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Raw little-endian bytes of a tensor (moved to the CPU, made contiguous).
pub fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let numel = t.numel();
    let mut buf = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut buf, numel);
    buf
}

/// Writes `bytes` to `path` atomically: temporary file in the same folder, fsync, rename, fsync
/// of the folder (so a power cut cannot lose the rename). On any failure (a full disk, a file
/// size limit) the temporary file is removed and `path` keeps its previous content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(
            path,
            std::io::Error::new(
                e.kind(),
                format!("{e}; not written, the previous file (if any) is intact"),
            ),
        ));
    }
    Ok(())
}

struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl safetensors::View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl Checkpoint {
    pub fn new(model: &str, config: serde_json::Value, state: TrainState) -> Self {
        Checkpoint {
            meta: CheckpointMeta {
                format: FORMAT_VERSION,
                model: model.to_string(),
                config,
                state,
            },
            tensors: BTreeMap::new(),
        }
    }

    /// Adds every variable of `vs` under `prefix/`.
    pub fn add_var_store(&mut self, prefix: &str, vs: &VarStore) {
        for (name, t) in vs.variables() {
            self.tensors.insert(
                format!("{prefix}/{name}"),
                t.detach().to_device(Device::Cpu),
            );
        }
    }

    /// The first floating-point tensor that holds NaN or infinity, if any.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.tensors
            .iter()
            .find(|(_, t)| {
                t.is_floating_point()
                    && t.numel() > 0
                    && !bool::try_from(t.isfinite().all()).unwrap_or(false)
            })
            .map(|(name, _)| name.as_str())
    }

    /// Refuses to go on if any floating-point tensor holds NaN or infinity.
    pub fn check_finite(&self) -> Result<()> {
        match self.first_non_finite() {
            Some(name) => Err(Error::invalid(format!(
                "tensor `{name}` holds NaN or infinite values; refusing to write a broken checkpoint"
            ))),
            None => Ok(()),
        }
    }

    /// Serialises and writes atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.check_finite()?;
        let owned: Vec<(String, Owned)> = self
            .tensors
            .iter()
            .map(|(n, t)| {
                Ok((
                    n.clone(),
                    Owned {
                        dtype: to_dtype(t.kind())?,
                        shape: t.size().iter().map(|&d| d as usize).collect(),
                        data: tensor_bytes(t),
                    },
                ))
            })
            .collect::<Result<_>>()?;
        let mut info = HashMap::new();
        info.insert("genmodels".to_string(), serde_json::to_string(&self.meta)?);
        let bytes = safetensors::serialize(owned.iter().map(|(n, o)| (n.as_str(), o)), &Some(info))
            .map_err(|e| {
                Error::invalid(format!("serialising checkpoint {}: {e}", path.display()))
            })?;
        write_atomic(path, &bytes)
    }

    /// Reads a checkpoint written by [`Checkpoint::save`]. A file that is not one (truncated,
    /// a header that does not fit its data, a dtype or shape we cannot hold, metadata that is
    /// not the genmodels JSON) is a one-line error naming the file and what was wrong.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |m: String| Error::bad_data(path, m);
        let (metadata, tensors) = read_safetensors(path)?;
        let meta_json = metadata
            .as_ref()
            .and_then(|m| m.get("genmodels"))
            .ok_or_else(|| {
                bad(
                    "safetensors file without genmodels metadata: not a genmodels checkpoint"
                        .into(),
                )
            })?;
        let meta: CheckpointMeta = serde_json::from_str(meta_json).map_err(|e| {
            bad(format!(
                "checkpoint metadata is malformed ({e}); expected JSON with format, model, config and state"
            ))
        })?;
        if meta.format != FORMAT_VERSION {
            return Err(bad(format!(
                "checkpoint format {} but this build reads format {FORMAT_VERSION}",
                meta.format
            )));
        }
        Ok(Checkpoint { meta, tensors })
    }

    /// Copies `prefix/*` tensors into the variables of `vs`, after checking that names, shapes
    /// and dtypes match exactly; every mismatch is listed in the error.
    pub fn load_var_store(&self, prefix: &str, vs: &VarStore, path: &Path) -> Result<()> {
        let vars = vs.variables();
        let pre = format!("{prefix}/");
        let mut problems = Vec::new();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in &names {
            let key = format!("{pre}{name}");
            match self.tensors.get(&key) {
                None => problems.push(format!(
                    "missing tensor `{key}` (shape {:?})",
                    vars[*name].size()
                )),
                Some(t) => {
                    let v = &vars[*name];
                    if t.size() != v.size() {
                        problems.push(format!(
                            "`{key}`: shape {:?} in the file, {:?} in the model",
                            t.size(),
                            v.size()
                        ));
                    } else if t.kind() != v.kind() {
                        problems.push(format!(
                            "`{key}`: dtype {:?} in the file, {:?} in the model",
                            t.kind(),
                            v.kind()
                        ));
                    }
                }
            }
        }
        for key in self.tensors.keys().filter(|k| k.starts_with(&pre)) {
            if !vars.contains_key(&key[pre.len()..]) {
                problems.push(format!("unexpected tensor `{key}` (not in the model)"));
            }
        }
        if !problems.is_empty() {
            return Err(Error::CheckpointMismatch {
                path: path.to_path_buf(),
                problems,
            });
        }
        tch::no_grad(|| -> Result<()> {
            for (name, v) in vars {
                let mut v = v;
                let key = format!("{pre}{name}");
                v.f_copy_(&self.tensors[&key]).map_err(|e| {
                    Error::bad_data(
                        path,
                        format!("copying `{key}` into the model: {}", torch_error_line(&e)),
                    )
                })?;
            }
            Ok(())
        })
    }

    /// True when any tensor lives under `prefix/`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let pre = format!("{prefix}/");
        self.tensors.keys().any(|k| k.starts_with(&pre))
    }
}

/// The tensors and the `__metadata__` of a safetensors file, on the CPU, with every
/// header field checked before anything is allocated: the 8-byte header length, the JSON, data
/// offsets that tile the file exactly, shapes whose byte size is the data's (overflow-checked,
/// by the `safetensors` crate), dimensions that fit an `i64`, at most
/// [`MAX_TENSOR_ELEMENTS`] elements per tensor and a dtype libtorch holds. Each problem is a
/// one-line [`Error::BadData`] naming the file (and the tensor).
pub fn read_safetensors(path: &Path) -> Result<SafetensorsContent> {
    let bad = |m: String| Error::bad_data(path, m);
    // The header length first, so that a file that is not a safetensors file (a large one
    // given by mistake) is refused before it is read into memory.
    {
        use std::io::Read;
        let io = |e: std::io::Error| Error::io(path, e);
        let mut f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        let mut head = [0u8; 8];
        if len < 8 {
            return Err(bad(format!(
                "not a safetensors file: {len} bytes, too short for the 8-byte header length"
            )));
        }
        f.read_exact(&mut head).map_err(io)?;
        let n = u64::from_le_bytes(head);
        if n > MAX_SAFETENSORS_HEADER || n > len - 8 {
            return Err(bad(format!(
                "not a safetensors file: the header length field says {n} bytes, but the file has {} after it (and a header may have at most {MAX_SAFETENSORS_HEADER})",
                len - 8
            )));
        }
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (n, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        bad(format!(
            "not a safetensors file: {}",
            describe_st_error(&e, &bytes)
        ))
    })?;
    let data = &bytes[8 + n..];
    let mut tensors = BTreeMap::new();
    for (name, info) in header.tensors() {
        let (s, e) = info.data_offsets;
        let t = bytes_to_tensor(info.dtype, &info.shape, &data[s..e])
            .map_err(|m| bad(format!("tensor `{name}`: {m}")))?;
        tensors.insert(name, t);
    }
    Ok((header.metadata().clone(), tensors))
}

/// Largest safetensors JSON header read (the `safetensors` crate's own limit, 100 MB).
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// What [`read_safetensors`] returns: the `__metadata__` strings and the tensors by name.
pub type SafetensorsContent = (Option<HashMap<String, String>>, BTreeMap<String, Tensor>);

/// One line for a safetensors parsing error (the crate's Debug names are terse).
fn describe_st_error(e: &safetensors::SafeTensorError, bytes: &[u8]) -> String {
    use safetensors::SafeTensorError as E;
    let claimed = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    match e {
        E::HeaderTooSmall => format!("{} bytes, too short for the 8-byte header length", bytes.len()),
        E::HeaderTooLarge => format!(
            "the header length field says {} bytes, more than the 100 MB a header may have",
            claimed.unwrap_or(0)
        ),
        E::InvalidHeaderLength => format!(
            "the header length field says {} bytes but the file has {} after it (truncated?)",
            claimed.unwrap_or(0),
            bytes.len().saturating_sub(8)
        ),
        E::InvalidHeader => "the header is not UTF-8 text".into(),
        E::InvalidHeaderStart => "the header does not start with `{`".into(),
        E::InvalidHeaderDeserialization => {
            "the header is not the expected JSON (tensor name -> dtype, shape, data_offsets; string metadata)"
                .into()
        }
        E::InvalidOffset(name) => format!(
            "the data offsets of tensor `{name}` do not follow the previous tensor's end"
        ),
        E::TensorInvalidInfo => {
            "a tensor's shape and dtype do not match the byte length of its data offsets".into()
        }
        E::ValidationOverflow => "a tensor's shape multiplies past the address space".into(),
        E::MetadataIncompleteBuffer => {
            "the tensors' data offsets do not cover the data exactly (truncated or padded file)"
                .into()
        }
        other => format!("{other:?}"),
    }
}

/// A CPU tensor from raw little-endian bytes, with the shape and dtype checked.
fn bytes_to_tensor(
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
) -> std::result::Result<Tensor, String> {
    let kind = to_kind(dtype).ok_or_else(|| {
        format!("dtype {dtype:?} is not supported (expected F32, F64, F16, BF16, I64, I32, I16, I8, U8 or BOOL)")
    })?;
    let dims: Vec<i64> = shape
        .iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| format!("shape {shape:?}: dimension {d} is too large"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let numel = checked_product(shape.iter().copied())
        .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
        .ok_or_else(|| {
            format!("shape {shape:?} has more than {MAX_TENSOR_ELEMENTS} elements (the limit per tensor)")
        })?;
    if numel.checked_mul(kind.elt_size_in_bytes()) != Some(data.len()) {
        return Err(format!(
            "shape {shape:?} of {dtype:?} needs {} bytes, the file has {}",
            numel.saturating_mul(kind.elt_size_in_bytes()),
            data.len()
        ));
    }
    Tensor::f_from_data_size(data, &dims, kind).map_err(|e| torch_error_line(&e))
}

/// Path of the checkpoint inside a run folder.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    genmodels_contracts::RunLayout::new(run_dir).checkpoint()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    fn store(out: i64) -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "fc", 3, out, Default::default());
        vs
    }

    #[test]
    fn round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let vs = store(2);
        let mut c = Checkpoint::new(
            "m",
            serde_json::json!({"a": 1}),
            TrainState {
                step: 5,
                seed: 9,
                ..Default::default()
            },
        );
        c.add_var_store("model/g", &vs);
        c.tensors
            .insert("extra".into(), Tensor::from_slice(&[1i64, 2, 3]));
        c.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        assert_eq!(back.meta, c.meta);
        let vs2 = store(2);
        back.load_var_store("model/g", &vs2, &p).unwrap();
        for (n, t) in vs.variables() {
            assert!(t.equal(&vs2.variables()[&n]));
        }
        assert!(back.tensors["extra"].equal(&Tensor::from_slice(&[1i64, 2, 3])));
        assert!(
            std::fs::read_dir(dir.path()).unwrap().count() == 1,
            "temporary file left behind"
        );
    }

    #[test]
    fn mismatches_are_all_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut c = Checkpoint::new("m", serde_json::json!({}), TrainState::default());
        c.add_var_store("model/g", &store(2));
        c.tensors.remove("model/g/fc.bias");
        c.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap();
        let err = back
            .load_var_store("model/g", &store(4), &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing tensor `model/g/fc.bias`"), "{err}");
        assert!(
            err.contains("`model/g/fc.weight`: shape [2, 3] in the file, [4, 3] in the model"),
            "{err}"
        );
    }

    #[test]
    fn refuses_nan_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let mut c = Checkpoint::new("m", serde_json::json!({}), TrainState::default());
        c.tensors
            .insert("w".into(), Tensor::from_slice(&[1.0f32, f32::NAN]));
        assert!(c.save(&p).unwrap_err().to_string().contains("NaN"));
        assert!(!p.exists());
        std::fs::write(&p, b"garbage").unwrap();
        let err = Checkpoint::load(&p).err().unwrap().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
    }
}
