//! Data-parallel scaling on this machine: seconds per training step with the same global batch
//! in one process and in two (one thread each, c10d Gloo on loopback), ours beside PyTorch in
//! the same run (benches/python/ddp_bench.py: one process, and torchrun with
//! DistributedDataParallel, fused Adam; the strongest eager variant, see that file).
//!
//! - DCGAN (the `dcgan` default at 28x28), global batch 64;
//! - GPT in nanoGPT's CPU configuration (4 x 4 x 128, context 64), global batch 12.
//!
//! Our workers are this binary started again with the torchrun environment (RANK, WORLD_SIZE,
//! MASTER_ADDR, MASTER_PORT): each takes its rows of the global batch and steps exactly as the
//! trainer does in a data-parallel run (buffers from rank 0, the model's step with gradients
//! averaged by every Adam, the ranks agreeing on the losses), timed on rank 0 between two
//! barriers after the warm-up. Each of `rounds()` rounds times ours 1 and 2 processes and
//! PyTorch 1 and 2 processes back to back (the order alternates), and prints, per workload:
//! `{w}_1proc` and `{w}_2proc` (PyTorch / ours, time per step), and `{w}_2proc_over_1proc`,
//! whose "times" are each side's two-process time over its one-process time in that round, so
//! that its ratio is our scaling efficiency over PyTorch's (above 1: ours scales better).
//!
//! `cargo bench -p genmodels-benches --bench distributed` (`cargo xtask bench --only
//! distributed`); `GENMODELS_BENCH_ONLY=dcgan` picks a workload.

use genmodels_benches::{finish, print_conditions, quick, root, rounds, selected, Spread};
use genmodels_core::data::Batch;
use genmodels_core::dist;
use genmodels_core::model::Model;
use genmodels_core::optim::StepCtx;
use genmodels_gan::dcgan::{Dcgan, DcganConfig};
use genmodels_transformer::gpt::{GptConfig, GptModel};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

const WORKER: &str = "GENMODELS_DDP_BENCH_WORKER";

struct Workload {
    name: &'static str,
    global_batch: i64,
    steps: usize,
    warmup: usize,
}

fn workloads() -> Vec<Workload> {
    let q = quick();
    vec![
        Workload {
            name: "dcgan",
            global_batch: 64,
            steps: if q { 10 } else { 20 },
            warmup: 3,
        },
        Workload {
            name: "gpt",
            global_batch: 12,
            steps: if q { 20 } else { 40 },
            warmup: 3,
        },
    ]
}

fn model(name: &str) -> (Box<dyn Model>, Batch, StepCtx) {
    tch::manual_seed(0);
    match name {
        "dcgan" => {
            let m = Dcgan::new(DcganConfig::default(), Device::Cpu).expect("dcgan");
            let x = Tensor::rand([64, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
            (Box::new(m), Batch { x, y: None }, StepCtx::default())
        }
        _ => {
            let cfg = GptConfig {
                vocab_size: 96,
                ..GptConfig::cpu_mini()
            };
            let m = GptModel::new("gpt-mini", cfg, Device::Cpu).expect("gpt");
            let x = Tensor::randint(96, [12, 64], (Kind::Int64, Device::Cpu));
            let y = Tensor::randint(96, [12, 64], (Kind::Int64, Device::Cpu));
            let ctx = StepCtx {
                grad_clip: Some(1.0),
                ..Default::default()
            };
            (Box::new(m), Batch { x, y: Some(y) }, ctx)
        }
    }
}

/// One worker (this binary started with the torchrun variables): prints `@@time S` on rank 0.
fn worker(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let (name, steps, warmup): (&str, usize, usize) = (
        parts[0],
        parts[1].parse().expect("steps"),
        parts[2].parse().expect("warmup"),
    );
    tch::set_num_threads(1);
    dist::init_from_env(Duration::from_secs(120)).expect("join");
    let (mut m, batch, ctx) = model(name);
    dist::sync_start(m.as_mut(), None).expect("sync");
    let mut step = |k: usize| {
        genmodels_core::rng::begin_step(k as u64);
        dist::sync_buffers(m.as_ref()).expect("buffers");
        let b = dist::shard(Batch {
            x: batch.x.shallow_clone(),
            y: batch.y.as_ref().map(|y| y.shallow_clone()),
        })
        .expect("shard");
        let mut losses = m.train_step(&b, &ctx).expect("step");
        genmodels_core::rng::end_step();
        dist::agree_step(&mut losses, [false, false]).expect("agree");
    };
    for k in 0..warmup {
        step(k);
    }
    dist::barrier().expect("barrier");
    let t0 = Instant::now();
    for k in 0..steps {
        step(warmup + k);
    }
    dist::barrier().expect("barrier");
    if dist::is_main() {
        println!("@@time {}", t0.elapsed().as_secs_f64() / steps as f64);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Seconds per step from the `@@time` / `s_per_step` line of rank 0's output.
fn parse_time(out: &std::process::Output) -> f64 {
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("@@time ") {
            return t.trim().parse().unwrap_or(f64::NAN);
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(t) = v["s_per_step"].as_f64() {
                return t;
            }
        }
    }
    eprintln!(
        "no time in the output (status {}):\n{}\n{}",
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    f64::NAN
}

fn ours(w: &Workload, procs: usize) -> f64 {
    let exe = std::env::current_exe().expect("exe");
    let port = free_port();
    let kids: Vec<_> = (0..procs)
        .map(|rank| {
            Command::new(&exe)
                .env(WORKER, format!("{}:{}:{}", w.name, w.steps, w.warmup))
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", procs.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("OMP_NUM_THREADS", "1")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("worker")
        })
        .collect();
    let outs: Vec<_> = kids
        .into_iter()
        .map(|k| k.wait_with_output().expect("worker output"))
        .collect();
    parse_time(&outs[0])
}

fn python(w: &Workload, procs: usize) -> f64 {
    let venv = root().join(".venv/bin");
    let script = root().join("benches/python/ddp_bench.py");
    let args = [
        w.name.to_string(),
        w.steps.to_string(),
        w.warmup.to_string(),
        w.global_batch.to_string(),
    ];
    let mut c = if procs == 1 {
        let mut c = Command::new(venv.join("python"));
        c.arg(&script);
        c
    } else {
        let mut c = Command::new(venv.join("torchrun"));
        c.args([
            "--nproc-per-node",
            &procs.to_string(),
            "--master-port",
            &free_port().to_string(),
        ])
        .arg(&script);
        c
    };
    c.args(args).env("OMP_NUM_THREADS", "1");
    match c.output() {
        Ok(o) => parse_time(&o),
        Err(e) => {
            eprintln!("{}: {e} (run `cargo xtask setup`)", venv.display());
            f64::NAN
        }
    }
}

fn row(workload: &str, reference: &str, ours: &[f64], theirs: &[f64]) {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(theirs)
        .filter(|(o, t)| o.is_finite() && t.is_finite())
        .map(|(o, t)| t / o)
        .collect();
    let q = Spread::of(&ratios);
    println!(
        "   {workload} vs {reference}: ours {:.4}, PyTorch {:.4} -> {:.2}x (per round: IQR {:.2}-{:.2}x, range {:.2}-{:.2}x)",
        Spread::of(ours).median,
        Spread::of(theirs).median,
        q.median,
        q.q1,
        q.q3,
        q.min,
        q.max
    );
    println!(
        "@@row {}",
        json!({
            "workload": workload,
            "reference": reference,
            "repeats": 1,
            "ours_s": ours,
            "ref_s": theirs,
            "ratios": ratios,
            "target": null,
        })
    );
}

fn main() {
    if let Ok(spec) = std::env::var(WORKER) {
        worker(&spec);
        return;
    }
    tch::set_num_threads(1);
    print_conditions("distributed", None);
    for w in workloads() {
        if !selected(w.name) {
            continue;
        }
        let t0 = Instant::now();
        let (mut o1, mut o2, mut p1, mut p2) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds() {
            if round % 2 == 0 {
                o1.push(ours(&w, 1));
                o2.push(ours(&w, 2));
                p1.push(python(&w, 1));
                p2.push(python(&w, 2));
            } else {
                p2.push(python(&w, 2));
                p1.push(python(&w, 1));
                o2.push(ours(&w, 2));
                o1.push(ours(&w, 1));
            }
            let r = o1.len() - 1;
            println!(
                "   {} round {round}: ours {:.4} / {:.4} s per step (1 / 2 processes, efficiency {:.2}), PyTorch {:.4} / {:.4} (efficiency {:.2})",
                w.name,
                o1[r],
                o2[r],
                o1[r] / (2.0 * o2[r]),
                p1[r],
                p2[r],
                p1[r] / (2.0 * p2[r])
            );
        }
        println!(
            "\n== {} data-parallel, global batch {}, {} timed steps per run ({:.0} s in all)",
            w.name,
            w.global_batch,
            w.steps,
            t0.elapsed().as_secs_f64()
        );
        let rel = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| y / x).collect::<Vec<_>>();
        row(
            &format!("{}_1proc", w.name),
            "pytorch 1 process (eager, fused Adam)",
            &o1,
            &p1,
        );
        row(
            &format!("{}_2proc", w.name),
            "pytorch DDP 2 processes (gloo, eager, fused Adam)",
            &o2,
            &p2,
        );
        row(
            &format!("{}_2proc_over_1proc", w.name),
            "pytorch DDP scaling (time 2 procs / 1 proc)",
            &rel(&o1, &o2),
            &rel(&p1, &p2),
        );
    }
    finish("distributed");
}
