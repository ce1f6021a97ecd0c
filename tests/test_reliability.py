"""Divergence, kill -9 / SIGTERM and resume, W&B without network, bounded history: the real CLI."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import run_cli
from sweeplib import popen, wait_for_step

from runner import records
from runner.records import HistoryFile

WANDB = Path(sys.executable).parent / "wandb"
# float64 on the CPU, one thread: bit-for-bit reproducible, so a resumed run must equal an uninterrupted one.
BASE = ["loss=dce", "loss.T=250", "model.width=8", "train.eval_every=100", "train.threads=1", "train.device=cpu", "wandb.mode=disabled"]
KILL = [*BASE, "train.steps=30000", "train.checkpoint_every=1000"]
SWEEP = ["-m", "seed=0,1", *BASE, "train.steps=12000", "train.checkpoint_every=1000", "optim=sgd", "optim.batch_size=64"]


def outcome(job: Path) -> dict:
    """Everything a run leaves that must not depend on having been interrupted."""
    result = json.loads((job / "result.json").read_text())
    result.pop("runtime_s")
    weights = torch.load(job / "weights.pt", weights_only=True)
    return {"result": result, "history": (job / "history.csv").read_bytes(), "steps": (job / "steps.csv").read_bytes(), "weights": weights}


def assert_same(a: dict, b: dict) -> None:
    assert a["result"] == b["result"]
    assert a["history"] == b["history"]
    assert a["steps"] == b["steps"]
    assert all(torch.equal(x, y) for x, y in zip(a["weights"], b["weights"]))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run (checkpointing on: taking checkpoints must not change the result either)."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = run_cli([*KILL, f"hydra.run.dir={tmp}/job"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp / "job" / "checkpoint.pt").exists()  # deleted once result.json is written
    return outcome(tmp / "job")


# --- divergence ---------------------------------------------------------------------------------------


def test_diverging_run_is_a_result_with_its_history(tmp_path):
    job = tmp_path / "job"
    proc = run_cli(
        ["optim.lr=1e3", "model.width=8", "train.steps=500", "train.eval_every=10", "wandb.mode=offline", f"hydra.run.dir={job}"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # a diverged run is a result, not a crash
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "diverged"
    d = result["diverged_step"]
    assert 0 < d < 500 and result["steps"] == d
    steps = pd.read_csv(job / "steps.csv")
    assert list(steps["step"]) == list(range(d + 1))  # every step up to the divergence, and no further
    assert steps["train/loss"].iloc[:-1].map(lambda v: v == v and abs(v) != float("inf")).all()
    history = pd.read_csv(job / "history.csv")
    assert list(history["step"]) == list(range(0, d + 1, 10))  # kept, up to the divergence
    assert not (job / "weights.pt").exists()
    (run,) = (job / "wandb").glob("offline-run-*")
    summary = json.loads(
        subprocess.run([str(WANDB), "leet", "inspect", "--summary", "--json", str(run)], capture_output=True, text=True, check=True).stdout
    )
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert "diverged" in summary["tags"]
    assert summary["summary"]["status"] == "diverged" and summary["summary"]["diverged_step"] == d


def test_sweep_goes_on_after_a_diverging_job(tmp_path):
    proc = run_cli(
        ["-m", "optim.lr=1e3,0.5", "model.width=8", "train.steps=300", "wandb.mode=disabled", f"hydra.sweep.dir={tmp_path}/s"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / "s" / str(i) / "result.json").read_text()) for i in (0, 1))
    assert r0["status"] == "diverged"
    assert r1["status"] == "finished" and r1["steps"] == 300
    assert len(pd.read_csv(tmp_path / "s" / "1" / "steps.csv")) == 300


# --- kill -9, SIGTERM, resume -------------------------------------------------------------------------


def test_kill_9_then_rerun_equals_an_uninterrupted_run(tmp_path, reference):
    job = tmp_path / "job"
    step = random.randint(2500, 20000)
    print("killing at about step", step)
    proc = popen([*KILL, f"hydra.run.dir={job}"], tmp_path)
    wait_for_step(proc, job / "steps.csv", step)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (job / "result.json").exists() and (job / "checkpoint.pt").exists()
    saved = torch.load(job / "checkpoint.pt", weights_only=True)["step"]
    assert saved % 1000 == 0 and saved >= 2000
    rerun = run_cli([*KILL, f"hydra.run.dir={job}"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"from step {saved}" in rerun.stdout + rerun.stderr  # resumed, not retrained (Hydra logs to stdout)
    assert_same(outcome(job), reference)
    assert not (job / "checkpoint.pt").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_stop_signal_checkpoints_exits_non_zero_and_resumes(tmp_path, reference, signum):
    job = tmp_path / "job"
    proc = popen([*KILL, f"hydra.run.dir={job}"], tmp_path)
    wait_for_step(proc, job / "steps.csv", random.randint(1500, 15000))
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-3000:]
    err += out
    assert signal.Signals(signum).name in err and not (job / "result.json").exists()
    saved = torch.load(job / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < saved < 30000
    # the files end exactly at the checkpoint: nothing after it was written
    assert len(pd.read_csv(job / "steps.csv")) == saved
    rerun = run_cli([*KILL, f"hydra.run.dir={job}"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_same(outcome(job), reference)


def test_kill_9_in_a_sweep_then_rerun_equals_an_uninterrupted_sweep(tmp_path):
    ref = run_cli([*SWEEP, f"hydra.sweep.dir={tmp_path}/ref"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    victim = random.randint(0, 1)
    step = random.randint(2500, 9000)
    print(f"killing job {victim} at about step {step}")
    sweep = tmp_path / "sweep"
    proc = popen([*SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path)
    wait_for_step(proc, sweep / str(victim) / "steps.csv", step)
    proc.kill()
    proc.wait()
    assert not (sweep / str(victim) / "result.json").exists()
    rerun = run_cli([*SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming 1 run(s)" in rerun.stdout + rerun.stderr
    for i in (0, 1):
        assert_same(outcome(sweep / str(i)), outcome(tmp_path / "ref" / str(i)))


# --- W&B without network ------------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", [None, "x" * 40], ids=["no-credentials", "unreachable"])
def test_wandb_online_without_network_falls_back_to_offline(tmp_path, api_key):
    env = {"WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "HOME": str(tmp_path), "NETRC": str(tmp_path / "netrc")}
    env_all = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")} | env
    if api_key:
        env_all["WANDB_API_KEY"] = api_key
    job = tmp_path / "job"
    tic = time.perf_counter()
    args = ["model.width=8", "train.steps=400", "train.eval_every=20", "train.threads=1", f"hydra.run.dir={job}"]
    env_all["RUNNER_NO_PROGRESS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env_all, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - tic
    print(f"W&B fallback run: {elapsed:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count("logging offline") == 1, proc.stdout[-3000:]  # one warning
    assert elapsed < 30
    assert json.loads((job / "result.json").read_text())["status"] == "finished"
    assert list(pd.read_csv(job / "history.csv")["step"]) == list(range(0, 401, 20))  # complete
    assert len(list((job / "wandb").glob("offline-run-*"))) == 1  # kept offline, for `wandb sync`


# --- bounded history ----------------------------------------------------------------------------------


def test_history_streams_with_a_bounded_buffer_and_matches_a_full_rewrite(tmp_path, monkeypatch):
    monkeypatch.setattr(records, "HISTORY_BUFFER", 50)
    monkeypatch.setattr(records, "HISTORY_REWRITE_S", 1e9)
    h = HistoryFile(tmp_path / "history.csv")
    h.start()
    rows = [{"step": i, "train/loss": 1.0 / (i + 1), "val/acc": i / 7} for i in range(240)]
    rows[100]["sharpness/0"] = 3.25  # a column that first appears late: the file is rewritten with it
    for r in rows:
        h.add(r)
        assert len(h.pending) < 50  # never more than the buffer in memory
    h.flush()
    expected = pd.DataFrame(rows).to_csv(index=False, float_format=records.FLOAT_FORMAT)
    assert (tmp_path / "history.csv").read_text() == expected
    assert h.rows == 240


def test_history_restore_cuts_back_to_a_checkpoint(tmp_path):
    h = HistoryFile(tmp_path / "history.csv")
    h.start()
    for i in range(5):
        h.add({"step": i, "x": float(i)})
    size = h.flush()
    for i in range(5, 9):
        h.add({"step": i, "x": float(i)})
    h.flush()
    again = HistoryFile(tmp_path / "history.csv")
    again.restore(size, 5)
    again.add({"step": 5, "x": 5.0})
    again.flush()
    assert list(pd.read_csv(tmp_path / "history.csv")["step"]) == [0, 1, 2, 3, 4, 5]


# --- checkpoint state, in process ---------------------------------------------------------------------


class _Recorder:
    def state(self) -> dict:
        files = {"history_bytes": 0, "history_rows": 0, "steps_bytes": 0, "steps_rows": 0}
        return {**files, "last_row": {}, "best_val_acc": None, "wandb_id": None}


def test_checkpoint_restores_one_run_into_a_differently_composed_stack(tmp_path):
    """A resumed sweep may group its unfinished runs differently (batched launcher): per-run state must survive."""
    import numpy as np

    from runner.checkpoint import Checkpointer
    from runner.model import MLPStack
    from runner.optim import make_optimizer
    from runner.trainer import Job, MinibatchSampler

    sizes = [[2, 8, 3], [2, 4, 3]]  # runs of different widths in one (padded) stack
    jobs = [Job({"train": {}, "seed": m}, tmp_path / f"j{m}", f"j{m}") for m in range(2)]
    for j in jobs:
        j.job_dir.mkdir()
        (j.job_dir / "history.csv").write_text("")
    dtype = torch.float64

    def build(run_sizes, seeds):
        stack = MLPStack.create(run_sizes, "glorot_normal", seeds, "relu", dtype, "cpu")
        lr = torch.full((len(seeds),), 0.1, dtype=dtype)
        opt = make_optimizer("sgd", stack.weights, lr, {"momentum": 0.9})
        return stack, opt, MinibatchSampler(seeds, 300, 32, "cpu")

    stack, opt, sampler = build(sizes, [0, 1])
    for v, w in zip(opt.velocity, stack.weights):
        v.copy_(w * 0.5)  # zero where padded, as real momentum is
    for _ in range(12):  # into the second epoch of the sampler
        sampler.next()
    ckpt = Checkpointer(jobs, 10)
    ckpt.save(20, jobs, stack, opt, sampler, np.ones(2, bool), ["finished"] * 2, [None] * 2, [_Recorder(), _Recorder()])
    ckpt.release()

    alone, opt2, sampler2 = build(sizes[1:], [7])  # run 1 alone: another seed, another padding
    alive, status, diverged = np.ones(1, bool), ["x"], [0]
    restorer = Checkpointer(jobs[1:], 10)
    assert restorer.restore(alone, opt2, sampler2, alive, status, diverged) == 20
    restorer.release()
    assert all(torch.equal(a, b) for a, b in zip(alone.run_weights(0), stack.run_weights(1)))
    assert torch.equal(opt2.velocity[0][0, : sizes[1][1]], opt.velocity[0][1, : sizes[1][1]])
    assert status == ["finished"] and diverged == [None]
    assert torch.equal(sampler2.next()[0], sampler.next()[1])  # the same minibatch order from here on


def test_atomic_writes_make_folders_keep_the_old_file_on_failure_and_are_group_readable(tmp_path):
    import stat

    from runner.files import FILE_MODE, atomic_write, atomic_write_bytes, write_text

    target = tmp_path / "new" / "folder" / "result.json"
    write_text(target, "first é\n")  # the folders are made on demand
    assert target.read_text(encoding="utf-8") == "first é\n"
    assert stat.S_IMODE(target.stat().st_mode) == FILE_MODE and FILE_MODE & 0o044  # not mkstemp's 0600

    def broken(p: Path) -> None:
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    atomic_write_bytes(target.parent / "other.bin", b"\x00\x01")
    assert target.read_text(encoding="utf-8") == "first é\n"  # a failed write leaves the old file as it was
    assert sorted(p.name for p in target.parent.iterdir()) == ["other.bin", "result.json"]  # no temporary files left
