"""A real multirun through hydra/launcher=slurm on the single-node cluster of scripts/slurm_up.sh.

Skipped (with the reason, see `pytest -rs`) when no SLURM node is idle here; CI runs slurm_up.sh first.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import torch
from sweeplib import THREADS, TINY, assert_same_sweep, jobs, popen, result, runner, wait_for_step


def slurm_partition() -> str:
    """The default partition of a SLURM cluster with an idle node, or pytest.skip saying why not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed here (no sinfo/sbatch): run `sudo scripts/slurm_up.sh` (CI does, in .ci/run)")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.skip("SLURM does not answer: `sinfo` timed out after 20 s (is slurmctld running? scripts/slurm_up.sh)")
    lines = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    up = [p for p, state in lines if state in ("idle", "mix", "alloc")]
    if proc.returncode != 0 or not up:
        why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no partitions"]
        pytest.skip(f"SLURM is not up: sinfo says {why[0]!r}: run `sudo scripts/slurm_up.sh`")
    defaults = [p for p in up if p.endswith("*")]
    return (defaults or up)[0].rstrip("*")


def test_slurm_multirun_gives_the_same_results_as_the_basic_launcher(tmp_path):
    partition = slurm_partition()
    launcher = ["hydra/launcher=slurm", f"hydra.launcher.partition={partition}", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=5"]
    launcher.append("+hydra.launcher.additional_parameters.nice=10")  # an sbatch option without a key of its own
    start = time.monotonic()
    runner(["-m", *TINY, *launcher, f"hydra.sweep.dir={tmp_path}/slurm"], tmp_path, timeout=300)
    took = time.monotonic() - start
    for job in jobs(tmp_path / "slurm"):
        assert result(job)["status"] == "finished", job
    # every job really ran as a task of one SLURM array: submitit keeps one folder per JOBID_TASK
    tasks = sorted(p.name for p in (tmp_path / "slurm" / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert len(tasks) == 4 and len({t.split("_")[0] for t in tasks}) == 1, tasks
    (script,) = (tmp_path / "slurm" / ".submitit").glob("*/*_submission.sh")
    text = script.read_text()
    assert f"#SBATCH --partition={partition}" in text and "#SBATCH --nice=10" in text and "#SBATCH --array=0-3%4" in text
    runner(["-m", *TINY, f"hydra.sweep.dir={tmp_path}/basic"], tmp_path)
    assert_same_sweep(tmp_path / "basic", tmp_path / "slurm")
    print(f"SLURM multirun of 4 jobs on partition {partition}: {took:.1f} s")


def test_batched_slurm_trains_each_group_as_array_tasks(tmp_path):
    """hydra/launcher=batched_slurm: one array task per group part, each training its runs as one stack."""
    partition = slurm_partition()
    # ce and dce share a stack; widths 8 and 32 (4x apart) do not: 2 groups of 4, split 2 + 2 by runs_per_task
    sweep = [*TINY, "model.width=8,32"]
    launcher = ["hydra/launcher=batched_slurm", f"hydra.launcher.partition={partition}", "hydra.launcher.mem_gb=1"]
    launcher += ["hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1", "hydra.launcher.runs_per_task=3"]
    start = time.monotonic()
    runner(["-m", *sweep, *launcher, f"hydra.sweep.dir={tmp_path}/slurm"], tmp_path, timeout=300)
    took = time.monotonic() - start
    tasks = sorted(p for p in (tmp_path / "slurm" / ".submitit").iterdir() if p.is_dir() and "_" in p.name)
    assert len(tasks) == 4 and len({t.name.split("_")[0] for t in tasks}) == 1, tasks
    for task in tasks:  # each task trained its two runs together, in its own SLURM process
        (log,) = task.glob("*_log.err")
        assert "training 2 runs as one stack" in log.read_text(), log
    for job in jobs(tmp_path / "slurm"):
        assert result(job)["group_size"] == 2, job
    runner(["-m", *sweep, f"hydra.sweep.dir={tmp_path}/basic"], tmp_path)
    assert_same_sweep(tmp_path / "basic", tmp_path / "slurm")
    # a rerun finds every result and submits nothing
    runner(["-m", *sweep, *launcher, f"hydra.sweep.dir={tmp_path}/slurm"], tmp_path, timeout=300)
    assert len([p for p in (tmp_path / "slurm" / ".submitit").iterdir() if p.is_dir()]) == len(tasks) + 1  # + the array's own folder
    print(f"batched_slurm: 8 jobs in 4 array tasks on partition {partition}: {took:.1f} s")


def test_batched_slurm_task_stopped_by_slurm_resumes_on_rerun(tmp_path):
    """SLURM's warning signal (USR2) mid-run, requeue declined (max_num_timeout=0): the task checkpoints and
    ends, its job is left unfinished (not failed) and the rerun's task resumes it to the uninterrupted result."""
    partition = slurm_partition()
    job = ["loss=dce", "loss.T=250", "model.width=8", "train.eval_every=100", "train.device=cpu", "wandb.mode=disabled", THREADS]
    job += ["train.steps=30000", "train.checkpoint_every=1000"]
    launcher = ["hydra/launcher=batched_slurm", f"hydra.launcher.partition={partition}", "hydra.launcher.mem_gb=1"]
    # timeout_min <= 10: submitit takes any USR2 for the time-limit warning, and max_num_timeout=0 declines the requeue
    launcher += ["hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1", "hydra.launcher.max_num_timeout=0"]
    cmd = ["-m", *job, *launcher, f"hydra.sweep.dir={tmp_path}/slurm"]
    proc = popen(cmd, tmp_path)
    wait_for_step(proc, tmp_path / "slurm" / "0" / "steps.csv", 3000)
    (array,) = [p.name for p in (tmp_path / "slurm" / ".submitit").iterdir() if "_" not in p.name]
    subprocess.run(["scancel", "--signal=USR2", array], check=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "SIGUSR2" in err, err[-3000:]
    stopped = tmp_path / "slurm" / "0"
    assert not (stopped / "result.json").exists()  # unfinished, not "failed"
    saved = torch.load(stopped / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < saved < 30000
    runner(cmd, tmp_path, timeout=300)  # a new array task, resuming from the checkpoint
    runner(["-m", *job, f"hydra.sweep.dir={tmp_path}/basic"], tmp_path)
    a, b = tmp_path / "basic" / "0", stopped
    assert (a / "history.csv").read_bytes() == (b / "history.csv").read_bytes()
    assert (a / "steps.csv").read_bytes() == (b / "steps.csv").read_bytes()
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    assert rb["status"] == "finished" and ra["final_train_loss"] == rb["final_train_loss"] and ra["final_val_acc"] == rb["final_val_acc"]
    assert all(torch.equal(x, y) for x, y in zip(torch.load(a / "weights.pt"), torch.load(b / "weights.pt")))
