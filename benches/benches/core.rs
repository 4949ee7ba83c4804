//! Core hot paths: decoding a Fashion-MNIST batch, one Adam update over a DCGAN-sized
//! parameter set. Run with `cargo bench -p genmodels-benches --bench core`.

use criterion::{criterion_group, criterion_main, Criterion};
use genmodels_core::data::{BatchSource, DataLoader, IdxDataset, IdxSplit};
use genmodels_core::optim::{Adam, AdamConfig};
use std::sync::Arc;
use tch::{nn::VarStore, Device, Kind, Tensor};

fn loader(c: &mut Criterion) {
    let dir = genmodels_core::assets_dir().join("fashion-mnist");
    let Ok(ds) = IdxDataset::open_dir(&dir, IdxSplit::Train) else {
        eprintln!(
            "skipping loader bench: no Fashion-MNIST in {} (run `cargo xtask setup`)",
            dir.display()
        );
        return;
    };
    let mut dl = DataLoader::new(Arc::new(ds), 128, true, 0, Device::Cpu).expect("loader");
    let mut step = 0u64;
    c.bench_function("fashion_mnist_batch_128", |b| {
        b.iter(|| {
            step += 1;
            dl.batch_at(step).expect("batch")
        })
    });
}

fn adam(c: &mut Criterion) {
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let params: Vec<Tensor> = (0..10)
        .map(|i| root.randn_standard(&format!("w{i}"), &[300, 1000]))
        .collect();
    let mut opt = Adam::new(&vs, AdamConfig::default());
    let loss: Tensor = params.iter().map(|p| p.square().sum(Kind::Float)).sum();
    loss.backward();
    c.bench_function("adam_step_3m_params", |b| b.iter(|| opt.step(1.0)));
}

criterion_group!(benches, loader, adam);
criterion_main!(benches);
