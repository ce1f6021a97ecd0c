"""The real CLI in subprocesses: a single run, a 4-job multirun with W&B offline runs read back by W&B."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

import runner

WANDB = Path(sys.executable).parent / "wandb"
TINY = ["train.steps=200", "train.eval_every=50", "model.width=8"]


def inspect(run_dir: Path, full: bool = False):
    args = [str(WANDB), "leet", "inspect", "--json", str(run_dir)]
    if not full:
        args.insert(3, "--summary")
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out) if not full else [json.loads(line) for line in out.splitlines() if line.strip()]


def test_multirun_gives_four_finished_jobs_and_wandb_runs(cli, tmp_path):
    cli("-m", "loss=ce,dce", "seed=0,1", *TINY, f"hydra.sweep.dir={tmp_path}/sweep")
    jobs = sorted((tmp_path / "sweep").glob("[0-9]*"))
    assert len(jobs) == 4
    names, groups = set(), set()
    for job in jobs:
        result = json.loads((job / "result.json").read_text())
        assert result["status"] == "finished"
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, runs  # each job its own W&B run, in its own job directory
        summary = inspect(runs[0])
        assert summary["state"] == "finished"
        assert summary["summary"]["final_val_acc"] == result["final_val_acc"]
        assert summary["config"]["loss"] == result["config"]["loss"]["name"]  # top-level dashboard keys
        assert summary["config"]["seed"] == result["config"]["seed"]
        assert "figures/dynamics" not in summary["summary"]  # wandb.figure=auto: no figure in a sweep's runs
        # every run of the process lists the installed packages (runner.tracking reads them once)
        assert f"torch=={torch.__version__}" in (runs[0] / "files" / "requirements.txt").read_text().splitlines()
        names.add(summary["name"])
        records = inspect(runs[0], full=True)
        groups.add(next(r["run"]["run_group"] for r in records if r.get("type") == "run"))
        logged = [r for r in records if r.get("type") == "history"]
        assert len(logged) == 5  # steps 0, 50, 100, 150, 200
    assert names == {"spiral-ce-w8-gd1-s0", "spiral-ce-w8-gd1-s1", "spiral-dce-A70-T5000-w8-gd1-s0", "spiral-dce-A70-T5000-w8-gd1-s1"}
    assert len(groups) == 1 and groups.pop().startswith("runner-")  # one group per multirun


def test_single_run_outputs_and_load_run(cli, tmp_path):
    proc = cli("loss=dce", "loss.T=50", *TINY, "wandb.mode=disabled", f"hydra.run.dir={tmp_path}/job")
    job = tmp_path / "job"
    assert "finished: val/acc" in proc.stderr + proc.stdout and str(job) in proc.stderr + proc.stdout
    for name in ["config.yaml", "history.csv", "steps.csv", "result.json", "weights.pt"]:
        assert (job / name).stat().st_size > 0, name
    assert not (job / "wandb").exists()
    run = runner.load_run(job)
    assert run.config["loss"]["name"] == "dce" and run.config["model"]["width"] == 8
    assert run.result["status"] == "finished" and isinstance(run.history, pd.DataFrame)
    # the saved model reproduces the final validation accuracy
    with torch.no_grad():
        pred = run.model(run.data.val.x).argmax(1)
    assert (pred == run.data.val.y).double().mean().item() == run.result["final_val_acc"]


def test_single_run_puts_the_dynamics_figure_in_its_wandb_run(cli, tmp_path):
    cli(*TINY, f"hydra.run.dir={tmp_path}/job", env={"WANDB_MODE": "offline"})
    (run,) = (tmp_path / "job" / "wandb").glob("offline-run-*")
    figure = inspect(run)["summary"]["figures/dynamics"]  # wandb.figure=auto: a single run gets one
    assert figure["_type"] == "image-file" and (tmp_path / "job" / "dynamics.png").stat().st_size > 10_000


def test_wandb_mode_env_wins_over_default(cli, tmp_path):
    cli(*TINY, f"hydra.run.dir={tmp_path}/job", env={"WANDB_MODE": "disabled"})
    assert not (tmp_path / "job" / "wandb").exists()
    assert json.loads((tmp_path / "job" / "result.json").read_text())["config"]["wandb"]["mode"] == "disabled"


def test_wandb_package_list_is_read_once_per_process():
    from types import SimpleNamespace

    from runner.tracking import _list_packages_once

    calls = []

    def working_set():
        calls.append(1)
        yield from ("torch", "wandb")

    fake = SimpleNamespace(util=SimpleNamespace(working_set=working_set))
    _list_packages_once(fake)
    _list_packages_once(fake)  # idempotent: not wrapped twice
    assert list(fake.util.working_set()) == list(fake.util.working_set()) == ["torch", "wandb"]
    assert len(calls) == 1
