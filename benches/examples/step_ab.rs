//! A/B timings of the GAN steps with one optimisation switched off at a time (median of N
//! steps, rounds alternating), to see what each is worth on this machine:
//! `cargo run --release -p genmodels-benches --example step_ab -- N ROUNDS`.
//! Variants: everything on; elementwise Adam instead of the fused kernel; grouped (fused)
//! modulated convolution (StyleGAN2 only).
use genmodels_benches::median_secs;
use genmodels_core::data::Batch;
use genmodels_core::model::Model;
use genmodels_core::optim::StepCtx;
use genmodels_gan::dcgan::{Dcgan, DcganConfig};
use genmodels_gan::stylegan::{StyleGan, StyleGanConfig};
use tch::{Device, Kind, Tensor};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (n, rounds) = (arg(1, 10), arg(2, 3));
    tch::manual_seed(0);
    let dc_batch = Batch {
        x: Tensor::rand([64, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
        y: None,
    };
    let sg_batch = Batch {
        x: Tensor::rand([32, 1, 28, 28], (Kind::Float, Device::Cpu)) * 2.0 - 1.0,
        y: None,
    };
    let mut dc = Dcgan::new(DcganConfig::default(), Device::Cpu).expect("dcgan");
    let mut dc_plain = Dcgan::new(DcganConfig::default(), Device::Cpu).expect("dcgan");
    dc_plain.pair.opt_g.fused = false;
    dc_plain.pair.opt_d.fused = false;
    let sg_cfg = StyleGanConfig {
        fmap_max: 64,
        fmap_min: 16,
        ..Default::default()
    };
    let mut sg = StyleGan::new(sg_cfg.clone(), Device::Cpu).expect("sg");
    let mut sg_grouped = StyleGan::new(
        StyleGanConfig {
            fused_modconv: true,
            ..sg_cfg.clone()
        },
        Device::Cpu,
    )
    .expect("sg");
    let mut sg_plain_adam = StyleGan::new(sg_cfg, Device::Cpu).expect("sg");
    sg_plain_adam.pair.opt_g.fused = false;
    sg_plain_adam.pair.opt_d.fused = false;
    let ctx0 = StepCtx::default();
    let ctx1 = StepCtx {
        step: 1,
        ..Default::default()
    };
    let mut t: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut add = |k: &'static str, v: f64| match t.iter_mut().find(|(n, _)| *n == k) {
        Some((_, vs)) => vs.push(v),
        None => t.push((k, vec![v])),
    };
    for _ in 0..rounds {
        add(
            "dcgan",
            median_secs(n, || drop(dc.train_step(&dc_batch, &ctx0))),
        );
        add(
            "dcgan, elementwise adam",
            median_secs(n, || drop(dc_plain.train_step(&dc_batch, &ctx0))),
        );
        add(
            "stylegan2",
            median_secs(n, || drop(sg.train_step(&sg_batch, &ctx1))),
        );
        add(
            "stylegan2, grouped modconv",
            median_secs(n, || drop(sg_grouped.train_step(&sg_batch, &ctx1))),
        );
        add(
            "stylegan2, elementwise adam",
            median_secs(n, || drop(sg_plain_adam.train_step(&sg_batch, &ctx1))),
        );
    }
    for (k, mut v) in t {
        v.sort_by(f64::total_cmp);
        println!("{k:32} {:.4} s  (rounds: {v:.4?})", v[v.len() / 2]);
    }
}
