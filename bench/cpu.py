#!/usr/bin/env python3
"""Side-by-side CPU training throughput: `stepwise bench train` and the PyTorch reference
(bench/reference.py) on the same models, batch size and thread count, in one run.
Prints one JSON document: machine, per-model results of both and their ratio.

  python3 bench/cpu.py [--stepwise target/release/stepwise] [--threads 2] [--steps 10]
                       [--models resnet-20,resnet-56] [--batch 128] [--repeats 3]

Each side runs `--repeats` times, alternating, and reports its median run: shared machines
drift by 20% within minutes, so one run of each can land in different conditions.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_json(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


def median_run(runs):
    """The run with the median step time."""
    return sorted(runs, key=lambda r: r["ms_per_step"])[len(runs) // 2]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stepwise", default=os.path.join(HERE, "..", "target", "release", "stepwise"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--models", default="resnet-20,resnet-56")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads))
    results = []
    for model in args.models.split(","):
        arch, depth = model.split("-")
        flags = ["--arch", arch, "--depth", depth]
        with tempfile.NamedTemporaryFile("w", suffix=".json") as summary:
            summary.write(subprocess.run([args.stepwise, "model", "summary", *flags, "--json"],
                                         check=True, capture_output=True, text=True).stdout)
            summary.flush()
            ours_runs, torch_runs = [], []
            for _ in range(args.repeats):
                ours_runs.append(run_json([args.stepwise, "bench", "train", *flags, "--batch", str(args.batch),
                                           "--steps", str(args.steps), "--warmup", str(args.warmup), "--json"], env))
                torch_runs.append(run_json([sys.executable, os.path.join(HERE, "reference.py"), "bench",
                                            "--summary", summary.name, "--batch", str(args.batch),
                                            "--steps", str(args.steps), "--warmup", str(args.warmup)], env))
            ours, torch = median_run(ours_runs), median_run(torch_runs)
        results.append({
            "model": model, "batch": args.batch,
            "stepwise": {"images_per_second": ours["images_per_second"], "ms_per_step": ours["ms_per_step"],
                         "runs_ms_per_step": [r["ms_per_step"] for r in ours_runs]},
            "pytorch": {"images_per_second": torch["images_per_second"], "ms_per_step": torch["ms_per_step"],
                        "runs_ms_per_step": [r["ms_per_step"] for r in torch_runs], "version": torch["torch"]},
            "ratio": ours["images_per_second"] / torch["images_per_second"],
        })
    print(json.dumps({"cpu": cpu_model(), "threads": args.threads, "results": results}, indent=2))


if __name__ == "__main__":
    main()
