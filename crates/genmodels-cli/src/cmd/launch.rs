//! `genmodels train --nproc N` (and `resume --nproc N`): starts N local workers of this same
//! command with the environment torchrun gives its workers (RANK, LOCAL_RANK, WORLD_SIZE,
//! LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, OMP_NUM_THREADS=1 unless set), for users
//! without Python. As torchrun does, the first worker to fail stops the others.

use anyhow::{bail, Context, Result};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The command line without `--nproc N` / `--nproc=N`.
fn worker_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
            continue;
        }
        if a == "--nproc" {
            skip = true;
            continue;
        }
        if a.starts_with("--nproc=") {
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// A port the loopback interface has free now (the OS picks it; rank 0 binds it moments later).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free local port")?;
    Ok(l.local_addr()?.port())
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "an unknown status".into(),
    }
}

fn terminate(children: &mut [(usize, Child)], grace: Duration) {
    for (_, c) in children.iter_mut() {
        if let Ok(None) = c.try_wait() {
            // SAFETY: kill(2) on a child this process started and has not reaped.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let t0 = Instant::now();
    while t0.elapsed() < grace {
        if children
            .iter_mut()
            .all(|(_, c)| matches!(c.try_wait(), Ok(Some(_))))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Runs `n` workers and waits for them; an error names the first worker that failed.
pub fn launch(n: usize, dist_timeout_s: f64) -> Result<()> {
    if n == 0 {
        bail!("--nproc 0: expected at least 1 process");
    }
    if n > 256 {
        bail!("--nproc {n}: expected at most 256 local processes");
    }
    if std::env::var_os("WORLD_SIZE").is_some() {
        bail!("--nproc inside a worker that torchrun already started (WORLD_SIZE is set): use one launcher, not both");
    }
    let exe = std::env::current_exe().context("locating the genmodels binary")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = worker_args(&args);
    let port = free_port()?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for rank in 0..n {
        let mut cmd = Command::new(&exe);
        cmd.args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
        if std::env::var_os("OMP_NUM_THREADS").is_none() && n > 1 {
            cmd.env("OMP_NUM_THREADS", "1");
        }
        match cmd.spawn() {
            Ok(c) => children.push((rank, c)),
            Err(e) => {
                terminate(&mut children, Duration::from_secs(5));
                bail!("starting worker {rank} ({}): {e}", exe.display());
            }
        }
    }
    let mut left = n;
    while left > 0 {
        let mut failed = None;
        left = 0;
        for (rank, c) in children.iter_mut() {
            match c.try_wait() {
                Ok(Some(st)) if !st.success() => {
                    failed.get_or_insert((*rank, st));
                }
                Ok(Some(_)) => {}
                _ => left += 1,
            }
        }
        if let Some((rank, st)) = failed {
            // The others notice the lost peer at their next collective; give them the
            // collective timeout to say so and exit, then stop them.
            let grace = Duration::from_secs_f64(dist_timeout_s.clamp(1.0, 60.0));
            terminate(&mut children, grace);
            bail!(
                "worker {rank} of {n} failed ({}); the other workers were stopped (the last checkpoint on disk is kept; `genmodels resume` continues)",
                describe(st)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_get_the_command_line_without_nproc() {
        let a: Vec<String> = [
            "train",
            "vae",
            "--nproc",
            "2",
            "--data",
            "x",
            "--nproc=3",
            "--out",
            "r",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            worker_args(&a),
            ["train", "vae", "--data", "x", "--out", "r"]
        );
    }
}
