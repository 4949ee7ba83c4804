//! Data-parallel training on c10d's Gloo process group (docs/distributed.md): two processes on
//! loopback with global batch B reach the weights one process reaches with batch B, through
//! `genmodels train --nproc 2` and through torchrun; a worker that dies or hangs stops the
//! others with an error naming it, and the last checkpoint resumes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, checkpoint_step, ok, write_idx};

fn write_text(path: &Path) {
    let line = "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.\n";
    std::fs::write(path, line.repeat(40)).unwrap();
}

/// `genmodels train` of a tiny config, one thread per process.
fn train(model: &str, data: &str, out: &Path, steps: u64, batch: usize, sets: &[&str]) -> Command {
    let mut c = bin();
    c.args(["--threads", "1", "train", model, "--data", data, "--out"])
        .arg(out)
        .args(["--steps", &steps.to_string()])
        .args(["--batch-size", &batch.to_string()]);
    for s in sets {
        c.args(["--set", s]);
    }
    c.args([
        "--sample-count",
        "4",
        "--sample-every",
        "0",
        "--log-every",
        "1",
    ])
    .args(["--no-progress", "--device", "cpu"]);
    c
}

/// The float tensors of a run's checkpoint under `model/`, by name.
fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, t)| n.starts_with("model/") && t.dtype() == safetensors::Dtype::F32)
        .map(|(n, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The largest difference between two runs' weights, relative to each tensor's largest
/// magnitude, and the tensor it is in.
fn max_relative_difference(a: &Path, b: &Path) -> (f32, String) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    assert!(wa.len() >= 4, "too few weight tensors in {}", a.display());
    let mut worst = (0.0f32, String::new());
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let scale = va.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        let d = va
            .iter()
            .zip(vb)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        if d > worst.0 {
            worst = (d, na.clone());
        }
    }
    worst
}

/// Float tolerance for 20 Adam steps: the two sums of a mean differ in their last bits, and
/// Adam's division by sqrt(v) carries such differences into the weights (measured: up to
/// 7e-4 of a tensor's largest weight). Gradients not averaged, or a batch not split by rank,
/// move weights by several times the learning rate per step: differences of 1e-1 and more.
const TOL: f32 = 5e-3;

fn one_and_two(model: &str, data: &str, steps: u64, batch: usize, sets: &[&str]) -> (f32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    ok(&train(model, data, &one, steps, batch, sets)
        .output()
        .unwrap());
    let out = train(model, data, &two, steps, batch, sets)
        .args(["--nproc", "2", "--checkpoint-every", "5"])
        .output()
        .unwrap();
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("data-parallel: 2 processes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rank 0 alone wrote the folder: one log line per step.
    let log = std::fs::read_to_string(two.join("train.jsonl")).unwrap();
    assert_eq!(log.lines().count() as u64, steps, "{log}");
    max_relative_difference(&one, &two)
}

#[test]
fn the_vae_in_two_processes_reaches_the_one_process_weights() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx(&tmp.path().join("d"), 64, 28);
    let data = format!("idx:{}", tmp.path().join("d").display());
    let sets = ["hidden=32", "z_dim=4"];
    let (d, name) = one_and_two("vae", &data, 20, 16, &sets);
    assert!(d < TOL, "{name} differs by {d} of its scale");
}

#[test]
fn gpt_in_two_processes_reaches_the_one_process_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("t.txt");
    write_text(&text);
    let data = format!("text:{}", text.display());
    let sets = ["n_layer=1", "n_head=2", "n_embd=16", "block_size=16"];
    let (d, name) = one_and_two("gpt-mini", &data, 20, 8, &sets);
    assert!(d < TOL, "{name} differs by {d} of its scale");
}

/// DCGAN: two optimisers, the D-frozen G step, batch norm. Each process normalises its own
/// half of the batch (DDP does the same without SyncBatchNorm), so the weights are not those
/// of one process with the whole batch; what must hold is that both processes keep identical
/// weights (checked by the trainer at every checkpoint: a rank that drifts stops the run) and
/// that the batch-norm statistics come from rank 0 (as DDP's broadcast_buffers).
#[test]
fn dcgan_in_two_processes_keeps_the_ranks_in_step() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx(&tmp.path().join("d"), 64, 28);
    let data = format!("idx:{}", tmp.path().join("d").display());
    let sets = ["ngf=4", "ndf=4", "z_dim=8"];
    let run = tmp.path().join("two");
    let out = train("dcgan", &data, &run, 20, 16, &sets)
        .args(["--nproc", "2", "--checkpoint-every", "2"])
        .output()
        .unwrap();
    ok(&out);
    let log = std::fs::read_to_string(run.join("train.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 20);
    // Batch norm is why it differs from one process: the largest differences sit in layers
    // downstream of a batch-norm layer, and they are far above float tolerance.
    let one = tmp.path().join("one");
    ok(&train("dcgan", &data, &one, 20, 16, &sets).output().unwrap());
    let (d, _) = max_relative_difference(&one, &run);
    assert!(
        d > TOL,
        "batch norm over half batches should change the weights: {d}"
    );
}

fn torchrun() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/torchrun");
    assert!(
        p.exists(),
        "{} is missing: `cargo xtask setup` installs torch (and torchrun) into .venv",
        p.display()
    );
    p
}

#[test]
fn torchrun_launches_genmodels_as_is_and_trains_as_nproc_does() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx(&tmp.path().join("d"), 64, 28);
    let data = format!("idx:{}", tmp.path().join("d").display());
    let sets = ["hidden=32", "z_dim=4"];
    let (a, b) = (tmp.path().join("nproc"), tmp.path().join("torchrun"));
    ok(&train("vae", &data, &a, 10, 16, &sets)
        .args(["--nproc", "2"])
        .output()
        .unwrap());
    let inner = train("vae", &data, &b, 10, 16, &sets);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    let mut c = Command::new(torchrun());
    c.args([
        "--nproc-per-node",
        "2",
        "--master-port",
        &port,
        "--no-python",
    ])
    .arg(inner.get_program())
    .args(inner.get_args())
    .env_remove("WORLD_SIZE")
    .env("OMP_NUM_THREADS", "1");
    let out = c.output().unwrap();
    ok(&out);
    let (d, name) = max_relative_difference(&a, &b);
    assert!(
        d == 0.0,
        "{name} differs by {d}: torchrun and --nproc should train identically"
    );
}

/// The pids of `pid`'s children (Linux /proc).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Starts a long two-process DCGAN run, waits until it has logged `after` steps, applies
/// `signal` to rank 1, and returns the launcher's output and how long it took to stop.
fn fault(run: &Path, data: &str, signal: i32, timeout: &str) -> (Output, Duration) {
    let mut c = train(
        "dcgan",
        data,
        run,
        100_000,
        16,
        &["ngf=4", "ndf=4", "z_dim=8"],
    );
    c.args([
        "--nproc",
        "2",
        "--checkpoint-every",
        "5",
        "--dist-timeout",
        timeout,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let t0 = Instant::now();
    let log = run.join("train.jsonl");
    loop {
        let steps = std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if steps >= 12 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the run did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let kids = children(child.id());
    assert_eq!(kids.len(), 2, "expected two workers, found {kids:?}");
    // SAFETY: kill(2) on a process this test started (through the launcher).
    unsafe {
        libc::kill(kids[1] as libc::pid_t, signal);
    }
    let t1 = Instant::now();
    let out = child.wait_with_output().unwrap();
    (out, t1.elapsed())
}

#[test]
fn a_dead_or_hung_worker_stops_the_run_with_an_error_and_the_checkpoint_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    write_idx(&tmp.path().join("d"), 64, 28);
    let data = format!("idx:{}", tmp.path().join("d").display());
    for (signal, what, timeout) in [
        (libc::SIGKILL, "dies", "60s"),
        (libc::SIGSTOP, "hangs", "3s"),
    ] {
        let run = tmp.path().join(what);
        let (out, took) = fault(&run, &data, signal, timeout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a worker {what}: the run went on\n{err}"
        );
        assert!(
            err.contains("worker 1 of 2 failed") || err.contains("worker 0 of 2 failed"),
            "{err}"
        );
        // The surviving rank names itself and the collective that failed (/proc lists the
        // launcher's children in the order they were started, so that is rank 0 here).
        assert!(
            (err.contains("rank 0 of 2:") || err.contains("rank 1 of 2:"))
                && err.contains("failed"),
            "{err}"
        );
        // Dead: the lost connection is seen at once; hung: after the 3 s timeout.
        assert!(
            took < Duration::from_secs(30),
            "a worker {what}: stopped after {took:?}\n{err}"
        );
        let step = checkpoint_step(&run);
        assert!(step >= 5 && step % 5 == 0, "{step}");
        // One process resumes the two-process run.
        let mut r = bin();
        r.args(["--threads", "1", "resume"]).arg(&run).args([
            "--steps",
            &(step + 3).to_string(),
            "--no-progress",
            "--device",
            "cpu",
        ]);
        ok(&r.output().unwrap());
        assert_eq!(checkpoint_step(&run), step + 3);
    }
}
