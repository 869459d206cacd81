#!/usr/bin/env python3
"""Side-by-side GPU training throughput and memory: `stepwise bench train --device cuda` and
the PyTorch reference (bench/reference.py, same architectures and initialisation) on the
same card, in one run. Needs only the stepwise binary and Python with PyTorch (no cargo).

PyTorch runs with cudnn.benchmark on, twice in fp32: with its defaults (cuDNN may use TF32)
and strict (TF32 off); the ratio is taken against the faster. bf16 models are compared with
PyTorch autocast-bf16 + channels_last. Peak memory is the driver's figure for each process
(nvidia-smi, polled) and PyTorch's own max_memory_reserved.

  python3 bench/gpu.py --stepwise dist/stepwise [--steps 20] [--warmup 5]
                       [--models resnet-56:128,resnet-110:128,...] > gpu-bench.json
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODELS = ("resnet-56:128,resnet-56:512,resnet-110:128,resnet-110:512,"
                  "wide:128:f32,wide:512:f32,wide:128:bf16")


def smi(query, kind="gpu"):
    flag = "--query-gpu" if kind == "gpu" else "--query-compute-apps"
    out = subprocess.run(["nvidia-smi", f"{flag}={query}", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True)
    return [line.split(", ") for line in out.stdout.strip().splitlines()]


def run_measured(cmd, env, timeout):
    """Runs `cmd`, polling the driver's memory figure for its process; returns (json, MiB)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = [0]

    def poll():
        while proc.poll() is None:
            for row in smi("pid,used_memory", "apps"):
                if len(row) == 2 and row[0].strip() == str(proc.pid):
                    peak[0] = max(peak[0], int(row[1]))
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        watcher.join()
        return {"error": f"timed out after {timeout} s"}, peak[0]
    watcher.join()
    if proc.returncode != 0:
        return {"error": err.strip()[-2000:]}, peak[0]
    return json.loads(out), peak[0]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stepwise", default=os.path.join(HERE, "..", "target", "release", "stepwise"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--timeout", type=int, default=120, help="seconds per process")
    p.add_argument("--models", default=DEFAULT_MODELS, help="arch[-depth]:batch[:f32|bf16], comma-separated")
    args = p.parse_args()
    env = dict(os.environ)
    card = smi("name,driver_version,memory.total")[0]
    results = []
    for entry in args.models.split(","):
        parts = entry.split(":")
        model, batch = parts[0], int(parts[1])
        dtype = parts[2] if len(parts) > 2 else "f32"
        arch, _, depth = model.partition("-")
        flags = ["--arch", arch] + (["--depth", depth] if depth else []) + ["--dtype", dtype]
        with tempfile.NamedTemporaryFile("w", suffix=".json") as summary:
            summary.write(subprocess.run([args.stepwise, "model", "summary", *flags, "--json"],
                                         check=True, capture_output=True, text=True).stdout)
            summary.flush()
            common = ["--batch", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
            ours, ours_mem = run_measured([args.stepwise, "bench", "train", *flags, *common,
                                           "--device", "cuda", "--json"], env, args.timeout)
            torch_runs = {}
            for precision in (["bf16"] if dtype == "bf16" else ["default", "fp32"]):
                res, mem = run_measured([sys.executable, os.path.join(HERE, "reference.py"), "bench",
                                         "--summary", summary.name, *common, "--device", "cuda",
                                         "--precision", precision], env, args.timeout)
                res["driver_peak_mib"] = mem
                torch_runs[precision] = res
        ours["driver_peak_mib"] = ours_mem
        ok = [r for r in torch_runs.values() if "images_per_second" in r]
        best = max(ok, key=lambda r: r["images_per_second"]) if ok else None
        row = {"model": model, "batch": batch, "dtype": dtype, "stepwise": ours, "pytorch": torch_runs}
        if best and "images_per_second" in ours:
            row["ratio_vs_fastest_pytorch"] = ours["images_per_second"] / best["images_per_second"]
            row["memory_ratio_vs_that_pytorch"] = ours_mem / max(best["driver_peak_mib"], 1)
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"card": card[0], "driver": card[1], "memory_total_mib": card[2],
                      "date": time.strftime("%Y-%m-%d"), "steps": args.steps, "warmup": args.warmup,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
