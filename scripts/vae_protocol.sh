#!/usr/bin/env bash
# The VAE family on the standard protocol (issue 20): 20 epochs (9360 steps of batch 128) on
# dynamically binarised Fashion-MNIST, then the test NLL on all 10 000 test images with
# K = 5000 importance samples (test set binarised once with seed 0; its SHA-256 is in each
# JSON, equal to scripts/vae_reference.py's). One row per (name, seed):
#   scripts/vae_protocol.sh NAME SEED MODEL [--set k=v ...]
# e.g. scripts/vae_protocol.sh vae 0 vae
#      scripts/vae_protocol.sh iwae-k50 1 iwae
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 seed=$2 model=$3
shift 3
G=${GENMODELS:-target/debug/genmodels}
T=${THREADS:-1}
out=${OUTDIR:-runs/vae-protocol}/$name-s$seed
start=$(date +%s)
$G --threads "$T" train "$model" --data fashion-mnist --out "$out" --steps "${STEPS:-9360}" --batch-size 128 \
    --seed "$seed" --log-every 234 --sample-every 100000 --checkpoint-every 2340 --eval-every 0 "$@" --force
mid=$(date +%s)
$G --threads "$T" nll "$out" -n "${N:-10000}" -k "${K:-5000}" --json "$out/nll.json"
end=$(date +%s)
echo "{\"name\": \"$name\", \"seed\": $seed, \"train_seconds\": $((mid - start)), \"nll_seconds\": $((end - mid))}" > "$out/times.json"
