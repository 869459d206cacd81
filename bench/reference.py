#!/usr/bin/env python3
"""PyTorch reference of stepwise's models, for cross-checks and side-by-side benchmarks.

The architecture is read from `stepwise model summary --json` (one source of truth for the
block layout), built with the same module names as stepwise's checkpoints, so that
`load_state_dict(strict=True)` accepts a stepwise checkpoint. Initialisation follows
paper.md (He-normal N(0, 2/fan_in) for conv and linear weights, zero biases, BN γ=1 β=0,
γ=0.1 on UBN shared steps) with PyTorch's own generator.

  reference.py eval  --summary S.json --checkpoint C.safetensors --data DIR [--split test]
  reference.py train --summary S.json --data DIR --epochs E [--lr ...] [--milestones ...]
  reference.py bench --summary S.json --batch B --steps N [--warmup W] [--device cpu]
  reference.py bench-analysis --summary S.json --examples N --batch B [--repeats R] [--device cpu]
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    """Pre-activation block: shortcut(h) + conv2(relu(bn2(conv1(relu(bn1(h))))))."""

    def __init__(self, c_in, c_out, stride, projection, shared=None, ubn_gamma=None):
        super().__init__()
        # Shared modules are held outside the module tree so that the state dict lists them
        # once, under stages.S.shared.*, as stepwise does.
        self._shared = shared
        if shared is None or "bn1" not in shared:
            self.bn1 = nn.BatchNorm2d(c_in)
            self.bn2 = nn.BatchNorm2d(c_out)
            if ubn_gamma is not None:
                nn.init.constant_(self.bn1.weight, ubn_gamma)
                nn.init.constant_(self.bn2.weight, ubn_gamma)
        if shared is None:
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        if projection:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, 0)

    def part(self, name):
        return self._shared[name] if self._shared is not None and name in self._shared else getattr(self, name)

    def residual(self, h):
        a = self.part("conv1")(F.relu(self.part("bn1")(h)))
        return self.part("conv2")(F.relu(self.part("bn2")(a)))

    def forward(self, h):
        s = self.shortcut(h) if hasattr(self, "shortcut") else h
        return s + self.residual(h)


class Stage(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.pool_before = False


class Head(nn.Module):
    def __init__(self, channels, features, classes):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(features, classes)

    def forward(self, h):
        return self.fc(torch.flatten(F.avg_pool2d(F.relu(self.bn(h)), 8), 1))


class Net(nn.Module):
    def __init__(self, summary):
        super().__init__()
        blocks = summary["blocks"]
        model = summary["model"]
        sharing = model.get("sharing", "none")
        self.stem = nn.Conv2d(3, blocks[0]["in_shape"][0], 3, 1, 1)
        self.stages = nn.ModuleList()
        previous = blocks[0]["in_shape"]
        for b in blocks:
            s = int(b["id"].split(".")[0][1:])
            if s == len(self.stages):
                stage = Stage()
                stage.pool_before = b["in_shape"][1] < previous[1]
                self.stages.append(stage)
            stage = self.stages[s]
            c_in, c_out = b["in_shape"][0], b["out_shape"][0]
            stride = b["in_shape"][1] // b["out_shape"][1]
            if b["shared"]:
                if not hasattr(stage, "shared"):
                    stage.shared = nn.ModuleDict(
                        {"conv1": nn.Conv2d(c_out, c_out, 3, 1, 1), "conv2": nn.Conv2d(c_out, c_out, 3, 1, 1)}
                    )
                    if sharing == "naive":
                        stage.shared["bn1"] = nn.BatchNorm2d(c_out)
                        stage.shared["bn2"] = nn.BatchNorm2d(c_out)
                block = Block(c_in, c_out, 1, False, shared=stage.shared,
                              ubn_gamma=0.1 if sharing == "ubn" else None)
            else:
                block = Block(c_in, c_out, stride, b["kind"] == "projection")
            stage.blocks.append(block)
            previous = b["out_shape"]
        last = blocks[-1]["out_shape"][0]
        self.head = Head(last, summary["head_features"], model["classes"])
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
                nn.init.zeros_(m.bias)

    def forward(self, x):
        h = self.stem(x)
        for stage in self.stages:
            if stage.pool_before:
                h = F.avg_pool2d(h, 2)
            for block in stage.blocks:
                h = block(h)
        return self.head(h)


def read_split(directory, split):
    """A CIFAR-10-layout dataset split as uint8 (N, 3, 32, 32) and int64 labels."""
    for sub in ["", "cifar-10-batches-bin"]:
        d = os.path.join(directory, sub)
        if os.path.exists(os.path.join(d, "test_batch.bin")):
            break
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    raw = np.concatenate([np.fromfile(os.path.join(d, f), dtype=np.uint8) for f in files])
    raw = raw.reshape(-1, 3073)
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def normalise(images, mean, std):
    x = torch.from_numpy(images).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def evaluate(net, x, y, batch=250):
    net.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            logits = net(x[i:i + batch])
            loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return loss / len(y), correct / len(y)


def cmd_eval(args):
    from safetensors import safe_open
    from safetensors.torch import load_file

    summary = json.load(open(args.summary))
    net = Net(summary)
    tensors = load_file(args.checkpoint)
    state = {k: v for k, v in tensors.items() if not k.startswith("optimizer.")}
    net.load_state_dict(state, strict=True)
    with safe_open(args.checkpoint, "pt") as f:
        spec = json.loads(f.metadata()["spec"])
    norm = spec["data"]["normalization"]
    images, labels = read_split(args.data, args.split)
    x = normalise(images, norm["mean"], norm["std"])
    loss, acc = evaluate(net, x, torch.from_numpy(labels))
    print(json.dumps({"loss": loss, "accuracy": acc, "n": len(labels), "strict_load": True}))


def augment(x, generator):
    """Random crop from 4-pixel zero padding (in pixel space) and horizontal flip."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        img = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        out[i] = img.flip(2) if flip[i] else img
    return out


def cmd_train(args):
    torch.manual_seed(args.seed)
    summary = json.load(open(args.summary))
    net = Net(summary)
    train_u8, train_y = read_split(args.data, "train")
    test_u8, test_y = read_split(args.data, "test")
    scaled = torch.from_numpy(train_u8).float() / 255.0
    mean = scaled.mean(dim=(0, 2, 3)).tolist()
    std = scaled.std(dim=(0, 2, 3), unbiased=False).tolist()
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    test_x = normalise(test_u8, mean, std)
    train_y, test_y = torch.from_numpy(train_y), torch.from_numpy(test_y)
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (decay if name.endswith("weight") and p.dim() > 1 else no_decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, args.milestones, gamma=args.gamma)
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(train_y), generator=g)
        seen, correct, total, start = 0, 0, 0.0, time.time()
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            x = augment(scaled[idx], g)
            x = (x - m) / s
            logits = net(x)
            loss = F.cross_entropy(logits, train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == train_y[idx]).sum().item()
            seen += len(idx)
        sched.step()
        test_loss, test_acc = evaluate(net, test_x, test_y)
        print(json.dumps({"epoch": epoch + 1, "train_loss": total / seen, "train_accuracy": correct / seen,
                          "test_loss": test_loss, "test_accuracy": test_acc,
                          "images_per_second": seen / (time.time() - start)}), flush=True)


def setup(args):
    """Seeds, and on CUDA turns `cudnn.benchmark` on and, for `--precision fp32`, TF32 off
    (`default` leaves PyTorch's settings: TF32 convolutions, strict matmuls)."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if args.precision == "fp32":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
    return device


def cmd_bench(args):
    """Median time of a training step (forward, backward, SGD) on random data, as
    `stepwise bench train` measures it. On CUDA: `cudnn.benchmark` on; `--precision`
    `default` leaves PyTorch's TF32 settings as they are, `fp32` turns TF32 off, `bf16` runs
    under autocast with channels-last tensors, `bf16-nchw` under autocast with the default
    (NCHW) layout, stepwise's own: the two bf16 rows show what channels-last is worth."""
    device = setup(args)
    summary = json.load(open(args.summary))
    net = Net(summary).to(device).train()
    classes = summary["model"]["classes"]
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, classes, (args.batch,), device=device)
    autocast = args.precision in ("bf16", "bf16-nchw")
    if args.precision == "bf16":
        net = net.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    median = times[len(times) // 2]
    out = {"ms_per_step": median, "images_per_second": args.batch / (median / 1e3),
           "min_ms": times[0], "max_ms": times[-1], "steps": args.steps,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "precision": args.precision}
    if device.type == "cuda":
        out["max_memory_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        out["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if args.profile:
        out["ops"] = profile_steps(step, device, args.steps)
    print(json.dumps(out))


def profile_steps(step, device, steps):
    """The operators of `steps` more steps under torch.profiler (not the timed ones, which
    it would slow): per step, each operator's own time on the device (the CPU's without
    CUDA) and calls, the 20 largest — beside `stepwise bench train --profile`'s kernels."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    own = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    ops = sorted(prof.key_averages(), key=lambda e: getattr(e, own), reverse=True)[:20]
    return [{"op": e.key, "ms": getattr(e, own) / 1e3 / steps, "calls": e.count / steps} for e in ops]


def flat_blocks(net):
    """(average-pool before?, block) for every block in order."""
    return [(stage.pool_before and j == 0, block)
            for stage in net.stages for j, block in enumerate(stage.blocks)]


def run_from(net, blocks, i, h):
    """The logits when `h` enters after block `i` (the rest of the network)."""
    for pool, block in blocks[i + 1:]:
        if pool:
            h = F.avg_pool2d(h, 2)
        h = block(h)
    return net.head(h)


def analysis_pass(net, x, y):
    """stepwise's cosine/ℓ2/drop analysis of one batch (BatchNorm in inference mode): the
    probed forward, ∂(summed loss)/∂h_i for every block input, cos(F_i(h_i), ∂L/∂h_i) and
    ‖F_i(h_i)‖/‖base‖ per example (base: h_i, or the projection of a projection block, whose
    gradient is taken at its output); then a second forward, and every block dropped in
    turn with the rest of the network run on its shortcut. Returns the per-example values and
    the drop sums so nothing is optimised away."""
    blocks = flat_blocks(net)
    h = net.stem(x)
    inputs, residuals, bases = [], [], []
    for pool, block in blocks:
        if pool:
            h = F.avg_pool2d(h, 2)
        inputs.append(h)
        f = block.residual(h)
        base = block.shortcut(h) if hasattr(block, "shortcut") else h
        residuals.append(f)
        bases.append(base)
        h = base + f
    inputs.append(h)
    loss = F.cross_entropy(net.head(h), y, reduction="sum")
    grads = torch.autograd.grad(loss, inputs)
    cos, l2 = [], []
    with torch.no_grad():
        for i, (f, base) in enumerate(zip(residuals, bases)):
            g = grads[i + 1] if base is not inputs[i] else grads[i]
            cos.append(F.cosine_similarity(f.flatten(1), g.flatten(1), dim=1))
            l2.append(f.flatten(1).norm(dim=1) / base.flatten(1).norm(dim=1))
        h = net.stem(x)
        block_inputs = []
        for pool, block in blocks:
            if pool:
                h = F.avg_pool2d(h, 2)
            block_inputs.append(h)
            h = block(h)
        logits = net.head(h)
        drops = [(logits.argmax(1) == y).sum(), F.cross_entropy(logits, y, reduction="sum")]
        for i, (pool, block) in enumerate(blocks):
            h = block.shortcut(block_inputs[i]) if hasattr(block, "shortcut") else block_inputs[i]
            out = run_from(net, blocks, i, h)
            drops += [(out.argmax(1) == y).sum(), F.cross_entropy(out, y, reduction="sum")]
    return cos, l2, drops


def print_pass(args, times):
    """The JSON line of an evaluation or analysis benchmark: the median of `times`."""
    times.sort()
    seconds = times[len(times) // 2]
    print(json.dumps({"seconds": seconds, "examples_per_second": args.examples / seconds,
                      "examples": args.examples, "batch": args.batch, "repeats": args.repeats,
                      "precision": args.precision, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


def cmd_bench_analysis(args):
    """Median time of the cosine/ℓ2/drop analysis of `--examples` random images through a
    fresh model in inference mode, as `stepwise bench analyze` measures it (uint8 images
    normalised batch by batch)."""
    device = setup(args)
    summary = json.load(open(args.summary))
    net = Net(summary).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    classes = summary["model"]["classes"]
    images = torch.randint(0, 256, (args.examples, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, classes, (args.examples,))
    times = []
    for i in range(args.repeats + 1):
        start = time.perf_counter()
        for b in range(0, args.examples, args.batch):
            x = ((images[b:b + args.batch].float() - 127.5) / 64.0).to(device).requires_grad_(True)
            analysis_pass(net, x, labels[b:b + args.batch].to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - start)
    print_pass(args, times)


def cmd_bench_eval(args):
    """Median time of evaluating `--examples` random images (loss and accuracy, BatchNorm in
    inference mode, each batch copied to the device and its sums read back), as `stepwise
    bench eval` measures it."""
    device = setup(args)
    summary = json.load(open(args.summary))
    net = Net(summary).to(device).eval()
    classes = summary["model"]["classes"]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.examples, 3, 32, 32, generator=generator)
    y = torch.randint(0, classes, (args.examples,), generator=generator)
    times = []
    for i in range(args.repeats + 1):
        start = time.perf_counter()
        loss, correct = 0.0, 0
        with torch.no_grad():
            for b in range(0, args.examples, args.batch):
                xb, yb = x[b:b + args.batch].to(device), y[b:b + args.batch].to(device)
                logits = net(xb)
                loss += F.cross_entropy(logits, yb, reduction="sum").item()
                correct += (logits.argmax(1) == yb).sum().item()
        if i > 0:
            times.append(time.perf_counter() - start)
    print_pass(args, times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("eval")
    e.add_argument("--summary", required=True)
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="test", choices=["train", "test"])
    t = sub.add_parser("train")
    t.add_argument("--summary", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--milestones", type=int, nargs="*", default=[3, 4])
    t.add_argument("--gamma", type=float, default=0.2)
    t.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("bench")
    b.add_argument("--summary", required=True)
    b.add_argument("--batch", type=int, default=128)
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--device", default="cpu")
    b.add_argument("--precision", default="default", choices=["default", "fp32", "bf16", "bf16-nchw"])
    b.add_argument("--profile", action="store_true",
                   help="also list the operators' time per step (torch.profiler, untimed steps)")
    for name in ["bench-analysis", "bench-eval"]:
        a = sub.add_parser(name)
        a.add_argument("--summary", required=True)
        a.add_argument("--examples", type=int, default=1000)
        a.add_argument("--batch", type=int, default=250)
        a.add_argument("--repeats", type=int, default=3)
        a.add_argument("--device", default="cpu")
        a.add_argument("--precision", default="default", choices=["default", "fp32"])
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", torch.get_num_threads())))
    {"eval": cmd_eval, "train": cmd_train, "bench": cmd_bench,
     "bench-analysis": cmd_bench_analysis, "bench-eval": cmd_bench_eval}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
