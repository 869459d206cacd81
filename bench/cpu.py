#!/usr/bin/env python3
"""Side-by-side CPU throughput of training (`stepwise bench train`), of the per-block
analysis (`stepwise bench analyze`: cosine and ℓ2 ratio with the full gradient, block
dropping) and of the unrolling (`stepwise bench analyze --metrics unroll`: 20 steps of 5 step
sizes) against the PyTorch reference (bench/reference.py) on the same models, batch sizes and
thread count, in one run. Prints one JSON document: machine, per-model results of both and
their ratios (`--analysis-examples 0` skips the analysis, `--unroll-examples 0` the
unrolling).

  python3 bench/cpu.py [--stepwise target/release/stepwise] [--threads 2] [--steps 10]
                       [--models resnet-20,resnet-56] [--batch 128] [--repeats 3]
                       [--analysis-examples 1000] [--analysis-batch 250]
                       [--unroll-examples 500]

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


def median_run(runs, key="ms_per_step"):
    """The run with the median time."""
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


def alternate(repeats, ours_cmd, torch_cmd, env, key):
    """Both commands `repeats` times, alternating; each side's median run and all times."""
    ours, torch = [], []
    for _ in range(repeats):
        ours.append(run_json(ours_cmd, env))
        torch.append(run_json(torch_cmd, env))
    return (median_run(ours, key), [r[key] for r in ours]), (median_run(torch, key), [r[key] for r in torch])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stepwise", default=os.path.join(HERE, "..", "target", "release", "stepwise"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--models", default="resnet-20,resnet-56")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--analysis-examples", type=int, default=1000)
    p.add_argument("--analysis-batch", type=int, default=250)
    p.add_argument("--unroll-examples", type=int, default=500, help="in batches of --analysis-batch")
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
            reference = [sys.executable, os.path.join(HERE, "reference.py")]
            (ours, ours_ms), (torch, torch_ms) = alternate(
                args.repeats,
                [args.stepwise, "bench", "train", *flags, "--batch", str(args.batch),
                 "--steps", str(args.steps), "--warmup", str(args.warmup), "--json"],
                [*reference, "bench", "--summary", summary.name, "--batch", str(args.batch),
                 "--steps", str(args.steps), "--warmup", str(args.warmup)], env, "ms_per_step")
            result = {
                "model": model, "batch": args.batch,
                "stepwise": {"images_per_second": ours["images_per_second"], "ms_per_step": ours["ms_per_step"],
                             "runs_ms_per_step": ours_ms},
                "pytorch": {"images_per_second": torch["images_per_second"], "ms_per_step": torch["ms_per_step"],
                            "runs_ms_per_step": torch_ms, "version": torch["torch"]},
                "ratio": ours["images_per_second"] / torch["images_per_second"],
            }
            for name, examples, metrics in [("analysis", args.analysis_examples, "cosine,l2,drop"),
                                            ("unroll", args.unroll_examples, "unroll")]:
                if examples <= 0:
                    continue
                sizes = ["--examples", str(examples), "--batch", str(args.analysis_batch), "--repeats", "1",
                         "--metrics", metrics]
                (ours, ours_s), (torch, torch_s) = alternate(
                    args.repeats,
                    [args.stepwise, "bench", "analyze", *flags, *sizes, "--json"],
                    [*reference, "bench-analysis", "--summary", summary.name, *sizes], env, "seconds")
                result[name] = {
                    "examples": examples, "batch": args.analysis_batch,
                    "stepwise": {"examples_per_second": ours["examples_per_second"], "runs_seconds": ours_s},
                    "pytorch": {"examples_per_second": torch["examples_per_second"], "runs_seconds": torch_s},
                    "ratio": ours["examples_per_second"] / torch["examples_per_second"],
                }
        results.append(result)
    print(json.dumps({"cpu": cpu_model(), "threads": args.threads, "results": results}, indent=2))


if __name__ == "__main__":
    main()
