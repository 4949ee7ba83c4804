#!/bin/bash
# Classifier-free guidance sweep of a ddpm-cond run: for each guidance scale, N class-balanced
# samples (one sampler for all scales), their CAS (a fresh classifier trained on them, tested on
# real test images) and their domain FID / precision / recall against the test set.
#   R=runs/ddpm-cond-fmnist N=500 SCHED="ddim 20" scripts/ddpm_guidance_sweep.sh
set -e
G=${G:-./target/debug/genmodels}
R=${R:-runs/ddpm-cond-fmnist}
N=${N:-500}
SCALES=${SCALES:-"0 1 2 3 5 8"}
set -- ${SCHED:-ddim 20}
S=$1; K=$2
C=runs/fmnist-classifier.safetensors
[ -f $C ] || $G classifier --out $C
mkdir -p $R/sweep
for g in $SCALES; do
  out=$R/sweep/$S-$K-g$g
  start=$(date +%s.%N)
  $G cas $R -n $N --epochs 3 --scheduler $S --steps $K --guidance $g --save-samples $out \
     --json $out.cas.json --device cpu > $out.cas.txt
  end=$(date +%s.%N)
  $G metrics --real fashion-mnist:test --fake folder:$out -n $N --features classifier \
     --classifier $C --json $out.json > $out.metrics.txt
  echo "guidance $g $(grep -E '^CAS' $out.cas.txt | tr -s ' ') gen+cas_s $(echo "$end - $start" | bc) $(grep -E '^(FID|precision|recall) ' $out.metrics.txt | tr -s ' ' | tr '\n' ' ')"
done
