"""Plots a classifier-free guidance sweep made by scripts/ddpm_guidance_sweep.sh.

    .venv/bin/python scripts/plot_guidance_sweep.py runs/ddpm-cond-fmnist/sweep ddim-20 docs/img/ddpm-cond-guidance.png

Reads DIR/PREFIX-gS.json (genmodels metrics) and DIR/PREFIX-gS.cas.json (genmodels cas) for every
scale S found, and draws FID, precision, recall and CAS against the guidance scale.
"""
import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(d, prefix, out):
    rows = []
    for p in glob.glob(os.path.join(d, f"{prefix}-g*.cas.json")):
        s = float(re.search(r"-g([0-9.]+)\.cas\.json$", p).group(1))
        cas = json.load(open(p))
        m = json.load(open(p.replace(".cas.json", ".json")))
        scores = m.get("scores", m)
        rows.append((s, scores["fid"], scores["precision"], scores["recall"], cas["cas"], cas["real_baseline"]))
    if not rows:
        sys.exit(f"no {prefix}-g*.cas.json in {d}")
    rows.sort()
    s = [r[0] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4))
    ax[0].plot(s, [r[1] for r in rows], "o-", color="C3")
    ax[0].set_xlabel("guidance scale")
    ax[0].set_ylabel("domain FID (lower is better)")
    for i, (lab, c) in enumerate([("precision", "C0"), ("recall", "C1"), ("CAS", "C2")]):
        ax[1].plot(s, [r[2 + i] for r in rows], "o-", label=lab, color=c)
    ax[1].axhline(rows[0][5], color="C2", ls=":", label="CAS of as many real images")
    ax[1].set_xlabel("guidance scale")
    ax[1].set_ylim(0, 1)
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    for r in rows:
        print("| %g | %.1f | %.3f | %.3f | %.3f |" % r[:5])


if __name__ == "__main__":
    main(*sys.argv[1:4])
