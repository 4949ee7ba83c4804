//! Parity with diffusers on fixtures it computed (scripts/make_scheduler_fixtures.py, diffusers
//! 0.42.1 in float64): every case replays a whole sampling loop, the "model" a fixed function of
//! (scaled input, t) so that each step's input is the previous step's output, with diffusers'
//! noise fed in. Checked to 1e-6 (absolute + relative): timesteps, alphas_cumprod, sigmas,
//! init_noise_sigma, every step's scaled model input, prev_sample and pred_original_sample, and
//! add_noise / get_velocity.
//!
//! Where genmodels deliberately differs from diffusers (the case's `deviation`), the case says
//! so, is checked against the closed-form update instead, and the fixture must still show
//! diffusers' other value (so that a note cannot outlive the bug it describes):
//! - `ddim_prev_timestep`: diffusers' DDIM steps to t - T // n (issues 12633, 11347), ours to the
//!   next timestep of the list;
//! - `ddpm_fixed_large_log`: diffusers takes sqrt(log beta) (NaN, issue 14569), ours
//!   exp(0.5 log beta), i.e. diffusers' own `fixed_large` run;
//! - `euler_log_linear`: diffusers lays n + 1 log-spaced sigmas over n timesteps, ours n;
//! - Euler's get_velocity: diffusers reads alphas_cumprod at the timestep's index in the schedule.

use genmodels_diffusion::schedulers::{
    scheduler_by_name, PredictionType, Scheduler, SchedulerConfig, SchedulerKind,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

const TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct Index {
    diffusers_version: String,
    cases: Vec<Case>,
    skipped: Vec<Skipped>,
}

#[derive(Deserialize)]
struct Skipped {
    name: String,
    diffusers_error: String,
}

#[derive(Deserialize, Clone)]
struct Case {
    name: String,
    scheduler: String,
    num_inference_steps: Option<usize>,
    custom_timesteps: Option<Vec<f64>>,
    #[serde(default)]
    options: serde_json::Map<String, serde_json::Value>,
    config: serde_json::Value,
    model: String,
    tensors: HashMap<String, String>,
    deviation: Option<String>,
}

struct Fixtures {
    index: Index,
    tensors: HashMap<String, Tensor>,
}

impl Fixtures {
    fn load() -> Fixtures {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let text = std::fs::read_to_string(dir.join("schedulers.json")).expect("fixture index");
        let index: Index = serde_json::from_str(&text).expect("fixture index json");
        let tensors = Tensor::read_safetensors(dir.join("schedulers.safetensors"))
            .expect("fixture tensors")
            .into_iter()
            .collect();
        Fixtures { index, tensors }
    }

    fn get(&self, case: &Case, name: &str) -> Option<&Tensor> {
        case.tensors.get(name).map(|k| &self.tensors[k])
    }

    fn need(&self, case: &Case, name: &str) -> &Tensor {
        self.get(case, name)
            .unwrap_or_else(|| panic!("{}: fixture has no {name}", case.name))
    }
}

fn vec64(t: &Tensor) -> Vec<f64> {
    Vec::try_from(&t.flatten(0, -1).to_kind(Kind::Double)).unwrap()
}

/// The fed-in "model", as in make_scheduler_fixtures.py's `model_fn`.
fn model_output(x: &Tensor, t: f64, kind: &str) -> Tensor {
    let k = Tensor::arange(x.numel() as i64, (Kind::Double, x.device())).reshape(x.size());
    let eps = x * 0.3 + (&k + t / 100.0).sin() * 0.1;
    let var = match kind {
        "plain" => return eps,
        "learned_range" => (&k * 0.5 + t / 37.0).sin() * 0.8,
        "learned" => (&k * 0.5 + t / 37.0).sin().exp() * 0.01,
        other => panic!("unknown model kind {other}"),
    };
    Tensor::cat(&[eps, var], 1)
}

/// Largest |got - want| / (1 + |want|) (absolute + relative); NaN on a shape mismatch or NaN.
fn err(got: &Tensor, want: &Tensor) -> f64 {
    if got.size() != want.size() {
        return f64::NAN;
    }
    let (g, w) = (vec64(got), vec64(want));
    g.iter()
        .zip(&w)
        .map(|(g, w)| {
            let e = (g - w).abs() / (1.0 + w.abs());
            if e.is_nan() {
                f64::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f64::max)
}

#[derive(Default)]
struct Report {
    failures: Vec<String>,
    checked: usize,
    worst: f64,
}

impl Report {
    fn check(&mut self, case: &str, what: &str, got: &Tensor, want: &Tensor) {
        self.checked += 1;
        let e = err(got, want);
        if e.is_finite() {
            self.worst = self.worst.max(e);
        }
        if e.is_nan() || e > TOL {
            self.failures.push(format!(
                "{case}: {what}: error {e:.3e} (ours {:?} vs diffusers {:?})",
                vec64(got).iter().take(4).collect::<Vec<_>>(),
                vec64(want).iter().take(4).collect::<Vec<_>>()
            ));
        }
    }

    fn check_vec(&mut self, case: &str, what: &str, got: &[f64], want: &Tensor) {
        self.check(case, what, &Tensor::from_slice(got), want)
    }
}

fn config_of(case: &Case) -> SchedulerConfig {
    let mut v = case.config.clone();
    if let Some(obj) = v.as_object_mut() {
        for (k, val) in &case.options {
            obj.insert(k.clone(), val.clone());
        }
    }
    SchedulerConfig::from_json_value(v)
        .unwrap_or_else(|e| panic!("{}: config does not parse: {e}", case.name))
}

fn build(case: &Case) -> Box<dyn Scheduler> {
    let cfg = config_of(case);
    let s =
        scheduler_by_name(&case.scheduler, &cfg).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    // the diffusers class name of the config names the same scheduler
    let class = case.config["_class_name"].as_str().unwrap();
    assert_eq!(
        SchedulerKind::from_diffusers_class(class).unwrap(),
        s.kind(),
        "{}",
        case.name
    );
    let mut s = s;
    match (&case.custom_timesteps, case.num_inference_steps) {
        (Some(ts), _) => s.set_custom_timesteps(ts),
        (None, Some(n)) => s.set_timesteps(n),
        _ => panic!("{}: neither steps nor timesteps", case.name),
    }
    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    s
}

/// What one replayed loop produced.
struct Trajectory {
    inputs: Vec<Tensor>,
    prevs: Vec<Tensor>,
    x0s: Vec<Tensor>,
}

/// The sampling loop, as a pipeline runs it; `on_step(i, t, sample, model_output)` may compute a
/// closed-form reference from the step's inputs.
fn replay(
    f: &Fixtures,
    case: &Case,
    s: &mut dyn Scheduler,
    mut on_step: impl FnMut(usize, f64, &Tensor, &Tensor, Option<&Tensor>),
) -> Trajectory {
    let latents = f.need(case, "latents");
    let noise = f.get(case, "noise");
    let mut sample = latents * s.init_noise_sigma();
    let mut tr = Trajectory {
        inputs: vec![],
        prevs: vec![],
        x0s: vec![],
    };
    for (i, t) in s.timesteps().to_vec().into_iter().enumerate() {
        let x_in = s.scale_model_input(&sample, t).unwrap();
        let out = model_output(&x_in, t, &case.model);
        let z = noise.map(|n| n.get(i as i64));
        on_step(i, t, &sample, &out, z.as_ref());
        let res = s
            .step(&out, t, &sample, z.as_ref())
            .unwrap_or_else(|e| panic!("{}: step {i}: {e}", case.name));
        tr.inputs.push(x_in);
        tr.x0s.push(res.pred_original_sample);
        tr.prevs.push(res.prev_sample.shallow_clone());
        sample = res.prev_sample;
    }
    tr
}

fn check_schedule(f: &Fixtures, case: &Case, s: &dyn Scheduler, r: &mut Report) {
    let n = &case.name;
    r.check_vec(n, "timesteps", s.timesteps(), f.need(case, "timesteps"));
    r.check_vec(
        n,
        "alphas_cumprod",
        s.alphas_cumprod(),
        f.need(case, "alphas_cumprod"),
    );
    r.check_vec(
        n,
        "init_noise_sigma",
        &[s.init_noise_sigma()],
        f.need(case, "init_noise_sigma"),
    );
    if let Some(want) = f.get(case, "sigmas") {
        if case.deviation.as_deref() != Some("euler_log_linear") {
            r.check_vec(n, "sigmas", s.sigmas().expect("sigmas"), want);
        }
    }
}

fn check_trajectory(f: &Fixtures, case: &Case, tr: &Trajectory, r: &mut Report) {
    let n = &case.name;
    let prev = f.need(case, "prev_sample");
    if prev.size()[0] != tr.prevs.len() as i64 {
        r.failures.push(format!(
            "{n}: {} steps, diffusers {}",
            tr.prevs.len(),
            prev.size()[0]
        ));
        return;
    }
    let inputs = f.get(case, "model_input");
    let x0 = f.get(case, "pred_original_sample");
    let mut sample_in = f.need(case, "latents") * vec64(f.need(case, "init_noise_sigma"))[0];
    for i in 0..tr.prevs.len() {
        let ii = i as i64;
        match inputs {
            Some(inp) => r.check(
                n,
                &format!("step {i} model input"),
                &tr.inputs[i],
                &inp.get(ii),
            ),
            // scale_model_input is the identity for this scheduler
            None => r.check(
                n,
                &format!("step {i} model input"),
                &tr.inputs[i],
                &sample_in,
            ),
        }
        r.check(
            n,
            &format!("step {i} prev_sample"),
            &tr.prevs[i],
            &prev.get(ii),
        );
        if let Some(x0) = x0 {
            r.check(
                n,
                &format!("step {i} pred_original_sample"),
                &tr.x0s[i],
                &x0.get(ii),
            );
        }
        sample_in = prev.get(ii);
    }
}

fn check_forward(f: &Fixtures, case: &Case, s: &dyn Scheduler, r: &mut Report) {
    let n = &case.name;
    let (x0, z) = (f.need(case, "fwd_x0"), f.need(case, "fwd_noise"));
    let mut ts = f.need(case, "fwd_timesteps").shallow_clone();
    let log_linear = case.deviation.as_deref() == Some("euler_log_linear");
    if matches!(case.scheduler.as_str(), "ddpm" | "ddim") {
        r.check(n, "fwd timesteps", &ts, f.need(case, "fwd_timesteps"));
    } else {
        // timesteps 0, n / 2 and n - 1 of the schedule: ours (fractional Karras timesteps can
        // differ from diffusers' in the last bit, and add_noise looks them up exactly)
        let ours = s.timesteps();
        let k = ours.len();
        ts = Tensor::from_slice(&[ours[0], ours[k / 2], ours[k - 1]]);
        r.check(n, "fwd timesteps", &ts, f.need(case, "fwd_timesteps"));
    }
    let got = s
        .add_noise(x0, z, &ts)
        .unwrap_or_else(|e| panic!("{n}: add_noise: {e}"));
    if log_linear {
        // our sigmas differ (see the deviation): x0 + sigma noise at ours
        let sig = s.sigmas().unwrap();
        let k = s.timesteps().len();
        let want: Vec<Tensor> = [0, k / 2, k - 1]
            .iter()
            .enumerate()
            .map(|(b, &i)| x0.get(b as i64) + z.get(b as i64) * sig[i])
            .collect();
        r.check(n, "add_noise (closed form)", &got, &Tensor::stack(&want, 0));
    } else {
        r.check(n, "add_noise", &got, f.need(case, "add_noise"));
    }
    let ts = &ts;
    let v = s
        .get_velocity(x0, z, ts)
        .unwrap_or_else(|e| panic!("{n}: get_velocity: {e}"));
    // the closed form, for every scheduler: sqrt(abar) noise - sqrt(1 - abar) x0, abar that of
    // the timestep (DDPM, DDIM) or 1 / (1 + sigma^2) of the schedule's sigma there (the others)
    let ac = vec64(f.need(case, "alphas_cumprod"));
    let sched_ts = s.timesteps().to_vec();
    let sigmas = f.get(case, "sigmas").map(|_| s.sigmas().unwrap().to_vec());
    let want: Vec<Tensor> = vec64(ts)
        .iter()
        .enumerate()
        .map(|(b, &t)| {
            let a = match &sigmas {
                None => ac[t as usize],
                Some(sig) => {
                    let at: Vec<usize> =
                        (0..sched_ts.len()).filter(|&i| sched_ts[i] == t).collect();
                    let i = if at[0] == 0 || at.len() == 1 {
                        at[0]
                    } else {
                        at[1]
                    };
                    1.0 / (1.0 + sig[i] * sig[i])
                }
            };
            z.get(b as i64) * a.sqrt() - x0.get(b as i64) * (1.0 - a).sqrt()
        })
        .collect();
    r.check(
        n,
        "get_velocity (closed form)",
        &v,
        &Tensor::stack(&want, 0),
    );
    if case.scheduler != "euler" {
        if let Some(want) = f.get(case, "get_velocity") {
            r.check(n, "get_velocity", &v, want);
        }
    }
}

/// DDIM, Eq. 12 and 16 of Song et al. 2021, with the previous timestep from the list.
#[allow(clippy::too_many_arguments)]
fn ddim_closed_form(
    ac: &[f64],
    t: usize,
    prev: Option<usize>,
    cfg: &SchedulerConfig,
    x: &Tensor,
    m: &Tensor,
    z: Option<&Tensor>,
) -> (Tensor, Tensor) {
    assert!(!cfg.thresholding);
    let a = ac[t];
    let ap = match prev {
        Some(p) => ac[p],
        None if cfg.set_alpha_to_one => 1.0,
        None => ac[0],
    };
    let (sa, sb) = (a.sqrt(), (1.0 - a).sqrt());
    let (mut x0, eps) = match cfg.prediction_type {
        PredictionType::Epsilon => ((x - m * sb) / sa, m.shallow_clone()),
        PredictionType::Sample => (m.shallow_clone(), (x - m * sa) / sb),
        PredictionType::VPrediction => (x * sa - m * sb, m * sa + x * sb),
    };
    if cfg.clip_sample.unwrap_or(true) {
        x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range);
    }
    let sigma = cfg.eta * ((1.0 - ap) / (1.0 - a) * (1.0 - a / ap)).sqrt();
    let eps = if cfg.use_clipped_model_output {
        (x - &x0 * sa) / sb
    } else {
        eps
    };
    let mut out = &x0 * ap.sqrt() + eps * (1.0 - ap - sigma * sigma).max(0.0).sqrt();
    if cfg.eta > 0.0 {
        out = &out + z.expect("noise") * sigma;
    }
    (out, x0)
}

/// One Euler step of Karras et al. 2022 (Algorithm 2, no churn) with an epsilon model.
fn euler_closed_form(x: &Tensor, eps: &Tensor, sigma: f64, sigma_next: f64) -> Tensor {
    let x0 = x - eps * sigma;
    x + (x - x0) / sigma * (sigma_next - sigma)
}

fn max_diff(a: &[Tensor], b: &Tensor) -> f64 {
    a.iter()
        .enumerate()
        .map(|(i, t)| err(t, &b.get(i as i64)))
        .fold(
            0.0,
            |m, e| if e.is_nan() { f64::INFINITY } else { m.max(e) },
        )
}

#[test]
fn every_case_matches_diffusers() {
    let f = Fixtures::load();
    assert_eq!(f.index.diffusers_version, "0.42.1");
    let mut r = Report::default();
    let mut per_scheduler: HashMap<String, usize> = HashMap::new();
    let mut notes = vec![];
    let mut euler_velocity_differs = 0;
    for case in &f.index.cases {
        *per_scheduler.entry(case.scheduler.clone()).or_default() += 1;
        let mut s = build(case);
        check_schedule(&f, case, s.as_ref(), &mut r);
        match case.deviation.as_deref() {
            None => {
                let tr = replay(&f, case, s.as_mut(), |_, _, _, _, _| {});
                check_trajectory(&f, case, &tr, &mut r);
            }
            Some("ddim_prev_timestep") => {
                notes.push(format!(
                    "{}: diffusers steps DDIM to t - T // n (issues 12633, 11347); checked against \
                     the closed-form DDIM update to the next timestep of the list",
                    case.name
                ));
                let cfg = s.config().clone();
                let ts: Vec<usize> = s.timesteps().iter().map(|&t| t as usize).collect();
                let ac = vec64(f.need(case, "alphas_cumprod"));
                let mut want = vec![];
                let tr = replay(&f, case, s.as_mut(), |i, _, x, m, z| {
                    want.push(ddim_closed_form(
                        &ac,
                        ts[i],
                        ts.get(i + 1).copied(),
                        &cfg,
                        x,
                        m,
                        z,
                    ));
                });
                for (i, (p, x0)) in want.iter().enumerate() {
                    r.check(
                        &case.name,
                        &format!("step {i} prev_sample (closed form)"),
                        &tr.prevs[i],
                        p,
                    );
                    r.check(
                        &case.name,
                        &format!("step {i} x0 (closed form)"),
                        &tr.x0s[i],
                        x0,
                    );
                }
                let d = max_diff(&tr.prevs, f.need(case, "prev_sample"));
                assert!(
                    d > 1e-4,
                    "{}: diffusers' DDIM now agrees with ours ({d:.1e}): drop the deviation",
                    case.name
                );
            }
            Some("ddpm_fixed_large_log") => {
                notes.push(format!(
                    "{}: diffusers takes sqrt(log beta) (NaN, issue 14569); checked against \
                     diffusers' own fixed_large run, which exp(0.5 log beta) is",
                    case.name
                ));
                let want = vec64(f.need(case, "prev_sample"));
                assert!(
                    want.iter().any(|v| v.is_nan()),
                    "{}: diffusers is no longer NaN",
                    case.name
                );
                let large = f
                    .index
                    .cases
                    .iter()
                    .find(|c| c.name == "ddpm/variance/fixed_large")
                    .expect("the fixed_large case");
                let tr = replay(&f, case, s.as_mut(), |_, _, _, _, _| {});
                check_trajectory(&f, large, &tr, &mut r);
            }
            Some("euler_log_linear") => {
                notes.push(format!(
                    "{}: diffusers lays n + 1 log-spaced sigmas over n timesteps; checked against \
                     exp(linspace(log sigma(t_0), log sigma(t_(n-1)), n)) and the closed-form Euler step",
                    case.name
                ));
                let sig = s.sigmas().unwrap().to_vec();
                let n = s.timesteps().len();
                assert_eq!(
                    vec64(f.need(case, "sigmas")).len(),
                    n + 2,
                    "diffusers' n + 1 sigmas"
                );
                let ac = vec64(f.need(case, "alphas_cumprod"));
                let train = |t: f64| ((1.0 - ac[t as usize]) / ac[t as usize]).sqrt();
                let ts = s.timesteps().to_vec();
                let (hi, lo) = (train(ts[0]).ln(), train(ts[n - 1]).ln());
                let want: Vec<f64> = (0..n)
                    .map(|i| (hi + (lo - hi) * i as f64 / (n - 1) as f64).exp())
                    .chain([0.0])
                    .collect();
                r.check_vec(
                    &case.name,
                    "sigmas (closed form)",
                    &sig,
                    &Tensor::from_slice(&want),
                );
                let mut steps = vec![];
                let tr = replay(&f, case, s.as_mut(), |i, _, x, m, _| {
                    steps.push(euler_closed_form(x, m, want[i], want[i + 1]));
                });
                for (i, p) in steps.iter().enumerate() {
                    r.check(
                        &case.name,
                        &format!("step {i} prev_sample (closed form)"),
                        &tr.prevs[i],
                        p,
                    );
                }
            }
            Some(other) => panic!("{}: unknown deviation {other}", case.name),
        }
        // add_noise / get_velocity: on the scheduler after its loop, as the fixture did
        if case.scheduler == "euler" {
            if let Some(theirs) = f.get(case, "get_velocity") {
                let ours = s
                    .get_velocity(
                        f.need(case, "fwd_x0"),
                        f.need(case, "fwd_noise"),
                        f.need(case, "fwd_timesteps"),
                    )
                    .unwrap();
                if err(&ours, theirs) > 1e-4 {
                    euler_velocity_differs += 1;
                }
            }
        }
        check_forward(&f, case, s.as_ref(), &mut r);
    }
    for n in &notes {
        println!("deliberate difference: {n}");
    }
    println!(
        "{} cases ({per_scheduler:?}), {} checks, largest error {:.1e}; {} combinations refused by diffusers",
        f.index.cases.len(),
        r.checked,
        r.worst,
        f.index.skipped.len()
    );
    assert!(
        euler_velocity_differs > 0,
        "diffusers' Euler get_velocity now agrees with the closed form: drop the note"
    );
    assert!(
        r.failures.is_empty(),
        "{} mismatches:\n{}",
        r.failures.len(),
        r.failures.join("\n")
    );
    for k in SchedulerKind::NAMES {
        assert!(
            per_scheduler.get(*k).copied().unwrap_or(0) >= 20,
            "few cases for {k}"
        );
    }
}

/// The combinations the fixture script found diffusers refusing: ours take them (a beta
/// schedule is independent of the sampler) and run them to finite samples.
#[test]
fn combinations_diffusers_refuses_run_here() {
    let f = Fixtures::load();
    assert!(!f.index.skipped.is_empty());
    for sk in &f.index.skipped {
        assert!(
            sk.diffusers_error.contains("NotImplementedError"),
            "{}",
            sk.name
        );
        let parts: Vec<&str> = sk.name.split('/').collect();
        let cfg = SchedulerConfig::from_json_value(serde_json::json!({
            "beta_schedule": parts[1], "prediction_type": parts[2], "timestep_spacing": parts[3],
        }))
        .unwrap();
        let mut s = scheduler_by_name(parts[0], &cfg).unwrap();
        s.set_timesteps(10).unwrap();
        let mut x =
            Tensor::ones([1, 2, 2, 2], (Kind::Double, tch::Device::Cpu)) * s.init_noise_sigma();
        for t in s.timesteps().to_vec() {
            let xin = s.scale_model_input(&x, t).unwrap();
            let z = x.zeros_like();
            x = s
                .step(&model_output(&xin, t, "plain"), t, &x, Some(&z))
                .unwrap()
                .prev_sample;
        }
        assert!(x.isfinite().all().int64_value(&[]) == 1, "{}", sk.name);
    }
}

/// The replay can fail: a schedule off by one timestep is caught.
#[test]
fn a_wrong_scheduler_fails_the_comparison() {
    let f = Fixtures::load();
    let case = f
        .index
        .cases
        .iter()
        .find(|c| c.name == "ddim/linear/epsilon/leading")
        .unwrap()
        .clone();
    let mut wrong = case.clone();
    wrong.config["steps_offset"] = serde_json::json!(1);
    let mut s = build(&wrong);
    let mut r = Report::default();
    let tr = replay(&f, &case, s.as_mut(), |_, _, _, _, _| {});
    check_trajectory(&f, &case, &tr, &mut r);
    assert!(!r.failures.is_empty());
    // and the untouched one passes
    let mut s = build(&case);
    let mut r = Report::default();
    let tr = replay(&f, &case, s.as_mut(), |_, _, _, _, _| {});
    check_trajectory(&f, &case, &tr, &mut r);
    assert!(r.failures.is_empty(), "{:?}", r.failures);
}

/// DDIM with custom timesteps (diffusers' DDIM has none): the closed-form update to the next
/// timestep of the list, on the schedule diffusers computed.
#[test]
fn ddim_custom_timesteps_match_the_closed_form() {
    let f = Fixtures::load();
    let case = f
        .index
        .cases
        .iter()
        .find(|c| c.name == "ddim/eta_1")
        .unwrap()
        .clone();
    let ac = vec64(f.need(&case, "alphas_cumprod"));
    let cfg = config_of(&case);
    let mut s = scheduler_by_name("ddim", &cfg).unwrap();
    let ts = [950.0, 777.0, 500.0, 123.0, 42.0, 7.0];
    s.set_custom_timesteps(&ts).unwrap();
    let cfg = s.config().clone();
    let mut x =
        Tensor::from_slice(&[0.4f64, -1.3, 0.8, 0.05, 2.1, -0.7, 0.0, 1.0]).reshape([1, 2, 2, 2]);
    let mut r = Report::default();
    for (i, &t) in ts.iter().enumerate() {
        let m = model_output(&x, t, "plain");
        let z = (&x * 1.7).cos();
        let prev = ts.get(i + 1).map(|&p| p as usize);
        let (want, want_x0) = ddim_closed_form(&ac, t as usize, prev, &cfg, &x, &m, Some(&z));
        let out = s.step(&m, t, &x, Some(&z)).unwrap();
        r.check("ddim/custom", &format!("step {i}"), &out.prev_sample, &want);
        r.check(
            "ddim/custom",
            &format!("step {i} x0"),
            &out.pred_original_sample,
            &want_x0,
        );
        x = out.prev_sample;
    }
    assert!(r.failures.is_empty(), "{:?}", r.failures);
}
