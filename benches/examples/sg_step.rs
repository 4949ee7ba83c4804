//! Times the StyleGAN2 step and its parts (median of N), for profiling against
//! benches/python/models_bench.py: `cargo run --release -p genmodels-benches --example sg_step -- N`.
use genmodels_benches::median_secs;
use genmodels_core::data::Batch;
use genmodels_core::model::Model;
use genmodels_core::optim::StepCtx;
use genmodels_gan::stylegan::{StyleGan, StyleGanConfig};
use tch::{Device, Kind, Tensor};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    tch::manual_seed(0);
    let cfg = StyleGanConfig {
        fmap_max: 64,
        fmap_min: 16,
        ..Default::default()
    };
    let mut m = StyleGan::new(cfg, Device::Cpu).expect("stylegan2");
    let x = Tensor::rand([32, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let real = Tensor::rand([32, 1, 32, 32], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let z = Tensor::randn([32, 128], (Kind::Float, Device::Cpu));
    let g_fwd = median_secs(n, || {
        let _ = tch::no_grad(|| m.g.synthesis(&m.g.broadcast(&m.g.map(&z))));
    });
    let d_fwd = median_secs(n, || {
        let _ = tch::no_grad(|| m.d.forward(&real));
    });
    let g_fb = median_secs(n, || {
        let y = m.d.forward(&m.g.synthesis(&m.g.broadcast(&m.g.map(&z))));
        y.sum(Kind::Float).backward();
    });
    let d_fb = median_secs(n, || {
        m.d.forward(&real).sum(Kind::Float).backward();
    });
    let batch = Batch { x, y: None };
    let ctx = StepCtx {
        step: 1,
        ..Default::default()
    };
    let t = median_secs(n, || {
        m.train_step(&batch, &ctx).expect("step");
    });
    println!("ours: G fwd {g_fwd:.4}  D fwd {d_fwd:.4}  G+D fwd+bwd {g_fb:.4}  D fwd+bwd {d_fb:.4}  step {t:.4}");
}
