//! The scheduler contract across all schedulers: bad input is a one-line error naming the bad
//! value and the expected ones; every scheduler runs behind `Box<dyn Scheduler>` with no other
//! change; float32 stays float32; configs load from diffusers' `scheduler_config.json`.

use genmodels_diffusion::schedulers::{
    build_scheduler, scheduler_by_name, scheduler_from_diffusers_config, PredictionType, Scheduler,
    SchedulerConfig, SchedulerKind, TimestepSpacing, VarianceType,
};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn one_line(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "not one line: {s}");
    s
}

fn all_kinds() -> Vec<SchedulerKind> {
    SchedulerKind::NAMES
        .iter()
        .map(|n| n.parse().unwrap())
        .collect()
}

#[test]
fn unknown_scheduler_name_lists_the_known_ones() {
    let e = one_line(
        scheduler_by_name("lms", &SchedulerConfig::default())
            .err()
            .unwrap(),
    );
    assert_eq!(
        e,
        "unknown scheduler `lms`; expected one of: ddpm, ddim, dpm-solver++, euler, euler-ancestral, heun"
    );
    assert!(scheduler_by_name("dpmsolver++", &SchedulerConfig::default()).is_ok());
    let e = one_line(SchedulerKind::from_diffusers_class("LMSDiscreteScheduler").unwrap_err());
    assert!(
        e.starts_with("unknown diffusers scheduler class `LMSDiscreteScheduler`; expected one of: DDPMScheduler, DDIMScheduler"),
        "{e}"
    );
}

#[test]
fn step_counts_outside_one_to_t_are_errors() {
    for kind in all_kinds() {
        let mut s = build_scheduler(kind, &SchedulerConfig::default()).unwrap();
        for n in [0usize, 1001, 5000] {
            let e = one_line(s.set_timesteps(n).unwrap_err());
            assert!(
                e.contains(&format!("num_inference_steps = {n}; expected 1..=1000")),
                "{kind}: {e}"
            );
        }
        s.set_timesteps(1000).unwrap();
        s.set_timesteps(1).unwrap();
    }
}

#[test]
fn zero_terminal_snr_with_epsilon_is_refused_everywhere() {
    let cfg = SchedulerConfig {
        rescale_betas_zero_snr: true,
        ..Default::default()
    };
    for kind in all_kinds() {
        let e = one_line(build_scheduler(kind, &cfg).err().unwrap());
        assert!(
            e.contains("rescale_betas_zero_snr = true with prediction_type = epsilon")
                && e.contains("issue 3851")
                && e.contains("v_prediction"),
            "{kind}: {e}"
        );
    }
    // v-prediction is fine (except Heun, which has no zero-SNR mode)
    let v = SchedulerConfig {
        prediction_type: PredictionType::VPrediction,
        ..cfg
    };
    for kind in all_kinds() {
        let r = build_scheduler(kind, &v);
        assert_eq!(r.is_ok(), kind != SchedulerKind::Heun, "{kind}");
    }
}

/// Why epsilon is refused there: the first trailing timestep has alphas_cumprod exactly 0, where
/// x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) is a division by zero.
#[test]
fn zero_terminal_snr_starts_at_alphas_cumprod_zero() {
    let cfg = SchedulerConfig {
        rescale_betas_zero_snr: true,
        prediction_type: PredictionType::VPrediction,
        timestep_spacing: Some(TimestepSpacing::Trailing),
        ..Default::default()
    };
    for kind in [SchedulerKind::Ddpm, SchedulerKind::Ddim] {
        let mut s = build_scheduler(kind, &cfg).unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps()[0], 999.0);
        assert_eq!(s.alphas_cumprod()[999], 0.0);
        // v-prediction needs no division there: the loop stays finite
        let mut x = Tensor::ones([1, 1, 2, 2], (Kind::Double, Device::Cpu));
        for t in s.timesteps().to_vec() {
            let z = x.zeros_like();
            x = s.step(&(&x * 0.1), t, &x, Some(&z)).unwrap().prev_sample;
        }
        assert!(x.isfinite().all().int64_value(&[]) == 1, "{kind}");
    }
}

#[test]
fn bad_tensors_are_errors_not_panics() {
    let x = Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu));
    for kind in all_kinds() {
        let mut s = build_scheduler(kind, &SchedulerConfig::default()).unwrap();
        s.set_timesteps(4).unwrap();
        let t = s.timesteps()[0];
        let bad = Tensor::zeros([2, 5, 4, 4], (Kind::Float, Device::Cpu));
        let e = one_line(s.step(&bad, t, &x, None).unwrap_err());
        assert!(
            e.contains("model output has shape [2, 5, 4, 4]; expected [2, 3, 4, 4]"),
            "{kind}: {e}"
        );
        // only stochastic steps read the noise; for those a bad one is an error
        let r = s.step(&x, t, &x, Some(&bad));
        if s.is_stochastic() {
            let e = one_line(r.unwrap_err());
            assert!(e.contains("noise has shape [2, 5, 4, 4]"), "{kind}: {e}");
        }
        s.set_timesteps(4).unwrap();
        let e = one_line(s.step(&x, 12345.5, &x, None).unwrap_err());
        assert!(e.contains("12345.5"), "{kind}: {e}");
        let e = one_line(
            s.add_noise(&x, &x, &Tensor::from_slice(&[1i64, 2, 3]))
                .unwrap_err(),
        );
        assert!(
            e.contains("3 timesteps for a batch of 2; expected 2 or 1"),
            "{kind}: {e}"
        );
        let e = one_line(s.set_custom_timesteps(&[10.0, 500.0]).unwrap_err());
        assert!(
            e.contains("strictly decreasing") || e.contains("not supported"),
            "{kind}: {e}"
        );
    }
    let mut s = build_scheduler(
        SchedulerKind::Ddpm,
        &SchedulerConfig {
            variance_type: Some(VarianceType::Learned),
            ..Default::default()
        },
    )
    .unwrap();
    s.set_timesteps(4).unwrap();
    let e = one_line(s.step(&x, s.timesteps()[0], &x, None).unwrap_err());
    assert_eq!(
        e,
        "ddpm: model output has shape [2, 3, 4, 4]; expected [2, 6, 4, 4] (a learned variance \
         doubles the channels: 3 mean + 3 variance)"
    );
}

/// The training timestep of a (possibly fractional) timestep, as the model sees it: log-linear
/// interpolation of the training sigmas (the inverse of diffusers' `_sigma_to_t`).
fn abar_at(s: &dyn Scheduler, t: f64) -> f64 {
    let ac = s.alphas_cumprod();
    let sig = |i: usize| ((1.0 - ac[i]) / ac[i]).sqrt();
    let (lo, w) = (t.floor() as usize, t.fract());
    let sigma = if w == 0.0 {
        sig(lo)
    } else {
        ((1.0 - w) * sig(lo).ln() + w * sig(lo + 1).ln()).exp()
    };
    1.0 / (1.0 + sigma * sigma)
}

/// Every scheduler, behind the same trait and the same loop, with an oracle model for data that
/// is a single point x0: each ends at x0 (the last step of every sampler lands on its x0
/// prediction), in float32 and for every prediction type.
#[test]
fn every_scheduler_runs_the_same_loop_and_lands_on_the_data() {
    let x0 =
        Tensor::from_slice(&[0.5f32, -0.25, 0.75, -0.9, 0.1, 0.0, 0.3, -0.6]).reshape([2, 1, 2, 2]);
    for kind in all_kinds() {
        for pred in [
            PredictionType::Epsilon,
            PredictionType::Sample,
            PredictionType::VPrediction,
        ] {
            for karras in [false, true] {
                if karras
                    && matches!(
                        kind,
                        SchedulerKind::Ddpm | SchedulerKind::Ddim | SchedulerKind::EulerAncestral
                    )
                {
                    continue;
                }
                let cfg = SchedulerConfig {
                    prediction_type: pred,
                    use_karras_sigmas: karras,
                    eta: 1.0,
                    ..Default::default()
                };
                let mut s = build_scheduler(kind, &cfg).unwrap();
                s.set_timesteps(12).unwrap();
                let n_evals = s.timesteps().len();
                assert_eq!(n_evals, if kind == SchedulerKind::Heun { 23 } else { 12 });
                assert_eq!(s.order(), if kind == SchedulerKind::Heun { 2 } else { 1 });
                tch::manual_seed(3);
                let mut x =
                    Tensor::randn([2, 1, 2, 2], (Kind::Float, Device::Cpu)) * s.init_noise_sigma();
                for t in s.timesteps().to_vec() {
                    let xin = s.scale_model_input(&x, t).unwrap();
                    let a = abar_at(s.as_ref(), t);
                    let eps = (&xin - &x0 * a.sqrt()) / (1.0 - a).sqrt();
                    let out = match pred {
                        PredictionType::Epsilon => eps,
                        PredictionType::Sample => x0.shallow_clone(),
                        PredictionType::VPrediction => eps * a.sqrt() - &x0 * (1.0 - a).sqrt(),
                    };
                    x = s.step(&out, t, &x, None).unwrap().prev_sample;
                    assert_eq!(x.kind(), Kind::Float);
                }
                let e = (&x - &x0).abs().max().double_value(&[]);
                assert!(e < 1e-3, "{kind} {pred} karras={karras}: |x - x0| = {e}");
            }
        }
    }
}

#[test]
fn forward_process_and_velocity_are_consistent() {
    let x0 = Tensor::from_slice(&[0.5f64, -0.25, 0.75, -0.9]).reshape([2, 1, 1, 2]);
    let eps = Tensor::from_slice(&[1.0f64, 0.3, -2.0, 0.7]).reshape([2, 1, 1, 2]);
    let ts = Tensor::from_slice(&[17i64, 640]);
    for kind in [
        SchedulerKind::Ddpm,
        SchedulerKind::Ddim,
        SchedulerKind::DpmSolverPlusPlus,
    ] {
        let s = build_scheduler(kind, &SchedulerConfig::default()).unwrap();
        let xt = s.add_noise(&x0, &eps, &ts).unwrap();
        let v = s.get_velocity(&x0, &eps, &ts).unwrap();
        // x0 = sqrt(abar) x_t - sqrt(1 - abar) v
        for (b, t) in [(0i64, 17usize), (1, 640)] {
            let a = s.alphas_cumprod()[t];
            let back = xt.get(b) * a.sqrt() - v.get(b) * (1.0 - a).sqrt();
            let e = (back - x0.get(b)).abs().max().double_value(&[]);
            assert!(e < 1e-12, "{kind} t={t}: {e}");
        }
    }
    // Euler-type: x0 + sigma noise, and the same v at the VP scaling
    for kind in [
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::Heun,
    ] {
        let s = build_scheduler(kind, &SchedulerConfig::default()).unwrap();
        let xt = s.add_noise(&x0, &eps, &ts).unwrap();
        let v = s.get_velocity(&x0, &eps, &ts).unwrap();
        for (b, t) in [(0i64, 17usize), (1, 640)] {
            let a = s.alphas_cumprod()[t];
            let sigma = ((1.0 - a) / a).sqrt();
            let e = (xt.get(b) - x0.get(b) - eps.get(b) * sigma)
                .abs()
                .max()
                .double_value(&[]);
            assert!(e < 1e-9, "{kind} add_noise t={t}: {e}");
            let want = eps.get(b) * a.sqrt() - x0.get(b) * (1.0 - a).sqrt();
            let e = (v.get(b) - want).abs().max().double_value(&[]);
            assert!(e < 1e-9, "{kind} velocity t={t}: {e}");
        }
    }
}

#[test]
fn img2img_begin_index() {
    let mut s = build_scheduler(SchedulerKind::Euler, &SchedulerConfig::default()).unwrap();
    s.set_timesteps(10).unwrap();
    s.set_begin_index(4).unwrap();
    let x0 = Tensor::ones([1, 1, 1, 1], (Kind::Double, Device::Cpu));
    let t = s.timesteps()[4];
    let xt = s.add_noise(&x0, &x0, &Tensor::from_slice(&[t])).unwrap();
    let sigma = s.sigmas().unwrap()[4];
    assert!((xt.double_value(&[0, 0, 0, 0]) - (1.0 + sigma)).abs() < 1e-12);
    let out = s.step(&x0.zeros_like(), t, &xt, None).unwrap();
    assert!(out.prev_sample.isfinite().all().int64_value(&[]) == 1);
    let e = one_line(s.set_begin_index(10).unwrap_err());
    assert_eq!(e, "euler: begin_index 10 is past the 10 timesteps");
}

#[test]
fn loads_a_diffusers_scheduler_config() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/scheduler_config.json");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(
        text.contains("-Infinity"),
        "the file is as diffusers writes it"
    );
    let s = scheduler_from_diffusers_config(&p).unwrap();
    assert_eq!(s.kind(), SchedulerKind::DpmSolverPlusPlus);
    assert!(s.config().use_karras_sigmas);
    assert_eq!(s.config().lambda_min_clipped, f64::NEG_INFINITY);
    let cfg = SchedulerConfig::from_json_file(&p).unwrap();
    assert_eq!(cfg.beta_schedule.as_str(), "scaled_linear");
    // a bad file names itself
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("scheduler_config.json");
    std::fs::write(
        &bad,
        r#"{"_class_name": "DDIMScheduler", "timestep_spacing": "even"}"#,
    )
    .unwrap();
    let e = one_line(scheduler_from_diffusers_config(&bad).err().unwrap());
    assert!(
        e.contains("scheduler_config.json") && e.contains("unknown timestep_spacing `even`"),
        "{e}"
    );
}

/// On a GPU (when there is one): the same loops as on the CPU, to float32 accuracy.
#[test]
fn cuda_matches_cpu_when_available() {
    if !tch::Cuda::is_available() {
        println!("no CUDA device: skipped");
        return;
    }
    for kind in all_kinds() {
        let cfg = SchedulerConfig {
            eta: 1.0,
            thresholding: kind != SchedulerKind::Heun,
            ..Default::default()
        };
        let run = |dev: Device| {
            let mut s = build_scheduler(kind, &cfg).unwrap();
            s.set_timesteps(8).unwrap();
            let mut x = Tensor::from_slice(&[0.3f32, -1.0, 2.0, 0.5, 1.5, -0.2, 0.9, -2.5])
                .reshape([2, 1, 2, 2])
                .to_device(dev)
                * s.init_noise_sigma();
            for (i, t) in s.timesteps().to_vec().into_iter().enumerate() {
                let xin = s.scale_model_input(&x, t).unwrap();
                let z = (&x * (i as f64 + 1.0)).sin();
                x = s.step(&(&xin * 0.3), t, &x, Some(&z)).unwrap().prev_sample;
            }
            let ts = Tensor::from_slice(&[s.timesteps()[0], s.timesteps()[2]]).to_device(dev);
            let fwd = s.add_noise(&x, &x, &ts).unwrap();
            let v = s.get_velocity(&x, &x, &ts).unwrap();
            Tensor::cat(&[x, fwd, v], 0).to_device(Device::Cpu)
        };
        let (a, b) = (run(Device::Cpu), run(Device::Cuda(0)));
        let e = ((&a - &b).abs() / (a.abs() + 1.0)).max().double_value(&[]);
        assert!(e < 1e-4, "{kind}: cpu vs cuda {e}");
    }
}
