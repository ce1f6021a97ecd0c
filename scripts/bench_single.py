"""Single-run speed on the reference long run (METHOD.md section 4), side by side with a naive loop.

    python scripts/bench_single.py              # widths 100 and 20, float64 and float32 (~1 min)
    python scripts/bench_single.py --steps 7000 # shorter

The runner's figure is the whole job through runner.trainer.train_jobs (evaluation every 250 steps,
per-step losses to steps.csv, W&B off); the naive loop is nn.Sequential + torch.optim.SGD + autograd
on the same data and initial weights, timed over the same steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from runner.app import job_from_config
from runner.data import data_from_config
from runner.model import MLPStack, layer_sizes, to_module
from runner.schedule import class_weights
from runner.trainer import train_jobs

CONF = Path(__file__).resolve().parents[1] / "src" / "runner" / "conf"


def runner_run(width: int, dtype: str, steps: int, out: Path) -> tuple[float, float]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config", [f"model.width={width}", f"train.dtype={dtype}", f"train.steps={steps}", "experiment=p1_long", "wandb.mode=disabled"]
        )
    job = job_from_config(cfg, out / f"w{width}-{dtype}", None)
    t = time.perf_counter()
    (result,) = train_jobs([job], data_from_config(cfg), torch.device("cpu"), progress=False)
    return (time.perf_counter() - t) / steps * 1e6, result["final_train_acc"]


def naive_run(width: int, dtype: str, steps: int) -> float:
    """nn.Module + torch.optim + backward: DCE with the same schedule, weights and data."""
    dt = getattr(torch, dtype)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", [f"model.width={width}", "experiment=p1_long"])
    data = data_from_config(cfg).to("cpu", dt)
    stack = MLPStack.create(layer_sizes(2, width, 1, 3), "glorot_normal", [0], "relu", dt, "cpu")
    model = to_module(stack.run_weights(0), "relu")
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    gamma = class_weights(torch.arange(steps), 3, torch.tensor([70.0], dtype=dt), torch.tensor([5000.0], dtype=dt))[:, 0]
    x, y = data.train.x, data.train.y
    t = time.perf_counter()
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        nll = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
        loss = (gamma[step][y] * nll).mean()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t) / steps * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=70_000)
    p.add_argument("--naive-steps", type=int, default=5_000)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print(f"{'width':>5} {'dtype':>8} {'runner us/step':>15} {'naive us/step':>14} {'speed-up':>9} {'final train acc':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for width in (100, 20):
            for dtype in ("float64", "float32"):
                us, acc = runner_run(width, dtype, args.steps, Path(tmp))
                naive = naive_run(width, dtype, args.naive_steps)
                print(f"{width:>5} {dtype:>8} {us:>15.1f} {naive:>14.1f} {naive / us:>8.2f}x {acc:>16.4f}")


if __name__ == "__main__":
    main()
