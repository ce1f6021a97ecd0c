"""Sweeps: the launcher configs, the presets, the local parallel launcher, and resuming a killed sweep."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from sweeplib import THREADS, TINY, assert_same_sweep, env, jobs, result, runner

from runner.resume import finished_result

CONF = Path(__file__).resolve().parents[1] / "src" / "runner" / "conf"
PRESETS = ["fig1", "width_sweep_static", "width_sweep_dynamic", "p1_long"]


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def expand(overrides: list[str]) -> tuple[object, list[dict]]:
    """The composed config and every job's overrides, as the basic sweeper expands them (params + CLI)."""
    cfg = composed(overrides)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + overrides)
    (batch,) = BasicSweeper.split_arguments(parsed, None)
    return cfg, [dict(o.split("=", 1) for o in job) for job in batch]


# --- launcher configs ------------------------------------------------------------------------------


def test_slurm_launcher_config_has_the_cluster_keys():
    launcher = composed(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1"]).hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    for key in ("timeout_min", "cpus_per_task", "mem_gb", "array_parallelism", "additional_parameters", "setup"):
        assert key in launcher, key
    assert launcher.cpus_per_task == 1 and launcher.array_parallelism == 64


def test_local_launcher_config_is_bounded_joblib():
    launcher = composed(["hydra/launcher=local"]).hydra.launcher
    assert launcher._target_.endswith("joblib_launcher.JoblibLauncher")
    assert launcher.n_jobs == 2  # bounded, unlike submitit_local which starts every job at once


# --- presets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_with_a_header_command(preset):
    cfg = composed([f"experiment={preset}"])
    assert cfg.loss.name in ("ce", "dce")
    header = (CONF / "experiment" / f"{preset}.yaml").read_text().splitlines()
    assert header[0] == "# @package _global_"
    assert any(f"experiment={preset}" in line for line in header if line.startswith("#")), "header gives the command"
    assert any(line.startswith("# Expect") for line in header), "header says what to expect"


def test_fig1_sweeps_three_widths_two_lrs_twenty_seeds_of_static_ce():
    cfg, batch = expand(["experiment=fig1"])
    assert cfg.loss.name == "ce" and cfg.sharpness.every == 25
    assert len(batch) == 3 * 2 * 20
    assert len({j["model.width"] for j in batch}) == 3 and len({j["optim.lr"] for j in batch}) == 2
    assert {j["seed"] for j in batch} == {str(s) for s in range(20)}


def test_width_presets_never_train_a_static_run_twice():
    """Static losses ignore A and T: the two halves together hold each effective run exactly once."""
    keys = []
    for preset in ("width_sweep_static", "width_sweep_dynamic"):
        cfg, batch = expand([f"experiment={preset}"])
        for job in batch:
            loss = job.get("loss", cfg.loss.name)
            dynamic = loss not in ("ce", "mse")
            at = (float(job.get("loss.A", cfg.loss.A)), float(job.get("loss.T", cfg.loss.T))) if dynamic else None
            keys.append((loss, at, int(job["model.width"]), int(job["seed"])))
    assert len(keys) == len(set(keys)), "some run is trained twice"
    losses = {k[0] for k in keys}
    assert losses == {"ce", "mse", "dce", "dmse1", "dmse2"}
    assert len({k[1] for k in keys if k[1]}) == 4  # 2 A x 2 T, every pair for every dynamical loss
    assert len([k for k in keys if k[1] is None]) == 2 * 8 * 5


def test_width_presets_pick_the_lr_of_the_loss_family():
    assert composed(["experiment=width_sweep_static", "loss=ce"]).optim.lr == 1.0
    assert composed(["experiment=width_sweep_dynamic", "loss=dmse2"]).optim.lr == 0.3
    assert composed(["experiment=width_sweep_dynamic", "loss=dmse2", "optim.lr=0.05"]).optim.lr == 0.05


@pytest.mark.parametrize("preset", PRESETS)
def test_debug_shrinks_every_preset(preset):
    cfg, batch = expand([f"experiment={preset}", "debug=default"])
    assert cfg.train.steps == 40 and cfg.wandb.mode == "disabled" and cfg.train.threads == 1
    assert {j["seed"] for j in batch} == {"0", "1"}
    full = len(expand([f"experiment={preset}"])[1])
    assert len(batch) <= max(2, full // 2)


# (preset, extra overrides that shrink the sweep further, expected jobs)
DEBUG_RUNS = [
    ("fig1", [], 3 * 2 * 2),
    ("width_sweep_static", ["model.width=2"], 2 * 2),
    ("width_sweep_dynamic", ["model.width=2", "loss.A=70", "loss.T=100"], 3 * 2),
]


@pytest.mark.parametrize("preset,extra,expected", DEBUG_RUNS, ids=[d[0] for d in DEBUG_RUNS])
def test_debug_preset_runs(preset, extra, expected, tmp_path):
    sweep = tmp_path / "sweep"
    runner(["-m", f"experiment={preset}", "debug=default", *extra, f"hydra.sweep.dir={sweep}"], tmp_path)
    done = jobs(sweep)
    assert len(done) == expected
    for job in done:
        r = result(job)
        assert r["status"] in ("finished", "diverged"), (job, r["status"])
        assert r["config"]["train"]["steps"] == 40 and r["config"]["wandb"]["mode"] == "disabled"
        if preset == "fig1":
            assert r["config"]["loss"]["name"] == "ce" and r["config"]["sharpness"]["every"] == 25


# --- the local parallel launcher ------------------------------------------------------------------


def test_local_launcher_gives_the_same_results_as_the_basic_one(tmp_path):
    runner(["-m", *TINY, f"hydra.sweep.dir={tmp_path}/basic"], tmp_path)
    runner(["-m", *TINY, "hydra/launcher=local", f"hydra.sweep.dir={tmp_path}/local"], tmp_path)
    assert_same_sweep(tmp_path / "basic", tmp_path / "local")


# --- resume -----------------------------------------------------------------------------------------


def _fake_job(tmp_path: Path, status: str, config: dict) -> Path:
    (tmp_path / "result.json").write_text(json.dumps({"status": status, "final_val_acc": 0.5, "config": config}))
    return tmp_path


CONFIG = {"seed": 0, "train": {"steps": 10, "progress": True}, "wandb": {"mode": "offline"}, "resume": True}


def test_finished_result_reuses_only_done_results_of_the_same_config(tmp_path):
    assert finished_result(tmp_path, CONFIG) is None  # no result.json
    assert finished_result(_fake_job(tmp_path, "finished", CONFIG), CONFIG)["final_val_acc"] == 0.5
    assert finished_result(_fake_job(tmp_path, "diverged", CONFIG), CONFIG) is not None  # a result too
    assert finished_result(_fake_job(tmp_path, "failed", CONFIG), CONFIG) is None  # worth a retry
    other = {**CONFIG, "train": {"steps": 20, "progress": True}}
    assert finished_result(_fake_job(tmp_path, "finished", CONFIG), other) is None  # another sweep's job N
    cosmetic = {**CONFIG, "wandb": {"mode": "disabled"}, "train": {"steps": 10, "progress": False}}
    assert finished_result(_fake_job(tmp_path, "finished", CONFIG), cosmetic) is not None
    (tmp_path / "result.json").write_text('{"status": "fini')  # truncated (never written so; still safe)
    assert finished_result(tmp_path, CONFIG) is None


def test_rerun_skips_a_finished_job_unless_resume_is_false(tmp_path):
    args = ["model.width=8", "train.steps=50", "wandb.mode=disabled", THREADS, f"hydra.run.dir={tmp_path}/job"]
    runner(args, tmp_path)
    path = tmp_path / "job" / "result.json"
    first = (path.stat().st_mtime_ns, path.read_bytes())
    again = runner(args, tmp_path)
    assert "already finished, skipped" in again.stdout + again.stderr
    assert (path.stat().st_mtime_ns, path.read_bytes()) == first
    runner([*args, "resume=false"], tmp_path)
    assert path.stat().st_mtime_ns != first[0] and result(tmp_path / "job")["status"] == "finished"


def test_killed_sweep_reruns_only_the_jobs_without_a_result(tmp_path):
    sweep = tmp_path / "sweep"
    steps = 3000  # each job long enough (~0.2-1 s) that the kill lands while one is in flight
    args = ["-m", "loss=ce,dce", "seed=0,1", "model.width=16", f"train.steps={steps}", "train.eval_every=500"]
    args += ["wandb.mode=disabled", THREADS, f"hydra.sweep.dir={sweep}"]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env(), stdout=log, stderr=log, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while not list(sweep.glob("*/result.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        ended = proc.poll()
        if ended is None:
            with contextlib.suppress(ProcessLookupError):  # it may end between poll() and here
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher and anything it started, mid-sweep
        proc.wait(timeout=30)
    assert ended is None, f"the sweep ended (exit {ended}) before the kill:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
    before = {p.parent.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sweep.glob("*/result.json")}
    assert 1 <= len(before) < 4, f"the kill did not land mid-sweep: {sorted(before)}"

    runner(args, tmp_path)
    done = jobs(sweep)
    assert [j.name for j in done] == [str(i) for i in range(4)]
    for job in done:
        r = result(job)  # parses: no truncated result file
        assert r["status"] == "finished" and r["steps"] == steps
        steps_csv = pd.read_csv(job / "steps.csv")
        assert steps_csv["step"].tolist() == list(range(steps)), "a rerun job's records start afresh"
        if job.name in before:  # finished before the kill: not trained again
            path = job / "result.json"
            assert (path.stat().st_mtime_ns, path.read_bytes()) == before[job.name], job.name
            assert "already finished, skipped" in (job / "runner.log").read_text()
        else:
            assert "already finished, skipped" not in (job / "runner.log").read_text()
