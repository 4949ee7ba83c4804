"""Markdown tables of the energy verbs' reports written by scripts/ebm_fmnist.sh:
    python3 scripts/ebm_fmnist_table.py NAME [NAME ...]
(NAME as in runs/ebm-fmnist/eval/NAME-*.json, e.g. jem-s0 classifier-s0)."""

import json
import sys
from pathlib import Path

E = Path("runs/ebm-fmnist/eval")


def load(name, what):
    p = E / f"{name}-{what}.json"
    return json.loads(p.read_text()) if p.exists() else None


def f(v, d=3):
    return "-" if v is None else f"{v:.{d}f}"


def main(names):
    print("| run | test accuracy | ECE (15 bins) |")
    print("|---|---|---|")
    for n in names:
        c = load(n, "cal")
        print(f"| {n} | {f(c['accuracy'], 4)} | {f(c['ece'], 4)} |")
    print()
    print("| run | out-of-distribution set | AUROC log p(x) | AUROC max p(y given x) | AUROC -norm of d log p / dx |")
    print("|---|---|---|---|---|")
    for n in names:
        o = load(n, "ood")
        for r in o["rows"]:
            print(f"| {n} | {r['out_data']} | {f(r['auroc_log_px'])} | {f(r['auroc_max_softmax'])} "
                  f"| {f(r['auroc_grad_norm'])} |")
    print()
    print("| run | corruption | PSNR corrupted | PSNR mean fill | PSNR after 10 / 20 / 60 steps "
          "| LPIPS corrupted | LPIPS after 60 |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        for c in ["mask-center", "mask-random-0.5", "noise-0.3"]:
            j = load(n, f"restore-{c}")
            if j is None:
                continue
            r = j["restoration"]
            at = {fr["step"]: fr["psnr_db"] for fr in r["frames"]}
            steps = " / ".join(f(at.get(s), 2) for s in (10, 20, 60))
            print(f"| {n} | {r['corrupt']} | {f(r['psnr_corrupted_db'], 2)} | {f(r['psnr_mean_fill_db'], 2)} "
                  f"| {steps} | {f(r['lpips_corrupted'])} | {f(r['lpips_restored'])} |")
    print()
    for n in names:
        ch = load(n, "chains")
        if ch:
            print(f"- {n}: {ch['ms_per_step_per_image']:.2f} ms per Langevin step per image "
                  f"({ch['chains']} chains, {ch['threads']} threads)")


if __name__ == "__main__":
    main(sys.argv[1:])
