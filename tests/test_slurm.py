"""A real multirun through hydra/launcher=slurm on the single-node cluster of scripts/slurm_up.sh.

Skipped (with the reason, see `pytest -rs`) when no SLURM node is idle here; CI runs slurm_up.sh first.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from sweeplib import TINY, assert_same_sweep, jobs, result, runner


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
