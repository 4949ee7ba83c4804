#!/bin/bash
# Sample quality against network evaluations for runs/ddpm-fmnist (1239 steps, 30 min CPU).
set -e
G=./target/debug/genmodels
R=runs/ddpm-fmnist
N=${N:-500}
[ -f runs/fmnist-classifier.safetensors ] || $G classifier --out runs/fmnist-classifier.safetensors
for spec in "ddim 10" "ddim 20" "ddim 50" "dpm-solver++ 10" "dpm-solver++ 20" "euler-ancestral 50" "heun 18" "ddim 100" ; do
  set -- $spec
  out=$R/table/$1-$2
  start=$(date +%s.%N)
  $G sample $R -n $N --out $out --scheduler $1 --steps $2 --device cpu
  end=$(date +%s.%N)
  $G metrics --real fashion-mnist:test --fake folder:$out -n $N --features classifier --classifier runs/fmnist-classifier.safetensors --json $out.json > $out.metrics.txt
  echo "$1 $2 sample_s $(echo "$end - $start" | bc) $(grep -E '^(FID|precision|recall) ' $out.metrics.txt | tr -s ' ' | tr '\n' ' ')"
done
