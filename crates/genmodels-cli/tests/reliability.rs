//! What the command line promises when things go wrong (docs/reliability.md): a run killed at
//! any moment resumes to the same weights, a full disk keeps the last checkpoint, a folder is
//! trained into by one process at a time, and a divergent run stops naming the step.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bin, checkpoint_step, ok, write_idx};

/// `train dcgan` on tiny data, one thread, a checkpoint every step.
fn tiny_dcgan(data: &Path, run: &Path, steps: u64) -> Command {
    let mut c = bin();
    c.args(["--threads", "1", "train", "dcgan", "--data"])
        .arg(format!("idx:{}", data.display()))
        .arg("--out")
        .arg(run)
        .args(["--steps", &steps.to_string()])
        .args(["--set", "ngf=4", "--set", "ndf=4", "--set", "z_dim=8"])
        .args([
            "--batch-size",
            "8",
            "--sample-count",
            "4",
            "--sample-every",
            "0",
        ])
        .args(["--log-every", "1", "--checkpoint-every", "1"])
        .args(["--no-progress", "--device", "cpu"]);
    c
}

fn resume(run: &Path, steps: u64) -> Command {
    let mut c = bin();
    c.args(["--threads", "1", "resume"]).arg(run).args([
        "--steps",
        &steps.to_string(),
        "--no-progress",
        "--device",
        "cpu",
    ]);
    c
}

/// Every tensor of a checkpoint, by name, as raw bytes.
fn tensors(run: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

fn logged_steps(run: &Path) -> u64 {
    std::fs::read_to_string(run.join("train.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0)
}

/// A small seeded generator for the kill moments (xorshift64*).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n
    }
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights() {
    const TOTAL: u64 = 400;
    const KILLS: usize = 12;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_idx(&data, 64, 8);
    let whole = tmp.path().join("whole");
    ok(&tiny_dcgan(&data, &whole, TOTAL).output().unwrap());

    let run = tmp.path().join("killed");
    ok(&tiny_dcgan(&data, &run, 1).output().unwrap());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut kills, mut mid_run) = (0, 0);
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the test ran too long"
        );
        let before = checkpoint_step(&run);
        let mut child = resume(&run, TOTAL)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if kills >= KILLS {
            assert!(child.wait().unwrap().success(), "the final resume failed");
            break;
        }
        // Kill once the run has logged a random number of new steps (so the kill lands in a
        // step or a checkpoint write), or, one time in four, at a random moment of start-up
        // (or at that step count, if start-up was over first: on a fast machine an unbounded
        // wait trained hundreds of steps per resume and the run finished before its 12 kills).
        let during_startup = rng.below(4) == 0;
        let target = before + 1 + rng.below(15);
        let deadline = Instant::now() + Duration::from_millis(200 + rng.below(800));
        let mut finished = false;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "a resume failed on its own: {st}");
                finished = true;
                break;
            }
            if during_startup && Instant::now() >= deadline {
                break;
            }
            if logged_steps(&run) >= target {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if finished {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let after = checkpoint_step(&run); // always a whole, loadable checkpoint
        assert!(
            after >= before,
            "the checkpoint went back from {before} to {after}"
        );
        if after > before {
            mid_run += 1;
        }
    }
    assert!(kills >= KILLS, "only {kills} kills before the run finished");
    assert!(
        mid_run >= 5,
        "only {mid_run} kills landed after training had started"
    );
    assert_eq!(checkpoint_step(&run), TOTAL);
    let (a, b) = (tensors(&whole), tensors(&run));
    assert_eq!(a.len(), b.len());
    for ((na, da), (nb, db)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            da == db,
            "{na} differs from the uninterrupted run after {kills} kills"
        );
    }
    eprintln!("{kills} SIGKILLs ({mid_run} after training started); final weights bit-identical");
}

#[test]
fn a_full_disk_keeps_the_last_checkpoint_and_stops_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_idx(&data, 32, 8);
    let run = tmp.path().join("run");
    ok(&tiny_dcgan(&data, &run, 2).output().unwrap());
    let size = std::fs::metadata(run.join("checkpoint.safetensors"))
        .unwrap()
        .len();
    let before = tensors(&run);
    // A file size limit below the checkpoint's size: its write fails as on a full disk.
    let limit = size / 2;
    let mut c = resume(&run, 6);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("previous file"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(checkpoint_step(&run), 2);
    assert_eq!(tensors(&run), before, "the previous checkpoint changed");
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // With room again the run continues.
    ok(&resume(&run, 4).output().unwrap());
    assert_eq!(checkpoint_step(&run), 4);
}

#[test]
fn a_second_process_is_refused_and_a_killed_one_leaves_no_stale_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_idx(&data, 32, 8);
    let run = tmp.path().join("run");
    ok(&tiny_dcgan(&data, &run, 1).output().unwrap());
    let mut first = resume(&run, 1_000_000)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while logged_steps(&run) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut train_again = tiny_dcgan(&data, &run, 5);
    train_again.arg("--force");
    for mut second in [resume(&run, 20), train_again] {
        let o = second.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("in use by another genmodels process")
                && err.contains(&format!("pid {}", first.id())),
            "{err}"
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let step = checkpoint_step(&run);
    ok(&resume(&run, step + 2).output().unwrap());
}

#[test]
fn a_divergent_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_idx(&data, 32, 8);
    let text = tmp.path().join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(200),
    )
    .unwrap();
    let d = format!("idx:{}", data.display());
    let t = format!("text:{}", text.display());
    // One model of each family, with a learning rate of 1e6.
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "dcgan",
            &d,
            &["--set", "ngf=4", "--set", "ndf=4", "--set", "z_dim=8"],
        ),
        ("vae", &d, &["--set", "hidden=16", "--set", "z_dim=4"]),
        (
            "gpt-mini",
            &t,
            &[
                "--set",
                "n_layer=1",
                "--set",
                "n_embd=16",
                "--set",
                "n_head=2",
                "--set",
                "block_size=16",
            ],
        ),
    ];
    for (model, data, extra) in cases {
        let run = tmp.path().join(model);
        let o = bin()
            .args(["--threads", "1", "train", model, "--data", data, "--out"])
            .arg(&run)
            .args(["--steps", "2000", "--batch-size", "8", "--set", "lr=1e6"])
            .args(extra)
            .args([
                "--checkpoint-every",
                "1",
                "--sample-every",
                "0",
                "--sample-count",
                "4",
            ])
            .args(["--eval-every", "0", "--no-progress", "--device", "cpu"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{model}: {err}");
        assert!(
            (err.contains("not finite") || err.contains("diverged")) && err.contains("step "),
            "{model}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{model}: {err}");
        let failed: u64 = err
            .split("step ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{model}: no step in {err}"));
        if failed > 1 {
            let kept = checkpoint_step(&run);
            assert!(kept < failed, "{model}: kept {kept}, failed at {failed}");
            assert!(
                err.contains(&format!("checkpoint, of step {kept}, is kept")),
                "{model}: {err}"
            );
            // The kept checkpoint loads (its weights are finite, though one step of a rate
            // of 1e6 may already give NaN outputs): sampling works or fails in one line.
            let out = tmp.path().join(format!("{model}-samples"));
            let o = bin()
                .args(["sample"])
                .arg(&run)
                .args(["-n", "2", "--out"])
                .arg(&out)
                .args(["--device", "cpu"])
                .output()
                .unwrap();
            let serr = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success()
                    || (o.status.code() == Some(2) && !serr.contains("internal error")),
                "{model}: {serr}"
            );
        }
    }
}
