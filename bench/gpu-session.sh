#!/usr/bin/env bash
# Every GPU check of a session on the device machine, phase by phase, each under its own time
# limit: selftest (correctness first), training steps against PyTorch's, the memory budget
# and out-of-memory errors, the side-by-side training table against PyTorch, the training
# step before/after and as a CUDA graph and the evaluation and analysis passes
# before/after, per-kernel profiles of a step in stepwise and in PyTorch, the side-by-side
# evaluation, analysis and unrolling, a few epochs of the paper's ResNet-110 schedule on real images,
# the quick run trained and analysed on the GPU, and whether two processes train to the
# same weights. Expects dist/stepwise.xz (a stripped `--features cuda` release build),
# optionally dist/stepwise-before.xz (the previous build, for the before/after rows) and
# dist/cifar10-jpeg.tar.gz (for the schedule phase). Writes few files (the device tool
# returns a limited number): session.log with every phase's output,
# gpu-bench-train.{json,log} and gpu-bench-passes.{json,log}.
#   [PHASES="selftest stepcheck memory train ab profile passes schedule quick determinism"]
#   [SCHEDULE_EPOCHS=4] [SCHEDULE_DTYPE=f32] [TRAIN_MODELS=...] [PASS_MODELS=...]
#   [UNROLL_MODELS=resnet-110] [STEPS=10]
#   bash bench/gpu-session.sh
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
LOG=$OUT/session.log
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
S=dist/stepwise
xz -dkf dist/stepwise.xz && chmod +x $S
B=
if [ -f dist/stepwise-before.xz ]; then
  xz -dkf dist/stepwise-before.xz && chmod +x dist/stepwise-before && B=dist/stepwise-before
fi
PHASES=${PHASES:-selftest stepcheck memory train ab profile passes schedule quick determinism}
TRAIN_MODELS=${TRAIN_MODELS:-resnet-56:128,resnet-110:128,wide:128:bf16,wide:128:f32,resnet-56:512,resnet-110:512}
PASS_MODELS=${PASS_MODELS:-resnet-56,resnet-110}
UNROLL_MODELS=${UNROLL_MODELS:-resnet-110}
STEPS=${STEPS:-10}
phase() { echo "== $1 ($(date +%T))"; }
# Runs a command under a time limit, its output and exit status into the log.
logged() {
  local limit=$1; shift
  timeout "$limit" "$@" 2>&1
  echo "exit $?"
}

selftest() {
  nvidia-smi
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  logged 150 $S selftest --device cuda
}

# The trainer's steps on the GPU (step by step, captured, replayed) against PyTorch's in
# float64 on the CPU, every tensor compared.
stepcheck() {
  python3 -c 'import safetensors' 2>/dev/null || export PYTHONPATH=$PWD/dist/pylib
  STEPWISE=$S DEVICE=cuda logged 240 bash bench/step-check.sh | grep -E '^[a-z]|"error"|worst_tensor|agree|^exit'
}

memory() {
  # Each must fail with an error naming the batch size: two refusals by the estimate (a set
  # budget, the card's own size), one real out-of-memory past a budget larger than the card.
  local batch=(--arch resnet --depth 110 --steps 1 --warmup 0 --device cuda)
  logged 60 $S --gpu-memory 2GiB bench train "${batch[@]}" --batch 512
  logged 60 $S bench train "${batch[@]}" --batch 32768
  logged 90 $S --gpu-memory 4TiB bench train "${batch[@]}" --batch 32768
  logged 60 $S --gpu-memory 2GiB bench analyze --arch resnet --depth 110 --examples 2000 --batch 2000 --device cuda
}

train() {
  timeout 240 python3 bench/gpu.py --stepwise $S --steps "$STEPS" --warmup 3 --timeout 45 --cuda-graph \
    --models "$TRAIN_MODELS" --eval-models '' --analysis-models '' \
    > "$OUT/gpu-bench-train.json" 2> "$OUT/gpu-bench-train.log"
  echo "exit $?"
  summary "$OUT/gpu-bench-train.log"
}

ab() {
  for depth in 56 110; do
    for variant in before loop graph; do
      case $variant in
        before) [ -n "$B" ] || continue; cmd=("$B" bench train) ;;
        loop) cmd=("$S" bench train) ;;
        graph) cmd=("$S" bench train --cuda-graph) ;;
      esac
      echo "resnet-$depth b128 $variant:"
      timeout 60 "${cmd[@]}" --arch resnet --depth $depth --batch 128 --steps 20 --warmup 5 --device cuda 2>&1
    done
  done
  # The eager passes (no CUDA graph) before and after, ResNet-110.
  for binary in $B $S; do
    echo "resnet-110 eval and analysis, $binary:"
    timeout 60 $binary bench eval --arch resnet --depth 110 --examples 10000 --batch 1000 --device cuda 2>&1
    timeout 90 $binary bench analyze --arch resnet --depth 110 --examples 1000 --batch 500 --device cuda 2>&1
  done
}

# Where a step's time goes: stepwise's kernels (GPU time between events) beside PyTorch's
# operators (torch.profiler), for the wide model in bf16 (both layouts on both sides) and ResNet-56
# in TF32, batch 128; then stepwise's kernels in ResNet-110's evaluation and analysis passes,
# f32 and TF32.
profile() {
  local summary
  summary=$(mktemp --suffix .json)
  for run in "wide bf16 bf16,bf16-nchw" "resnet-56 tf32 default"; do
    read -r model dtype precisions <<< "$run"
    local flags=(--arch "${model%-*}")
    [ "$model" != "${model%-*}" ] && flags+=(--depth "${model#*-}")
    local formats=(default)
    [ "$dtype" = bf16 ] && formats+=(nchw)
    for format in "${formats[@]}"; do
      local format_flags=()
      [ "$format" != default ] && format_flags=(--memory-format "$format")
      echo "stepwise $model $dtype ($format memory format):"
      timeout 60 $S bench train "${flags[@]}" "${format_flags[@]}" --dtype "$dtype" --batch 128 --steps 5 \
        --warmup 3 --device cuda --profile 2>&1
    done
    $S model summary "${flags[@]}" --dtype "$dtype" --json > "$summary"
    for precision in ${precisions//,/ }; do
      echo "pytorch $model $precision:"
      timeout 90 python3 bench/reference.py bench --summary "$summary" --batch 128 --steps 5 --warmup 3 \
        --device cuda --precision "$precision" --profile 2>/dev/null | ops_table
    done
  done
  rm -f "$summary"
  for dtype in f32 tf32; do
    local flags=(--arch resnet --depth 110 --dtype "$dtype" --repeats 2 --device cuda --profile)
    timeout 60 $S bench eval "${flags[@]}" --examples 10000 --batch 1000 2>&1
    timeout 90 $S bench analyze "${flags[@]}" --examples 1000 --batch 500 2>&1
  done
}

# reference.py's profiled JSON as a table: its ms/step, then per operator ms and calls per step.
ops_table() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%.1f ms/step" % r["ms_per_step"])
for o in r["ops"]:
    print("  %-60s %8.2f ms/step %6.0f calls" % (o["op"][:60], o["ms"], o["calls"]))
'
}

passes() {
  timeout 240 python3 bench/gpu.py --stepwise $S --timeout 60 --models '' \
    --eval-models "$PASS_MODELS" --analysis-models "$PASS_MODELS" --examples 10000 \
    --unroll-models "$UNROLL_MODELS" --unroll-examples 2000 \
    > "$OUT/gpu-bench-passes.json" 2> "$OUT/gpu-bench-passes.log"
  echo "exit $?"
  summary "$OUT/gpu-bench-passes.log"
}

# The paper's ResNet-110 as the trainer runs it (augmentation, per-epoch evaluation of the test
# split, checkpoints) on real images — dist/cifar10-jpeg.tar.gz, the JPEG copy of CIFAR-10, when
# carried — for the first SCHEDULE_EPOCHS epochs of its schedule in SCHEDULE_DTYPE; per-epoch
# figures after.
schedule() {
  [ -f dist/cifar10-jpeg.tar.gz ] || { echo "no dist/cifar10-jpeg.tar.gz"; return; }
  rm -rf data/jpeg data/cifar10-jpeg-q75 runs/resnet-110-gpu && mkdir -p data/jpeg
  tar xzf dist/cifar10-jpeg.tar.gz -C data/jpeg
  logged 60 $S data import --from data/jpeg --out data/cifar10-jpeg-q75 --name cifar10-jpeg-q75
  ( time logged 300 $S train --arch resnet --depth 110 --data data/cifar10-jpeg-q75 \
      --epochs "${SCHEDULE_EPOCHS:-4}" --dtype "${SCHEDULE_DTYPE:-f32}" --device cuda \
      --out runs/resnet-110-gpu ) 2>&1 | tail -12
  grep -h 'epoch_seconds\|images_per_second\|"accuracy"' runs/resnet-110-gpu/metrics.jsonl
  ls -la runs/resnet-110-gpu/checkpoints
}

# Two processes training the same spec on the GPU: bit-equal weights or not? cuDNN's algorithms
# are chosen by timing in each process (deterministic ones only), so they may differ between
# processes; this measures whether they do here. Compares every tensor of the final
# checkpoints (the files also hold timings, so their hashes always differ).
determinism() {
  rm -rf runs/det-a runs/det-b
  for run in det-a det-b; do
    logged 120 $S train --spec experiments/quick.toml --epochs 2 --device cuda --out runs/$run | tail -2
  done
  python3 -c 'import safetensors' 2>/dev/null || export PYTHONPATH=$PWD/dist/pylib
  python3 - <<'PY'
from safetensors.torch import load_file
a = load_file("runs/det-a/checkpoints/epoch-0002.safetensors")
b = load_file("runs/det-b/checkpoints/epoch-0002.safetensors")
differ = {k: (a[k].double() - b[k].double()).abs().max().item() for k in a if not a[k].equal(b[k])}
print(f"{len(a)} tensors, {len(differ)} differ", sorted(differ.items(), key=lambda kv: -kv[1])[:5])
PY
}

quick() {
  rm -rf runs/quick-gpu runs/quick-gpu-analysis runs/quick-gpu-check
  ( time logged 90 $S train --spec experiments/quick.toml --device cuda --out runs/quick-gpu ) 2>&1 | tail -12
  ( time logged 90 $S analyze --run runs/quick-gpu --device cuda --max-examples 500 --out runs/quick-gpu-analysis ) 2>&1 | tail -8
  # The block metrics the GPU computes for the final checkpoint, checked against PyTorch's on the
  # CPU (reference.py needs safetensors: dist/pylib holds its abi3 wheel's package if carried).
  local last=runs/quick-gpu/checkpoints/epoch-0006.safetensors summary
  summary=$(mktemp --suffix .json)
  $S model summary --arch resnet --depth 20 --width 8 --json > "$summary"
  logged 60 $S analyze --checkpoint $last --splits test --max-examples 2000 --device cuda --out runs/quick-gpu-check | tail -3
  python3 -c 'import safetensors' 2>/dev/null || export PYTHONPATH=$PWD/dist/pylib
  logged 150 python3 bench/reference.py check --summary "$summary" --checkpoint $last --data data/shapes10 \
    --compare runs/quick-gpu-check/epoch-0006/analysis.json | tail -8
  rm -f "$summary"
}

# One line per row of a gpu.py log: images or examples per second (driver peak MiB, stepwise's
# estimate, what its autograd graph keeps in MiB), ratios.
summary() {
  python3 - "$1" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    rate = "images_per_second" if r["pass"] == "train" else "examples_per_second"
    ours = {k: (round(v.get(rate, 0)), v.get("driver_peak_mib"), v.get("estimated_peak_mib"), round(v.get("graph_mib") or 0), v.get("error", "")[:80]) for k, v in r["stepwise"].items()}
    theirs = {k: (round(v.get(rate, 0)), v.get("driver_peak_mib"), v.get("error", "")[:80]) for k, v in r["pytorch"].items()}
    print(r["pass"], r["model"], r["batch"], "stepwise", ours, "pytorch", theirs,
          "like", {k: round(v, 3) for k, v in r.get("ratios_like_math", {}).items()},
          "fastest", round(r.get("ratio_fastest_vs_fastest", 0), 3))
PY
}

for p in $PHASES; do
  phase "$p"
  $p
done 2>&1 | tee "$LOG"
phase "done" | tee -a "$LOG"
