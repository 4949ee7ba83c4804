//! Benchmarks live in `benches/benches/`; this library holds what they share: the Python worker
//! that runs the PyTorch counterparts (`benches/python/*.py --serve` with the project's .venv, at
//! our thread count), the per-round comparison, the conditions of the run (threads, versions,
//! load) and the fp32 GEMM peak, and the lines that `cargo xtask bench` collects.
//!
//! # How a comparison runs ([`compare`])
//!
//! 1. Python builds every variant of the workload (the reference, then what a speed-minded
//!    PyTorch user adds: fused optimisers, `torch.compile`), runs each once (compiling) and
//!    counts the FLOPs of the variant that does our work; ours runs once.
//! 2. For each of [`rounds`] rounds (7; 3 with `GENMODELS_BENCH_QUICK`), ours (median of
//!    `repeats` calls) and every Python variant (median of `repeats` calls each) are timed back
//!    to back, ours first in even rounds and last in odd ones; the round's ratio
//!    Python / ours is recorded.
//! 3. The verdict uses the spread of the round ratios: a target counts as met only when the
//!    lower quartile of the ratios clears it.
//!
//! Each result is printed for people (`== ...` and `   ... ->` lines) and as one
//! `@@row {json}` line per reference for `cargo xtask bench`; `@@conditions` and `@@peak` lines
//! carry the run's conditions.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Whether `GENMODELS_BENCH_QUICK` is set (`cargo xtask bench --quick`).
pub fn quick() -> bool {
    std::env::var_os("GENMODELS_BENCH_QUICK").is_some()
}

/// Median wall time of `repeats` calls of `f`, after one warm-up call.
pub fn median_secs(repeats: usize, mut f: impl FnMut()) -> f64 {
    f();
    time_median(repeats, &mut f)
}

/// Median wall time of `repeats` calls of `f` (no warm-up).
fn time_median(repeats: usize, f: &mut impl FnMut()) -> f64 {
    let ts: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    quantile(&ts, 0.5)
}

/// Rounds of [`compare`]: `$GENMODELS_BENCH_ROUNDS`, else 3 with `GENMODELS_BENCH_QUICK` and 7
/// otherwise.
pub fn rounds() -> usize {
    std::env::var("GENMODELS_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(if quick() { 3 } else { 7 })
}

/// The `q`-quantile of `v` by linear interpolation between order statistics (numpy's default,
/// R's type 7); NaN for an empty slice.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let h = (s.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    s[lo] + (h - lo as f64) * (s[hi] - s[lo])
}

/// Median, quartiles and range of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Spread {
        Spread {
            median: quantile(v, 0.5),
            q1: quantile(v, 0.25),
            q3: quantile(v, 0.75),
            min: quantile(v, 0.0),
            max: quantile(v, 1.0),
        }
    }
}

/// 1-, 5- and 15-minute load averages (`/proc/loadavg`).
pub fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The load average (1 minute) above which the machine is reported as not idle.
pub const IDLE_LOAD: f64 = 0.5;

/// The libtorch this process runs: the folder of the loaded `libtorch_cpu.so` and the version
/// in the `version.py` beside it (a Python torch package's layout), if any.
fn libtorch() -> (Option<String>, Option<String>) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let Some(lib) = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(PathBuf::from)
    else {
        return (None, None);
    };
    let dir = lib.parent().and_then(|d| d.parent()).map(PathBuf::from);
    let version = dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join("version.py")).ok())
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("__version__ = "))
                .map(|v| v.trim().trim_matches('\'').trim_matches('"').to_string())
        });
    (
        dir.map(|d| d.canonicalize().unwrap_or(d).to_string_lossy().into_owned()),
        version,
    )
}

/// Our side's conditions: libtorch version and path, intra-/inter-op threads, the thread
/// variables (OpenMP's wait policy among them: on a shared machine libgomp's default
/// spin-waiting makes small-op workloads such as batch-1 generation many times slower), CPU
/// count and the load average now.
pub fn conditions() -> Value {
    let (path, version) = libtorch();
    let env = |k: &str| std::env::var(k).ok();
    json!({
        "libtorch": version,
        "libtorch_path": path,
        "intra_op_threads": tch::get_num_threads(),
        "inter_op_threads": tch::get_num_interop_threads(),
        "OMP_NUM_THREADS": env("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": env("MKL_NUM_THREADS"),
        "OMP_WAIT_POLICY": env("OMP_WAIT_POLICY"),
        "GOMP_SPINCOUNT": env("GOMP_SPINCOUNT"),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "load_average": load_average(),
    })
}

/// Prints our conditions and Python's (`@@conditions {...}`) and warns when the machine is not
/// idle or the two sides' thread counts differ.
pub fn print_conditions(bench: &str, py: Option<&Python>) {
    let ours = conditions();
    let theirs = py.map(|p| p.info.clone()).unwrap_or(Value::Null);
    println!(
        "\n== conditions ({bench}): libtorch {} ({} intra-op / {} inter-op threads; OMP_NUM_THREADS={}, MKL_NUM_THREADS={}, OMP_WAIT_POLICY={}); Python torch {}, diffusers {}, transformers {} ({} intra-op threads); load average {}",
        ours["libtorch"].as_str().unwrap_or("?"),
        ours["intra_op_threads"],
        ours["inter_op_threads"],
        ours["OMP_NUM_THREADS"].as_str().unwrap_or("unset"),
        ours["MKL_NUM_THREADS"].as_str().unwrap_or("unset"),
        ours["OMP_WAIT_POLICY"].as_str().unwrap_or("unset"),
        theirs["torch"].as_str().unwrap_or("?"),
        theirs["diffusers"].as_str().unwrap_or("-"),
        theirs["transformers"].as_str().unwrap_or("-"),
        theirs["intra_op_threads"],
        load_average()
            .map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
            .unwrap_or_else(|| "?".into()),
    );
    if let Some(l) = load_average().filter(|l| l[0] > IDLE_LOAD) {
        println!(
            "   warning: the machine is not idle (1-minute load {:.2} > {IDLE_LOAD}): times and ratios carry the other work's noise",
            l[0]
        );
    }
    if !theirs.is_null() && theirs["intra_op_threads"] != ours["intra_op_threads"] {
        println!("   warning: the two sides run on different thread counts");
    }
    println!(
        "@@conditions {}",
        json!({"bench": bench, "ours": ours, "python": theirs})
    );
}

/// This machine's fp32 GEMM rate in GFLOP/s: the best of `repeats` `n x n` by `n x n` products
/// through libtorch (MKL's sgemm here) at the current thread count, after a warm-up. Printed as
/// `@@peak {...}`.
pub fn sgemm_peak(n: i64, repeats: usize) -> f64 {
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let c = Tensor::zeros([n, n], (Kind::Float, Device::Cpu));
    let run = || {
        let _ = a.matmul_out(&c, &b);
    };
    run();
    let best = (0..repeats.max(1))
        .map(|_| {
            let t0 = Instant::now();
            run();
            t0.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let gflops = 2.0 * (n as f64).powi(3) / best / 1e9;
    println!(
        "\n== fp32 GEMM peak: {gflops:.1} GFLOP/s ({n}x{n} sgemm through libtorch, best of {repeats}, {} threads)",
        tch::get_num_threads()
    );
    println!(
        "@@peak {}",
        json!({"gflops": gflops, "n": n, "threads": tch::get_num_threads()})
    );
    gflops
}

/// The Python side: `benches/python/SCRIPT --serve THREADS` with the project's .venv, kept
/// running for the whole bench so that each round only times (no start-up, no rebuild).
pub struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What the worker reported at start: versions, threads, compiler.
    pub info: Value,
}

impl Python {
    /// Starts the worker at our intra-op thread count; `None` (with a message) when it cannot.
    pub fn start(script: &str, env: &[(&str, PathBuf)]) -> Option<Python> {
        let py = root().join(".venv/bin/python");
        let mut cmd = Command::new(&py);
        cmd.arg(root().join("benches/python").join(script))
            .args(["--serve", &tch::get_num_threads().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "python {script} could not start ({e}); run `cargo xtask setup` ({} missing?)",
                    py.display()
                );
                return None;
            }
        };
        let stdin = child.stdin.take()?;
        let stdout = BufReader::new(child.stdout.take()?);
        let mut p = Python {
            child,
            stdin,
            stdout,
            info: Value::Null,
        };
        match p.read() {
            Ok(v) if v["ready"] == true => {
                p.info = v["info"].clone();
                Some(p)
            }
            Ok(v) => {
                eprintln!("python {script}: unexpected first answer {v}");
                None
            }
            Err(e) => {
                eprintln!("python {script}: {e}");
                None
            }
        }
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .stdout
                .read_line(&mut line)
                .map_err(|e| format!("reading the worker: {e}"))?;
            if n == 0 {
                return Err("the Python worker exited (its error is above)".into());
            }
            if let Some(j) = line.trim_end().strip_prefix("@@ ") {
                return serde_json::from_str(j).map_err(|e| format!("bad answer {j:?}: {e}"));
            }
            eprint!("python: {line}");
        }
    }

    /// Sends one request and returns the answer (an `{"error"}` answer is an `Err`).
    pub fn call(&mut self, req: Value) -> Result<Value, String> {
        writeln!(self.stdin, "{req}")
            .and_then(|_| self.stdin.flush())
            .map_err(|e| format!("writing to the worker: {e}"))?;
        let v = self.read()?;
        match v.get("error").and_then(Value::as_str) {
            Some(e) => Err(e.to_string()),
            None => Ok(v),
        }
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let _ = self.stdin.flush();
        let t0 = Instant::now();
        while t0.elapsed().as_secs() < 5 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bench binary's Python worker, started on first use: `None` when it could not start.
static WORKER: std::sync::Mutex<Option<Option<Python>>> = std::sync::Mutex::new(None);

/// Runs `f` with the bench binary's Python worker (`benches/python/SCRIPT --serve`), starting
/// it on first use; at that point the conditions of both sides and the fp32 GEMM peak are
/// printed.
pub fn with_python<R>(
    script: &str,
    env: &[(&str, PathBuf)],
    f: impl FnOnce(Option<&mut Python>) -> R,
) -> R {
    let mut guard = WORKER.lock().unwrap_or_else(|e| e.into_inner());
    let slot = guard.get_or_insert_with(|| {
        let p = Python::start(script, env);
        print_conditions(script, p.as_ref());
        sgemm_peak(PEAK_N, PEAK_REPEATS);
        p
    });
    f(slot.as_mut())
}

/// Side of the square sgemm behind the peak.
pub const PEAK_N: i64 = 2048;

/// Products timed for the peak (the best one counts).
pub const PEAK_REPEATS: usize = 10;

/// The end of a bench binary: the GEMM peak again (the summary keeps the higher of the two),
/// the load average now, and the worker stopped.
pub fn finish(bench: &str) {
    sgemm_peak(PEAK_N, PEAK_REPEATS);
    if let Some(l) = load_average() {
        println!(
            "@@conditions {}",
            json!({"bench": bench, "load_average_after": l})
        );
    }
    let mut guard = WORKER.lock().unwrap_or_else(|e| e.into_inner());
    *guard = None;
}

/// Whether a workload runs: `$GENMODELS_BENCH_ONLY` is a comma-separated list of words, one
/// of which `key` must contain (all run when unset).
pub fn selected(key: &str) -> bool {
    match std::env::var("GENMODELS_BENCH_ONLY") {
        Ok(s) if !s.trim().is_empty() => s
            .split(',')
            .map(str::trim)
            .any(|w| !w.is_empty() && key.contains(w)),
        _ => true,
    }
}

/// Whether criterion's own timing runs for a workload after the comparison (which is what the
/// summary uses): always for the light ones, for `heavy` ones (seconds per call) only with
/// `GENMODELS_BENCH_CRITERION` set.
pub fn criterion_timing(heavy: bool) -> bool {
    !heavy || std::env::var_os("GENMODELS_BENCH_CRITERION").is_some()
}

/// What to compare: the workload's name, the Python workload (`what` and its `args`), calls per
/// round and per side, and the targets (reference name, least ratio Python / ours).
pub struct Spec<'a> {
    pub name: &'a str,
    pub what: &'a str,
    pub args: Value,
    pub repeats: usize,
    pub targets: &'a [(&'a str, f64)],
}

/// One Python reference's times over the rounds.
#[derive(Debug, Clone)]
pub struct RefTimes {
    pub name: String,
    pub times: Vec<f64>,
}

/// The result of [`compare`]: our times per round and each reference's, the Python setup
/// answer (FLOPs, skipped variants, parameter counts).
#[derive(Debug, Clone)]
pub struct Comparison {
    pub ours: Vec<f64>,
    pub refs: Vec<RefTimes>,
    pub setup: Value,
}

impl Comparison {
    /// The per-round ratios Python / ours of one reference (rounds where either side is
    /// missing are left out).
    pub fn ratios(&self, r: &RefTimes) -> Vec<f64> {
        self.ours
            .iter()
            .zip(&r.times)
            .filter(|(o, t)| o.is_finite() && t.is_finite())
            .map(|(o, t)| t / o)
            .collect()
    }

    /// The FLOPs of one call, as counted on the Python variant that does our work.
    pub fn flops(&self) -> Option<f64> {
        self.setup["flops"].as_f64()
    }
}

/// Times ours against every Python variant of `spec.what`, round by round (see the module
/// documentation), prints the result and returns it. Without a worker, or when Python fails,
/// ours is still timed and the references are missing.
pub fn compare(py: Option<&mut Python>, spec: &Spec, mut ours: impl FnMut()) -> Comparison {
    let t0 = Instant::now();
    let mut py = py;
    let mut setup = Value::Null;
    if let Some(p) = py.as_deref_mut() {
        match p.call(json!({"cmd": "setup", "what": spec.what, "args": spec.args})) {
            Ok(v) => setup = v,
            Err(e) => eprintln!("python {}: {e}", spec.what),
        }
    }
    let names: Vec<String> = setup["variants"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut refs: Vec<RefTimes> = names
        .iter()
        .map(|n| RefTimes {
            name: n.clone(),
            times: Vec::new(),
        })
        .collect();
    ours(); // warm-up (Python warmed up in setup)
    let mut ours_t = Vec::new();
    let mut time_python = |round: usize, refs: &mut Vec<RefTimes>| {
        let answer = match py.as_deref_mut() {
            Some(p) if !refs.is_empty() => p
                .call(json!({"cmd": "time", "what": spec.what, "repeats": spec.repeats, "round": round}))
                .map_err(|e| eprintln!("python {} round {round}: {e}", spec.what))
                .ok(),
            _ => None,
        };
        for r in refs.iter_mut() {
            let t = answer
                .as_ref()
                .and_then(|a| a["times"][&r.name].as_f64())
                .unwrap_or(f64::NAN);
            r.times.push(t);
        }
    };
    for round in 0..rounds() {
        if round % 2 == 0 {
            ours_t.push(time_median(spec.repeats, &mut ours));
            time_python(round, &mut refs);
        } else {
            time_python(round, &mut refs);
            ours_t.push(time_median(spec.repeats, &mut ours));
        }
    }
    if let Some(p) = py {
        let _ = p.call(json!({"cmd": "drop", "what": spec.what}));
    }
    let c = Comparison {
        ours: ours_t,
        refs,
        setup,
    };
    report(spec, &c, t0.elapsed().as_secs_f64());
    c
}

/// Prints a comparison: a line for people per reference, and a `@@row` line each for xtask.
fn report(spec: &Spec, c: &Comparison, wall: f64) {
    let o = Spread::of(&c.ours);
    println!(
        "\n== {}: ours {:.4} s (median of {} rounds x {} calls; rounds {:.4}-{:.4} s; {wall:.0} s in all)",
        spec.name,
        o.median,
        c.ours.len(),
        spec.repeats,
        o.min,
        o.max
    );
    if let Some(f) = c.flops() {
        println!(
            "   work: {:.3} GFLOP per call (torch.utils.flop_counter on \"{}\"); ours {:.1} GFLOP/s",
            f / 1e9,
            c.setup["flops_of"].as_str().unwrap_or("?"),
            f / o.median / 1e9
        );
    }
    if let Some(skipped) = c.setup["skipped"].as_object() {
        for (k, why) in skipped {
            println!("   {k}: skipped ({})", why.as_str().unwrap_or(""));
        }
    }
    for r in &c.refs {
        let t = Spread::of(&r.times);
        let ratios = c.ratios(r);
        let q = Spread::of(&ratios);
        let target = spec
            .targets
            .iter()
            .find(|(n, _)| *n == r.name)
            .map(|&(_, t)| t);
        let verdict = match target {
            Some(x) if q.q1 >= x => format!("; target >= {x}x: met (lower quartile {:.2}x)", q.q1),
            Some(x) => format!("; target >= {x}x: not met (lower quartile {:.2}x)", q.q1),
            None => String::new(),
        };
        println!(
            "   {}: {:.4} s  ->  ours is {:.2}x faster (per round: median {:.2}x, IQR {:.2}-{:.2}x, range {:.2}-{:.2}x{verdict})",
            r.name, t.median, q.median, q.median, q.q1, q.q3, q.min, q.max
        );
        println!(
            "@@row {}",
            json!({
                "workload": spec.name,
                "reference": r.name,
                "repeats": spec.repeats,
                "ours_s": c.ours,
                "ref_s": r.times,
                "ratios": ratios,
                "target": target,
                "flops": c.flops(),
                "flops_of": c.setup["flops_of"],
                "setup_s": c.setup["setup_s"][&r.name],
            })
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [3.0, 1.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.25), 1.75);
        assert_eq!(quantile(&v, 0.75), 3.25);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!(quantile(&[], 0.5).is_nan());
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!((s.q1, s.median, s.q3), (2.5, 4.0, 5.5));
    }
}
