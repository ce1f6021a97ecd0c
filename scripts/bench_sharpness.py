"""What sharpness measurement costs: a run's time with sharpness.every=K over the same run without.

    .venv/bin/python scripts/bench_sharpness.py                # the reference problem, every=25
    .venv/bin/python scripts/bench_sharpness.py --every 10 --repeats 5 loss=ce

The reference problem (METHOD.md section 4): spiral, width 100, 3 classes, full-batch GD at lr 1 in
float64, 10 000 steps of DCE A=70 T=5000. Both variants run side by side in this one process,
alternating, and the fastest of each is compared (the minimum is the least disturbed by other load
on the machine). Extra arguments are Hydra overrides applied to both. Expect a ratio under 1.5.
Wall-clock and CPU time (of this process) are both reported: with one thread, CPU time is the
steadier of the two on a machine that other work shares.
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
from runner.trainer import train_jobs

CONF = Path(__file__).resolve().parents[1] / "src" / "runner" / "conf"
REFERENCE = ["loss=dce", "loss.A=70", "loss.T=5000", "train.steps=10000", "model.width=100", "optim.lr=1.0", "train.dtype=float64"]
QUIET = ["wandb.mode=disabled", "train.progress=false"]


def timed_run(overrides: list[str], job_dir: Path) -> tuple[float, float, dict]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    job = job_from_config(cfg, job_dir, None)
    data = data_from_config(cfg)
    tic, cpu = time.perf_counter(), time.process_time()
    (result,) = train_jobs([job], data, torch.device("cpu"), progress=False)
    return time.perf_counter() - tic, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=25, help="sharpness.every of the measured variant")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant (the fastest counts)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default); 1 is steadiest on 2 cores")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both variants")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = REFERENCE + QUIET + list(args.overrides)
    variants = {"off": base + ["sharpness.every=0"], "on": base + [f"sharpness.every={args.every}"]}
    wall: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    last: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        timed_run(variants["off"], Path(tmp) / "warmup")  # first-call costs (allocator, MKL) out of the way
        for r in range(args.repeats):
            for name, overrides in variants.items():
                w, c, last[name] = timed_run(overrides, Path(tmp) / f"{name}{r}")
                wall[name].append(w)
                cpu[name].append(c)
    steps, n = last["on"]["steps"], last["on"]["sharpness_measurements"]
    print(f"problem: {' '.join(REFERENCE + list(args.overrides))}; torch threads {torch.get_num_threads()}")
    for label, t in (("wall", wall), ("cpu", cpu)):
        off, on = min(t["off"]), min(t["on"])
        print(f"{label:4s}: without {off:.3f} s ({off / steps * 1e6:.0f} us/step), sharpness.every={args.every} {on:.3f} s "
              f"({(on - off) / max(n, 1) * 1e3:.2f} ms per measurement, {n} measurements); ratio {on / off:.3f}")  # fmt: skip
    r = last["on"]
    print(f"lambda_max final {r['final_lambda_max']:.4g}, max {r['max_lambda_max']:.4g}; above 2/lr: {r['frac_above_threshold']:.1%}")
    print(f"ratio: {min(cpu['on']) / min(cpu['off']):.3f} (cpu), {min(wall['on']) / min(wall['off']):.3f} (wall)")


if __name__ == "__main__":
    main()
