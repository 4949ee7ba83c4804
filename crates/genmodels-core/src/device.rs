//! Device choice, global seeding and the deterministic mode.

use crate::{Error, Result};
use tch::Device;

/// Environment variable read by [`device_from_env_or`] when no flag is given.
pub const DEVICE_ENV: &str = "GENMODELS_DEVICE";

/// Loads `libtorch_cuda.so` once, if it can be found. A plain link drops it (the linker's
/// as-needed rule: nothing references its symbols directly), and without it libtorch reports
/// no GPU even on a GPU machine. Loading it runs its static initialisers, which register the
/// CUDA backend, exactly as `import torch` does in Python. Harmless on CPU-only libtorch builds.
pub fn load_cuda_backend() -> bool {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOADED.get_or_init(|| {
        // dlopen searches the executable's RUNPATH, which `.cargo/config.toml` points at libtorch.
        let name = c"libtorch_cuda.so";
        // SAFETY: dlopen with a valid NUL-terminated name; the handle is intentionally leaked so
        // the library stays loaded for the life of the process.
        let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        !h.is_null()
    })
}

/// Whether libtorch sees a CUDA device (after loading the CUDA backend).
pub fn cuda_is_available() -> bool {
    load_cuda_backend();
    tch::Cuda::is_available()
}

/// CUDA device 0 when available, else the CPU: use this rather than tch's
/// `Device::cuda_if_available`, which cannot see CUDA unless the backend was loaded.
pub fn cuda_if_available() -> Device {
    if cuda_is_available() {
        Device::Cuda(0)
    } else {
        Device::Cpu
    }
}

/// Parses a device name: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available, else CPU).
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    match s.as_str() {
        "auto" | "" => Ok(cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda_checked(0),
        _ => {
            if let Some(idx) = s.strip_prefix("cuda:") {
                let i: usize = idx.parse().map_err(|_| {
                    Error::invalid(format!("device `{s}`: expected cpu, cuda, cuda:N or auto"))
                })?;
                cuda_checked(i)
            } else {
                Err(Error::invalid(format!(
                    "device `{s}`: expected cpu, cuda, cuda:N or auto"
                )))
            }
        }
    }
}

fn cuda_checked(i: usize) -> Result<Device> {
    if !cuda_is_available() {
        return Err(Error::invalid(format!(
            "device cuda:{i} was asked for but CUDA is not available (libtorch sees {} GPUs)",
            tch::Cuda::device_count()
        )));
    }
    let n = tch::Cuda::device_count() as usize;
    if i >= n {
        return Err(Error::invalid(format!(
            "device cuda:{i} does not exist: {n} GPU(s) visible"
        )));
    }
    Ok(Device::Cuda(i))
}

/// The device named by `flag`, else by `GENMODELS_DEVICE`, else CUDA when available, else CPU.
pub fn device_from_env_or(flag: Option<&str>) -> Result<Device> {
    match flag {
        Some(f) => parse_device(f),
        None => match std::env::var(DEVICE_ENV) {
            Ok(v) => parse_device(&v),
            Err(_) => Ok(cuda_if_available()),
        },
    }
}

/// A device's name as the command line accepts it.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Seeds libtorch's CPU and CUDA generators.
pub fn seed_everything(seed: u64) {
    tch::manual_seed(seed as i64);
    if cuda_is_available() {
        tch::Cuda::manual_seed_all(seed);
    }
}

/// The seed of one training step, derived from the run's seed so that a resumed run draws the
/// same random numbers as an uninterrupted one without saving generator state (SplitMix64).
pub fn step_seed(run_seed: u64, step: u64) -> u64 {
    let mut z = run_seed.wrapping_add(step.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Deterministic mode: no cuDNN autotuning (its choice of kernels varies between runs) and a
/// cuBLAS workspace setting that makes its reductions reproducible. CPU kernels in libtorch are
/// deterministic for a fixed thread count, so the thread count is pinned as well.
pub fn set_deterministic(on: bool) {
    tch::Cuda::cudnn_set_benchmark(!on);
    if on {
        // Read by cuBLAS when it creates its handle; has no effect once a handle exists.
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
        let n = tch::get_num_threads();
        tch::set_num_threads(n.max(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_rejects_nonsense() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device(" CPU ").unwrap(), Device::Cpu);
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("expected cpu"));
        assert!(parse_device("cuda:x").is_err());
        if !cuda_is_available() {
            assert!(parse_device("cuda")
                .unwrap_err()
                .to_string()
                .contains("not available"));
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
        }
    }

    #[test]
    fn cuda_backend_loads_when_libtorch_ships_it() {
        let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.libtorch/lib/libtorch_cuda.so");
        if lib.exists() {
            assert!(
                load_cuda_backend(),
                "libtorch_cuda.so exists but could not be loaded"
            );
        }
    }

    #[test]
    fn seeding_reproduces_draws() {
        seed_everything(7);
        let a = tch::Tensor::randn([5], (tch::Kind::Float, Device::Cpu));
        seed_everything(7);
        let b = tch::Tensor::randn([5], (tch::Kind::Float, Device::Cpu));
        assert!(a.equal(&b));
        assert_ne!(step_seed(1, 0), step_seed(1, 1));
        assert_ne!(step_seed(1, 0), step_seed(2, 0));
    }
}
