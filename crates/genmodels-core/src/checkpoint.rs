//! Checkpoints: one safetensors file holding the weights, the optimiser moments and the EMA,
//! with the model's config and the training state as JSON in the file's metadata, so that
//! `load(path)` needs nothing else and a resumed run continues exactly where it stopped.
//!
//! Tensor names are prefixed by their role: `model/<store>/<var>`, `ema/<store>/<var>`,
//! `optim/<name>/<var>/{exp_avg,exp_avg_sq}`. Writes are atomic: a temporary file in the same
//! folder, flushed to disk, then renamed over the target.

use crate::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
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

/// Writes `bytes` to `path` atomically: temporary file in the same folder, fsync, rename.
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
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
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

    /// Refuses to go on if any floating-point tensor holds NaN or infinity.
    pub fn check_finite(&self) -> Result<()> {
        for (name, t) in &self.tensors {
            if t.is_floating_point()
                && t.numel() > 0
                && !bool::try_from(t.isfinite().all()).unwrap_or(false)
            {
                return Err(Error::invalid(format!(
                    "tensor `{name}` holds NaN or infinite values; refusing to write a broken checkpoint"
                )));
            }
        }
        Ok(())
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

    /// Reads a checkpoint written by [`Checkpoint::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |m: String| Error::bad_data(path, m);
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file ({e:?})")))?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("genmodels"))
            .ok_or_else(|| {
                bad(
                    "safetensors file without genmodels metadata: not a genmodels checkpoint"
                        .into(),
                )
            })?;
        let meta: CheckpointMeta = serde_json::from_str(meta_json)
            .map_err(|e| bad(format!("checkpoint metadata is malformed: {e}")))?;
        if meta.format != FORMAT_VERSION {
            return Err(bad(format!(
                "checkpoint format {} but this build reads format {FORMAT_VERSION}",
                meta.format
            )));
        }
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("corrupt tensor data ({e:?})")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            tensors.insert(
                name.clone(),
                view_to_tensor(&view).map_err(|m| bad(format!("tensor `{name}`: {m}")))?,
            );
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
        tch::no_grad(|| {
            for (name, v) in vars {
                let mut v = v;
                v.copy_(&self.tensors[&format!("{pre}{name}")]);
            }
        });
        Ok(())
    }

    /// True when any tensor lives under `prefix/`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let pre = format!("{prefix}/");
        self.tensors.keys().any(|k| k.starts_with(&pre))
    }
}

fn view_to_tensor(v: &TensorView<'_>) -> std::result::Result<Tensor, String> {
    let kind = to_kind(v.dtype()).ok_or_else(|| format!("unsupported dtype {:?}", v.dtype()))?;
    let shape: Vec<i64> = v.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_data_size(v.data(), &shape, kind))
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
