"""Make the UNet2DModel parity fixtures with diffusers itself.

    .venv/bin/python scripts/make_unet_fixtures.py crates/genmodels-diffusion/tests/fixtures

writes one folder per case, `unet_<case>/`, holding what `UNet2DModel.save_pretrained` writes
(`config.json`, `diffusion_pytorch_model.safetensors`) plus `parity_io.safetensors` (the inputs
and diffusers' output), and the index `unet_cases.json`. Replayed by
crates/genmodels-diffusion/tests/unet_parity.rs.

Reference (pinned in scripts/requirements.txt): diffusers 0.42.1 on torch 2.13.0, float32, CPU.

Every model is tiny (block_out_channels like [8, 16], 4 groups) and randomly initialised from
`torch.manual_seed`; then every parameter gets N(0, 0.1^2) noise added (norm scales and biases
too, so no layer is left at an identity initialisation). Each batch holds two examples with
different timesteps ([3, 917] unless the case says otherwise).

One case is not a plain `UNet2DModel` run: `odd7_upsample_to_skip`. diffusers' UNet2DModel
upsamples by exactly 2, so a side that does not halve evenly (7 -> 4 -> 8) meets a 7x7 skip and
raises; genmodels then upsamples to the skip's size, as UNet2DConditionModel does
(`forward_upsample_size`, `Upsample2D(output_size=...)`). Its reference is the same diffusers
modules with each upsampler given the skip's size. The plain run must still raise (checked here,
the error is written to the index) so that the note cannot outlive the behaviour.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

import diffusers
from diffusers import UNet2DModel
from diffusers.models.upsampling import Upsample2D

BASE = dict(
    block_out_channels=[8, 16],
    norm_num_groups=4,
    layers_per_block=1,
    down_block_types=["DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D"],
    attention_head_dim=4,
)

CASES = [
    dict(
        name="uncond_attn",
        doc="unconditional, attention in the low-resolution block and mid block, positional "
        "time embedding with flip_sin_to_cos=True, freq_shift=0, int64 timesteps",
        config=dict(BASE, sample_size=8, in_channels=3, out_channels=3, flip_sin_to_cos=True,
                    freq_shift=0),
        side=8,
    ),
    dict(
        name="class_scale_shift",
        doc="class-conditional (num_class_embeds=5), resnet_time_scale_shift=scale_shift (so the "
        "mid attention has no group norm), flip_sin_to_cos=False, freq_shift=1, "
        "layers_per_block=2, single-head attention (attention_head_dim=None), float timesteps",
        config=dict(BASE, sample_size=8, in_channels=1, out_channels=1, flip_sin_to_cos=False,
                    freq_shift=1, num_class_embeds=5, resnet_time_scale_shift="scale_shift",
                    layers_per_block=2, attention_head_dim=None,
                    down_block_types=["AttnDownBlock2D", "DownBlock2D"],
                    up_block_types=["UpBlock2D", "AttnUpBlock2D"]),
        side=8,
        timesteps=torch.tensor([3.0, 917.25]),
        class_labels=torch.tensor([1, 4]),
    ),
    dict(
        name="odd14_pad0",
        doc="14x14 down to 7x7 (attention at 7x7) with downsample_padding=0 (diffusers pads "
        "right/bottom by one), center_input_sample, mid_block_scale_factor=2",
        config=dict(BASE, sample_size=14, in_channels=1, out_channels=1, downsample_padding=0,
                    center_input_sample=True, mid_block_scale_factor=2.0),
        side=14,
    ),
    dict(
        name="learned_variance",
        doc="out_channels = 2 x in_channels, three levels (8 -> 4 -> 2), attn_norm_num_groups=2, "
        "norm_eps=1e-6",
        config=dict(BASE, sample_size=8, in_channels=2, out_channels=4,
                    block_out_channels=[8, 16, 16], attn_norm_num_groups=2, norm_eps=1e-6,
                    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
                    up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
        side=8,
    ),
    dict(
        name="resnet_updown_fourier",
        doc="downsample_type/upsample_type=resnet (avg-pool / nearest inside a ResnetBlock2D), "
        "fourier time embedding (log sigma in, output divided by sigma), act_fn=mish",
        config=dict(BASE, sample_size=8, in_channels=1, out_channels=1,
                    down_block_types=["AttnDownBlock2D", "AttnDownBlock2D"],
                    up_block_types=["AttnUpBlock2D", "AttnUpBlock2D"],
                    downsample_type="resnet", upsample_type="resnet",
                    time_embedding_type="fourier", act_fn="mish"),
        side=8,
        timesteps=torch.tensor([0.05, 20.0]),
    ),
    dict(
        name="learned_time_class_timestep",
        doc="time_embedding_type=learned (a table of num_train_timesteps rows), "
        "class_embed_type=timestep (labels through the same table and their own "
        "TimestepEmbedding), time_embedding_dim=24, no mid block, act_fn=gelu",
        config=dict(BASE, sample_size=8, in_channels=1, out_channels=1,
                    time_embedding_type="learned", num_train_timesteps=1000,
                    class_embed_type="timestep", time_embedding_dim=24, mid_block_type=None,
                    act_fn="gelu"),
        side=8,
        class_labels=torch.tensor([7, 450]),
    ),
    dict(
        name="identity_class",
        doc="class_embed_type=identity: class_labels are [N, time_embed_dim] vectors added to the "
        "time embedding; act_fn=relu",
        config=dict(BASE, sample_size=8, in_channels=1, out_channels=1,
                    class_embed_type="identity", act_fn="relu"),
        side=8,
        class_vectors=32,
    ),
    dict(
        name="odd7_upsample_to_skip",
        doc="7x7 through three levels (7 -> 4 -> 2 -> 4 -> 7): diffusers' UNet2DModel raises "
        "(it upsamples 4 -> 8 against a 7x7 skip); reference = the same modules with each "
        "upsampler given the skip's size (UNet2DConditionModel's forward_upsample_size)",
        config=dict(BASE, sample_size=7, in_channels=1, out_channels=1,
                    block_out_channels=[8, 16, 16],
                    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
                    up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]),
        side=7,
        upsample_to_skip=True,
    ),
]


def perturb(model, gen):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))


def run_upsample_to_skip(model, sample, timesteps, class_labels):
    """UNet2DModel.forward with every upsampler given the size of the skip it meets next."""
    n = len(model.down_blocks)
    sizes = {}
    hooks = []
    for j, block in enumerate(model.down_blocks):
        hooks.append(block.register_forward_pre_hook(
            lambda mod, args, kwargs, j=j: sizes.__setitem__(j, tuple(kwargs["hidden_states"].shape[-2:])),
            with_kwargs=True))
    patched = []
    for i, block in enumerate(model.up_blocks):
        for m in block.modules():
            if isinstance(m, Upsample2D):
                orig = m.forward

                def fwd(h, output_size=None, *a, _orig=orig, _i=i, **k):
                    return _orig(h, output_size=sizes[n - 2 - _i])

                m.forward = fwd
                patched.append(m)
    try:
        return model(sample, timesteps, class_labels).sample
    finally:
        for h in hooks:
            h.remove()
        for m in patched:
            del m.forward


def main(out_dir):
    index = dict(diffusers_version=diffusers.__version__, torch_version=torch.__version__, cases=[])
    for k, case in enumerate(CASES):
        torch.manual_seed(1000 + k)
        gen = torch.Generator().manual_seed(2000 + k)
        model = UNet2DModel(**case["config"]).eval()
        perturb(model, gen)
        cfg = model.config
        side = case["side"]
        sample = torch.randn(2, cfg.in_channels, side, side, generator=gen)
        timesteps = case.get("timesteps", torch.tensor([3, 917]))
        class_labels = case.get("class_labels")
        if "class_vectors" in case:
            class_labels = torch.randn(2, case["class_vectors"], generator=gen)
        entry = dict(name=case["name"], doc=case["doc"], folder=f"unet_{case['name']}")
        with torch.no_grad():
            if case.get("upsample_to_skip"):
                try:
                    model(sample, timesteps, class_labels)
                    raise SystemExit(f"{case['name']}: diffusers no longer raises; drop the note")
                except RuntimeError as e:
                    entry["diffusers_error"] = str(e).splitlines()[0]
                out = run_upsample_to_skip(model, sample, timesteps, class_labels)
                entry["reference"] = "diffusers modules, upsamplers given the skip's size"
            else:
                out = model(sample, timesteps, class_labels).sample
                entry["reference"] = "UNet2DModel.forward"
        assert out.shape[1] == cfg.out_channels and out.shape[-2:] == sample.shape[-2:]
        folder = os.path.join(out_dir, entry["folder"])
        model.save_pretrained(folder, safe_serialization=True)
        io = dict(sample=sample, timesteps=timesteps, output=out.contiguous())
        if class_labels is not None:
            io["class_labels"] = class_labels
        save_file(io, os.path.join(folder, "parity_io.safetensors"))
        for f in os.listdir(folder):
            os.chmod(os.path.join(folder, f), 0o644)
        entry["output_abs_max"] = float(out.abs().max())
        entry["parameters"] = sum(p.numel() for p in model.parameters())
        index["cases"].append(entry)
        print(f"{case['name']}: {entry['parameters']} parameters, |out| max {entry['output_abs_max']:.3f}")
    with open(os.path.join(out_dir, "unet_cases.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "crates/genmodels-diffusion/tests/fixtures")
