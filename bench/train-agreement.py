#!/usr/bin/env python3
"""Does stepwise train like PyTorch? Trains one run spec with `stepwise train` and with the
PyTorch reference (bench/reference.py: the same architecture, initialisation distribution,
recipe and learning rate per epoch, but PyTorch's own random numbers) for several seeds on
the same data and thread count, alternating, and compares the test accuracy and loss and the
train loss per epoch over seeds: each side's mean and standard deviation, the difference of
the means and its standard error. Prints one JSON document; exits 1 if the final test
accuracies' means differ by more than `--sigmas` standard errors.

  python3 bench/train-agreement.py --spec experiments/quick.toml [--seeds 0,1,2] [--epochs E] [--lr LR]
      [--stepwise target/release/stepwise] [--data-dir data] [--threads 2] [--sigmas 3]

Seeds cannot pair runs across the two (their generators differ), so the comparison is of
distributions: means, standard deviations and the difference of the means.

`--paired` compares the training itself, pair by pair: stepwise trains each seed keeping
every epoch's checkpoint and the initial weights', and for each epoch PyTorch trains that
epoch from stepwise's checkpoint before it (weights, BatchNorm statistics, momentum buffers) on
stepwise's own batches (`stepwise data batches`: the same examples, crops, flips and
learning rates). The two then differ only by floating-point rounding, amplified over the
epoch's steps; a systematic difference in either's training shows as a mean paired
difference (PyTorch − stepwise) far from zero. Exits 1 if the train losses' pooled mean
paired difference exceeds `--sigmas` standard errors.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))


def summary_flags(model):
    """`stepwise model summary` flags of a resolved spec's [model] table."""
    flags = ["--arch", model["arch"], "--classes", str(model["classes"]), "--width", str(model["width"])]
    if "depth" in model:
        flags += ["--depth", str(model["depth"])]
    if "blocks" in model:
        flags += ["--blocks", ",".join(map(str, model["blocks"]))]
    if model.get("sharing", "none") != "none":
        flags += ["--sharing", model["sharing"], "--unshared", str(model["unshared_blocks"])]
    return flags


def stepwise_run(args, spec_file, seed, out, env):
    """Per-epoch records of `stepwise train`, and its resolved spec."""
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []
    lr = ["--schedule", "constant", "--lr", str(args.lr)] if args.lr is not None else []
    subprocess.run([args.stepwise, "--data-dir", args.data_dir, "train", "--spec", spec_file, *epochs, *lr,
                    "--seed", str(seed), "--out", out, "--json"],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    epochs = {}
    for line in open(os.path.join(out, "metrics.jsonl")):
        r = json.loads(line)
        if "block" in r:
            continue
        key = f"{r['split']}_{r['name']}" if "split" in r else r["name"]
        epochs.setdefault(r["epoch"], {"epoch": r["epoch"]})[key] = r["value"]
    with open(os.path.join(out, "spec.toml"), "rb") as f:
        spec = tomllib.load(f)
    return [epochs[e] for e in sorted(epochs)], spec


def reference_run(spec, summary, data, stream, env):
    """Per-epoch records of `reference.py train` with the spec's recipe; `stream` says which
    batches (`--lr-per-epoch … --seed K`, or `--from C --batches B`)."""
    train = spec["train"]
    cmd = [sys.executable, os.path.join(HERE, "reference.py"), "train", "--summary", summary, "--data", data,
           "--batch", str(train["batch_size"]), "--momentum", str(train["momentum"]),
           "--weight-decay", str(train["weight_decay"]), "--decay-on", train["decay_on"], *stream]
    if train["nesterov"]:
        cmd.append("--nesterov")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines()]


def spread(values):
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def compared(ours, theirs):
    """Both sides' spreads, the difference of their means and its standard error."""
    a, b = spread(ours), spread(theirs)
    standard_error = math.sqrt(a["sd"] ** 2 / len(ours) + b["sd"] ** 2 / len(theirs))
    return {"stepwise": a, "pytorch": b, "difference": a["mean"] - b["mean"], "standard_error": standard_error}


def paired(pairs):
    """Mean and standard error of the paired differences PyTorch − stepwise."""
    differences = [theirs - ours for ours, theirs in pairs]
    sd = statistics.stdev(differences) if len(differences) > 1 else 0.0
    return {"mean_difference": statistics.fmean(differences), "standard_error": sd / math.sqrt(len(differences)),
            "mean_absolute_difference": statistics.fmean(abs(d) for d in differences), "pairs": len(differences)}


def paired_epochs(args, spec, summary, data, epochs, out, env):
    """PyTorch's record of each of `epochs`, trained from stepwise's checkpoint of the epoch
    before (epoch 0: the initial weights) on stepwise's batches of the epoch (run directory
    `out`)."""
    records = []
    for epoch in [e["epoch"] for e in epochs]:
        stream = os.path.join(out, f"batches-{epoch}.jsonl")
        with open(stream, "w") as f:
            subprocess.run([args.stepwise, "data", "batches", "--run", out, "--epochs", str(epoch)],
                           check=True, stdout=f, env=env)
        start = os.path.join(out, "checkpoints", f"epoch-{epoch - 1:04}.safetensors")
        [theirs] = reference_run(spec, summary, data, ["--from", start, "--batches", stream], env)
        records.append(theirs)
    return records


def print_paired(args, spec, seeds, ours, theirs):
    """Prints the paired comparison of every epoch, and pooled; exits."""
    names = ["train_loss", "test_loss", "test_accuracy"]
    per_epoch = []
    for i in range(len(ours[0])):
        row = {"epoch": ours[0][i]["epoch"], "learning_rate": ours[0][i]["learning_rate"]}
        for name in names:
            row[name] = paired([(run[i][name], other[i][name]) for run, other in zip(ours, theirs)])
        per_epoch.append(row)
    pooled = {name: paired([(run[i][name], other[i][name]) for run, other in zip(ours, theirs)
                            for i in range(len(run))]) for name in names}
    loss = pooled["train_loss"]
    agree = abs(loss["mean_difference"]) <= args.sigmas * loss["standard_error"]
    print(json.dumps({"spec": args.spec, "dataset": spec["data"]["dataset"], "seeds": seeds,
                      "threads": args.threads, "paired": True,
                      "pooled": {**pooled, "sigmas": args.sigmas, "agree": agree},
                      "per_epoch": per_epoch}, indent=2))
    sys.exit(0 if agree else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="a run spec (TOML)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, help="train this many epochs instead of the spec's")
    p.add_argument("--lr", type=float,
                   help="a constant learning rate instead of the spec's schedule (`--lr 1e-8 --epochs 1`: "
                        "the first epoch's train loss is the initial models' loss)")
    p.add_argument("--stepwise", default=os.path.join(HERE, "..", "target", "release", "stepwise"))
    p.add_argument("--data-dir", default="data")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--sigmas", type=float, default=3.0,
                   help="the largest difference of the final mean test accuracies (with --paired: of the "
                        "train losses' pooled mean paired difference), in standard errors")
    p.add_argument("--paired", action="store_true",
                   help="PyTorch trains each epoch from stepwise's checkpoint on stepwise's batches")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) < 2:
        p.error("--seeds needs two seeds at least: the comparison is over seeds")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), THREADS=str(args.threads),
               OMP_NUM_THREADS=str(args.threads))
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = args.spec
        if args.paired:
            # Every epoch's checkpoint kept, and the initial weights: PyTorch starts each epoch
            # from one.
            with open(args.spec, "rb") as f:
                if "checkpoint" in tomllib.load(f).get("train", {}):
                    p.error("--paired sets train.checkpoint itself; give a spec without it")
            spec_file = os.path.join(tmp, "spec.toml")
            with open(spec_file, "w") as f:
                f.write(open(args.spec).read() + "\n[train.checkpoint]\nkeep_last = 0\nkeep_epochs = [0]\n")
        summary = os.path.join(tmp, "summary.json")
        for seed in seeds:
            out = os.path.join(tmp, f"seed{seed}")
            epochs, spec = stepwise_run(args, spec_file, seed, out, env)
            ours.append(epochs)
            if seed == seeds[0]:
                with open(summary, "w") as f:
                    subprocess.run([args.stepwise, "model", "summary", *summary_flags(spec["model"]), "--json"],
                                   check=True, stdout=f)
                data = spec["data"]["dataset"]
                data = data if os.path.isdir(data) else os.path.join(args.data_dir, data)
            if args.paired:
                theirs.append(paired_epochs(args, spec, summary, data, epochs, out, env))
            else:
                own = ["--lr-per-epoch", *(str(e["learning_rate"]) for e in epochs), "--seed", str(seed)]
                if not spec["data"]["augment"]:
                    own.append("--no-augment")
                theirs.append(reference_run(spec, summary, data, own, env))
    if args.paired:
        print_paired(args, spec, seeds, ours, theirs)
    per_epoch = []
    for i, epoch in enumerate(ours[0]):
        row = {"epoch": epoch["epoch"], "learning_rate": epoch["learning_rate"]}
        for name in ["test_accuracy", "test_loss", "train_loss"]:
            row[name] = compared([run[i][name] for run in ours], [run[i][name] for run in theirs])
        per_epoch.append(row)
    final = per_epoch[-1]["test_accuracy"]
    agree = abs(final["difference"]) <= args.sigmas * final["standard_error"]
    print(json.dumps({"spec": args.spec, "dataset": spec["data"]["dataset"], "seeds": seeds,
                      "threads": args.threads,
                      "final_test_accuracy": {**final, "sigmas": args.sigmas, "agree": agree},
                      "per_epoch": per_epoch}, indent=2))
    sys.exit(0 if agree else 1)


if __name__ == "__main__":
    main()
