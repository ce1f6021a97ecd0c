"""The paper-scale width sweep through the batched launcher: 7 widths x 5 losses x 20 seeds = 700 runs.

    python scripts/bench_headline.py                    # 70 000 full-batch steps per run (~18 min, 2 cores)
    python scripts/bench_headline.py --steps 2000 6000  # two short sweeps: fixed cost + cost per step

Prints the wall time of the whole CLI command (start-up, composition, training, files), and for two
or more step counts the fit wall = fixed + per_step * steps with its extrapolation to 70 000 steps.
Settings: spiral, widths 2..128, losses ce mse dce dmse1 dmse2 (A = 70, T = 5000), GD lr 0.3 (the MSE
family diverges at lr 1), float64, eval every 1000 steps, per-step losses recorded, W&B off.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

SWEEP = [
    "-m",
    "hydra/launcher=batched",
    "loss=ce,mse,dce,dmse1,dmse2",
    "model.width=2,4,8,16,32,64,128",
    "seed=range(20)",
    "optim.lr=0.3",
    "train.eval_every=1000",
]
RUNS = 7 * 5 * 20


def sweep(steps: int, out: str) -> float:
    env = {**os.environ, "RUNNER_NO_PROGRESS": "1", "WANDB_MODE": "disabled"}
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "runner", *SWEEP, f"train.steps={steps}", f"hydra.sweep.dir={out}"], check=True, env=env, capture_output=True
    )
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=[70_000])
    a = p.parse_args()
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        for steps in a.steps:
            wall = sweep(steps, f"{tmp}/s{steps}")
            walls.append(wall)
            print(
                f"{RUNS} runs x {steps} steps: {wall:.1f} s wall ({wall / 60:.1f} min), {wall / (RUNS * steps) * 1e6:.1f} us per run-step"
            )
    if len(walls) >= 2:
        s0, s1, w0, w1 = a.steps[0], a.steps[-1], walls[0], walls[-1]
        per_step = (w1 - w0) / (s1 - s0)
        fixed = w0 - per_step * s0
        print(f"fit: {fixed:.1f} s fixed + {per_step * 1e3:.2f} ms per step ({per_step / RUNS * 1e6:.1f} us per run-step)")
        print(f"extrapolated to 70 000 steps: {(fixed + per_step * 70_000) / 60:.1f} min")


if __name__ == "__main__":
    main()
