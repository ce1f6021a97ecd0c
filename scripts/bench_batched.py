"""The batched launcher against the basic one, measured side by side on the same sweep.

    python scripts/bench_batched.py                 # 72 jobs x 2 000 steps, twice (~1.5 min on 2 cores)
    python scripts/bench_batched.py --seeds 2       # a quicker look
    python scripts/bench_batched.py --stack-sizes   # the bare training step against the stack size M
    python scripts/bench_batched.py --seeds 342 --basic-seeds 8 --repeats 1   # on a GPU: 4 104 jobs

Workload (issue 5): the reference spiral (300 points, 3 classes), widths {8, 32, 100}, DCE with two
(A, T) = (10, 500) and (70, 500), lrs {0.5, 1.0}, 6 seeds: 3 x 2 x 2 x 6 = 72 jobs (64 is not a
multiple of the 3 widths), 2 000 full-batch steps each, float64, W&B off. Both launchers run the
real CLI in a subprocess, so the basic launcher's figure includes its per-job Hydra overhead, as a
user would see it; the training alone (each run's train_jobs time from result.json, a stack's time
counted once) is printed as well, since start-up and Hydra's per-job work are the same for both.
Also: one job alone through each launcher, the same sweep at one step per job (the batched launcher's
per-job work: composition, folders, files), the matmul peak of the device (CUDA when present:
train.device=auto puts both launchers there), and the bounds these put on the ratio. With
--basic-seeds the basic launcher runs only that many seeds of the sweep (a 4 096-job basic sweep would
take hours) and its figures are scaled to the full sweep per job; the output says so.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

WIDTHS = (8, 32, 100)


def cli(args: list[str], sweep_dir: str) -> float:
    env = {**os.environ, "RUNNER_NO_PROGRESS": "1", "WANDB_MODE": "disabled"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runner", *args, f"hydra.sweep.dir={sweep_dir}"], check=True, env=env, capture_output=True)
    return time.perf_counter() - t


def matmul_peak(dtype=torch.float64) -> float:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n = 4096 if device == "cuda" else 1024
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    return 10 * 2 * n**3 / (time.perf_counter() - t)


def flops_per_run_step(width: int, points: int = 300, features: int = 2, classes: int = 3) -> float:
    """Forward products, the weight gradients and the backpropagated delta: ~3 forwards."""
    forward = 2 * points * ((features + 1) * width + (width + 1) * classes)
    return 3 * forward - 2 * points * (features + 1) * width  # no delta below the first layer


def training_seconds(sweep_dir: str) -> float:
    """Sum of the training time of a sweep's jobs; a stack's runs share one runtime_s, counted once."""
    total = 0.0
    for path in glob.glob(f"{sweep_dir}/*/result.json"):
        with open(path) as f:
            result = json.load(f)
        total += result["runtime_s"] / result["group_size"]
    return total


def stack_sizes(dtype=torch.float64, steps: int = 200) -> None:
    """The bare step (forward, loss head, backward, GD update) per run against M: where stacks stop paying."""
    from runner.losses import LossHead
    from runner.model import MLPStack, augment, layer_sizes
    from runner.optim import make_optimizer

    points, classes = 300, 3
    x, y = torch.randn(points, 2, dtype=dtype), torch.randint(0, classes, (points,))
    for width, sizes in ((8, (1, 24, 72, 200)), (32, (1, 24, 72)), (100, (1, 12, 24, 48, 72)), (256, (1, 4, 8, 24, 48))):
        for M in sizes:
            stack = MLPStack.create(layer_sizes(2, width, 1, classes), "glorot_normal", list(range(M)), "relu", dtype, "cpu")
            head = LossHead("dce", y, classes, dtype)
            lr = torch.full((M,), 0.5, dtype=dtype)
            opt = make_optimizer("gd", stack.weights, lr, {"momentum": 0.0})
            gamma = torch.ones(1, M, classes, dtype=dtype)
            weights, mix, losses = head.output_weights(gamma, lr)[0], head.loss_mix(gamma)[0], torch.zeros(M, 1, 2, dtype=dtype)
            xa = augment(x)
            for k in range(steps + 20):
                if k == 20:
                    t = time.perf_counter()
                out, cache = stack.forward(xa)
                stack.backward(cache, head.step(out, weights, mix, losses), opt.apply)
            per = (time.perf_counter() - t) / steps / M * 1e6
            mb = M * (width + 1) * points * dtype.itemsize / 2**20
            print(f"width {width:4d}  M {M:4d}: {per:7.1f} us per run-step  (one activation buffer {mb:5.1f} MiB)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--stack-sizes", action="store_true", help="only the bare step against the stack size")
    p.add_argument("--basic-seeds", type=int, default=None, help="run the basic launcher on this many seeds only, scaled per job")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best of each is printed (a shared machine is noisy)")
    a = p.parse_args()
    if a.stack_sizes:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float64, P = 300, one ReLU layer")
        stack_sizes()
        return

    def sweep_args(seeds: int) -> list[str]:
        return ["-m", "loss=dce", "loss.A=10,70", "loss.T=500", "optim.lr=0.5,1.0", f"model.width={','.join(map(str, WIDTHS))}",
                f"seed=range({seeds})", f"train.steps={a.steps}"]  # fmt: skip

    sweep = sweep_args(a.seeds)
    basic_seeds = min(a.basic_seeds or a.seeds, a.seeds)
    basic_scale = a.seeds / basic_seeds  # per-job scaling when the basic launcher runs a sample
    jobs = 2 * 2 * len(WIDTHS) * a.seeds
    run_steps = jobs * a.steps
    one = ["-m", "loss=dce", "model.width=100", f"train.steps={a.steps * 5}"]
    one_step = [*[x for x in sweep if not x.startswith("train.steps=")], "train.steps=1", "hydra/launcher=batched"]
    runs: dict[str, list[tuple[float, float]]] = {"batched": [], "basic": [], "one_batched": [], "one_basic": [], "one_step": []}
    for r in range(a.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            for name, args in (("batched", [*sweep, "hydra/launcher=batched"]), ("basic", sweep_args(basic_seeds)),
                               ("one_batched", [*one, "hydra/launcher=batched"]), ("one_basic", one),
                               ("one_step", one_step)):  # fmt: skip
                wall = cli(args, f"{tmp}/{name}")
                runs[name].append((wall, training_seconds(f"{tmp}/{name}")))
                print(f"repeat {r + 1}: {name:12s} {wall:6.1f} s wall, {runs[name][-1][1]:6.1f} s training", file=sys.stderr)
    (batched, train_batched), (basic, train_basic) = min(runs["batched"]), min(runs["basic"])
    one_batched, one_basic = min(runs["one_batched"])[0], min(runs["one_basic"])[0]
    startup = one_basic - min(runs["one_basic"])[1]  # the one-job command less its training
    basic = startup + (basic - startup) * basic_scale  # start-up once, the per-job part scaled
    train_basic *= basic_scale
    flops = sum(flops_per_run_step(w) for w in WIDTHS) / len(WIDTHS) * run_steps
    peak = matmul_peak()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; {jobs} jobs x {a.steps} steps; best of {a.repeats}")
    if basic_scale != 1:
        print(f"basic launcher: {basic_seeds} of {a.seeds} seeds run; all but its {startup:.1f} s start-up scaled by {basic_scale:.2f}")
    print(f"basic launcher   {basic:8.1f} s   {basic / run_steps * 1e6:8.1f} us per run-step")
    print(f"batched launcher {batched:8.1f} s   {batched / run_steps * 1e6:8.1f} us per run-step")
    print(f"speed-up         {basic / batched:8.1f}x")
    print(
        f"training alone:  basic {train_basic:.1f} s, batched {train_batched:.1f} s: {train_basic / train_batched:.1f}x "
        f"({train_batched / run_steps * 1e6:.1f} us per run-step batched)"
    )
    rate = flops / batched
    print(f"batched: {rate / 1e9:.2f} GFLOP/s = {rate / peak:.2%} of this device's float64 matmul peak ({peak / 1e9:.1f} GFLOP/s)")
    print(f"one job ({a.steps * 5} steps, width 100, whole CLI): basic {one_basic:.1f} s, batched {one_batched:.1f} s")
    # What bounds the ratio, from the figures above: whatever the training costs, the batched command
    # pays the start-up and its per-job work (composition, folders, files: the one-step sweep).
    one_step = min(runs["one_step"])[0]
    per_job = (one_step - startup) / jobs
    print(f"per-job work of the batched launcher: {per_job * 1e3:.1f} ms a job ({jobs} one-step jobs in {one_step:.1f} s, "
          f"start-up {startup:.1f} s)")  # fmt: skip
    print(
        f"bounds: with no training at all the batched command takes {one_step:.1f} s, so at most {basic / one_step:.1f}x; "
        f"the sweep's arithmetic alone at the matmul peak is {flops / peak:.2f} s (training at most {train_basic / (flops / peak):.0f}x)"
    )


if __name__ == "__main__":
    main()
