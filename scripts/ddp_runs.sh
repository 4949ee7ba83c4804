#!/usr/bin/env bash
# Data-parallel training on real data, beside one process with the same global batch and steps:
# DCGAN on Fashion-MNIST and GPT (gpt-mini) on Moby-Dick, each as 1 process (2 threads),
# `--nproc 2` and torchrun with 2 processes (1 thread each). Prints wall times, final losses,
# GPT's validation perplexity and DCGAN's domain FID (2000 vs 2000, the eval's classifier
# features). docs/results.md "Data-parallel training" came from this script.
#
#   scripts/ddp_runs.sh [OUT]        (OUT defaults to runs/ddp; DCGAN_STEPS, GPT_STEPS to choose;
#                                     METRICS_ONLY=1 scores the runs already there)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/ddp}
G=target/debug/genmodels
DCGAN_STEPS=${DCGAN_STEPS:-1000}
GPT_STEPS=${GPT_STEPS:-1000}
mkdir -p "$OUT"
cargo build -q -p genmodels-cli

timed() { # NAME CMD...: runs CMD, appends "NAME SECONDS" to OUT/times.txt
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@"
  echo "$name $(echo "$(date +%s.%N) - $t0" | bc)" | tee -a "$OUT/times.txt"
}

common=(--no-progress --sample-every 0 --checkpoint-every 250 --seed 0 --force)
dcgan=(train dcgan --data fashion-mnist --steps "$DCGAN_STEPS" --batch-size 128 "${common[@]}")
gpt=(train gpt-mini --data moby-dick --steps "$GPT_STEPS" --batch-size 24 --lr-schedule cosine:100:"$GPT_STEPS":0.1 --grad-clip 1 "${common[@]}")

[ -n "${METRICS_ONLY:-}" ] || {
timed dcgan-1proc $G --threads 2 "${dcgan[@]}" --out "$OUT/dcgan-1proc"
timed dcgan-nproc2 $G "${dcgan[@]}" --out "$OUT/dcgan-nproc2" --nproc 2
timed dcgan-torchrun2 env OMP_NUM_THREADS=1 .venv/bin/torchrun --nproc-per-node 2 --master-port 29533 --no-python $G "${dcgan[@]}" --out "$OUT/dcgan-torchrun2"
timed gpt-1proc $G --threads 2 "${gpt[@]}" --out "$OUT/gpt-1proc"
timed gpt-nproc2 $G "${gpt[@]}" --out "$OUT/gpt-nproc2" --nproc 2
timed gpt-torchrun2 env OMP_NUM_THREADS=1 .venv/bin/torchrun --nproc-per-node 2 --master-port 29534 --no-python $G "${gpt[@]}" --out "$OUT/gpt-torchrun2"
}

for r in gpt-1proc gpt-nproc2 gpt-torchrun2; do
  echo "== $r"; tail -1 "$OUT/$r/train.jsonl"
  $G --threads 2 perplexity "$OUT/$r" --json "$OUT/$r/perplexity.json" | tail -2
done
CLS=$OUT/domain-classifier.safetensors
[ -f "$CLS" ] || $G --threads 2 classifier --data fashion-mnist --out "$CLS" --epochs 3
for r in dcgan-1proc dcgan-nproc2 dcgan-torchrun2; do
  echo "== $r"; tail -1 "$OUT/$r/train.jsonl"
  $G --threads 2 metrics --real fashion-mnist:test --fake "$OUT/$r" -n 2000 --classifier "$CLS" \
    --features classifier --json "$OUT/$r/metrics.json" | tail -4
done
