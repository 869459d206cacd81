#!/usr/bin/env python3
"""Side-by-side GPU throughput and memory of stepwise and the PyTorch reference
(bench/reference.py: the same architectures and initialisation) on the same card, in one run:
training steps (`stepwise bench train`), evaluation (`stepwise bench eval`) and the per-block
analysis (`stepwise bench analyze`). Needs only the stepwise binary and Python with PyTorch
(no cargo).

fp32 models: stepwise runs twice, `--dtype f32` (exact FMA convolutions) and `--dtype tf32`
(TF32 tensor-core convolutions); PyTorch runs twice with cudnn.benchmark on, with its defaults
(TF32 convolutions) and strict fp32 (TF32 off). Each row gives both pairings of like math and
the headline ratio: stepwise's faster against PyTorch's faster. With `--cuda-graph`, stepwise's
training step also runs captured as a CUDA graph (`f32+graph`, `tf32+graph`), which the
like-math ratios take where it is faster. bf16 models run in both memory formats on both
sides: stepwise's channels-last (its default for bf16 on CUDA, `bf16`) and NCHW
(`--memory-format nchw`, `bf16-nchw`), PyTorch's autocast-bf16 + channels_last (`bf16`) and
autocast-bf16 in the default NCHW layout (`bf16-nchw`); like math pairs like layouts.
Peak memory is the driver's figure for each process
(nvidia-smi, polled) and PyTorch's own max_memory_reserved; stepwise's training rows carry its
own estimate (`estimated_peak_mib`) for comparison, and its training and analysis rows
what the autograd graph keeps alive (`graph_mib`).

  python3 bench/gpu.py --stepwise dist/stepwise [--steps 20] [--warmup 5]
      [--models resnet-56:128,resnet-110:512,wide:128:bf16,...]
      [--eval-models resnet-56,resnet-110] [--analysis-models resnet-56,resnet-110]
      [--unroll-models resnet-110] [--examples 10000] [--unroll-examples 2000] > gpu-bench.json

The unrolling rows time `stepwise bench analyze --metrics unroll` (20 steps of 5 step sizes
on the last block) against `reference.py bench-analysis --metrics unroll`, which does the
same work.
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
    """nvidia-smi's rows for `query` ([] where there is no nvidia-smi)."""
    flag = "--query-gpu" if kind == "gpu" else "--query-compute-apps"
    try:
        out = subprocess.run(["nvidia-smi", f"{flag}={query}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True)
    except FileNotFoundError:
        return []
    return [line.split(", ") for line in out.stdout.strip().splitlines()]


def run_measured(cmd, timeout):
    """Runs `cmd`, polling the driver's memory figure for its process; returns its JSON
    output (or an error) with `driver_peak_mib` added."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
        return {"error": f"timed out after {timeout} s", "driver_peak_mib": peak[0]}
    watcher.join()
    if proc.returncode != 0:
        return {"error": err.strip()[-2000:], "driver_peak_mib": peak[0]}
    result = json.loads(out)
    result["driver_peak_mib"] = peak[0]
    return result


def model_flags(model, dtype=None):
    arch, _, depth = model.partition("-")
    return ["--arch", arch] + (["--depth", depth] if depth else []) + (["--dtype", dtype] if dtype else [])


def compare(ours, theirs, rate):
    """The row's ratios: like math (stepwise f32 / PyTorch fp32, tf32 / default, bf16 / bf16
    in either layout) and stepwise's fastest over PyTorch's fastest; memory against that
    PyTorch run."""
    ok = lambda runs: {k: v for k, v in runs.items() if rate in v}
    ours_ok, theirs_ok = ok(ours), ok(theirs)
    row = {"ratios_like_math": {}}
    for mine, other in [("f32", "fp32"), ("tf32", "default"), ("bf16", "bf16"), ("bf16-nchw", "bf16-nchw")]:
        candidates = [r[rate] for k, r in ours_ok.items() if k.split("+")[0] == mine]
        if candidates and other in theirs_ok:
            row["ratios_like_math"][f"{mine}/{other}"] = max(candidates) / theirs_ok[other][rate]
    if ours_ok and theirs_ok:
        best_ours = max(ours_ok.values(), key=lambda r: r[rate])
        best_theirs = max(theirs_ok.values(), key=lambda r: r[rate])
        row["ratio_fastest_vs_fastest"] = best_ours[rate] / best_theirs[rate]
        row["memory_ratio_vs_that_pytorch"] = best_ours["driver_peak_mib"] / max(best_theirs["driver_peak_mib"], 1)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stepwise", default=os.path.join(HERE, "..", "target", "release", "stepwise"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--timeout", type=int, default=120, help="seconds per process")
    p.add_argument("--models", default=DEFAULT_MODELS, help="training: arch[-depth]:batch[:f32|bf16], comma-separated ('' for none)")
    p.add_argument("--eval-models", default="resnet-56,resnet-110", help="evaluation ('' for none)")
    p.add_argument("--analysis-models", default="resnet-56,resnet-110", help="analysis ('' for none)")
    p.add_argument("--unroll-models", default="resnet-110", help="the unrolling ('' for none)")
    p.add_argument("--examples", type=int, default=10000, help="images per evaluation or analysis pass")
    p.add_argument("--unroll-examples", type=int, default=2000, help="images per unrolling pass")
    p.add_argument("--eval-batch", type=int, default=1000)
    p.add_argument("--analysis-batch", type=int, default=500)
    p.add_argument("--repeats", type=int, default=1, help="timed evaluation/analysis passes (median)")
    p.add_argument("--cuda-graph", action="store_true", help="also time stepwise's training step as a CUDA graph")
    p.add_argument("--device", default="cuda", help="cpu: a dry run of this script with tiny models")
    args = p.parse_args()
    card = (smi("name,driver_version,memory.total") or [["none", "none", "0"]])[0]
    reference = [sys.executable, os.path.join(HERE, "reference.py")]
    results = []

    def with_summary(model, dtype, body):
        with tempfile.NamedTemporaryFile("w", suffix=".json") as summary:
            summary.write(subprocess.run([args.stepwise, "model", "summary", *model_flags(model, dtype), "--json"],
                                         check=True, capture_output=True, text=True).stdout)
            summary.flush()
            return body(summary.name)

    def emit(row):
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)

    for entry in filter(None, args.models.split(",")):
        parts = entry.split(":")
        model, batch = parts[0], int(parts[1])
        dtype = parts[2] if len(parts) > 2 else "f32"
        common = ["--batch", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]

        def train(summary):
            # (name, dtype, flags)
            variants = ([("bf16", "bf16", []), ("bf16-nchw", "bf16", ["--memory-format", "nchw"])]
                        if dtype == "bf16" else [("f32", "f32", []), ("tf32", "tf32", [])])
            if args.cuda_graph:
                variants += [(name + "+graph", d, [*flags, "--cuda-graph"]) for name, d, flags in list(variants)]
            ours = {name: run_measured([args.stepwise, "bench", "train", *model_flags(model, d), *common, *flags,
                                        "--device", args.device, "--json"], args.timeout)
                    for name, d, flags in variants}
            theirs = {prec: run_measured([*reference, "bench", "--summary", summary, *common, "--device", args.device,
                                          "--precision", prec], args.timeout)
                      for prec in (["bf16", "bf16-nchw"] if dtype == "bf16" else ["default", "fp32"])}
            return ours, theirs

        ours, theirs = with_summary(model, dtype, train)
        emit({"pass": "train", "model": model, "batch": batch, "dtype": dtype, "stepwise": ours, "pytorch": theirs,
              **compare(ours, theirs, "images_per_second")})

    for name, models, batch, examples, metrics in [
            ("eval", args.eval_models, args.eval_batch, args.examples, []),
            ("analysis", args.analysis_models, args.analysis_batch, args.examples, []),
            ("unroll", args.unroll_models, args.analysis_batch, args.unroll_examples, ["--metrics", "unroll"])]:
        sizes = ["--examples", str(examples), "--batch", str(batch), "--repeats", str(args.repeats), *metrics]
        for model in filter(None, models.split(",")):
            def passes(summary):
                command, script = ("eval", "bench-eval") if name == "eval" else ("analyze", "bench-analysis")
                ours = {d: run_measured([args.stepwise, "bench", command, *model_flags(model, d), *sizes,
                                         "--device", args.device, "--json"], args.timeout)
                        for d in ["f32", "tf32"]}
                theirs = {prec: run_measured([*reference, script, "--summary", summary, *sizes,
                                              "--device", args.device, "--precision", prec], args.timeout)
                          for prec in ["default", "fp32"]}
                return ours, theirs

            ours, theirs = with_summary(model, "f32", passes)
            emit({"pass": name, "model": model, "batch": batch, "examples": examples, "stepwise": ours,
                  "pytorch": theirs, **compare(ours, theirs, "examples_per_second")})

    print(json.dumps({"card": card[0], "driver": card[1], "memory_total_mib": card[2],
                      "date": time.strftime("%Y-%m-%d"), "steps": args.steps, "warmup": args.warmup,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
