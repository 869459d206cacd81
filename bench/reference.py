#!/usr/bin/env python3
"""PyTorch reference of stepwise's models, for cross-checks and side-by-side benchmarks.

The architecture is read from `stepwise model summary --json` (one source of truth for the
block layout), built with the same module names as stepwise's checkpoints, so that
`load_state_dict(strict=True)` accepts a stepwise checkpoint. Initialisation follows
paper.md (He-normal N(0, 2/fan_in) for conv and linear weights, zero biases, BN γ=1 β=0,
γ=0.1 on UBN shared steps) with PyTorch's own generator.

  reference.py eval  --summary S.json --checkpoint C.safetensors --data DIR [--split test]
  reference.py check --summary S.json --checkpoint C.safetensors --data DIR [--compare A.json]
  reference.py first-order --summary S.json --checkpoint C.safetensors --data DIR [--split train] [--examples 5000]
  reference.py train --summary S.json --data DIR --lr-per-epoch L1 L2 ... [--seed K] [--momentum ...] [--save W.pt]
  reference.py train --summary S.json --data DIR --from C.safetensors --batches B.jsonl [--momentum ...]
  reference.py step-check --summary S.json --before C1.safetensors --after C2.safetensors --data DIR
  reference.py drift --summary S.json --from C1.safetensors --to C2.safetensors --batches B.jsonl --data DIR
  reference.py bench --summary S.json --batch B --steps N [--warmup W] [--device cpu]
  reference.py bench-analysis --summary S.json --examples N --batch B [--repeats R] [--device cpu]
"""
import argparse
import json
import math
import os
import statistics
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
        # Shared modules are held outside the module tree (nn.Module's __setattr__ would
        # register them under every block) so that the state dict lists them once, under
        # stages.S.shared.*, as stepwise does.
        self.__dict__["_shared"] = shared
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

    def residual(self, h, batch_stats=False):
        a = self.part("conv1")(F.relu(self.norm("bn1", h, batch_stats)))
        return self.part("conv2")(F.relu(self.norm("bn2", a, batch_stats)))

    def norm(self, name, t, batch_stats):
        bn = self.part(name)
        if batch_stats:  # this batch's statistics, the running ones untouched
            return F.batch_norm(t, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        return bn(t)

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


def load_checkpoint(args):
    """The network of `--summary` with `--checkpoint`'s weights (strictly: every key, no
    more), and the normalised `--split` of `--data` as the run normalised it."""
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
    return net.eval(), normalise(images, norm["mean"], norm["std"]), torch.from_numpy(labels)


def cmd_eval(args):
    net, x, y = load_checkpoint(args)
    loss, acc = evaluate(net, x, y)
    print(json.dumps({"loss": loss, "accuracy": acc, "n": len(y), "strict_load": True}))


def head_stats(logits, y):
    """Per example, in float64: cross-entropy, correct (0/1), predictive entropy and the
    margin p_y − max_{c≠y} p_c (paper.md, metric 5)."""
    log_p = F.log_softmax(logits.double(), 1)
    p = log_p.exp()
    p_y = p.gather(1, y[:, None])[:, 0]
    return {"loss": -log_p.gather(1, y[:, None])[:, 0],
            "accuracy": (logits.argmax(1) == y).double(),
            "entropy": -(p * log_p).sum(1),
            "margin": p_y - p.scatter(1, y[:, None], -1.0).max(1).values}


def margin_groups(margin, threshold):
    """stepwise's groups of examples by the head's margin: all, borderline (|m| < threshold),
    already correct (m ≥ threshold) and misclassified (m ≤ −threshold), as masks."""
    return {"all": torch.ones_like(margin, dtype=torch.bool), "borderline": margin.abs() < threshold,
            "correct": margin >= threshold, "misclassified": margin <= -threshold}


def logit_gradient(logits, y, unit=False):
    """∂ΣCE/∂logits = p − onehot per example, computed in float64 with the label's entry
    written −Σ_{c≠y} p_c: for a confidently classified example p_y − 1 cancels to 0 in
    floating point (PyTorch's fused cross-entropy gives that), leaving a gradient pointing the
    wrong way. With `unit`, each row's direction as stepwise's cosines take it, exact at any
    logit gap: every entry is a multiple of the other classes' probabilities, computed as
    exp(z_c − max_{c'≠y} z_c') so that the largest is 1 where the probabilities themselves
    underflow (beyond a gap of ~104 in f32, ~745 in f64), then divided by the row's norm."""
    z = logits.detach().double()
    label = y[:, None]
    if unit:
        others = z.scatter(1, label, float("-inf"))
        scaled = (others - others.max(1, keepdim=True).values).exp()
        grad = scaled.scatter(1, label, -scaled.sum(1, keepdim=True))
        grad = grad / grad.norm(dim=1, keepdim=True)
    else:
        others = F.softmax(z, 1).scatter(1, label, 0.0)
        grad = others.scatter(1, label, -others.sum(1, keepdim=True))
    return grad.to(logits.dtype)


def cosine(a, b):
    """cos(a_n, b_n) per example, not finite where either vector is zero (as stepwise's)."""
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def norm(t):
    """‖t_n‖ per example in float64."""
    return t.flatten(1).double().norm(dim=1)


def dot(a, b):
    """⟨a_n, b_n⟩ per example in float64."""
    return (a.flatten(1).double() * b.flatten(1).double()).sum(1)


def mean_median(values):
    """Mean and median of the finite values, and how many there are, as stepwise's
    summaries (the median of an even count is the mean of the middle two)."""
    v = np.sort(np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64))
    return (v.mean(), float(np.median(v)), len(v)) if len(v) else None


def block_rows(net, ids, x, y, args):
    """stepwise's records of the cosine (mean, median), ℓ2 ratio (mean, median), block
    dropping and plain accuracy/loss, from `analysis_pass` batch by batch."""
    cos, l2, drops = [[] for _ in ids], [[] for _ in ids], None
    for b in range(0, len(y), args.batch):
        xb = x[b:b + args.batch].clone().requires_grad_(True)
        c, r, d = analysis_pass(net, xb, y[b:b + args.batch])
        for i in range(len(ids)):
            cos[i] += c[i].tolist()
            l2[i] += r[i].tolist()
        d = [v.item() for v in d]
        drops = d if drops is None else [u + v for u, v in zip(drops, d)]
    n = len(y)
    rows = [{"name": "accuracy", "value": drops[0] / n, "n": n},
            {"name": "loss", "value": drops[1] / n, "n": n}]
    for i, block in enumerate(ids):
        for name, values in [("cosine", cos[i]), ("l2_ratio", l2[i])]:
            summary = mean_median(values)
            if summary:
                rows += [{"name": name, "block": block, "stat": stat, "value": v, "n": summary[2]}
                         for stat, v in [("mean", summary[0]), ("median", summary[1])]]
        rows += [{"name": "drop_accuracy", "block": block, "value": drops[2 + 2 * i] / n, "n": n},
                 {"name": "drop_loss", "block": block, "value": drops[3 + 2 * i] / n, "n": n}]
    return rows


def probe(net, x):
    """Every block's input h, residual-branch output F(h), shortcut output (h itself for an
    identity block, the same tensor) and output."""
    inputs, residuals, bases, outputs = [], [], [], []
    h = net.stem(x)
    for pool, block in flat_blocks(net):
        h = F.avg_pool2d(h, 2) if pool else h
        inputs.append(h)
        residuals.append(block.residual(h))
        bases.append(block.shortcut(h) if hasattr(block, "shortcut") else h)
        h = bases[-1] + residuals[-1]
        outputs.append(h)
    return inputs, residuals, bases, outputs


def head_rows(net, summary, x, y, args):
    """stepwise's records of the intermediate accuracy (the head on every last-stage block's
    output), the borderline window (the head at the input of the last `--window` blocks the
    head can follow and after each, per group of the margin at the start), the Taylor check
    on those blocks and the gradient-norm ratio (paper.md, metrics 4, 5, 7 and 8)."""
    blocks = summary["blocks"]
    last = blocks[-1]
    stage = last["id"].split(".")[0]
    in_stage = [i for i, b in enumerate(blocks) if b["id"].split(".")[0] == stage]
    compatible = [i for i in in_stage if blocks[i]["in_shape"] == last["out_shape"]]
    window = compatible[len(compatible) - min(args.window, len(compatible)):]
    n = len(y)
    sums = {}  # (name, block, step, group) → [sum, count]
    taylor = {i: ([], []) for i in compatible}
    grad_norms = [0.0, 0.0]

    def add(key, values, mask=None):
        values = values if mask is None else values[mask]
        entry = sums.setdefault(key, [0.0, 0])
        entry[0] += values.sum().item()
        entry[1] += len(values)

    for b in range(0, n, args.batch):
        xb, yb = x[b:b + args.batch], y[b:b + args.batch]
        with torch.no_grad():
            inputs, residuals, _, outputs = probe(net, xb)
            for i in in_stage:
                stats = head_stats(net.head(outputs[i]), yb)
                add(("intermediate_accuracy", blocks[i]["id"], None, None), stats["accuracy"])
                add(("intermediate_loss", blocks[i]["id"], None, None), stats["loss"])
            if window:
                path = [inputs[window[0]]] + [outputs[i] for i in window]
                margin = head_stats(net.head(path[0]), yb)["margin"]
                groups = margin_groups(margin, args.margin)
                for step, h in enumerate(path):
                    stats = head_stats(net.head(h), yb)
                    block = blocks[window[step - 1]]["id"] if step else None
                    for g, mask in groups.items():
                        for m in ["loss", "accuracy", "entropy"]:
                            add((f"borderline_{m}", block, step, g), stats[m], mask)
        for i in compatible:
            hg = inputs[i].clone().requires_grad_(True)
            logits = net.head(hg)
            grad, = torch.autograd.grad(logits, hg, grad_outputs=logit_gradient(logits, yb))
            before = head_stats(logits.detach(), yb)["loss"]
            with torch.no_grad():
                after = head_stats(net.head(outputs[i]), yb)["loss"]
            taylor[i][0].extend((after - before).tolist())
            taylor[i][1].extend(dot(residuals[i], grad).tolist())
        inputs, _, _, outputs = probe(net, xb.clone().requires_grad_(True))
        logits = net.head(outputs[-1])
        g_first, g_deep = torch.autograd.grad(logits, [inputs[0], inputs[in_stage[0]]],
                                              grad_outputs=logit_gradient(logits, yb))
        grad_norms[0] += norm(g_first).sum().item()
        grad_norms[1] += norm(g_deep).sum().item()
    rows = []
    for (name, block, step, group), (total, count) in sums.items():
        if count:
            row = {"name": name, "value": total / count, "n": count}
            row.update({k: v for k, v in [("block", block), ("step", step), ("group", group)] if v is not None})
            rows.append(row)
    for i, (actual, predicted) in taylor.items():
        block = blocks[i]["id"]
        for name, values in [("taylor_actual", actual), ("taylor_predicted", predicted)]:
            stats = mean_median(values)
            if stats:
                rows += [{"name": name, "block": block, "stat": stat, "value": v, "n": stats[2]}
                         for stat, v in [("mean", stats[0]), ("median", stats[1])]]
        pairs = np.array([(a, p) for a, p in zip(actual, predicted) if math.isfinite(a) and math.isfinite(p)])
        if len(pairs):
            # Rust's signum: +0 counts as positive, −0 as negative.
            agree = (np.copysign(1, pairs[:, 0]) == np.copysign(1, pairs[:, 1])).mean()
            rows.append({"name": "taylor_sign_agreement", "block": block, "value": agree, "n": len(pairs)})
        if len(pairs) >= 2:
            rows.append({"name": "taylor_correlation", "block": block,
                         "value": float(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]), "n": len(pairs)})
    rows.append({"name": "grad_norm_ratio", "value": grad_norms[0] / grad_norms[1], "n": n})
    return rows


def unroll_rows(net, x, y, args):
    """stepwise's unrolling records (paper.md, metric 6): the last block applied again
    `--steps` times, h ← h + α·F(h); per α, step and group of the margin before unrolling
    (`margin_groups`) the head's mean loss, accuracy and entropy, the mean cosine between F(h)
    and ∂CE(head(h))/∂h, the mean ‖F(h)‖/‖h‖ and, for the steps taken, the mean
    α·⟨F(h), ∂CE/∂h⟩. An α is followed while every hidden state is finite. With
    `--unroll-bn batch` the block normalises with each batch's statistics (stepwise's
    `unroll_bn`)."""
    blocks = flat_blocks(net)
    last = blocks[-1][1]
    if hasattr(last, "shortcut"):
        return []
    # sums[(alpha, step, group)] = [loss, accuracy, entropy, n]; per (alpha, step, group) the
    # cosines, ℓ2 ratios and first-order loss changes of its examples.
    sums, cosines, ratios, first_order = {}, {}, {}, {}
    for b in range(0, len(y), args.batch):
        xb, yb = x[b:b + args.batch], y[b:b + args.batch]
        with torch.no_grad():
            start = probe(net, xb)[3][-1]
            margin = head_stats(net.head(start), yb)["margin"]
        members = margin_groups(margin, args.margin)
        for alpha in args.alphas:
            h = start
            for step in range(args.steps + 1):
                if not torch.isfinite(h.flatten(1).norm(dim=1)).all():
                    break
                with torch.no_grad():
                    stats = head_stats(net.head(h), yb)
                    f = last.residual(h, batch_stats=args.unroll_bn == "batch")
                for g, mask in members.items():
                    s = sums.setdefault((alpha, step, g), [0.0, 0.0, 0.0, 0])
                    for i, name in enumerate(["loss", "accuracy", "entropy"]):
                        s[i] += stats[name][mask].sum().item()
                    s[3] += int(mask.sum())
                hg = h.detach().requires_grad_(True)
                logits = net.head(hg)
                grad, = torch.autograd.grad(logits, hg, grad_outputs=logit_gradient(logits, yb, unit=True),
                                            retain_graph=step < args.steps)
                def extend(series, values):
                    for g, mask in members.items():
                        kept = values[mask]
                        series.setdefault((alpha, step, g), []).extend(kept[torch.isfinite(kept)].tolist())
                extend(cosines, cosine(f, grad))
                extend(ratios, f.flatten(1).norm(dim=1) / h.flatten(1).norm(dim=1))
                if step < args.steps:
                    loss_grad, = torch.autograd.grad(logits, hg, grad_outputs=logit_gradient(logits, yb))
                    extend(first_order, alpha * dot(f, loss_grad))
                with torch.no_grad():
                    h = h + alpha * f
    rows = []
    for (alpha, step, g), (loss, acc, entropy, n) in sorted(sums.items()):
        if n:
            rows += [{"name": f"unroll_{m}", "alpha": alpha, "step": step, "group": g, "value": v / n, "n": n}
                     for m, v in [("loss", loss), ("accuracy", acc), ("entropy", entropy)]]
    for name, series in [("unroll_cosine", cosines), ("unroll_l2_ratio", ratios),
                         ("unroll_first_order", first_order)]:
        for (alpha, step, g), values in sorted(series.items()):
            if values:
                rows.append({"name": name, "alpha": alpha, "step": step, "group": g,
                             "stat": "mean", "value": sum(values) / len(values), "n": len(values)})
    return rows


def cmd_first_order(args):
    """Who carries the unrolling's first-order loss change at its first step: the last block
    re-applied to its own output h_L, per group of the head's margin there (misclassified
    m ≤ −margin, borderline |m| < margin, correct m ≥ margin), each group's share of
    Σ_n ⟨F(h_n), ∂CE_n/∂h_n⟩, its mean cosine (stepwise's unit logit gradient), the fraction
    of positive cosines and the mean norms ‖∂CE_n/∂h_n‖ and ‖F(h_n)‖. `--examples` drawn at
    random (`--seed`): imported splits are ordered by class. BatchNorm as `--unroll-bn`."""
    net, x, y = load_checkpoint(args)
    pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(args.seed))[:args.examples]
    x, y = x[pick], y[pick]
    for p in net.parameters():
        p.requires_grad_(False)
    last = flat_blocks(net)[-1][1]
    if hasattr(last, "shortcut"):
        sys.exit("the last block is a projection block: it cannot be re-applied")
    columns = []
    for b in range(0, len(y), args.batch):
        xb, yb = x[b:b + args.batch], y[b:b + args.batch]
        with torch.no_grad():
            h = probe(net, xb)[3][-1]
            f = last.residual(h, batch_stats=args.unroll_bn == "batch")
        hg = h.detach().requires_grad_(True)
        logits = net.head(hg)
        g, = torch.autograd.grad(logits, hg, grad_outputs=logit_gradient(logits, yb), retain_graph=True)
        u, = torch.autograd.grad(logits, hg, grad_outputs=logit_gradient(logits, yb, unit=True))
        columns.append(torch.stack([head_stats(logits.detach(), yb)["margin"], dot(f, g),
                                    cosine(f, u).double(), f.flatten(1).norm(dim=1).double(),
                                    g.flatten(1).norm(dim=1).double()], 1))
    margin, first, cos, f_norm, g_norm = torch.cat(columns).unbind(1)
    total = first.sum().item()
    groups = margin_groups(margin, args.margin)
    del groups["all"]
    out = {"split": args.split, "examples": len(y), "unroll_bn": args.unroll_bn,
           "first_order_sum": total, "mean_cosine": cos[cos.isfinite()].mean().item(), "groups": {}}
    for name, mask in groups.items():
        c = cos[mask & cos.isfinite()]
        if mask.any():
            out["groups"][name] = {"n": int(mask.sum()), "share_of_first_order": first[mask].sum().item() / total,
                                   "mean_cosine": c.mean().item(), "positive_cosines": (c > 0).double().mean().item(),
                                   "mean_gradient_norm": g_norm[mask].mean().item(),
                                   "mean_residual_norm": f_norm[mask].mean().item()}
    print(json.dumps(out))


def record_key(r):
    return tuple(r.get(k) for k in ["name", "block", "stat", "alpha", "step", "group"])


def cmd_check(args):
    """stepwise's block metrics of one checkpoint computed here, independently: the cosine
    (gradient of the full network), ℓ2 ratio, block dropping, plain accuracy and loss,
    intermediate accuracy, the borderline window, the Taylor check, the gradient-norm ratio
    and the unrolling, over the whole `--split` (BatchNorm in inference mode; not the
    activation norms at initialisation, which need stepwise's generator). `--compare
    analysis.json` (stepwise's, of the same checkpoint and split, analysed with
    `--max-examples` at least the split's size) checks every record of those metrics
    against these and exits non-zero when one differs by more than the tolerance."""
    net, x, y = load_checkpoint(args)
    if args.unroll_bn == "batch" and args.batch < len(y):
        # stepwise batches a shuffled subset: only statistics of the whole split agree.
        sys.exit(f"--unroll-bn batch normalises with each batch's statistics: compare one batch "
                 f"of the whole split (--batch {len(y)} here, stepwise's --eval-batch {len(y)})")
    for p in net.parameters():
        p.requires_grad_(False)
    summary = json.load(open(args.summary))
    ids = [b["id"] for b in summary["blocks"]]
    rows = (block_rows(net, ids, x, y, args) + head_rows(net, summary, x, y, args)
            + unroll_rows(net, x, y, args))
    out = {"split": args.split, "examples": len(y), "rows": rows}
    if args.compare:
        out["compare"] = compare(rows, len(y), args)
    print(json.dumps(out))
    if args.compare and out["compare"]["mismatches"]:
        sys.exit(1)


def compare(rows, examples, args):
    """stepwise's records of `args.split` in `args.compare` against `rows`, for the metrics
    both have: a record matches when both sides have it, with the same n, and its values
    differ by at most atol + rtol·|ours|. Both sides take the cosines' gradients as unit
    vectors at the logits, exact at any logit gap, so every cosine is compared, also where
    the softmax of the other classes underflows and in diverging unrolled states. Returns
    the counts, the worst error relative to the tolerance per metric and the first 20
    mismatches."""
    analysis = json.load(open(args.compare))
    settings = analysis.get("spec", {})
    if settings.get("unroll_bn", "running") != args.unroll_bn:
        sys.exit(f"stepwise's unrolling used unroll_bn = {settings.get('unroll_bn', 'running')}: "
                 f"pass --unroll-bn to match")
    if args.unroll_bn == "batch" and settings.get("eval_batch", 0) < examples:
        sys.exit(f"stepwise's batches of {settings.get('eval_batch')} have statistics of their own: "
                 f"analyse with --eval-batch {examples} to compare")
    records = [r for r in analysis["records"] if r["split"] == args.split]
    names = {r["name"] for r in rows} & {r["name"] for r in records}
    theirs = {record_key(r): r for r in records if r["name"] in names}
    analysed = theirs.get(record_key({"name": "accuracy"}), {}).get("n", examples)
    if analysed != examples:
        sys.exit(f"stepwise analysed {analysed} of the {examples} {args.split} examples: "
                 f"analyse with --max-examples {examples} to compare the whole split")
    ours = {record_key(r): r for r in rows if r["name"] in names}
    mismatches, worst = [], {}
    for key in sorted(set(ours) | set(theirs), key=str):
        mine, other = ours.get(key), theirs.get(key)
        if mine is None or other is None:
            mismatches.append({"stepwise": other, "reference": mine})
            continue
        error = abs(mine["value"] - other["value"]) / (args.atol + args.rtol * abs(mine["value"]))
        worst[key[0]] = max(worst.get(key[0], 0.0), error)
        if mine["n"] != other["n"] or error > 1.0:
            mismatches.append({"stepwise": other, "reference": mine})
    return {"records": len(theirs), "metrics": sorted(names), "mismatches": len(mismatches),
            "worst_error_over_tolerance": worst, "first_mismatches": mismatches[:20]}


def crop_and_flip(x, dy, dx, flip):
    """Each image cropped at (dy[i], dx[i]) from 4-pixel zero padding (in pixel space), then
    flipped horizontally where flip[i]."""
    padded = F.pad(x, (4, 4, 4, 4))
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        img = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        out[i] = img.flip(2) if flip[i] else img
    return out


def augment(x, generator):
    """Random crop from 4-pixel zero padding and horizontal flip, drawn from `generator`."""
    n = x.shape[0]
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return crop_and_flip(x, dy, dx, flip)


def checkpoint_state(path):
    """A stepwise checkpoint's tensors and its spec and train state."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items() if k in ("spec", "train_state")}
    return load_file(path), meta


def load_train_state(net, opt, tensors, dtype=torch.float32):
    """Loads a stepwise checkpoint's weights, running statistics and momentum buffers into
    `net` (strictly) and `opt`; returns the buffers by parameter name."""
    net.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")}, strict=True)
    net.to(dtype)
    momentum = {}
    for name, p in net.named_parameters():
        # A copy: the optimizer updates its buffers in place.
        momentum[name] = tensors["optimizer.momentum." + name].to(dtype, copy=True)
        opt.state[p]["momentum_buffer"] = momentum[name]
    return momentum


def sgd(net, lr, momentum, nesterov, weight_decay, decay_on):
    """stepwise's optimizer: PyTorch's SGD, weight decay on the conv and linear weights
    (`decay_on` "weights") or on every parameter ("all")."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        weights = name.endswith("weight") and p.dim() > 1
        (decay if weights or decay_on == "all" else no_decay).append(p)
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=momentum, nesterov=nesterov)


def own_epochs(args, scaled, generator):
    """The reference's own batch stream: per epoch, (epoch, batches of (lr, indices, images)),
    shuffled and augmented from `generator` as each batch is taken."""
    def batches(order, lr):
        for i in range(0, len(order), args.batch):
            idx = order[i:i + args.batch]
            yield lr, idx, augment(scaled[idx], generator) if args.augment else scaled[idx]

    for epoch, lr in enumerate(args.lr_per_epoch):
        yield epoch + 1, batches(torch.randperm(scaled.shape[0], generator=generator), lr)


def stream_epochs(path, scaled):
    """stepwise's batch stream (`stepwise data batches`): per epoch, (epoch, batches of (lr,
    indices, images)), the examples, crops and flips stepwise trained on."""
    epochs = {}
    for line in open(path):
        b = json.loads(line)
        epochs.setdefault(b["epoch"], []).append(b)

    def batches(lines):
        for b in lines:
            idx = torch.tensor(b["examples"])
            yield b["learning_rate"], idx, crop_and_flip(scaled[idx], b["crop_y"], b["crop_x"], b["flip"])

    for epoch in sorted(epochs):
        yield epoch, batches(epochs[epoch])


def cmd_train(args):
    """Trains with stepwise's recipe (paper.md): SGD with momentum, weight decay added to the
    gradient of the conv and linear weights (`--decay-on all`: of every parameter), crop and
    flip, per-channel normalisation from the train split, one learning rate per epoch.
    `--from` starts from a stepwise checkpoint (weights, running statistics, momentum
    buffers, and its run's normalisation); `--batches` trains on stepwise's own batch
    stream instead of drawing one. Prints one JSON line per epoch. `--save` writes the
    trained state dict (safetensors for a `.safetensors` name, else `torch.save`), which
    `stepwise model import` makes a run of stepwise's."""
    if (args.lr_per_epoch is None) == (args.batches is None):
        sys.exit("train needs one of --lr-per-epoch (its own batches) and --batches (stepwise's)")
    torch.manual_seed(args.seed)
    summary = json.load(open(args.summary))
    net = Net(summary)
    train_u8, train_y = read_split(args.data, "train")
    test_u8, test_y = read_split(args.data, "test")
    scaled = torch.from_numpy(train_u8).float() / 255.0
    opt = sgd(net, 0.0, args.momentum, args.nesterov, args.weight_decay, args.decay_on)
    if args.start:
        tensors, meta = checkpoint_state(args.start)
        load_train_state(net, opt, tensors)
        norm = meta["spec"]["data"]["normalization"]
        mean, std = norm["mean"], norm["std"]
    else:
        mean = scaled.mean(dim=(0, 2, 3)).tolist()
        std = scaled.std(dim=(0, 2, 3), unbiased=False).tolist()
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    test_x = normalise(test_u8, mean, std)
    train_y, test_y = torch.from_numpy(train_y), torch.from_numpy(test_y)
    g = torch.Generator().manual_seed(args.seed)
    epochs = stream_epochs(args.batches, scaled) if args.batches else own_epochs(args, scaled, g)
    for epoch, batches in epochs:
        net.train()
        seen, correct, total, start = 0, 0, 0.0, time.time()
        for lr, idx, x in batches:
            for group in opt.param_groups:
                group["lr"] = lr
            x = (x - m) / s
            logits = net(x)
            loss = F.cross_entropy(logits, train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == train_y[idx]).sum().item()
            seen += len(idx)
        test_loss, test_acc = evaluate(net, test_x, test_y)
        print(json.dumps({"epoch": epoch, "learning_rate": lr, "train_loss": total / seen,
                          "train_accuracy": correct / seen, "test_loss": test_loss, "test_accuracy": test_acc,
                          "images_per_second": seen / (time.time() - start)}), flush=True)
    if args.save:
        state = net.state_dict()
        if args.save.endswith(".safetensors"):
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in state.items()}, args.save)
        else:
            torch.save(state, args.save)


def cmd_drift(args):
    """How far rounding alone carries training: from stepwise's checkpoint `--from`, PyTorch
    trains the epoch of `--batches` (stepwise's stream) twice, in float32 and in float64, and
    prints after each listed step the median over conv and linear weights of their relative
    difference ‖float32 − float64‖ / ‖float64‖; at the end, the same distance from stepwise's
    checkpoint of that epoch (`--to`) to each, and the three models' test loss and accuracy.
    Where stepwise's distance to PyTorch is that of PyTorch's two precisions to each other,
    their difference is rounding, amplified."""
    summary = json.load(open(args.summary))
    tensors, meta = checkpoint_state(args.start)
    train, norm = meta["spec"]["train"], meta["spec"]["data"]["normalization"]
    train_u8, train_y = read_split(args.data, "train")
    test_u8, test_y = read_split(args.data, "test")
    scaled, train_y, test_y = torch.from_numpy(train_u8).float() / 255.0, torch.from_numpy(train_y), torch.from_numpy(test_y)
    weights = [k for k, v in tensors.items() if k.endswith(".weight") and v.dim() > 1 and not k.startswith("optimizer.")]

    def distance(a, b):
        return statistics.median((a[k].double() - b[k].double()).norm().item() / b[k].double().norm().item()
                                 for k in weights)

    def run(dtype):
        net = Net(summary)
        opt = sgd(net, 0.0, train["momentum"], train["nesterov"], train["weight_decay"], train["decay_on"])
        load_train_state(net, opt, tensors, dtype)
        m = torch.tensor(norm["mean"], dtype=dtype).view(1, 3, 1, 1)
        s = torch.tensor(norm["std"], dtype=dtype).view(1, 3, 1, 1)
        states = {}
        [(_, batches)] = list(stream_epochs(args.batches, scaled))
        net.train()
        for step, (lr, idx, x) in enumerate(batches, 1):
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(net((x.to(dtype) - m) / s), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            states[step] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return states, evaluate(net, normalise(test_u8, norm["mean"], norm["std"]).to(dtype), test_y)

    (single, single_test), (double, double_test) = run(torch.float32), run(torch.float64)
    last = max(single)
    after, _ = checkpoint_state(args.to)
    ours = Net(summary)
    ours.load_state_dict({k: v for k, v in after.items() if not k.startswith("optimizer.")}, strict=True)
    print(json.dumps({
        "float32_to_float64": {str(s): distance(single[s], double[s]) for s in args.steps + [last] if s in single},
        "stepwise_to_float64": distance(after, double[last]), "stepwise_to_float32": distance(after, single[last]),
        "test": {"pytorch_float32": single_test, "pytorch_float64": double_test,
                 "stepwise": evaluate(ours, normalise(test_u8, norm["mean"], norm["std"]), test_y)}}, indent=2))


def cmd_step_check(args):
    """One training step of stepwise against PyTorch's from the same state on the same batch.
    `--before` and `--after` are consecutive checkpoints of a run whose every epoch is one
    step on the whole train split, un-augmented (train examples = batch size), so the batch
    is known without stepwise's shuffling: the loss is a mean and BatchNorm's statistics do
    not depend on the order. PyTorch loads `--before` (weights, running statistics,
    momentum buffers), takes the step with the run's recipe and `--after`'s learning rate,
    and every tensor of `--after` is compared: parameters and running statistics by their
    change, momentum buffers by their value, as ‖stepwise − PyTorch‖ over PyTorch's norm,
    over all tensors of a kind (at most `--rtol`) and per tensor (at most `--tensor-rtol`,
    over a thousandth of the kind's norm where the tensor's is smaller: the conv biases'
    gradients are zero in exact arithmetic, as BatchNorm follows every path, so their
    changes are rounding noise). The per-tensor bound is looser because a BatchNorm output
    within rounding of 0 may fall on either side of the ReLU in f32, which moves one
    channel's gradient by that element's share (seen: 0.8% of one channel's bias gradient,
    0.06% of its tensor's momentum). `--float64` takes PyTorch's step in float64, so that
    the errors are stepwise's own. Exit status 1 if an error exceeds its bound."""
    (before, meta_before), (after, meta_after) = checkpoint_state(args.before), checkpoint_state(args.after)
    spec, train = meta_before["spec"], meta_before["spec"]["train"]
    steps = meta_after["train_state"]["step"] - meta_before["train_state"]["step"]
    images, labels = read_split(args.data, "train")
    if steps != 1 or spec["data"]["augment"] or len(labels) != train["batch_size"]:
        sys.exit(f"step-check needs consecutive checkpoints one step apart of a run without augmentation "
                 f"whose batch is the whole train split: {steps} steps, augment {spec['data']['augment']}, "
                 f"{len(labels)} examples, batch {train['batch_size']}")
    norm = spec["data"]["normalization"]
    x, y = normalise(images, norm["mean"], norm["std"]), torch.from_numpy(labels)
    dtype = torch.float64 if args.float64 else torch.float32
    net = Net(json.load(open(args.summary)))
    lr = meta_after["train_state"]["lr"]
    opt = sgd(net, lr, train["momentum"], train["nesterov"], train["weight_decay"], train["decay_on"])
    momentum = load_train_state(net, opt, before, dtype)
    net.train()
    loss = F.cross_entropy(net(x.to(dtype)), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    ours = net.state_dict()
    pairs = {}
    for key, value in after.items():
        if key.startswith("optimizer.momentum."):
            kind, theirs, mine = "momentum", value, momentum[key[len("optimizer.momentum."):]]
        else:
            kind = "running_statistic" if "running_" in key else "parameter"
            theirs, mine = value.double() - before[key].double(), ours[key].double() - before[key].double()
        pairs.setdefault(kind, []).append((key, theirs.double(), mine.double()))
    results, agree = {}, True
    for kind, tensors in pairs.items():
        norm = math.sqrt(sum(mine.norm().item() ** 2 for _, _, mine in tensors))
        overall = math.sqrt(sum((theirs - mine).norm().item() ** 2 for _, theirs, mine in tensors)) / norm
        worst, worst_key = 0.0, None
        for key, theirs, mine in tensors:
            error = (theirs - mine).norm().item() / max(mine.norm().item(), 1e-3 * norm)
            if worst_key is None or error > worst:
                worst, worst_key = error, key
        agree &= overall <= args.rtol and worst <= args.tensor_rtol
        results[kind] = {"tensors": len(tensors), "error": overall, "worst_tensor": worst_key,
                         "worst_tensor_error": worst}
    print(json.dumps({"loss": loss.item(), "learning_rate": lr, "examples": len(y), "float64": args.float64,
                      "relative_errors": results, "rtol": args.rtol, "tensor_rtol": args.tensor_rtol,
                      "agree": agree}, indent=2))
    return 0 if agree else 1


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
    probed forward, the gradient at every block input of the loss whose per-example logit
    gradients have unit norm (`logit_gradient`), cos(F_i(h_i), ∂L/∂h_i) and
    ‖F_i(h_i)‖/‖base‖ per example (base: h_i, or the projection of a projection block, whose
    gradient is taken at its output); then, from the same forward, the network's own
    predictions and every block dropped in turn with the rest of the network run on its
    shortcut. Returns the per-example values and the drop sums so nothing is optimised away."""
    inputs, residuals, bases, outputs = probe(net, x)
    inputs.append(outputs[-1])
    logits = net.head(outputs[-1])
    grads = torch.autograd.grad(logits, inputs, grad_outputs=logit_gradient(logits, y, unit=True))
    cos, l2 = [], []
    with torch.no_grad():
        for i, (f, base) in enumerate(zip(residuals, bases)):
            g = grads[i + 1] if base is not inputs[i] else grads[i]
            cos.append(cosine(f, g))
            l2.append(f.flatten(1).norm(dim=1) / base.flatten(1).norm(dim=1))
        drops = [(logits.argmax(1) == y).sum(), F.cross_entropy(logits, y, reduction="sum")]
        blocks = flat_blocks(net)
        for i, base in enumerate(bases):
            out = run_from(net, blocks, i, base)
            drops += [(out.argmax(1) == y).sum(), F.cross_entropy(out, y, reduction="sum")]
    return cos, l2, drops


UNROLL_ALPHAS = [1.0, 0.5, 0.25, 0.1, 0.05]  # stepwise's AnalysisSpec defaults
UNROLL_STEPS = 20
FINITE_CHECK_EVERY = 5


def unroll_pass(net, x, y, margin=0.1):
    """stepwise's unrolling of one batch as `stepwise bench analyze --metrics unroll` times it
    (its defaults: 20 steps of each α in UNROLL_ALPHAS, the block's BatchNorm on running
    statistics): per α and state the head's logits and its unit gradient there (one backward
    pass; the loss's is that times ‖∂CE/∂z‖), F(h), cos(F, ∇), ‖F‖/‖h‖ and α·⟨F, ∇ℓ⟩,
    kept on the device and read back once per α, whether h is still finite read every 5
    steps; then on the host the head's statistics per state and the means per group of the
    margin before unrolling. Returns the means so nothing is optimised away."""
    last = flat_blocks(net)[-1][1]
    with torch.no_grad():
        h = net.stem(x)
        for pool, block in flat_blocks(net):
            h = block(F.avg_pool2d(h, 2) if pool else h)
        start = h
        groups = margin_groups(head_stats(net.head(start), y)["margin"].cpu(), margin)
    y_host, n, means = y.cpu(), len(y), []
    for alpha in UNROLL_ALPHAS:
        h, states = start, []
        for step in range(UNROLL_STEPS + 1):
            h_norm = norm(h)
            if step and step % FINITE_CHECK_EVERY == 0 and not torch.isfinite(h_norm).all():
                break
            hg = h.detach().requires_grad_(True)
            logits = net.head(hg)
            direction, = torch.autograd.grad(logits, hg, grad_outputs=logit_gradient(logits, y, unit=True))
            with torch.no_grad():
                # ∇ℓ_n = ‖∂CE_n/∂z_n‖·direction_n (the head in inference mode is linear in each
                # example's logit gradient), as stepwise takes it: one backward pass per state.
                gradient_norm = logit_gradient(logits.double(), y).norm(dim=1)
                f = last.residual(h)
                along, f_norm = dot(f, direction), norm(f)
                first_order = (alpha * along * gradient_norm if step < UNROLL_STEPS
                               else torch.zeros_like(h_norm))
                states.append(torch.cat([logits.double().flatten(), h_norm, along / (f_norm * norm(direction)),
                                         f_norm / h_norm, first_order]))
                h = h + alpha * f
        values = torch.stack(states).cpu()
        count = len(values)
        rest = values[:, -4 * n:].reshape(count, 4, n)
        kept = int(torch.isfinite(rest[:, 0]).all(1).cumprod(0).sum())  # up to the first overflow
        stats = head_stats(values[:, :-4 * n].reshape(count * n, -1), y_host.repeat(count))
        series = torch.stack([stats[k].view(count, n) for k in ("loss", "accuracy", "entropy")]
                             + [rest[:, 1], rest[:, 2], rest[:, 3]], 1)[:kept]
        for mask in groups.values():
            v = series[:, :, mask]
            finite = torch.isfinite(v)
            means.append(torch.where(finite, v, 0.0).sum(2) / finite.sum(2))
    return means


def print_pass(args, times):
    """The JSON line of an evaluation or analysis benchmark: the median of `times`."""
    times.sort()
    seconds = times[len(times) // 2]
    print(json.dumps({"seconds": seconds, "examples_per_second": args.examples / seconds,
                      "examples": args.examples, "batch": args.batch, "repeats": args.repeats,
                      "precision": args.precision, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


def cmd_bench_analysis(args):
    """Median time of the analysis of `--examples` random images through a fresh model in
    inference mode, as `stepwise bench analyze` measures it (uint8 images normalised batch by
    batch): `--metrics cosine,l2,drop` (its default) or `unroll`."""
    passes = {"cosine,l2,drop": analysis_pass, "unroll": unroll_pass}
    if args.metrics not in passes:
        sys.exit(f"--metrics: one of {', '.join(passes)}")
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
            passes[args.metrics](net, x, labels[b:b + args.batch].to(device))
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
    e, c = sub.add_parser("eval"), sub.add_parser("check")
    for a in [e, c]:
        a.add_argument("--summary", required=True)
        a.add_argument("--checkpoint", required=True)
        a.add_argument("--data", required=True)
        a.add_argument("--split", default="test", choices=["train", "test"])
    c.add_argument("--batch", type=int, default=250)
    c.add_argument("--steps", type=int, default=20)
    c.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1, 0.05])
    c.add_argument("--margin", type=float, default=0.1)
    c.add_argument("--unroll-bn", choices=["running", "batch"], default="running",
                   help="statistics of the unrolling's re-applied block")
    c.add_argument("--window", type=int, default=5)
    c.add_argument("--compare", help="stepwise's analysis.json of the same checkpoint and split")
    c.add_argument("--rtol", type=float, default=1e-3)
    c.add_argument("--atol", type=float, default=1e-4)
    fo = sub.add_parser("first-order")
    for flag in ["--summary", "--checkpoint", "--data"]:
        fo.add_argument(flag, required=True)
    fo.add_argument("--split", default="train", choices=["train", "test"])
    fo.add_argument("--examples", type=int, default=5000)
    fo.add_argument("--seed", type=int, default=0)
    fo.add_argument("--batch", type=int, default=500)
    fo.add_argument("--margin", type=float, default=0.1)
    fo.add_argument("--unroll-bn", choices=["running", "batch"], default="running")
    t = sub.add_parser("train")
    t.add_argument("--summary", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--lr-per-epoch", type=float, nargs="+",
                   help="the learning rate of each epoch (as many epochs as values)")
    t.add_argument("--from", dest="start", help="a stepwise checkpoint to start from")
    t.add_argument("--batches", help="stepwise's batch stream (`stepwise data batches`) to train on")
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--nesterov", action="store_true")
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--decay-on", default="weights", choices=["weights", "all"])
    t.add_argument("--no-augment", dest="augment", action="store_false")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save", help="write the trained state dict here (.safetensors, else torch.save)")
    sc = sub.add_parser("step-check")
    sc.add_argument("--summary", required=True)
    sc.add_argument("--before", required=True, help="a checkpoint")
    sc.add_argument("--after", required=True, help="the next checkpoint, one step later")
    sc.add_argument("--data", required=True)
    sc.add_argument("--rtol", type=float, default=1e-3, help="over all tensors of a kind")
    sc.add_argument("--tensor-rtol", type=float, default=1e-2, help="of each tensor")
    sc.add_argument("--float64", action="store_true", help="take PyTorch's step in float64")
    d = sub.add_parser("drift")
    d.add_argument("--summary", required=True)
    d.add_argument("--data", required=True)
    d.add_argument("--from", dest="start", required=True, help="stepwise's checkpoint before the epoch")
    d.add_argument("--to", required=True, help="stepwise's checkpoint after it")
    d.add_argument("--batches", required=True, help="the epoch's batches (`stepwise data batches --epochs E`)")
    d.add_argument("--steps", type=int, nargs="+", default=[1, 10, 20, 40])
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
        if name == "bench-analysis":
            a.add_argument("--metrics", default="cosine,l2,drop")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", torch.get_num_threads())))
    return {"eval": cmd_eval, "check": cmd_check, "first-order": cmd_first_order, "train": cmd_train, "step-check": cmd_step_check, "drift": cmd_drift,
            "bench": cmd_bench, "bench-analysis": cmd_bench_analysis, "bench-eval": cmd_bench_eval}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
