//! Helpers shared by the integration tests that drive the `genmodels` binary.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// The binary under test, without a device chosen by the environment or a data-parallel
/// environment inherited from a launcher.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_genmodels"));
    c.env_remove("GENMODELS_DEVICE")
        .env_remove("WORLD_SIZE")
        .env_remove("RANK");
    c
}

/// Asserts success, printing both streams otherwise.
pub fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A tiny labelled IDX dataset (`n` images of `side` x `side`) in `dir`.
pub fn write_idx(dir: &Path, n: u32, side: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut img = vec![0, 0, 8, 3];
    for d in [n, side, side] {
        img.extend_from_slice(&d.to_be_bytes());
    }
    img.extend((0..n * side * side).map(|i| ((i * 37) % 256) as u8));
    std::fs::write(dir.join("train-images-idx3-ubyte"), img).unwrap();
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&n.to_be_bytes());
    lab.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join("train-labels-idx1-ubyte"), lab).unwrap();
}

/// The checkpoint's step, after checking the file is a complete safetensors file whose
/// tensors all parse.
pub fn checkpoint_step(run: &Path) -> u64 {
    let bytes = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensors().len() > 4);
    let json: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["genmodels"]).unwrap();
    json["state"]["step"].as_u64().unwrap()
}
