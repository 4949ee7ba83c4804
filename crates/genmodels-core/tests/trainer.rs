//! The trainer end to end with a small real model: a GAN on the 8-Gaussian ring.
//! Checks exact resume, the NaN guard, EMA, logs, sample pictures and checkpoint loading.

use genmodels_core::checkpoint::Checkpoint;
use genmodels_core::data::{Batch, BatchSource, DataLoader, Mixture2d, MixtureKind};
use genmodels_core::losses::GanLoss;
use genmodels_core::model::{load_model_state, Losses, Model, Samples};
use genmodels_core::optim::{Adam, AdamConfig, StepCtx};
use genmodels_core::train::{Trainer, TrainerConfig};
use genmodels_core::{Error, Result};
use std::path::Path;
use std::sync::Arc;
use tch::nn::{self, Module, VarStore};
use tch::{Device, Kind, Tensor};

struct TinyGan {
    g_vs: VarStore,
    d_vs: VarStore,
    g: nn::Sequential,
    d: nn::Sequential,
    opt_g: Adam,
    opt_d: Adam,
    poison_at: Option<u64>,
}

impl TinyGan {
    fn new() -> Self {
        let g_vs = VarStore::new(Device::Cpu);
        let d_vs = VarStore::new(Device::Cpu);
        let (gp, dp) = (g_vs.root(), d_vs.root());
        let g = nn::seq()
            .add(nn::linear(&gp / "l1", 4, 32, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&gp / "l2", 32, 2, Default::default()));
        let d = nn::seq()
            .add(nn::linear(&dp / "l1", 2, 32, Default::default()))
            .add_fn(|x| x.relu())
            .add(nn::linear(&dp / "l2", 32, 1, Default::default()));
        let opt_g = Adam::new(&g_vs, AdamConfig::new(1e-3, 0.5, 0.999));
        let opt_d = Adam::new(&d_vs, AdamConfig::new(1e-3, 0.5, 0.999));
        TinyGan {
            g_vs,
            d_vs,
            g,
            d,
            opt_g,
            opt_d,
            poison_at: None,
        }
    }
}

impl Model for TinyGan {
    fn name(&self) -> &str {
        "tiny-gan"
    }
    fn config_json(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    fn train_step(&mut self, batch: &Batch, ctx: &StepCtx) -> Result<Losses> {
        let n = batch.x.size()[0];
        let z = Tensor::randn([n, 4], (Kind::Float, Device::Cpu));
        let fake = self.g.forward(&z);
        let d_loss = GanLoss::NonSaturating
            .d_loss(&self.d.forward(&batch.x), &self.d.forward(&fake.detach()));
        self.opt_d.backward_step(&d_loss, ctx);
        let mut g_loss = GanLoss::NonSaturating.g_loss(&self.d.forward(&fake));
        if self.poison_at == Some(ctx.step) {
            g_loss *= f64::NAN;
        }
        self.opt_g.backward_step(&g_loss, ctx);
        Ok(vec![
            ("d".into(), d_loss.double_value(&[])),
            ("g".into(), g_loss.double_value(&[])),
        ])
    }
    fn sample(&mut self, n: usize) -> Result<Samples> {
        let z = Tensor::randn([n as i64, 4], (Kind::Float, Device::Cpu));
        Ok(Samples::Points(tch::no_grad(|| self.g.forward(&z))))
    }
    fn var_stores(&self) -> Vec<(&str, &VarStore)> {
        vec![("g", &self.g_vs), ("d", &self.d_vs)]
    }
    fn ema_store(&self) -> Option<&VarStore> {
        Some(&self.g_vs)
    }
    fn save_optimizers(&self, ckpt: &mut Checkpoint) {
        self.opt_g.save_state("g", ckpt);
        self.opt_d.save_state("d", ckpt);
    }
    fn load_optimizers(&mut self, ckpt: &Checkpoint, path: &Path) -> Result<()> {
        self.opt_g.load_state("g", ckpt, path)?;
        self.opt_d.load_state("d", ckpt, path)
    }
}

/// libtorch's generator is process-wide and tests run on parallel threads: the runs that must be
/// bit-exact take this lock so no other test draws random numbers in between.
static RNG_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn source() -> DataLoader {
    let ds = Arc::new(Mixture2d::new(MixtureKind::Ring8, 512, 0).unwrap());
    DataLoader::new(ds, 64, true, 11, Device::Cpu).unwrap()
}

fn cfg(steps: u64) -> TrainerConfig {
    TrainerConfig {
        steps,
        seed: 5,
        log_every: 1,
        checkpoint_every: 3,
        sample_every: 0,
        sample_count: 16,
        ema_decay: Some(0.9),
        progress: false,
        ..Default::default()
    }
}

fn weights(m: &TinyGan) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = m
        .g_vs
        .variables()
        .into_iter()
        .chain(
            m.d_vs
                .variables()
                .into_iter()
                .map(|(k, t)| (format!("d.{k}"), t)),
        )
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    tch::manual_seed(0);
    let mut full = TinyGan::new();
    Trainer::new(cfg(6), serde_json::Value::Null)
        .run(&mut full, &mut source(), &a, None)
        .unwrap();

    // Same start, stop at step 3, then resume from the checkpoint in a fresh model.
    tch::manual_seed(0);
    let mut first = TinyGan::new();
    Trainer::new(cfg(3), serde_json::Value::Null)
        .run(&mut first, &mut source(), &b, None)
        .unwrap();
    let ck = Checkpoint::load(&b.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.meta.state.step, 3);
    let mut resumed = TinyGan::new();
    Trainer::new(cfg(6), serde_json::Value::Null)
        .run(&mut resumed, &mut source(), &b, Some(&ck))
        .unwrap();

    for ((n1, t1), (_, t2)) in weights(&full).iter().zip(weights(&resumed).iter()) {
        assert!(t1.equal(t2), "{n1} differs after resume");
    }
    let ck_a = Checkpoint::load(&a.join("checkpoint.safetensors")).unwrap();
    let ck_b = Checkpoint::load(&b.join("checkpoint.safetensors")).unwrap();
    for (k, t) in &ck_a.tensors {
        assert!(
            t.equal(&ck_b.tensors[k]),
            "checkpoint tensor {k} differs (EMA / optimiser state)"
        );
    }
    // The log has one line per step, with no duplicates from the resume.
    let log = std::fs::read_to_string(b.join("train.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5, 6]);
    assert!(b.join("samples").join("step_0000006.png").exists());
    // Loading the checkpoint into a new model reproduces the weights.
    let mut fresh = TinyGan::new();
    load_model_state(&mut fresh, &ck_b, &b, true).unwrap();
    assert!(fresh.g_vs.variables()["l1.weight"].equal(&resumed.g_vs.variables()["l1.weight"]));
}

#[test]
fn a_spent_time_budget_stops_with_a_checkpoint_and_resume_finishes_the_same_run() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    tch::manual_seed(0);
    let mut full = TinyGan::new();
    Trainer::new(cfg(4), serde_json::Value::Null)
        .run(&mut full, &mut source(), &a, None)
        .unwrap();

    // A zero budget stops after the first step, with a checkpoint, samples and a log line.
    tch::manual_seed(0);
    let mut first = TinyGan::new();
    let mut c = cfg(4);
    c.time_budget_s = Some(0.0);
    let s = Trainer::new(c, serde_json::Value::Null)
        .run(&mut first, &mut source(), &b, None)
        .unwrap();
    assert_eq!((s.steps, s.completed), (1, false));
    assert!(b.join("samples").join("step_0000001.png").exists());
    let ck = Checkpoint::load(&b.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.meta.state.step, 1);
    let mut resumed = TinyGan::new();
    let s = Trainer::new(cfg(4), serde_json::Value::Null)
        .run(&mut resumed, &mut source(), &b, Some(&ck))
        .unwrap();
    assert_eq!((s.steps, s.completed), (4, true));
    for ((n1, t1), (_, t2)) in weights(&full).iter().zip(weights(&resumed).iter()) {
        assert!(t1.equal(t2), "{n1} differs after a budget stop and resume");
    }
}

#[test]
fn nan_loss_stops_with_a_clear_error_and_no_checkpoint() {
    let _guard = RNG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut m = TinyGan::new();
    m.poison_at = Some(1);
    let mut c = cfg(5);
    c.checkpoint_every = 1;
    let err = Trainer::new(c, serde_json::Value::Null)
        .run(&mut m, &mut source(), dir.path(), None)
        .unwrap_err();
    assert!(matches!(err, Error::NonFinite { step: 2, .. }), "{err}");
    assert!(err.to_string().contains("`g` is NaN (not finite)"), "{err}");
    // the checkpoint from step 1 is intact and finite; no checkpoint of step 2 was written
    let ck = Checkpoint::load(&dir.path().join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.meta.state.step, 1);
}

#[test]
fn the_batch_source_is_deterministic() {
    let mut s1 = source();
    let mut s2 = source();
    assert!(s1.batch_at(9).unwrap().x.equal(&s2.batch_at(9).unwrap().x));
}
