#!/usr/bin/env bash
# Every GPU check of a session on the device machine, in order: selftest (correctness
# first), the quick run trained and analysed on the GPU (its analysis repeated on the CPU for
# comparison), then the side-by-side benchmark. Results go to $OUT. Expects dist/stepwise.xz
# (a stripped `--features cuda` release build) in this checkout.
#   [SKIP_ANALYSIS=1] [STEPS=20] bash bench/gpu-session.sh [MODELS]
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
xz -dkf dist/stepwise.xz && chmod +x dist/stepwise
S=dist/stepwise
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version())" > "$OUT/torch.txt" 2>&1
timeout 150 $S selftest --device cuda > "$OUT/selftest.txt" 2>&1
echo "selftest exit $?" >> "$OUT/selftest.txt"
grep -v "^ok" "$OUT/selftest.txt"
if [ "${SKIP_ANALYSIS:-0}" != 1 ]; then
( time timeout 120 $S train --spec experiments/quick.toml --device cuda --out runs/quick-gpu --json ) > "$OUT/quick-train.json" 2> "$OUT/quick-train.log"
echo "quick train exit $?"; tail -4 "$OUT/quick-train.log"
for dev in cuda cpu; do
  ( time timeout 120 $S analyze --run runs/quick-gpu --device $dev --max-examples 500 --out "$OUT/analysis-$dev" ) > "$OUT/analyze-$dev.log" 2>&1
  echo "analyze $dev exit $?"; tail -4 "$OUT/analyze-$dev.log"
done
fi
MODELS=${1:-resnet-56:128,resnet-110:128,resnet-56:512,resnet-110:512,wide:128:f32}
timeout 280 python3 bench/gpu.py --stepwise $S --steps ${STEPS:-20} --warmup 5 --timeout 60 \
  --models "$MODELS" > "$OUT/gpu-bench.json" 2> "$OUT/gpu-bench.log"
echo "bench exit $?"
python3 - "$OUT/gpu-bench.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(d["card"], d["driver"])
for r in d["results"]:
    s = r["stepwise"]
    t = {k: (round(v.get("images_per_second", 0)), v.get("driver_peak_mib")) for k, v in r["pytorch"].items()}
    print(r["model"], r["batch"], r["dtype"], "stepwise", round(s.get("images_per_second", 0)), s.get("driver_peak_mib"), s.get("error", ""), "pytorch", t, "ratio", round(r.get("ratio_vs_fastest_pytorch", 0), 3))
PY
