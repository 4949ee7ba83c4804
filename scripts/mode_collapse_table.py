#!/usr/bin/env python3
"""Summarise scripts/mode_collapse.sh runs as PacGAN's Table 1: for each (mixture, variant),
modes captured, high-quality share and KL(mode histogram || uniform), mean +- standard error
over seeds. Usage: scripts/mode_collapse_table.py [runs/mode-collapse] [--json OUT]"""
import json
import math
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "runs/mode-collapse")
rows = {}
for m in sorted(root.glob("*/modes.json")):
    t = json.loads((m.parent / "times.json").read_text())
    r = json.loads(m.read_text())
    rows.setdefault((t["mixture"], t["variant"], t["steps"]), []).append((t, r))


def mse(xs):
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return mean, float("nan")
    var = sum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var / n)


out = []
print("| mixture | variant | steps | seeds | modes (of K) | high-quality % | reverse KL | train s/run |")
print("|---|---|---|---|---|---|---|---|")
for (mix, var, steps), rs in sorted(rows.items()):
    modes = mse([r["modes_covered"] for _, r in rs])
    hq = mse([100 * r["high_quality_share"] for _, r in rs])
    kl = mse([r["kl_to_uniform"] for _, r in rs])
    secs = sum(t["train_seconds"] for t, _ in rs) / len(rs)
    k = rs[0][1]["modes"]
    print(f"| {mix} | {var} | {steps} | {len(rs)} | {modes[0]:.1f} +- {modes[1]:.1f} (of {k}) | "
          f"{hq[0]:.1f} +- {hq[1]:.1f} | {kl[0]:.3f} +- {kl[1]:.3f} | {secs:.0f} |")
    out.append({"mixture": mix, "variant": var, "steps": steps, "seeds": [t["seed"] for t, _ in rs],
                "modes": modes, "high_quality_percent": hq, "reverse_kl": kl, "train_seconds": secs})
if "--json" in sys.argv:
    pathlib.Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(out, indent=1))
