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


def max_runs(config: dict, samples: int, features: int, classes: int, device: torch.device, limit: int | None) -> int:
    """Largest stack that fits in a quarter of the device's free memory (and under `limit`)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    fit = max(1, free // 4 // bytes_per_run(config, samples, features, classes))
    return int(min(fit, limit)) if limit else int(fit)


def split(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]
