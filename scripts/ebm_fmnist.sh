#!/usr/bin/env bash
# JEM beside the plain classifier of the same network on Fashion-MNIST (issue 15): train both
# for the same steps, then score each with the energy verbs. One run per call:
#   scripts/ebm_fmnist.sh NAME SEED [--set k=v ...]
# e.g. scripts/ebm_fmnist.sh jem 0 --set l2=0.1
#      scripts/ebm_fmnist.sh classifier 0 --set objective=classifier
# Writes runs/ebm-fmnist/NAME-sSEED (the run) and runs/ebm-fmnist/eval/NAME-sSEED-* (reports,
# pictures). THREADS (default 2), STEPS (default 2000), CLASSIFIER (a domain classifier from
# `genmodels classifier`; when set, the samples' domain FID too).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 seed=$2
shift 2
G=${GENMODELS:-target/debug/genmodels}
T=${THREADS:-2}
run=runs/ebm-fmnist/$name-s$seed
E=runs/ebm-fmnist/eval
mkdir -p "$E"
start=$(date +%s)
$G --threads "$T" train jem --data fashion-mnist --out "$run" --steps "${STEPS:-2000}" --seed "$seed" \
    --lr-schedule warmup:250 --log-every 25 --checkpoint-every 250 --sample-every 500 "$@" --force
echo "{\"train_seconds\": $(($(date +%s) - start))}" > "$run/times.json"
R=$E/$name-s$seed
$G --threads "$T" ood "$run" --in fashion-mnist:test --out-data mnist-5k --out-data noise \
    --out-data invert:fashion-mnist:test --out-data vflip:fashion-mnist:test -n 2000 --json "$R-ood.json"
$G --threads "$T" calibration "$run" --data fashion-mnist:test -n 10000 --out "$R-reliability.png" \
    --json "$R-cal.json"
for c in mask:center noise:0.3 mask:random:0.5; do
    $G --threads "$T" langevin "$run" --data fashion-mnist:test --corrupt "$c" -n 64 --steps 60 \
        --frames 6 --out "$R-restore-${c//:/-}.png" --json "$R-restore-${c//:/-}.json"
done
$G --threads "$T" langevin "$run" -n 8 --steps 200 --frames 8 --out "$R-chains.png" --json "$R-chains.json"
if [ -n "${CLASSIFIER:-}" ]; then
    $G --threads "$T" metrics --real fashion-mnist:test --fake "$run" -n 2000 --features classifier \
        --classifier "$CLASSIFIER" --json "$R-domain.json"
fi
