#!/usr/bin/env bash
# DCGAN beside the PyTorch example at equal budget (issue 19): 3000 steps of batch 64 on
# Fashion-MNIST, 2000 samples scored against the first 2000 test images with pytorch-fid's
# protocol (Inception pool3, its bilinear resize to 299). One row per (name, seed):
#   scripts/dcgan_protocol.sh NAME SEED ours [--set k=v ...]    # genmodels train dcgan
#   scripts/dcgan_protocol.sh NAME SEED pytorch                 # scripts/dcgan_reference.py
# env: STEPS (3000), BATCH (64), N (2000), OUTDIR (runs/dcgan-cmp), GENMODELS, THREADS (1)
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 seed=$2 side=$3
shift 3
G=${GENMODELS:-target/debug/genmodels}
T=${THREADS:-1}
steps=${STEPS:-3000} batch=${BATCH:-64} n=${N:-2000}
out=${OUTDIR:-runs/dcgan-cmp}/$name-s$seed
mkdir -p "$out"
start=$(date +%s)
if [ "$side" = pytorch ]; then
  .venv/bin/python scripts/dcgan_reference.py --steps "$steps" --batch-size "$batch" --seed "$seed" \
      -n "$n" --threads "$T" --out "$out/samples" > "$out/train.log" 2>&1
else
  $G --threads "$T" train dcgan --data fashion-mnist --out "$out/run" --steps "$steps" --batch-size "$batch" \
      --seed "$seed" --log-every 500 --sample-every 100000 --checkpoint-every 1000 --eval-every 0 "$@" --force \
      > "$out/train.log" 2>&1
  $G --threads "$T" sample "$out/run" -n "$n" --seed "$seed" --out "$out/samples" >> "$out/train.log" 2>&1
fi
mid=$(date +%s)
$G --threads "$T" metrics --real fashion-mnist:test --fake "folder:$out/samples" -n "$n" --fid \
    --resize pytorch-bilinear --json "$out/fid.json" >> "$out/train.log" 2>&1
end=$(date +%s)
echo "{\"name\": \"$name\", \"seed\": $seed, \"side\": \"$side\", \"steps\": $steps, \"batch\": $batch, \"train_and_sample_seconds\": $((mid - start)), \"fid_seconds\": $((end - mid))}" > "$out/times.json"
cat "$out/fid.json"
