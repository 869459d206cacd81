#!/usr/bin/env bash
# Training steps of each model of the quick experiment, stepwise against PyTorch
# (`bench/reference.py step-check`): on a shapes10 set of 128 train images with batch 128
# and no augmentation every epoch is one step on the whole train split, so PyTorch can take
# the same step from the same checkpoint. The steps of epochs 2 and 3 are compared (from
# non-zero momentum buffers; on CUDA the trainer captures the second as a graph and replays
# it for the third), PyTorch in float64 on the CPU so that the errors are stepwise's own.
# Prints each result; exits 1 if any disagrees.
#   [STEPWISE=target/release/stepwise] [DEVICE=cpu|cuda] [PYTHON=python3] bench/step-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
stepwise=${STEPWISE:-target/release/stepwise}
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$stepwise" data synth --out "$work/data" --train 128 --test 128 --seed 0 > /dev/null
failed=0
while read -r label flags; do
  # shellcheck disable=SC2086 # the flags are words
  "$stepwise" model summary $flags --json > "$work/$label.json"
  # shellcheck disable=SC2086
  "$stepwise" train $flags --data "$work/data" --epochs 3 --batch 128 --no-augment \
    --schedule constant --device "${DEVICE:-cpu}" --out "$work/$label" --json > /dev/null
  for epoch in 2 3; do
    echo "$label, the step of epoch $epoch"
    "$python" bench/reference.py step-check --summary "$work/$label.json" --data "$work/data" \
      --before "$work/$label/checkpoints/epoch-000$((epoch - 1)).safetensors" \
      --after "$work/$label/checkpoints/epoch-000$epoch.safetensors" --float64 || failed=1
  done
done <<'MODELS'
resnet-20 --arch resnet --depth 20 --width 8
resnet-20-naive --arch resnet --depth 20 --width 8 --sharing naive --unshared 1
resnet-20-ubn --arch resnet --depth 20 --width 8 --sharing ubn --unshared 1
single --arch single --width 8 --blocks 4
avgpool --arch avgpool --width 8 --blocks 3
wide --arch wide --width 8 --blocks 3
MODELS
exit $failed
