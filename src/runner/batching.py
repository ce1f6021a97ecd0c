"""Which jobs of a sweep can train as one stacked model, and how many fit at once.

Jobs share a stack when everything but the per-run quantities is equal: per-run are the seed, the
learning rate, the schedule (A, T, shape, normalisation, phase, static_from), W&B settings, a static
loss next to its dynamical twin (ce with dce, mse with dmse1) and, for activations with act(0) = 0,
widths within a factor of two (narrower runs are zero-padded exactly, see model.py).
"""

from __future__ import annotations

import json
import math
import os

import torch

from runner.model import padding_is_exact

PER_RUN = {
    "seed",
    "wandb",
    "resume",
    "optim.lr",
    "loss.A",
    "loss.T",
    "loss.shape",
    "loss.normalize",
    "loss.phase",
    "loss.static_from",
    "train.progress",
    "train.threads",
}


def group_key(config: dict) -> str:
    """Jobs with equal keys train together."""
    shared = json.loads(json.dumps(config))
    for dotted in PER_RUN:
        *parents, last = dotted.split(".")
        node = shared
        for p in parents:
            node = node.get(p, {})
        node.pop(last, None)
    shared["loss"]["name"] = {"ce": "dce", "mse": "dmse1"}.get(shared["loss"]["name"], shared["loss"]["name"])  # losses.stack_loss
    if padding_is_exact(shared["model"]["activation"]):
        # Widths within a factor of two share a stack (padded to the widest): fewer, fuller stacks,
        # at most 2x the arithmetic of the narrowest run. Farther apart, padding costs more than it saves.
        shared["model"]["width"] = math.ceil(math.log2(shared["model"]["width"]))
    return json.dumps(shared, sort_keys=True)


def group_jobs(configs: list[dict]) -> list[list[int]]:
    """Indices of the jobs of each group, in sweep order; groups in order of their first job."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(group_key(c), []).append(i)
    return list(groups.values())


def bytes_per_run(config: dict, samples: int, features: int, classes: int) -> int:
    """A generous estimate of one run's memory in a stack: activations, gradients, optimiser state."""
    width, depth = int(config["model"]["width"]), int(config["model"]["depth"])
    item = 8 if config["train"]["dtype"] == "float64" else 4
    params = (features + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * classes
    activations = samples * (features + 1 + depth * (width + 1) + 4 * classes)
    return item * (4 * params + 3 * activations + 1000 * samples)  # + a chunk of per-step weights


SYSFS_CACHE = "/sys/devices/system/cpu/cpu0/cache"
DEFAULT_CACHE = 32 << 20


def cache_bytes(base: str = SYSFS_CACHE) -> int:
    """This CPU's largest cache (one instance: the last level), from sysfs index*/size files such as
    "32768K"; DEFAULT_CACHE where none can be read."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    sizes = []
    try:
        entries = [e for e in os.listdir(base) if e.startswith("index")]  # not the uevent file beside them
    except OSError:
        return DEFAULT_CACHE
    for entry in entries:
        try:
            with open(os.path.join(base, entry, "size")) as f:
                text = f.read().strip()
            sizes.append(int(text[:-1]) * units[text[-1]] if text[-1:] in units else int(text))
        except (OSError, ValueError):
            continue  # unreadable or empty: skip this level
    return max(sizes) if sizes else DEFAULT_CACHE


def cpu_stack_runs(config: dict, samples: int) -> int:
    """On a CPU, stacks whose hidden activations [M, width + 1, P] outgrow the cache get slower per run:
    per run-step, float64, P = 300 on this machine (32 MiB L3, scripts/bench_batched.py --stack-sizes):
    width 100: M = 12, 24: 38-39 us; M = 48, 72: 59-60 us; width 256: M = 8: 85 us; M = 24, 48: 142-206 us.
    So one activation buffer is kept under a fifth of the cache (the step touches ~3 such buffers)."""
    item = 8 if config["train"]["dtype"] == "float64" else 4
    per_run = item * (int(config["model"]["width"]) + 1) * samples
    return max(1, cache_bytes() // 5 // per_run)


def max_runs(config: dict, samples: int, features: int, classes: int, device: torch.device, limit: int | None) -> int:
    """Largest stack that fits in a quarter of the device's free memory (on a CPU: also in its cache),
    and under `limit`."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    fit = max(1, free // 4 // bytes_per_run(config, samples, features, classes))
    if device.type == "cpu":
        fit = min(fit, cpu_stack_runs(config, samples))
    return int(min(fit, limit)) if limit else int(fit)


def split(indices: list[int], size: int) -> list[list[int]]:
    """Consecutive parts of at most `size`, as equal as possible (72 by 27 -> 24, 24, 24, not 27, 27, 18)."""
    parts = -(-len(indices) // max(1, size))
    base, extra = divmod(len(indices), max(1, parts))
    out, start = [], 0
    for p in range(parts):
        n = base + (p < extra)
        out.append(indices[start : start + n])
        start += n
    return out
