#!/usr/bin/env python3
"""Fixtures for genmodels-metrics' detection scores, made by the references themselves:
sklearn.metrics.roc_auc_score on scores with ties (OOD detection, as JEM's eval_wrn_ebm.py
computes it), and the expected calibration error of Guo et al. (15 equal-width bins over (0, 1],
the formula of their `ECELoss`, computed here in numpy) on random softmax predictions.

    .venv/bin/python scripts/make_detection_fixtures.py crates/genmodels-metrics/tests/fixtures/detection.json
"""
import json
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

rng = np.random.default_rng(7)
cases = []
for n_pos, n_neg, shift, decimals in [(300, 200, 0.5, 1), (50, 500, 1.5, 2), (1000, 1000, 0.0, 3)]:
    pos = np.round(rng.normal(shift, 1.0, n_pos), decimals)
    neg = np.round(rng.normal(0.0, 1.0, n_neg), decimals)
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)]
    auc = roc_auc_score(y, np.r_[pos, neg])
    cases.append({"positive": pos.tolist(), "negative": neg.tolist(), "auroc": float(auc)})

logits = rng.normal(0.0, 2.0, (2000, 10))
p = np.exp(logits - logits.max(1, keepdims=True))
p /= p.sum(1, keepdims=True)
labels = np.where(rng.random(2000) < 0.7, p.argmax(1), rng.integers(0, 10, 2000))
conf, pred = p.max(1), p.argmax(1)
correct = pred == labels
edges = np.linspace(0, 1, 16)
ece = 0.0
for lo, hi in zip(edges[:-1], edges[1:]):
    m = (conf > lo) & (conf <= hi)
    if m.any():
        ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
out = {"auroc": cases, "calibration": {"confidence": conf.tolist(), "correct": correct.tolist(), "bins": 15, "ece": float(ece)}}
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
print(sys.argv[1], [c["auroc"] for c in cases], ece)
