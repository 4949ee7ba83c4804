//! Data-parallel training on libtorch's own c10d: a TCPStore rendezvous and the Gloo process
//! group, bound through `csrc/dist.cpp` (tch has no binding for them).
//!
//! A process joins the group from the variables `torchrun` sets (`RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`; see [`Env`]). Once joined, training is data
//! parallel as DDP is, with no change to the models:
//!
//! - the trainer broadcasts rank 0's weights, buffers, optimiser state and EMA at the start
//!   ([`sync_start`]), so every rank starts from the same state whatever it built or loaded;
//! - each rank trains on its own rows of each global batch ([`shard`]);
//! - every [`crate::optim::Adam`] averages its gradients over the ranks before it clips or
//!   steps ([`average_gradients`], buckets of ~25 MB, each all-reduced by Gloo), so the
//!   optimiser steps stay local and identical;
//! - the non-trainable variables (batch-norm statistics) are broadcast from rank 0 before each
//!   step, as DDP's default `broadcast_buffers=True` does before each forward pass;
//! - random numbers: each rank seeds its own stream from the step's seed and its rank, and
//!   draws made with [`crate::rng::randn_rows`] are the rank's rows of one draw for the whole
//!   global batch, so those are the numbers one process with the global batch would draw.
//!
//! Rank 0 alone writes the run folder (log, samples, checkpoints). A collective that fails
//! (a peer died) or does not complete within the timeout makes the step fail with an error
//! naming it; the trainer then stops without writing a checkpoint.

use crate::{Error, Result};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tch::Tensor;

/// Default time a collective or the rendezvous may take before the run stops (torch's Gloo
/// default is 30 minutes; a data-parallel step here takes seconds).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Gradient bucket size: DDP's default `bucket_cap_mb` (25 MiB).
pub const BUCKET_BYTES: usize = 25 << 20;

/// The launch contract: what `torchrun` (or `genmodels train --nproc N`) puts in each
/// worker's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's elastic agent serves the TCPStore on MASTER_PORT
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank connects to it as a client, under
    /// the prefix `/worker/attempt_{TORCHELASTIC_RESTART_COUNT}` as torch.distributed does.
    pub agent_store: bool,
    pub restart_count: u64,
}

impl Env {
    /// Reads the variables through `get`; `None` when `WORLD_SIZE` is unset (one process).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Env>> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |key: &str, v: &str| -> Result<u64> {
            v.trim().parse::<u64>().map_err(|_| {
                Error::invalid(format!(
                    "{key}={v:?} in the environment: expected a non-negative integer"
                ))
            })
        };
        let need = |key: &str| -> Result<String> {
            get(key).ok_or_else(|| {
                Error::invalid(format!(
                    "WORLD_SIZE is set but {key} is not: a data-parallel worker needs RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (torchrun sets them)"
                ))
            })
        };
        let world_size = num("WORLD_SIZE", &world)? as usize;
        if world_size == 0 {
            return Err(Error::invalid(
                "WORLD_SIZE=0 in the environment: expected at least 1",
            ));
        }
        let rank = num("RANK", &need("RANK")?)? as usize;
        if rank >= world_size {
            return Err(Error::invalid(format!(
                "RANK={rank} in the environment: expected a rank below WORLD_SIZE={world_size}"
            )));
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", &v)? as usize,
            None => rank,
        };
        let (master_addr, port) = if world_size == 1 {
            (
                get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
                get("MASTER_PORT").unwrap_or_else(|| "29500".into()),
            )
        } else {
            (need("MASTER_ADDR")?, need("MASTER_PORT")?)
        };
        let master_port = u16::try_from(num("MASTER_PORT", &port)?)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "MASTER_PORT={port:?} in the environment: expected a port in 1..=65535"
                ))
            })?;
        let agent_store = get("TORCHELASTIC_USE_AGENT_STORE")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let restart_count = match get("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => num("TORCHELASTIC_RESTART_COUNT", &v)?,
            None => 0,
        };
        Ok(Some(Env {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            agent_store,
            restart_count,
        }))
    }

    /// [`Env::from_vars`] on this process's environment.
    pub fn from_process() -> Result<Option<Env>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// The TCPStore key prefix (torch.distributed's for the agent store).
    fn prefix(&self) -> String {
        if self.agent_store {
            format!("/worker/attempt_{}/genmodels/", self.restart_count)
        } else {
            "genmodels/".into()
        }
    }
}

#[cfg(genmodels_dist)]
mod native {
    use std::ffi::{c_char, c_void};
    extern "C" {
        pub fn genmodels_dist_new(
            host: *const c_char,
            port: i32,
            rank: i32,
            size: i32,
            timeout_ms: i64,
            agent_store: bool,
            prefix: *const c_char,
        ) -> *mut c_void;
        pub fn genmodels_dist_free(group: *mut c_void);
        pub fn genmodels_dist_allreduce_sum(
            group: *mut c_void,
            ptrs: *const *mut c_void,
            n: i64,
        ) -> bool;
        pub fn genmodels_dist_broadcast(
            group: *mut c_void,
            ptrs: *const *mut c_void,
            n: i64,
            root: i32,
        ) -> bool;
        pub fn genmodels_dist_barrier(group: *mut c_void) -> bool;
    }
}

/// A joined process group (c10d's Gloo backend over a TCPStore).
pub struct Group {
    #[cfg(genmodels_dist)]
    ptr: *mut std::ffi::c_void,
    rank: usize,
    world_size: usize,
    local_rank: usize,
    timeout: Duration,
}

// SAFETY: the C++ group (a c10d Backend and its Store) is used from one thread at a time here
// (the training thread; the global `Mutex` serialises every call), and c10d's objects are not
// tied to the thread that made them.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        #[cfg(genmodels_dist)]
        // SAFETY: `ptr` came from `genmodels_dist_new` and is freed once, here.
        unsafe {
            native::genmodels_dist_free(self.ptr)
        }
    }
}

fn tensor_ptrs(ts: &[&Tensor]) -> Vec<*mut std::ffi::c_void> {
    ts.iter()
        .map(|t| t.as_ptr() as *mut std::ffi::c_void)
        .collect()
}

fn check_dense(what: &str, ts: &[&Tensor]) -> Result<()> {
    for t in ts {
        if t.device() != tch::Device::Cpu {
            return Err(Error::invalid(format!(
                "{what}: the Gloo process group takes CPU tensors, got one on {:?} (NCCL for CUDA is not bound yet)",
                t.device()
            )));
        }
        if !t.is_contiguous() {
            return Err(Error::invalid(format!(
                "{what}: expected contiguous tensors"
            )));
        }
    }
    Ok(())
}

impl Group {
    /// Joins the group described by `env`: rendezvous through the TCPStore at
    /// MASTER_ADDR:MASTER_PORT, then Gloo's connections to every peer. Blocks until all ranks
    /// have joined, or fails after `timeout`.
    pub fn join(env: &Env, timeout: Duration) -> Result<Group> {
        #[cfg(genmodels_dist)]
        {
            use std::ffi::CString;
            let host = CString::new(env.master_addr.clone())
                .map_err(|_| Error::invalid("MASTER_ADDR contains a NUL byte"))?;
            let prefix = CString::new(env.prefix()).map_err(|_| Error::invalid("bad prefix"))?;
            // SAFETY: both strings outlive the call; the C++ side copies them.
            let ptr = unsafe {
                native::genmodels_dist_new(
                    host.as_ptr(),
                    i32::from(env.master_port),
                    env.rank as i32,
                    env.world_size as i32,
                    timeout.as_millis().min(i64::MAX as u128) as i64,
                    env.agent_store,
                    prefix.as_ptr(),
                )
            };
            if ptr.is_null() {
                return Err(Error::invalid(format!(
                    "rank {} of {}: could not join the process group at {}:{} within {:.0} s: {}",
                    env.rank,
                    env.world_size,
                    env.master_addr,
                    env.master_port,
                    timeout.as_secs_f64(),
                    crate::ops::native_last_error()
                )));
            }
            Ok(Group {
                ptr,
                rank: env.rank,
                world_size: env.world_size,
                local_rank: env.local_rank,
                timeout,
            })
        }
        #[cfg(not(genmodels_dist))]
        {
            let _ = timeout;
            Err(Error::invalid(format!(
                "rank {} of {}: this build has no data-parallel support (genmodels-core was built without libtorch's c10d headers)",
                env.rank, env.world_size
            )))
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn world_size(&self) -> usize {
        self.world_size
    }
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn failed(&self, what: &str) -> Error {
        Error::invalid(format!(
            "rank {} of {}: {what} failed (a worker died, or did not answer within {:.0} s): {}",
            self.rank,
            self.world_size,
            self.timeout.as_secs_f64(),
            native_error()
        ))
    }

    /// Sums each tensor over the ranks, in place (contiguous CPU tensors).
    pub fn all_reduce_sum(&self, ts: &[&Tensor]) -> Result<()> {
        check_dense("all-reduce", ts)?;
        if ts.is_empty() {
            return Ok(());
        }
        #[cfg(genmodels_dist)]
        {
            let p = tensor_ptrs(ts);
            // SAFETY: the pointers are live `at::Tensor`s for the call; the C++ side reduces
            // into their storage and keeps no reference after it returns.
            if !unsafe {
                native::genmodels_dist_allreduce_sum(self.ptr, p.as_ptr(), p.len() as i64)
            } {
                return Err(self.failed("all-reduce"));
            }
        }
        Ok(())
    }

    /// Overwrites each tensor with rank `root`'s (contiguous CPU tensors).
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<()> {
        check_dense("broadcast", ts)?;
        if ts.is_empty() {
            return Ok(());
        }
        #[cfg(genmodels_dist)]
        {
            let p = tensor_ptrs(ts);
            // SAFETY: as in `all_reduce_sum`.
            if !unsafe {
                native::genmodels_dist_broadcast(self.ptr, p.as_ptr(), p.len() as i64, root as i32)
            } {
                return Err(self.failed("broadcast"));
            }
        }
        #[cfg(not(genmodels_dist))]
        let _ = root;
        Ok(())
    }

    /// Waits until every rank has reached this point.
    pub fn barrier(&self) -> Result<()> {
        #[cfg(genmodels_dist)]
        // SAFETY: `ptr` is a live group.
        if !unsafe { native::genmodels_dist_barrier(self.ptr) } {
            return Err(self.failed("barrier"));
        }
        Ok(())
    }

    /// Broadcasts `ts` from rank 0, through contiguous copies when a tensor is not contiguous
    /// (or requires grad, so that the copy back happens outside autograd).
    pub fn broadcast_from_main(&self, ts: &[Tensor]) -> Result<()> {
        for chunk in buckets(ts) {
            let flat = flatten(&chunk);
            self.broadcast(&[&flat], 0)?;
            unflatten_into(&flat, &chunk);
        }
        Ok(())
    }

    /// Averages `ts` over the ranks, in place, in buckets of [`BUCKET_BYTES`].
    pub fn average(&self, ts: &[Tensor]) -> Result<()> {
        let n = self.world_size as f64;
        for chunk in buckets(ts) {
            let mut flat = flatten(&chunk);
            self.all_reduce_sum(&[&flat])?;
            let _ = flat.g_div_scalar_(n);
            unflatten_into(&flat, &chunk);
        }
        Ok(())
    }
}

/// The last native error, without Gloo's advice paragraph.
fn native_error() -> String {
    #[cfg(genmodels_dist)]
    {
        let e = crate::ops::native_last_error();
        let e = e.split(" This is typically caused").next().unwrap_or(&e);
        e.trim().to_string()
    }
    #[cfg(not(genmodels_dist))]
    {
        String::new()
    }
}

/// Consecutive tensors of one dtype grouped into buckets of at most [`BUCKET_BYTES`] (a
/// tensor larger than that has a bucket of its own).
fn buckets(ts: &[Tensor]) -> Vec<Vec<Tensor>> {
    let mut out: Vec<Vec<Tensor>> = Vec::new();
    let mut bytes = 0usize;
    for t in ts {
        let size = t.numel() * t.kind().elt_size_in_bytes();
        let same_kind = out
            .last()
            .and_then(|b| b.first())
            .is_some_and(|f| f.kind() == t.kind());
        if out.is_empty() || !same_kind || bytes + size > BUCKET_BYTES {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(b) = out.last_mut() {
            b.push(t.shallow_clone());
        }
    }
    out
}

fn flatten(ts: &[Tensor]) -> Tensor {
    tch::no_grad(|| {
        let flat: Vec<Tensor> = ts.iter().map(|t| t.detach().reshape([-1])).collect();
        Tensor::cat(&flat, 0).contiguous()
    })
}

fn unflatten_into(flat: &Tensor, ts: &[Tensor]) {
    tch::no_grad(|| {
        let mut off = 0i64;
        for t in ts {
            let n = t.numel() as i64;
            let mut dst = t.detach();
            dst.copy_(&flat.narrow(0, off, n).view_as(t));
            off += n;
        }
    });
}

static WORLD: OnceLock<Mutex<Group>> = OnceLock::new();
static FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// Joins the group from the environment when `WORLD_SIZE` is set (once per process);
/// returns the world size (1 without it).
pub fn init_from_env(timeout: Duration) -> Result<usize> {
    let Some(env) = Env::from_process()? else {
        return Ok(1);
    };
    if env.world_size == 1 {
        return Ok(1);
    }
    if let Some(g) = WORLD.get() {
        return Ok(lock(g).world_size);
    }
    let group = Group::join(&env, timeout)?;
    let n = group.world_size;
    let _ = WORLD.set(Mutex::new(group));
    Ok(n)
}

fn lock(g: &Mutex<Group>) -> std::sync::MutexGuard<'_, Group> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` with the process group when this process is one of several.
pub fn with_group<T>(f: impl FnOnce(&Group) -> T) -> Option<T> {
    WORLD.get().map(|g| f(&lock(g)))
}

/// This process's rank (0 without a group).
pub fn rank() -> usize {
    with_group(|g| g.rank).unwrap_or(0)
}

/// Number of processes training together (1 without a group).
pub fn world_size() -> usize {
    with_group(|g| g.world_size).unwrap_or(1)
}

/// Whether this process writes the run folder (rank 0, or the only process).
pub fn is_main() -> bool {
    rank() == 0
}

/// Averages the defined gradients of `params` over the ranks (no-op in one process). A
/// failure is kept for [`take_failure`] (the optimiser's step has no error path) and later
/// collectives are skipped until it is taken.
pub fn average_gradients(params: &[Tensor]) {
    if world_size() == 1 || failure_pending() {
        return;
    }
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    if let Some(Err(e)) = with_group(|g| g.average(&grads)) {
        record_failure(e.to_string());
    }
}

fn failure_pending() -> bool {
    FAILURE.lock().map(|f| f.is_some()).unwrap_or(true)
}

fn record_failure(msg: String) {
    if let Ok(mut f) = FAILURE.lock() {
        f.get_or_insert(msg);
    }
}

/// The first collective failure since the last call, as an error.
pub fn take_failure() -> Result<()> {
    let msg = FAILURE.lock().ok().and_then(|mut f| f.take());
    match msg {
        Some(m) => Err(Error::invalid(m)),
        None => Ok(()),
    }
}

/// This rank's rows of a global batch of `n` rows: `[rank * n / W, (rank + 1) * n / W)`.
/// The global batch must divide evenly (so that the mean over ranks of each rank's mean loss is
/// the global batch's mean loss).
pub fn shard_range(n: i64) -> Result<(i64, i64)> {
    let (rank, world) = (rank() as i64, world_size() as i64);
    if n % world != 0 {
        return Err(Error::invalid(format!(
            "batch of {n} rows cannot be split evenly over {world} processes: pass a --batch-size that is a multiple of {world}"
        )));
    }
    let per = n / world;
    Ok((rank * per, per))
}

/// This rank's shard of a global batch (the batch itself in one process).
pub fn shard(batch: crate::data::Batch) -> Result<crate::data::Batch> {
    if world_size() == 1 {
        return Ok(batch);
    }
    let (start, len) = shard_range(batch.x.size()[0])?;
    Ok(crate::data::Batch {
        x: batch.x.narrow(0, start, len),
        y: batch.y.map(|y| y.narrow(0, start, len)),
    })
}

/// At the start of training: every variable of the model (weights and buffers), the optimiser
/// state and the EMA take rank 0's values.
pub fn sync_start(
    model: &mut dyn crate::model::Model,
    ema: Option<&mut crate::optim::Ema>,
) -> Result<()> {
    if world_size() == 1 {
        return Ok(());
    }
    let vars: Vec<Tensor> = model
        .var_stores()
        .iter()
        .flat_map(|(_, vs)| sorted_variables(vs))
        .collect();
    with_group(|g| g.broadcast_from_main(&vars)).unwrap_or(Ok(()))?;
    // The optimiser state goes through the checkpoint format, so every optimiser of every
    // model is covered without asking the model for its tensors.
    let mut ck = crate::checkpoint::Checkpoint::new(
        model.name(),
        serde_json::Value::Null,
        Default::default(),
    );
    model.save_optimizers(&mut ck);
    if let Some(e) = ema.as_deref() {
        e.save_state("ema", &mut ck);
    }
    let mut keys: Vec<String> = ck.tensors.keys().cloned().collect();
    keys.sort();
    let state: Vec<Tensor> = keys
        .iter()
        .filter_map(|k| ck.tensors.get(k))
        .map(|t| t.contiguous())
        .collect();
    with_group(|g| g.broadcast_from_main(&state)).unwrap_or(Ok(()))?;
    for (k, t) in keys.iter().zip(state) {
        ck.tensors.insert(k.clone(), t);
    }
    let path = std::path::Path::new("(rank 0's state)");
    model.load_optimizers(&ck, path)?;
    if let Some(e) = ema {
        e.load_state("ema", &ck, path)?;
    }
    Ok(())
}

fn sorted_variables(vs: &tch::nn::VarStore) -> Vec<Tensor> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, t)| t).collect()
}

/// Before each step: the model's non-trainable variables (batch-norm running statistics)
/// take rank 0's values, as DDP's `broadcast_buffers=True`.
pub fn sync_buffers(model: &dyn crate::model::Model) -> Result<()> {
    if world_size() == 1 {
        return Ok(());
    }
    let bufs: Vec<Tensor> = model
        .var_stores()
        .iter()
        .flat_map(|(_, vs)| sorted_variables(vs))
        .filter(|t| !t.requires_grad())
        .collect();
    with_group(|g| g.broadcast_from_main(&bufs)).unwrap_or(Ok(()))
}

/// What every rank must agree on after a step: the mean of each logged loss over the ranks
/// (every rank then sees the same non-finite or diverged value and stops at the same step),
/// and each of `flags` (time budget spent, signal received) if it holds on any rank. A
/// collective that failed during the step is reported here.
pub fn agree_step(losses: &mut [(String, f64)], flags: [bool; 2]) -> Result<[bool; 2]> {
    if world_size() == 1 {
        return Ok(flags);
    }
    take_failure()?;
    let mut v: Vec<f64> = losses.iter().map(|(_, x)| *x).collect();
    v.extend(flags.iter().map(|&f| if f { 1.0 } else { 0.0 }));
    let t = Tensor::from_slice(&v);
    with_group(|g| g.all_reduce_sum(&[&t])).unwrap_or(Ok(()))?;
    let sums: Vec<f64> = Vec::<f64>::try_from(&t).map_err(Error::Torch)?;
    let n = world_size() as f64;
    for ((_, x), s) in losses.iter_mut().zip(&sums) {
        *x = s / n;
    }
    let k = losses.len();
    Ok([sums[k] > 0.0, sums[k + 1] > 0.0])
}

/// Checks that every rank holds rank 0's trainable weights (a fingerprint per variable: its
/// sum and sum of squares in f64, broadcast from rank 0 and compared), so that a model whose
/// update depends on rank-local state stops at the first checkpoint, naming the variable,
/// instead of training apart unseen. The trainer calls it before each checkpoint.
pub fn check_in_sync(model: &dyn crate::model::Model) -> Result<()> {
    check_stores_in_sync(&model.var_stores())
}

/// [`check_in_sync`] on named variable stores.
pub fn check_stores_in_sync(stores: &[(&str, &tch::nn::VarStore)]) -> Result<()> {
    if world_size() == 1 {
        return Ok(());
    }
    let mut names = Vec::new();
    let mut fp = Vec::new();
    for (store, vs) in stores {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let trainable: Vec<Tensor> = vs.trainable_variables();
        for (n, t) in named {
            if !trainable.iter().any(|p| p.data_ptr() == t.data_ptr()) {
                continue;
            }
            let t = t.detach().to_kind(tch::Kind::Double);
            fp.push(t.sum(tch::Kind::Double).double_value(&[]));
            fp.push(t.square().sum(tch::Kind::Double).double_value(&[]));
            names.push(format!("{store}/{n}"));
        }
    }
    let mine = Tensor::from_slice(&fp);
    let main = mine.copy();
    with_group(|g| g.broadcast(&[&main], 0)).unwrap_or(Ok(()))?;
    let main: Vec<f64> = Vec::<f64>::try_from(&main).map_err(Error::Torch)?;
    for (i, name) in names.iter().enumerate() {
        for j in [2 * i, 2 * i + 1] {
            let (a, b) = (fp[j], main[j]);
            if (a - b).abs() > 1e-9 * a.abs().max(b.abs()).max(1e-30) {
                return Err(Error::invalid(format!(
                    "rank {} of {}: weight `{name}` differs from rank 0's ({} {a:e} vs {b:e}): the processes went out of step",
                    rank(),
                    world_size(),
                    if j % 2 == 0 { "sum" } else { "sum of squares" }
                )));
            }
        }
    }
    Ok(())
}

/// Waits for every rank (no-op in one process).
pub fn barrier() -> Result<()> {
    with_group(|g| g.barrier()).unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Option<Env>> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn the_environment_contract_is_torchruns() {
        assert_eq!(env(&[]).unwrap(), None);
        let e = env(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "3"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank), (1, 2, 1));
        assert_eq!((e.master_addr.as_str(), e.master_port), ("10.0.0.1", 29400));
        assert!(e.agent_store);
        assert_eq!(e.prefix(), "/worker/attempt_3/genmodels/");
        for (vars, needle) in [
            (vec![("WORLD_SIZE", "2"), ("RANK", "2")], "RANK=2"),
            (vec![("WORLD_SIZE", "x")], "WORLD_SIZE=\"x\""),
            (vec![("WORLD_SIZE", "2"), ("RANK", "0")], "MASTER_ADDR"),
            (
                vec![
                    ("WORLD_SIZE", "2"),
                    ("RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT=\"70000\"",
            ),
        ] {
            let e = env(&vars).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn buckets_keep_order_and_respect_the_cap() {
        let big = Tensor::zeros(
            [(BUCKET_BYTES / 4) as i64 - 20],
            (tch::Kind::Float, tch::Device::Cpu),
        );
        let small = Tensor::zeros([20], (tch::Kind::Float, tch::Device::Cpu));
        let ints = Tensor::zeros([3], (tch::Kind::Int64, tch::Device::Cpu));
        let b = buckets(&[small.shallow_clone(), big, small.shallow_clone(), ints]);
        let sizes: Vec<Vec<i64>> = b
            .iter()
            .map(|v| v.iter().map(|t| t.numel() as i64).collect())
            .collect();
        let cap = (BUCKET_BYTES / 4) as i64 - 20;
        assert_eq!(sizes, vec![vec![20, cap], vec![20], vec![3]]);
        // Flatten and copy back round-trips.
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let c = Tensor::from_slice(&[5.0f32]);
        let mut flat = flatten(&[a.shallow_clone(), c.shallow_clone()]);
        let _ = flat.g_mul_scalar_(2.0);
        unflatten_into(&flat, &[a.shallow_clone(), c.shallow_clone()]);
        assert_eq!(
            Vec::<f32>::try_from(a.view([-1])).unwrap(),
            vec![2.0, 4.0, 6.0, 8.0]
        );
        assert_eq!(Vec::<f32>::try_from(c).unwrap(), vec![10.0]);
    }

    const WORKER: &str = "GENMODELS_DIST_TEST_WORKER";

    /// Runs the test `name` of this binary as two ranks on loopback (`role` tells the workers
    /// what to do) and returns their outputs; each must finish within 60 s.
    fn run_pair(name: &str, role: &str) -> Vec<(bool, String)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let exe = std::env::current_exe().unwrap();
        let mut kids: Vec<std::process::Child> = (0..2)
            .map(|rank| {
                std::process::Command::new(&exe)
                    .args(["--exact", name, "--nocapture", "--test-threads=1"])
                    .env(WORKER, role)
                    .env("RANK", rank.to_string())
                    .env("WORLD_SIZE", "2")
                    .env("MASTER_ADDR", "127.0.0.1")
                    .env("MASTER_PORT", port.to_string())
                    .env("OMP_NUM_THREADS", "1")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let t0 = std::time::Instant::now();
        while kids.iter_mut().any(|k| matches!(k.try_wait(), Ok(None))) {
            if t0.elapsed() > Duration::from_secs(60) {
                for k in &mut kids {
                    let _ = k.kill();
                }
                panic!("the two workers did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kids.into_iter()
            .map(|k| {
                let o = k.wait_with_output().unwrap();
                let text = String::from_utf8_lossy(&o.stdout).to_string()
                    + &String::from_utf8_lossy(&o.stderr);
                (o.status.success(), text)
            })
            .collect()
    }

    /// In a worker: joins the global group from the environment.
    fn join_world() -> usize {
        assert_eq!(init_from_env(Duration::from_secs(20)).unwrap(), 2);
        rank()
    }

    #[test]
    fn two_processes_reduce_broadcast_average_and_check_sync() {
        let name = "dist::tests::two_processes_reduce_broadcast_average_and_check_sync";
        if std::env::var_os(WORKER).is_none() {
            for (i, (ok, out)) in run_pair(name, "collectives").into_iter().enumerate() {
                assert!(ok, "rank {i}:\n{out}");
                assert!(out.contains("rank checks passed"), "rank {i}:\n{out}");
            }
            return;
        }
        let r = join_world();
        let rf = r as f32;
        // All-reduce sums, in place.
        let t = Tensor::from_slice(&[rf + 1.0, 10.0 * rf]);
        with_group(|g| g.all_reduce_sum(&[&t])).unwrap().unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![3.0, 10.0]);
        // Broadcast from rank 1.
        let b = Tensor::from_slice(&[rf; 3]);
        with_group(|g| g.broadcast(&[&b], 1)).unwrap().unwrap();
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![1.0; 3]);
        // Adam averages the gradients before it steps: rank r's gradient is r + 1.
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().zeros("w", &[4]);
        let opt = crate::optim::Adam::new(&vs, Default::default());
        (&w * (rf as f64 + 1.0)).sum(tch::Kind::Float).backward();
        opt.average_gradients();
        assert_eq!(Vec::<f32>::try_from(w.grad()).unwrap(), vec![1.5; 4]);
        // Bucketed average over several tensors of both sizes.
        let xs = [
            Tensor::full([3], rf as f64, (tch::Kind::Float, tch::Device::Cpu)),
            Tensor::full(
                [2, 2],
                2.0 * rf as f64,
                (tch::Kind::Float, tch::Device::Cpu),
            ),
        ];
        with_group(|g| g.average(&xs)).unwrap().unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&xs[1].view([-1])).unwrap(),
            vec![1.0; 4]
        );
        // Same weights pass the sync check; a weight changed on rank 1 fails it there.
        check_stores_in_sync(&[("m", &vs)]).unwrap();
        barrier().unwrap();
        if r == 1 {
            tch::no_grad(|| {
                let _ = w.shallow_clone().g_add_scalar_(1e-3);
            });
        }
        let res = check_stores_in_sync(&[("m", &vs)]);
        if r == 1 {
            let e = res.unwrap_err().to_string();
            assert!(e.contains("rank 1 of 2: weight `m/w` differs"), "{e}");
        } else {
            res.unwrap();
        }
        barrier().unwrap();
        println!("rank checks passed");
    }

    #[test]
    fn a_dead_peer_makes_the_next_collective_fail_instead_of_hanging() {
        let name = "dist::tests::a_dead_peer_makes_the_next_collective_fail_instead_of_hanging";
        if std::env::var_os(WORKER).is_none() {
            let outs = run_pair(name, "die");
            assert!(
                outs[0].0 && outs[0].1.contains("rank 0 saw"),
                "{}",
                outs[0].1
            );
            return;
        }
        let r = join_world();
        barrier().unwrap();
        if r == 1 {
            // Dies without a word, as a killed worker does.
            std::process::exit(0);
        }
        let t0 = std::time::Instant::now();
        let t = Tensor::ones([1000], (tch::Kind::Float, tch::Device::Cpu));
        let mut errors = Vec::new();
        for _ in 0..50 {
            if let Some(Err(e)) = with_group(|g| g.all_reduce_sum(&[&t])) {
                errors.push(e.to_string());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let e = errors
            .first()
            .expect("all-reduce kept succeeding with a dead peer");
        assert!(e.contains("rank 0 of 2: all-reduce failed"), "{e}");
        assert!(
            t0.elapsed() < Duration::from_secs(25),
            "took {:?}",
            t0.elapsed()
        );
        println!("rank 0 saw: {e}");
    }
}
