//! Benchmarks live in `benches/benches/`; this library holds what they share: timing by
//! median, running the Python counterpart (`benches/python/*.py` with the project's .venv, at
//! the same thread count) and printing the side-by-side lines that `cargo xtask bench` collects.

use std::path::PathBuf;
use std::time::Instant;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Median wall time of `repeats` calls of `f`, after one warm-up call.
pub fn median_secs(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut ts: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(|a, b| a.total_cmp(b));
    ts[ts.len() / 2]
}

/// Runs `benches/python/SCRIPT WHAT REPEATS THREADS EXTRA...`; its last stdout line is a JSON
/// object `{name: median_seconds}`. Failures are reported and give an empty list.
pub fn python(
    script: &str,
    what: &str,
    repeats: usize,
    extra: &[&str],
    env: &[(&str, PathBuf)],
) -> Vec<(String, f64)> {
    let py = root().join(".venv/bin/python");
    let mut cmd = std::process::Command::new(py);
    cmd.arg(root().join("benches/python").join(script))
        .args([
            what,
            &repeats.to_string(),
            &tch::get_num_threads().to_string(),
        ])
        .args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(o) if o.status.success() => {
            let line = String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .unwrap_or("{}")
                .to_string();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            v.as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
                        .collect()
                })
                .unwrap_or_default()
        }
        Ok(o) => {
            eprintln!(
                "python {script} {what} failed: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            vec![]
        }
        Err(e) => {
            eprintln!("python {script} could not start ({e}); run `cargo xtask setup`");
            vec![]
        }
    }
}

/// Prints `== NAME: ours T s (median)` and one line per Python counterpart with the ratio
/// (Python time / our time: above 1 means we are faster).
pub fn report(name: &str, ours: f64, theirs: &[(String, f64)]) {
    println!("\n== {name}: ours {ours:.4} s (median)");
    for (k, v) in theirs {
        println!("   {k}: {v:.4} s  ->  ours is {:.2}x faster", v / ours);
    }
}

/// Rounds of [`side_by_side`]: `$GENMODELS_BENCH_ROUNDS`, else 2 with `GENMODELS_BENCH_QUICK`
/// and 3 otherwise.
pub fn rounds() -> usize {
    std::env::var("GENMODELS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(if std::env::var_os("GENMODELS_BENCH_QUICK").is_some() {
            2
        } else {
            3
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Alternates `rounds` times between timing ours (median of `repeats` calls) and running the
/// Python counterpart, so both sides see the same machine weather; returns the median over
/// rounds of each side (and of each Python entry by name).
pub fn side_by_side(
    rounds: usize,
    repeats: usize,
    mut ours: impl FnMut(),
    mut theirs: impl FnMut() -> Vec<(String, f64)>,
) -> (f64, Vec<(String, f64)>) {
    let mut ours_t = Vec::new();
    let mut theirs_t: Vec<(String, Vec<f64>)> = Vec::new();
    for _ in 0..rounds.max(1) {
        ours_t.push(median_secs(repeats, &mut ours));
        for (k, v) in theirs() {
            match theirs_t.iter_mut().find(|(n, _)| *n == k) {
                Some((_, vs)) => vs.push(v),
                None => theirs_t.push((k, vec![v])),
            }
        }
    }
    (
        median(ours_t),
        theirs_t.into_iter().map(|(k, v)| (k, median(v))).collect(),
    )
}
