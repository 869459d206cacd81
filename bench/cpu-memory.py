#!/usr/bin/env python3
"""Peak resident memory of stepwise's CPU training steps, analysis and evaluation passes against
its own estimate (resnet::memory, the host's): each command runs alone, its peak is the kernel's
ru_maxrss of that process. The estimates must lie above the peaks and not far
(crates/resnet/src/memory.rs holds them to these figures).

    python3 bench/cpu-memory.py target/release/stepwise [COMMAND …]

A command may start with NAME=VALUE words for its environment. Without commands, the set
behind bench/results/cpu-memory-*.txt (about 15 minutes on two cores)."""
import json
import os
import subprocess
import sys

STANDARD = [
    "bench train --arch resnet --depth 20 --batch 128 --steps 1 --warmup 1",
    "bench train --arch resnet --depth 20 --batch 512 --steps 1 --warmup 1",
    "bench train --arch resnet --depth 56 --batch 128 --steps 1 --warmup 1",
    "bench train --arch resnet --depth 56 --batch 512 --steps 1 --warmup 1",
    "bench train --arch resnet --depth 110 --batch 128 --steps 1 --warmup 1",
    "bench train --arch wide --batch 16 --steps 1 --warmup 1",
    "bench train --arch wide --batch 64 --steps 1 --warmup 1",
    "bench train --arch single --batch 64 --steps 1 --warmup 1",
    "bench train --arch avgpool --batch 32 --steps 1 --warmup 1",
    "bench analyze --arch resnet --depth 20 --examples 250 --batch 250 --repeats 1",
    "bench analyze --arch resnet --depth 20 --examples 1000 --batch 1000 --repeats 1",
    "bench analyze --arch resnet --depth 56 --examples 500 --batch 500 --repeats 1",
    "bench analyze --arch wide --examples 32 --batch 32 --repeats 1",
    "bench analyze --arch wide --examples 128 --batch 128 --repeats 1",
    "bench analyze --arch single --examples 100 --batch 100 --repeats 1",
    "bench eval --arch resnet --depth 20 --examples 1000 --batch 250 --repeats 1",
    "bench eval --arch resnet --depth 20 --examples 2000 --batch 1000 --repeats 1",
    "bench eval --arch resnet --depth 56 --examples 1000 --batch 1000 --repeats 1",
    "bench eval --arch wide --examples 256 --batch 256 --repeats 1",
    "bench eval --arch single --examples 256 --batch 256 --repeats 1",
    # bf16, and f32 with candle's own operations: the host's other footprints.
    "bench train --arch resnet --depth 20 --batch 128 --steps 1 --warmup 1 --dtype bf16",
    "bench train --arch resnet --depth 56 --batch 128 --steps 1 --warmup 1 --dtype bf16",
    "bench train --arch wide --batch 16 --steps 1 --warmup 1 --dtype bf16",
    "bench analyze --arch resnet --depth 20 --examples 250 --batch 250 --repeats 1 --dtype bf16",
    "bench analyze --arch resnet --depth 56 --examples 100 --batch 100 --repeats 1 --dtype bf16",
    "bench eval --arch resnet --depth 20 --examples 1000 --batch 1000 --repeats 1 --dtype bf16",
    "bench eval --arch resnet --depth 56 --examples 500 --batch 500 --repeats 1 --dtype bf16",
    "STEPWISE_REFERENCE_OPS=1 bench train --arch resnet --depth 20 --batch 128 --steps 1 --warmup 1",
    "STEPWISE_REFERENCE_OPS=1 bench train --arch resnet --depth 56 --batch 128 --steps 1 --warmup 1",
    "STEPWISE_REFERENCE_OPS=1 bench analyze --arch resnet --depth 20 --examples 250 --batch 250 --repeats 1",
    "STEPWISE_REFERENCE_OPS=1 bench analyze --arch resnet --depth 56 --examples 100 --batch 100 --repeats 1",
    "STEPWISE_REFERENCE_OPS=1 bench eval --arch resnet --depth 20 --examples 1000 --batch 1000 --repeats 1",
    "STEPWISE_REFERENCE_OPS=1 bench eval --arch resnet --depth 56 --examples 500 --batch 500 --repeats 1",
]

binary = sys.argv[1]
for line in sys.argv[2:] or STANDARD:
    words = line.split()
    # Leading NAME=VALUE words set the command's environment.
    env = dict(os.environ)
    while words and "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    p = subprocess.Popen([binary] + words + ["--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    estimate = json.loads(out).get("estimated_peak_mib") if status == 0 else f"failed ({status})"
    print(f"{line:70s} peak RSS {usage.ru_maxrss / 1024:6.0f} MiB, estimate {estimate} MiB",
          flush=True)
