"""Train a stack of runs that share data, architecture, loss and optimiser (M = 1 for a plain job).

The loop runs in chunks of up to CHUNK steps between host syncs. Per chunk: the class weights of
every step and run are computed at once; per step: forward, loss head, backward with fused update,
and the (static, dynamical) loss written into a device buffer. At the end of a chunk the buffer comes
to the host once: per-step losses are appended to steps.csv and a NaN or inf loss marks its run
diverged at that exact step. Evaluation rows are taken every `train.eval_every` steps and at the end.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from runner.checkpoint import Checkpointer
from runner.data import Data
from runner.losses import LossHead, stack_loss
from runner.model import MLPStack, augment, layer_sizes
from runner.optim import make_optimizer
from runner.plot import log_dynamics_figure
from runner.records import RunRecorder
from runner.schedule import class_weights
from runner.sharpness import SharpnessMonitor

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float64": torch.float64}  # train.dtype
CHUNK = 1000  # steps between host syncs
CHUNK_ELEMENTS = 1 << 22  # at most this many precomputed per-sample weights at a time


@dataclass
class Job:
    config: dict  # resolved
    job_dir: Path
    name: str
    group: str | None = None
    result: dict = field(default_factory=dict)
    figure: bool = False  # the dynamics figure into the W&B run (wandb.figure, resolved by app.job_from_config)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def schedule_tensors(jobs: list[Job], dtype, device):
    """Per-run amplitude, period, static-from step (static losses: A = 1, so Gamma = 1)."""
    A, T, static_from = [], [], []
    for j in jobs:
        loss = j.config["loss"]
        dynamic = loss["name"] not in ("ce", "mse")
        A.append(float(loss["A"]) if dynamic else 1.0)
        T.append(float(loss["T"]))
        static_from.append(math.inf if loss["static_from"] is None else float(loss["static_from"]))
    as_t = lambda v: torch.tensor(v, dtype=dtype, device=device)  # noqa: E731
    return as_t(A), as_t(T), as_t(static_from)


def gamma_for(steps: torch.Tensor, jobs: list[Job], classes: int, sched) -> torch.Tensor:
    """[K, M, C] class weights; each run may have its own shape, normalisation and phase."""
    A, T, static_from = sched
    loss0 = jobs[0].config["loss"]
    keys = {(j.config["loss"]["shape"], j.config["loss"]["normalize"], j.config["loss"]["phase"]) for j in jobs}
    if len(keys) == 1:
        return class_weights(
            steps, classes, A, T, shape=loss0["shape"], normalize=loss0["normalize"], phase=loss0["phase"], static_from=static_from
        )
    cols = []
    for m, j in enumerate(jobs):
        lc = j.config["loss"]
        sl = slice(m, m + 1)
        cols.append(
            class_weights(
                steps, classes, A[sl], T[sl], shape=lc["shape"], normalize=lc["normalize"], phase=lc["phase"], static_from=static_from[sl]
            )
        )
    return torch.cat(cols, 1)


class MinibatchSampler:
    """Per-run shuffled minibatches without replacement (each run its own generator and epoch order)."""

    def __init__(self, seeds: list[int], samples: int, batch: int, device):
        self.gens = [torch.Generator().manual_seed(int(s) + 7919) for s in seeds]
        self.samples, self.batch, self.device = samples, batch, device
        self.per_epoch = samples // batch  # the last partial batch is dropped: constant shapes
        self.perms: list[torch.Tensor] = [torch.empty(0, dtype=torch.long)] * len(seeds)
        self.pos = self.per_epoch

    def next(self) -> torch.Tensor:
        if self.pos == self.per_epoch:
            self.perms = [torch.randperm(self.samples, generator=g) for g in self.gens]
            self.pos = 0
        sl = slice(self.pos * self.batch, (self.pos + 1) * self.batch)
        self.pos += 1
        return torch.stack([p[sl] for p in self.perms]).to(self.device)  # [M, B]


def train_jobs(jobs: list[Job], data: Data, device: torch.device, progress: bool = True) -> list[dict]:
    """Train every job of a compatible group together; each job gets its own records and result."""
    cfg = jobs[0].config
    t_start = time.perf_counter()
    dtype = DTYPES[cfg["train"]["dtype"]]
    data = data.to(device, dtype)
    M, C = len(jobs), data.classes
    model = cfg["model"]
    # one size list per run: runs of different widths share a stack, zero-padded (model.py)
    sizes = [layer_sizes(data.features, int(j.config["model"]["width"]), int(model["depth"]), C) for j in jobs]
    stack = MLPStack.create(sizes, model["init"], [int(j.config["seed"]) for j in jobs], model["activation"], dtype, device)
    loss_name = stack_loss([j.config["loss"]["name"] for j in jobs])
    head = LossHead(loss_name, data.train.y, C, dtype)
    val_head = LossHead(loss_name, data.val.y, C, dtype)
    lr = torch.tensor([float(j.config["optim"]["lr"]) for j in jobs], dtype=dtype, device=device)
    opt = make_optimizer(cfg["optim"]["name"], stack.weights, lr, cfg["optim"])
    scale = lr if opt.folds_lr else torch.ones_like(lr)
    sched = schedule_tensors(jobs, dtype, device)
    ckpt = Checkpointer(jobs, int(cfg["train"].get("checkpoint_every") or 0))  # finds a checkpoint to resume from
    recorders = [RunRecorder(j.config, j.job_dir, j.name, j.group, resume=ckpt.recorder_state(m)) for m, j in enumerate(jobs)]

    xa_train, xa_val = augment(data.train.x), augment(data.val.x)
    batch = cfg["optim"].get("batch_size")
    sampler = None
    if batch is not None and int(batch) < data.train.x.shape[0]:
        sampler = MinibatchSampler([int(j.config["seed"]) for j in jobs], data.train.x.shape[0], int(batch), device)
        # loss_mix (once per chunk) divides by head.samples, which set_labels sets only per step: without
        # this the first chunk of a run (and of a resumed run) recorded its losses scaled by B / P.
        head.samples = int(batch)
    xa_flat = xa_train[0]  # [d + 1, P] for minibatch gathers
    sharp = SharpnessMonitor(jobs, stack, xa_train, data.train.y, C, opt)  # sharpness.every; measures nothing when 0
    if sharp.every:  # Lanczos' random start vectors and warm start are training state too: resume them exactly
        ckpt.add_generator("sharpness", sharp.lanczos.gen)
        ckpt.add_stacked("sharpness_ritz", sharp.lanczos, "ritz")

    total, every = int(cfg["train"]["steps"]), int(cfg["train"]["eval_every"])
    # The per-sample weights of a chunk are precomputed in slices of `per_slice` steps: a big stack
    # (thousands of runs on a GPU) keeps 1000-step chunks, hence one host sync per 1000 steps.
    per_slice = max(1, CHUNK_ELEMENTS // (M * C * data.train.x.shape[0]))
    losses = torch.zeros(CHUNK, M, 1, 2, dtype=dtype, device=device)
    alive = np.ones(M, dtype=bool)
    status, diverged_step = ["finished"] * M, [None] * M
    bar = _progress_bar(total, progress)

    def evaluate(t: int) -> None:
        g = gamma_for(torch.tensor([t], device=device), jobs, C, sched)[0]
        tr = head.evaluate(stack.forward(xa_train)[0], data.train.y, g)
        va = val_head.evaluate(stack.forward(xa_val)[0], data.val.y, g)
        host = {
            k: v.cpu().numpy() for k, v in {**{f"train/{k}": v for k, v in tr.items()}, **{f"val/{k}": v for k, v in va.items()}}.items()
        }
        gh = g.cpu().numpy()
        sh = sharp.measure(t, g, alive) if sharp.due(t) else {}  # at theta_t, with step t's Gamma
        for m in np.flatnonzero(alive):
            row = {"step": t}
            for key in ("train/loss", "train/dyn_loss", "train/acc", "val/loss", "val/dyn_loss", "val/acc"):
                row[key] = float(host[key][m])
            row.update({f"val/acc_class/{c}": float(host["val/acc_class"][m, c]) for c in range(C)})
            row.update({f"gamma/{c}": float(gh[m, c]) for c in range(C)})
            row.update({k: float(v[m]) for k, v in sh.items()})
            recorders[m].add_row(row)
        if bar is not None:
            bar.set_postfix(val_acc=f"{float(host['val/acc'][alive].mean()):.3f}", refresh=False)

    t = ckpt.restore(stack, opt, sampler, alive, status, diverged_step)  # 0 unless resumed
    if bar is not None and t:
        bar.update(t)
    while True:
        if t % every == 0 or t == total:
            evaluate(t)
        if t == total or not alive.any():
            break
        K = min(CHUNK, every - t % every, total - t, ckpt.steps_to_next(t))
        gamma = gamma_for(torch.arange(t, t + K, device=device), jobs, C, sched)
        mix = head.loss_mix(gamma)
        if sampler is None:
            for k in range(K):
                if k % per_slice == 0:
                    weights = head.output_weights(gamma[k : k + per_slice], scale)
                sharp.before_step(t + k, gamma[k], alive)  # lambda_max at theta_{t+k} on sharpness steps
                out, cache = stack.forward(xa_train)
                grad = head.step(out, weights[k % per_slice], mix[k], losses[k])
                stack.backward(cache, grad, opt.apply)
        else:
            for k in range(K):
                sharp.before_step(t + k, gamma[k], alive)
                idx = sampler.next()
                head.set_labels(data.train.y[idx], dtype)
                xb = xa_flat[:, idx].permute(1, 0, 2)  # [M, d + 1, B]
                out, cache = stack.forward(xb)
                grad = head.step(out, head.output_weights(gamma[k : k + 1], scale)[0], mix[k], losses[k])
                stack.backward(cache, grad, opt.apply)
        host = losses[:K, :, 0].cpu().numpy()  # [K, M, 2]: the one host sync of the chunk
        finite = np.isfinite(host).all(2)  # [K, M]
        first_bad = np.where(finite.all(0), K, finite.argmin(0))  # per run: its first non-finite step, or K
        for m in np.flatnonzero(alive):
            bad = int(first_bad[m])
            recorders[m].add_steps(t, host[: min(K, bad + 1), m])
            if bad < K:
                alive[m], status[m], diverged_step[m] = False, "diverged", t + bad
                log.warning("%s diverged at step %d (non-finite loss)", jobs[m].name, diverged_step[m])
                for w in stack.weights:  # masked out: zeros stay finite and leave the other runs alone
                    w[m].zero_()
        sharp.add_rows(t, host, recorders)  # the chunk's sharpness rows, with their steps' losses
        t += K
        ckpt.after_chunk(t, total, jobs, stack, opt, sampler, alive, status, diverged_step, recorders)
        if bar is not None:
            bar.update(K)
    if bar is not None:
        bar.close()

    runtime = time.perf_counter() - t_start
    results = []
    for m, (job, rec) in enumerate(zip(jobs, recorders)):
        last = rec.last_row  # the recorder streams history to disk and keeps only the summary
        result = {
            "status": status[m],
            "steps": total if status[m] == "finished" else diverged_step[m],
            "diverged_step": diverged_step[m],
            "final_val_acc": last.get("val/acc"),
            "best_val_acc": rec.best_val_acc,
            "final_train_acc": last.get("train/acc"),
            "final_train_loss": last.get("train/loss"),
            "final_val_loss": last.get("val/loss"),
            "runtime_s": runtime,
            "device": str(device),
            "group_size": M,
            "name": job.name,
            "config": job.config,
        }
        result.update(sharp.summary(m, rec))  # final and max lambda_max, fraction above the threshold
        if job.figure:
            log_dynamics_figure(rec)  # the dynamics figure to W&B (only when W&B is on; never fails the run)
        rec.finish(result, stack.run_weights(m) if status[m] == "finished" else None)
        results.append(result)
    ckpt.finish()  # after every result.json: a checkpoint is only needed while a run is unfinished
    return results


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", dynamic_ncols=True, leave=False, mininterval=0.5)
