"""Make the scheduler parity fixtures with diffusers itself.

    .venv/bin/python scripts/make_scheduler_fixtures.py crates/genmodels-diffusion/tests/fixtures

writes `schedulers.safetensors` (float64 tensors) and `schedulers.json` (the index of cases) into
that folder. Replayed by crates/genmodels-diffusion/tests/scheduler_parity.rs.

Reference (pinned in scripts/requirements.txt): diffusers 0.42.1 on torch 2.13.0.

Every case runs a whole sampling loop with a fed-in "model": a deterministic function of
(scaled model input, t), so each step's input depends on the previous step's output, and fed-in
noise (recorded) for the stochastic samplers. Recorded per case: timesteps, alphas_cumprod,
sigmas where the scheduler has them, init_noise_sigma, every step's scaled model input,
prev_sample and pred_original_sample (for DPM-Solver++ the data prediction it keeps), and
add_noise / get_velocity outputs.

float64: diffusers builds its schedules in float32 (`dtype=torch.float32`, `np.float32`) and some
steps upcast to float32. To compare formulas rather than float32 rounding, the scheduler modules
run here with `torch.float32` / `np.float32` resolved to float64 in their namespaces (and float64
as torch's default dtype). Each case is run a second time unpatched and must agree with the
float64 run to float32 accuracy, which shows the patch changes the precision and nothing else.

Combinations diffusers refuses (each is tried and must raise; the error is written to the index):
  - beta_schedule `sigmoid` with DDIM, DPM-Solver++, Euler, Euler ancestral and Heun
    (only DDPMScheduler implements it: NotImplementedError);
  - prediction_type `sample` with Euler ancestral (NotImplementedError in its step).
Combinations that exist but are not cases:
  - rescale_betas_zero_snr with epsilon prediction: infinite first step in DDPM/DDIM (diffusers
    issue 3851); genmodels refuses it, tested in Rust;
  - Heun has no rescale_betas_zero_snr option in diffusers.

Cases where genmodels deliberately differs carry a `deviation` in the index; the Rust test checks
them against the closed form and asserts that diffusers' recorded value still differs:
  - `ddim_prev_timestep` (set below wherever diffusers' t - T // n is not the list's next
    timestep: `linspace`, `trailing` with n not dividing T; issues 12633, 11347);
  - `ddpm_fixed_large_log` (diffusers: sqrt(log beta), NaN; issue 14569);
  - `euler_log_linear` (diffusers: n + 1 sigmas for n timesteps).
Euler's get_velocity is recorded for every Euler case; diffusers reads alphas_cumprod at the
timestep's position in the schedule, genmodels at the timestep, so the Rust test compares it with
the closed form instead.
"""

import contextlib
import hashlib
import json
import math
import os
import sys
import types

import numpy as np
import torch
from safetensors.torch import save_file

import diffusers
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)
from diffusers.schedulers import (
    scheduling_ddim,
    scheduling_ddpm,
    scheduling_dpmsolver_multistep,
    scheduling_euler_ancestral_discrete,
    scheduling_euler_discrete,
    scheduling_heun_discrete,
)

SHAPE = (1, 2, 2, 2)
STEPS = 10
SEED = 1234
# float32 vs float64 agreement asked of the unpatched run: the cosine schedule's last
# alphas_cumprod are ~1e-9, which float32 holds to a few digits only (Heun/cosine: ~1e-2).
LOOSE = 2e-2

# our scheduler name -> (diffusers class, its module)
SCHEDULERS = {
    "ddpm": (DDPMScheduler, scheduling_ddpm),
    "ddim": (DDIMScheduler, scheduling_ddim),
    "dpm-solver++": (DPMSolverMultistepScheduler, scheduling_dpmsolver_multistep),
    "euler": (EulerDiscreteScheduler, scheduling_euler_discrete),
    "euler-ancestral": (EulerAncestralDiscreteScheduler, scheduling_euler_ancestral_discrete),
    "heun": (HeunDiscreteScheduler, scheduling_heun_discrete),
}
BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
PREDICTION_TYPES = ["epsilon", "sample", "v_prediction"]
SPACINGS = ["leading", "trailing", "linspace"]
MODULES = [m for _, m in SCHEDULERS.values()]


class _Float64Namespace(types.ModuleType):
    """`torch` / `numpy` as seen by a scheduler module, with float32 read as float64."""

    def __init__(self, module):
        super().__init__(module.__name__)
        self._module = module

    def __getattr__(self, name):
        if name == "float32":
            return self._module.float64
        return getattr(self._module, name)


@contextlib.contextmanager
def float64_schedulers(enabled=True):
    if not enabled:
        yield
        return
    saved = [(m, m.torch, m.np) for m in MODULES]
    old_default = torch.get_default_dtype()
    try:
        for m in MODULES:
            m.torch = _Float64Namespace(torch)
            m.np = _Float64Namespace(np)
        torch.set_default_dtype(torch.float64)
        yield
    finally:
        for m, t, n in saved:
            m.torch, m.np = t, n
        torch.set_default_dtype(old_default)


class NoiseFeed:
    """Stands in for `randn_tensor` in the scheduler modules: hands out the step's recorded noise."""

    def __init__(self):
        self.current = None
        self.used = 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        if self.current is None:
            raise RuntimeError("noise asked for twice in one step")
        assert tuple(shape) == tuple(self.current.shape), (shape, self.current.shape)
        out, self.current = self.current, None
        self.used += 1
        return out.to(dtype=dtype) if dtype is not None else out


FEED = NoiseFeed()
for _m in MODULES:
    _m.randn_tensor = FEED


def model_fn(x, t, kind):
    """The fed-in "model": also implemented in scheduler_parity.rs (`model_output`)."""
    k = torch.arange(x.numel(), dtype=torch.float64).reshape(x.shape)
    eps = 0.3 * x + 0.1 * torch.sin(t / 100.0 + k)
    if kind == "plain":
        return eps
    if kind == "learned_range":  # a fraction in [-1, 1] between the small and large log variances
        var = 0.8 * torch.sin(t / 37.0 + 0.5 * k)
    elif kind == "learned":  # the variance itself: positive
        var = 0.01 * torch.exp(torch.sin(t / 37.0 + 0.5 * k))
    else:
        raise ValueError(kind)
    return torch.cat([eps, var], dim=1)


def run_case(case, patched):
    """One whole sampling loop; returns the recorded tensors."""
    cls, _ = SCHEDULERS[case["scheduler"]]
    opts = case.get("options", {})
    shape = tuple(case.get("shape", SHAPE))
    with float64_schedulers(patched):
        sched = cls(**case["config"])
        if "custom_timesteps" in case:
            sched.set_timesteps(timesteps=case["custom_timesteps"])
        else:
            sched.set_timesteps(case["num_inference_steps"])
        timesteps = sched.timesteps
        n = len(timesteps)
        g = torch.Generator().manual_seed(SEED)
        latents = torch.randn(shape, generator=g, dtype=torch.float64)
        noises = torch.randn((n,) + shape, generator=g, dtype=torch.float64)
        init_sigma = float(sched.init_noise_sigma)
        sample = latents * sched.init_noise_sigma
        inputs, prevs, x0s, samples_in = [], [], [], []
        FEED.used = 0
        for i, t in enumerate(timesteps):
            samples_in.append(sample)
            x_in = sched.scale_model_input(sample, t)
            out = model_fn(x_in, float(t), case.get("model", "plain"))
            kwargs = {}
            if case["scheduler"] == "ddim":
                kwargs = dict(eta=opts.get("eta", 0.0), use_clipped_model_output=opts.get("use_clipped_model_output", False))
                if kwargs["eta"] > 0:
                    kwargs["variance_noise"] = noises[i]
            elif case["scheduler"] == "euler":
                kwargs = {k: opts[k] for k in ("s_churn", "s_tmin", "s_tmax", "s_noise") if k in opts}
            elif case["scheduler"] == "dpm-solver++" and sched.config.algorithm_type.startswith("sde"):
                kwargs = dict(variance_noise=noises[i])
            FEED.current = noises[i]
            res = sched.step(out, t, sample, **kwargs)
            FEED.current = None
            prev = res.prev_sample
            if case["scheduler"] == "dpm-solver++":
                x0 = sched.model_outputs[-1] if sched.config.algorithm_type.endswith("++") else None
            else:
                x0 = res.pred_original_sample
            inputs.append(x_in)
            prevs.append(prev)
            x0s.append(x0)
            sample = prev
        rec = {
            "timesteps": timesteps.to(torch.float64),
            "alphas_cumprod": sched.alphas_cumprod.to(torch.float64),
            "init_noise_sigma": torch.tensor([init_sigma], dtype=torch.float64),
            "latents": latents,
            "model_input": torch.stack(inputs),
            "model_input_is_sample": all(x is s for x, s in zip(inputs, samples_in)),
            "prev_sample": torch.stack(prevs),
        }
        if all(x is not None for x in x0s):
            rec["pred_original_sample"] = torch.stack(x0s)
        if hasattr(sched, "sigmas") and case["scheduler"] not in ("ddpm", "ddim"):
            rec["sigmas"] = torch.as_tensor(sched.sigmas).to(torch.float64)
        stochastic = FEED.used > 0 or "variance_noise" in kwargs or opts.get("eta", 0.0) > 0
        if stochastic:
            rec["noise"] = noises
        # forward process, on a batch of three
        g2 = torch.Generator().manual_seed(SEED + 1)
        x0 = torch.randn((3,) + shape[1:], generator=g2, dtype=torch.float64)
        nz = torch.randn((3,) + shape[1:], generator=g2, dtype=torch.float64)
        if case["scheduler"] in ("ddpm", "ddim"):
            big_t = case["config"].get("num_train_timesteps", 1000)
            ts = torch.tensor([0, big_t * 437 // 1000, big_t - 1])
        else:
            ts = timesteps[[0, n // 2, n - 1]]
        rec["fwd_x0"], rec["fwd_noise"], rec["fwd_timesteps"] = x0, nz, ts.to(torch.float64)
        rec["add_noise"] = sched.add_noise(x0, nz, ts)
        if hasattr(sched, "get_velocity"):
            rec["get_velocity"] = sched.get_velocity(x0, nz, ts)
    return rec, sched


def base_cases():
    cases, skipped = [], []
    for name in SCHEDULERS:
        for beta in BETA_SCHEDULES:
            for pred in PREDICTION_TYPES:
                for spacing in SPACINGS:
                    case = dict(
                        name=f"{name}/{beta}/{pred}/{spacing}",
                        scheduler=name,
                        config=dict(beta_schedule=beta, prediction_type=pred, timestep_spacing=spacing),
                        num_inference_steps=STEPS,
                    )
                    refused = (beta == "sigmoid" and name != "ddpm") or (
                        name == "euler-ancestral" and pred == "sample"
                    )
                    if refused:
                        try:
                            run_case(case, True)
                        except (NotImplementedError, ValueError) as e:
                            skipped.append(dict(name=case["name"], diffusers_error=f"{type(e).__name__}: {e}"))
                            continue
                        raise SystemExit(f"{case['name']}: expected diffusers to refuse it, but it ran")
                    cases.append(case)
    return cases, skipped


def extra_cases():
    c = []

    def add(name, scheduler, config, **kw):
        case = dict(name=name, scheduler=scheduler, config=config, num_inference_steps=STEPS)
        case.update(kw)
        if "custom_timesteps" in case:
            del case["num_inference_steps"]
        c.append(case)

    sd = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
    # DDPM variance types (fixed_small is the default, in the base cases)
    for vt in ["fixed_small_log", "fixed_large"]:
        add(f"ddpm/variance/{vt}", "ddpm", dict(variance_type=vt))
    # diffusers takes sqrt(log beta) here: NaN (issue 14569, open); the Rust test compares ours
    # with diffusers' `fixed_large` run, which is what exp(0.5 * log beta) gives
    add("ddpm/variance/fixed_large_log", "ddpm", dict(variance_type="fixed_large_log"), diffusers_nan=True, deviation="ddpm_fixed_large_log")
    add("ddpm/variance/learned", "ddpm", dict(variance_type="learned"), model="learned")
    add("ddpm/variance/learned_range", "ddpm", dict(variance_type="learned_range", beta_schedule="squaredcos_cap_v2"), model="learned_range")
    add("ddpm/variance/learned_range/trailing", "ddpm", dict(variance_type="learned_range", timestep_spacing="trailing"), model="learned_range")
    add("ddpm/no_clip", "ddpm", dict(clip_sample=False))
    add("ddpm/clip_range_2", "ddpm", dict(clip_sample=True, clip_sample_range=2.0))
    add("ddpm/thresholding", "ddpm", dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5))
    add("ddpm/thresholding/v", "ddpm", dict(thresholding=True, sample_max_value=2.0, prediction_type="v_prediction"))
    add("ddpm/steps_offset", "ddpm", dict(steps_offset=1))
    add("ddpm/trailing_7", "ddpm", dict(timestep_spacing="trailing"), num_inference_steps=7)
    add("ddpm/linspace_7", "ddpm", dict(timestep_spacing="linspace"), num_inference_steps=7)
    add("ddpm/zero_snr/v", "ddpm", dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"))
    add("ddpm/zero_snr/v/scaled", "ddpm", dict(sd, rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"))
    add("ddpm/custom", "ddpm", dict(), custom_timesteps=[999, 800, 640, 500, 320, 250, 100, 42, 7, 0])
    add("ddpm/custom/short", "ddpm", dict(clip_sample=False), custom_timesteps=[600, 300, 5])
    add("ddpm/trained_betas", "ddpm", dict(trained_betas=[float(b) for b in np.linspace(2e-4, 0.03, 1000) ** 1.1]))
    add("ddpm/steps_eq_train", "ddpm", dict(num_train_timesteps=100), num_inference_steps=100, shape=[1, 1, 1, 1])
    add("ddpm/steps_1", "ddpm", dict(timestep_spacing="trailing"), num_inference_steps=1)
    # DDIM
    add("ddim/eta_1", "ddim", dict(), options=dict(eta=1.0))
    add("ddim/eta_1/trailing", "ddim", dict(timestep_spacing="trailing"), options=dict(eta=1.0))
    add("ddim/eta_0.5/clipped_eps", "ddim", dict(clip_sample=True), options=dict(eta=0.5, use_clipped_model_output=True))
    add("ddim/eta_0.5/clipped_eps/linspace", "ddim", dict(timestep_spacing="linspace"), options=dict(eta=0.5, use_clipped_model_output=True))
    add("ddim/no_alpha_to_one", "ddim", dict(set_alpha_to_one=False, clip_sample=False))
    add("ddim/no_clip", "ddim", dict(clip_sample=False))
    add("ddim/thresholding", "ddim", dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5))
    add("ddim/steps_offset", "ddim", dict(steps_offset=1))
    add("ddim/stable_diffusion", "ddim", dict(sd, clip_sample=False, set_alpha_to_one=False), num_inference_steps=12)
    add("ddim/trailing_7", "ddim", dict(timestep_spacing="trailing"), num_inference_steps=7)
    add("ddim/zero_snr/v", "ddim", dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False))
    # eta = 1 at zero terminal SNR: 1 - alpha_prev - std^2 is 0 in exact arithmetic; diffusers'
    # float32 run rounds it below 0 and takes its square root (NaN); genmodels clamps it at 0
    add("ddim/zero_snr/v/eta_1", "ddim", dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"), options=dict(eta=1.0), float32_nan=True)
    # DPM-Solver++
    dpm = "dpm-solver++"
    for beta in ["linear", "scaled_linear", "squaredcos_cap_v2"]:
        add(f"dpm/karras/{beta}", dpm, dict(beta_schedule=beta, use_karras_sigmas=True))
        add(f"dpm/exponential/{beta}", dpm, dict(beta_schedule=beta, use_exponential_sigmas=True))
    add("dpm/karras/v", dpm, dict(use_karras_sigmas=True, prediction_type="v_prediction"))
    add("dpm/karras/steps_25", dpm, dict(sd, use_karras_sigmas=True), num_inference_steps=25)
    add("dpm/order_1", dpm, dict(solver_order=1))
    add("dpm/order_3", dpm, dict(solver_order=3))
    add("dpm/order_3/steps_20", dpm, dict(solver_order=3), num_inference_steps=20)
    add("dpm/order_2/steps_20", dpm, dict(), num_inference_steps=20)
    add("dpm/heun", dpm, dict(solver_type="heun"))
    add("dpm/no_lower_order_final", dpm, dict(lower_order_final=False, final_sigmas_type="sigma_min"))
    add("dpm/euler_at_final", dpm, dict(euler_at_final=True, final_sigmas_type="sigma_min"))
    add("dpm/sigma_min", dpm, dict(final_sigmas_type="sigma_min"))
    add("dpm/lambda_min_clipped", dpm, dict(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1))
    add("dpm/thresholding", dpm, dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1.5))
    add("dpm/dpmsolver", dpm, dict(algorithm_type="dpmsolver", final_sigmas_type="sigma_min"))
    add("dpm/dpmsolver/order_3", dpm, dict(algorithm_type="dpmsolver", solver_order=3, final_sigmas_type="sigma_min"))
    add("dpm/sde-dpmsolver++", dpm, dict(algorithm_type="sde-dpmsolver++"))
    add("dpm/sde-dpmsolver++/heun", dpm, dict(algorithm_type="sde-dpmsolver++", solver_type="heun"))
    add("dpm/sde-dpmsolver", dpm, dict(algorithm_type="sde-dpmsolver", final_sigmas_type="sigma_min"))
    add("dpm/steps_offset", dpm, dict(timestep_spacing="leading", steps_offset=1))
    add("dpm/stable_diffusion", dpm, dict(sd, timestep_spacing="leading"), num_inference_steps=12)
    add("dpm/zero_snr/v", dpm, dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"))
    add("dpm/custom", dpm, dict(), custom_timesteps=[999, 850, 700, 500, 300, 120, 30])
    add("dpm/learned_range_3ch", dpm, dict(variance_type="learned_range"), model="learned_range", shape=[1, 3, 2, 2])
    add("dpm/steps_1", dpm, dict(), num_inference_steps=1)
    # Euler
    for beta in ["linear", "scaled_linear", "squaredcos_cap_v2"]:
        add(f"euler/karras/{beta}", "euler", dict(beta_schedule=beta, use_karras_sigmas=True))
        add(f"euler/exponential/{beta}", "euler", dict(beta_schedule=beta, use_exponential_sigmas=True))
    add("euler/karras/leading", "euler", dict(use_karras_sigmas=True, timestep_spacing="leading", steps_offset=1))
    add("euler/karras/sigma_range", "euler", dict(use_karras_sigmas=True, sigma_min=0.05, sigma_max=40.0))
    add("euler/sigma_min_final", "euler", dict(final_sigmas_type="sigma_min"))
    # diffusers makes n + 1 log-spaced sigmas for n timesteps, so the last step ends at sigma_min,
    # not 0, and sigma i is not the sigma of timestep i: genmodels uses n (see euler.rs)
    add("euler/log_linear", "euler", dict(interpolation_type="log_linear"), deviation="euler_log_linear")
    add("euler/churn", "euler", dict(), options=dict(s_churn=2.0, s_tmin=0.5, s_tmax=30.0, s_noise=1.003))
    add("euler/continuous/v", "euler", dict(timestep_type="continuous", prediction_type="v_prediction"))
    add("euler/steps_offset", "euler", dict(timestep_spacing="leading", steps_offset=1))
    add("euler/stable_diffusion", "euler", dict(sd, timestep_spacing="leading"), num_inference_steps=12)
    add("euler/zero_snr/v", "euler", dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"))
    add("euler/custom", "euler", dict(), custom_timesteps=[999.0, 812.5, 640.0, 333.25, 100.0, 12.0])
    add("euler/trailing_7", "euler", dict(timestep_spacing="trailing"), num_inference_steps=7)
    # Euler ancestral
    add("euler-ancestral/steps_offset", "euler-ancestral", dict(timestep_spacing="leading", steps_offset=1))
    add("euler-ancestral/stable_diffusion", "euler-ancestral", dict(sd, timestep_spacing="leading"), num_inference_steps=12)
    add("euler-ancestral/zero_snr/v", "euler-ancestral", dict(rescale_betas_zero_snr=True, prediction_type="v_prediction", timestep_spacing="trailing"))
    # Heun
    add("heun/karras", "heun", dict(use_karras_sigmas=True))
    add("heun/karras/scaled", "heun", dict(beta_schedule="scaled_linear", use_karras_sigmas=True))
    add("heun/exponential", "heun", dict(use_exponential_sigmas=True))
    add("heun/clip", "heun", dict(clip_sample=True, clip_sample_range=1.5))
    add("heun/steps_offset", "heun", dict(timestep_spacing="leading", steps_offset=1))
    add("heun/custom", "heun", dict(), custom_timesteps=[999.0, 700.0, 450.5, 200.0, 20.0])
    add("heun/steps_1", "heun", dict(), num_inference_steps=1)
    return c


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    cases, skipped = base_cases()
    cases += extra_cases()
    tensors, index = {}, []
    worst = 0.0
    for case in cases:
        rec, sched = run_case(case, True)
        # the same loop in diffusers' own float32 schedule: must agree to float32 accuracy
        try:
            rec32, _ = run_case(case, False)
        except IndexError as e:
            # cosine + Karras/exponential sigmas in float32: the first timestep comes out twice
            # (998, 998, ...), diffusers starts at the second copy and runs off its sigmas
            print(f"  {case['name']}: diffusers' float32 run fails ({e}); float64 run kept")
            rec32 = rec
        a, b = rec["prev_sample"][-1], rec32["prev_sample"][-1]
        if case.get("diffusers_nan"):
            # a diffusers bug that genmodels does not copy: the recorded run must show it
            if not torch.isnan(a).any():
                raise SystemExit(f"{case['name']}: the diffusers bug it records is gone; update the test")
            a = b = torch.zeros(1)
        elif case.get("float32_nan"):
            if not torch.isnan(b).any():
                raise SystemExit(f"{case['name']}: diffusers' float32 NaN it records is gone; update the note")
            a = b = torch.zeros(1)
        rel = float((a - b).abs().max() / (b.abs().max() + 1e-3))
        worst = max(worst, rel)
        if rel > 1e-4:
            print(f"  {case['name']}: float32 run differs by {rel:.1e}")
        if not rel < LOOSE:
            raise SystemExit(f"{case['name']}: float64 and float32 runs disagree ({rel:.2e})")
        entry = {k: v for k, v in case.items() if k != "config"}
        if rec.pop("model_input_is_sample"):
            # scale_model_input is the identity here (checked in Rust against the sample)
            del rec["model_input"]
        # many tensors (schedules, seeded latents and noise) are shared: stored once per content
        entry["tensors"] = {}
        for k, v in rec.items():
            v = v.contiguous()
            key = hashlib.sha1(str(tuple(v.shape)).encode() + v.numpy().tobytes()).hexdigest()[:16]
            tensors.setdefault(key, v)
            entry["tensors"][k] = key
        # the config as diffusers writes scheduler_config.json (every key, `_class_name` included)
        entry["config"] = json.loads(sched.to_json_string().replace("-Infinity", '"-Infinity"'))
        if case["scheduler"] == "ddim" and "deviation" not in case:
            # diffusers' DDIM steps to t - T // n (issues 12633, 11347); genmodels to the next
            # timestep of the list. Where the two differ the case is checked against the formula.
            ts = [int(t) for t in rec["timesteps"]]
            stride = sched.config.num_train_timesteps // len(ts)
            theirs = [max(t - stride, -1) for t in ts]
            ours = ts[1:] + [-1]
            if theirs != ours:
                entry["deviation"] = "ddim_prev_timestep"
        entry.setdefault("model", "plain")
        entry.setdefault("shape", list(SHAPE))
        index.append(entry)
    save_file(tensors, os.path.join(out_dir, "schedulers.safetensors"))
    # a scheduler_config.json exactly as diffusers writes it (`-Infinity` and all)
    DPMSolverMultistepScheduler(beta_schedule="scaled_linear", use_karras_sigmas=True).save_config(out_dir)
    meta = dict(
        diffusers_version=diffusers.__version__,
        torch_version=torch.__version__,
        seed=SEED,
        cases=index,
        skipped=skipped,
    )
    with open(os.path.join(out_dir, "schedulers.json"), "w") as f:
        json.dump(meta, f, separators=(",", ":"))
        f.write("\n")
    names = ("schedulers.safetensors", "schedulers.json", "scheduler_config.json")
    size = sum(os.path.getsize(os.path.join(out_dir, n)) for n in names)
    print(
        f"{len(index)} cases, {len(skipped)} refused by diffusers, {len(tensors)} tensors, {size / 1e6:.2f} MB; "
        f"float32 vs float64 runs agree to {worst:.1e}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/genmodels-diffusion/tests/fixtures")
