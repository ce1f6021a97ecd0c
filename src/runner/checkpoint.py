"""Checkpoints: the full training state of every run of a stack, so a killed run resumes exactly.

With train.checkpoint_every=K > 0 each job directory gets checkpoint.pt every K steps (atomically, see
files.py), taken at a chunk boundary after the chunk's losses are on disk and before the evaluation
of that step. It holds what the next step depends on, for this run only:
  step (which is also the schedule position: Gamma(t) is a function of t), the weights, the optimiser
  state (momentum / Adam moments and step count), the minibatch sampler (its generator state, the
  current epoch order and position), the run's status (a diverged run stays masked), and the
  recorder's state: bytes of history.csv and steps.csv to keep, the running summary, the W&B run id.
Running the same command again finds it and continues from that step; steps.csv and history.csv are
cut back to the checkpointed length, so the final files equal those of an uninterrupted run (same
machine, same torch and thread count: float64 on CPU is then bit-for-bit reproducible).

The checkpoint is deleted once result.json is written: result.json and weights.pt are the record,
and a finished job is skipped by runner.resume anyway. A checkpoint from a different config (other
than the keys in IGNORED) or from a stack whose runs stopped at different steps is not used: the
job trains from scratch, with a warning.

SIGTERM and SIGUSR2 (SLURM sends one before the time limit, `--signal=USR2@120`) set a flag; at the
next chunk boundary the runner saves a checkpoint and stops with exit status 128 + signal. A Python
handler that was installed before ours (submitit's, which requeues the job) is called after the
checkpoint is saved.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import torch

from runner.files import atomic_write

log = logging.getLogger(__name__)

NAME = "checkpoint.pt"
FORMAT = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
# Keys that do not change what is computed: a rerun that differs only here still resumes.
IGNORED = ("wandb", "resume", "train.progress", "train.threads", "train.checkpoint_every")


class Preempted(BaseException):
    """The process was asked to stop (SIGTERM/SIGUSR2) and a checkpoint was saved.

    A BaseException, like KeyboardInterrupt: Hydra's job runner must not record it as one failed job
    and go on with the next job of a basic-launcher sweep; the whole process is being stopped.
    """

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step} after saving a checkpoint; rerun to resume")
        self.exit_code = 128 + signum


def fingerprint(config: dict) -> str:
    config = json.loads(json.dumps(config, default=str))
    for dotted in IGNORED:
        *parents, last = dotted.split(".")
        node = config
        for p in parents:
            node = node.get(p, {})
        node.pop(last, None)
    return json.dumps(config, sort_keys=True)


def _sizes(stack, m: int) -> list[int]:
    """Run m's own layer sizes; runs of different widths share a stack zero-padded (model.py)."""
    sizes = getattr(stack, "run_sizes", None)
    return sizes[m] if sizes else [stack.weights[0].shape[2] - 1] + [w.shape[1] for w in stack.weights]


def _unpad(t: torch.Tensor, sizes: list[int], layer: int) -> torch.Tensor:
    """[out_pad, in_pad + 1] -> the run's own [out, in + 1] (the bias column is always last)."""
    rows, cols = sizes[layer + 1], sizes[layer]
    return torch.cat([t[:rows, :cols], t[:rows, -1:]], 1).detach().cpu().clone()


def _pad_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    dst.zero_()
    rows, cols = src.shape[0], src.shape[1] - 1
    dst[:rows, :cols] = src[:, :-1]
    dst[:rows, -1] = src[:, -1]


def _is_layers(value, stack) -> bool:
    return (
        isinstance(value, list)
        and len(value) == len(stack.weights)
        and all(isinstance(v, torch.Tensor) and v.shape == w.shape for v, w in zip(value, stack.weights))
    )


def _run_part(value, m: int, stack):
    """Run m's part of a stacked state: per-layer [M, out, in + 1] lists unpadded, other tensors sliced."""
    if _is_layers(value, stack):
        sizes = _sizes(stack, m)
        return {"layers": [_unpad(v[m], sizes, layer) for layer, v in enumerate(value)]}
    if isinstance(value, torch.Tensor):
        return value[m].detach().cpu().clone()
    return value  # None, or a scalar shared by the stack (Adam's step count)


def _stacked(parts: list, stack):
    """Inverse of _run_part over the runs, into this stack's (possibly differently padded) layout."""
    first = parts[0]
    if isinstance(first, dict) and "layers" in first:
        out = [torch.zeros_like(w) for w in stack.weights]
        for m, part in enumerate(parts):
            for layer, src in enumerate(part["layers"]):
                _pad_into(out[layer][m], src.to(device=out[layer].device, dtype=out[layer].dtype))
        return out
    if isinstance(first, torch.Tensor):
        return torch.stack(parts).to(stack.weights[0].device)
    return first


def _files_cover(job_dir: Path, rec: dict) -> bool:
    def size(name: str) -> int:
        path = job_dir / name
        return path.stat().st_size if path.exists() else -1

    return size("history.csv") >= rec["history_bytes"] and (rec["steps_rows"] == 0 or size("steps.csv") >= rec["steps_bytes"])


class Checkpointer:
    """Saves and restores the per-run training state of a stack; a no-op when checkpoint_every = 0."""

    def __init__(self, jobs: list, every: int):
        self.paths = [Path(j.job_dir) / NAME for j in jobs]
        self.every = int(every or 0)
        self.states = self._load(jobs) if self.every > 0 else None
        self.generators: dict[str, torch.Generator] = {}  # stack-level RNGs besides the sampler's
        self.stacked: dict[str, tuple[object, str]] = {}  # other [M, ...] tensors the next step depends on
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        if self.every > 0 and threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._on_signal)

    # --- loading -----------------------------------------------------------------------------------
    def _load(self, jobs: list) -> list[dict] | None:
        if not any(p.exists() for p in self.paths):
            return None
        try:
            states = [torch.load(p, weights_only=True) for p in self.paths]
        except (OSError, RuntimeError, EOFError, ValueError) as e:  # one missing or unreadable: start over
            log.warning("checkpoint not usable (%s): training from step 0", e)
            return None
        why = None
        if any(s.get("format") != FORMAT for s in states):
            why = "written by another format version"
        elif any(s["config"] != fingerprint(j.config) for s, j in zip(states, jobs)):
            why = "its config differs from this job's"
        elif len({s["step"] for s in states}) != 1:
            why = "the runs of this stack stopped at different steps"
        elif not all(_files_cover(p.parent, s["recorder"]) for p, s in zip(self.paths, states)):
            why = "history.csv or steps.csv is shorter than the checkpoint says"
        if why:
            log.warning("checkpoint in %s not used (%s): training from step 0", self.paths[0].parent, why)
            return None
        log.info("resuming %d run(s) from step %d (%s)", len(states), states[0]["step"], self.paths[0])
        return states

    def add_generator(self, name: str, gen: torch.Generator) -> None:
        """A generator the training draws from (e.g. the sharpness Lanczos start vectors): saved and restored."""
        self.generators[name] = gen

    def add_stacked(self, name: str, obj: object, attr: str) -> None:
        """obj.attr, a [M, ...] tensor or None (e.g. Lanczos warm-start vectors): each run saves its slice."""
        self.stacked[name] = (obj, attr)

    def recorder_state(self, m: int) -> dict | None:
        return None if self.states is None else self.states[m]["recorder"]

    def restore(self, stack, opt, sampler, alive, status: list, diverged_step: list) -> int:
        """Put the checkpointed state into freshly built objects; returns the step to continue from."""
        if self.states is None:
            return 0
        device = stack.weights[0].device
        for w, saved in zip(stack.weights, _stacked([s["weights"] for s in self.states], stack)):
            w.copy_(saved)
        opt.load_state({k: _stacked([s["optim"][k] for s in self.states], stack) for k in self.states[0]["optim"]})
        if sampler is not None:
            for g, s in zip(sampler.gens, self.states):
                g.set_state(s["sampler"]["generator"])
            sampler.perms = [s["sampler"]["perm"] for s in self.states]
            sampler.pos = self.states[0]["sampler"]["pos"]
        for m, s in enumerate(self.states):
            alive[m], status[m], diverged_step[m] = s["alive"], s["status"], s["diverged_step"]
        for name, gen in self.generators.items():
            if name in self.states[0].get("generators", {}):
                gen.set_state(self.states[0]["generators"][name])
        layout = [tuple(w.shape) for w in stack.weights]
        for name, (obj, attr) in self.stacked.items():  # tied to the padded layout: only restored when it matches
            parts = [s.get("stacked", {}).get(name) for s in self.states]
            same = all(s.get("layout") == layout for s in self.states)
            setattr(obj, attr, torch.stack(parts).to(device) if same and all(p is not None for p in parts) else None)
        step = int(self.states[0]["step"])
        self.states = None  # the tensors are in the stack now; keep no second copy
        return step

    # --- saving ------------------------------------------------------------------------------------
    def steps_to_next(self, t: int) -> int:
        """Chunk limit: chunks end at checkpoint steps, the only points where the host has all state."""
        return self.every - t % self.every if self.every > 0 else 1 << 62

    def after_chunk(self, t: int, total: int, jobs, stack, opt, sampler, alive, status, diverged_step, recorders) -> None:
        """Called at every chunk boundary (t = steps done): save when due, stop when a signal asked."""
        if self.every <= 0 or t >= total:
            return
        if t % self.every == 0 or self.signum is not None:
            self.save(t, jobs, stack, opt, sampler, alive, status, diverged_step, recorders)
        if self.signum is not None:
            self._stop(t)

    def save(self, t: int, jobs, stack, opt, sampler, alive, status, diverged_step, recorders) -> None:
        opt_state = opt.state()
        for m, (job, path, rec) in enumerate(zip(jobs, self.paths, recorders)):
            state = {
                "format": FORMAT,
                "config": fingerprint(job.config),
                "step": t,
                "weights": _run_part(stack.weights, m, stack),  # unpadded: a resumed stack may pad differently
                "optim": {k: _run_part(v, m, stack) for k, v in opt_state.items()},
                "layout": [tuple(w.shape) for w in stack.weights],
                "sampler": None
                if sampler is None
                else {"generator": sampler.gens[m].get_state(), "perm": sampler.perms[m].clone(), "pos": sampler.pos},
                "generators": {name: g.get_state() for name, g in self.generators.items()},
                "stacked": {name: _run_part(getattr(obj, attr), m, stack) for name, (obj, attr) in self.stacked.items()},
                "alive": bool(alive[m]),
                "status": status[m],
                "diverged_step": diverged_step[m],
                "recorder": rec.state(),  # flushes history.csv first: the byte counts match the files
            }
            atomic_write(path, lambda p, s=state: torch.save(s, p))

    def finish(self) -> None:
        """After result.json is written: drop the checkpoints and give the signals back."""
        for p in self.paths:
            p.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    # --- signals -----------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame) -> None:
        log.warning("%s received: checkpointing at the next chunk boundary, then stopping", signal.Signals(signum).name)
        self.signum = signum

    def _stop(self, t: int) -> None:
        signum = self.signum
        previous = self._previous.get(signum)
        self.release()
        if callable(previous) and not isinstance(getattr(previous, "__self__", None), Checkpointer):
            try:
                previous(signum, None)  # e.g. submitit: requeue the job (it resumes from this checkpoint), exit
            except Exception as e:  # submitit declined to requeue (timed out too often): still a stop, not a failure
                raise Preempted(signum, t) from e
        raise Preempted(signum, t)
