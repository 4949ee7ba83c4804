#!/usr/bin/env bash
# The mode-collapse benchmark of VEEGAN / PacGAN (issue 19) on ring8 and grid25: one variant,
# several seeds; each run trains `gan2d` on the mixture's 100 000 fixed points, draws 2500
# samples and scores them (a mode is captured with >= 1 high-quality sample, i.e. within 3
# standard deviations; high-quality share; KL(generated mode histogram || uniform)). The
# summary (mean and standard error over seeds, as PacGAN's Table 1) comes from
# scripts/mode_collapse_table.py.
#   scripts/mode_collapse.sh VARIANT MIXTURE "SEEDS" [extra train args]
# VARIANT: plain | pacgan1 | pacgan2 | pacgan3 | pacgan4 | wgangp
# env: STEPS (default 20000), OUTDIR (default runs/mode-collapse), GENMODELS, THREADS (1)
set -euo pipefail
cd "$(dirname "$0")/.."
variant=$1 mix=$2 seeds=$3
shift 3
G=${GENMODELS:-target/debug/genmodels}
T=${THREADS:-1}
steps=${STEPS:-20000}
# PacGAN's 2-D networks (its official code): G 4 x 400 Linear (no bias) + BN + ReLU from a
# 2-D latent; D 3 x 200 maxout units of 5 pieces; N(0, 0.02) weights; Adam 1e-4, beta1 0.8;
# batch 100. pacgan1 is that GAN unpacked (PacGAN's "GAN" row).
pac=(--set z_dim=2 --set hidden=400 --set g_layers=4 --set g_batch_norm=true
     --set d_hidden=200 --set d_layers=3 --set maxout=5 --set init_std=0.02
     --set lr=1e-4 --set beta1=0.8 --set beta2=0.999)
case $variant in
  plain)   args=(--batch-size 256) ;;
  pacgan1) args=(--batch-size 100 "${pac[@]}" --set pack=1) ;;
  pacgan2) args=(--batch-size 100 "${pac[@]}" --set pack=2) ;;
  pacgan3) args=(--batch-size 99 "${pac[@]}" --set pack=3) ;;
  pacgan4) args=(--batch-size 100 "${pac[@]}" --set pack=4) ;;
  # Gulrajani et al.'s gan_toy.py: 3 x 512 ReLU, z 2, lambda 0.1, 5 critic steps, batch 256,
  # Adam 1e-4 (0.5, 0.9).
  wgangp)  args=(--batch-size 256 --set z_dim=2 --set hidden=512 --set g_layers=3 --set d_layers=3
                 --set loss=wasserstein --set gp_lambda=0.1 --set n_critic=5 --set lr=1e-4
                 --set beta1=0.5 --set beta2=0.9) ;;
  *) echo "unknown variant $variant" >&2; exit 2 ;;
esac
for s in $seeds; do
  out=${OUTDIR:-runs/mode-collapse}/$mix-$variant-s$s
  mkdir -p "$(dirname "$out")"
  start=$(date +%s)
  $G --threads "$T" train gan2d --data "$mix" --out "$out" --steps "$steps" --seed "$s" \
      --log-every 500 --sample-every 1000000 --checkpoint-every 5000 --eval-every 0 \
      "${args[@]}" "$@" --force > "$out.log" 2>&1 || { echo "train failed: $out.log" >&2; exit 1; }
  mid=$(date +%s)
  $G --threads "$T" metrics --real "$mix" --fake "$out" -n 2500 --seed "$s" --json "$out/modes.json" >> "$out.log" 2>&1
  echo "{\"variant\": \"$variant\", \"mixture\": \"$mix\", \"seed\": $s, \"steps\": $steps, \"train_seconds\": $((mid - start))}" > "$out/times.json"
  tail -2 "$out.log" | head -1
done
