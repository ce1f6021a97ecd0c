"""runner.aggregate on a real sweep (complete, partly failed, still running, nested) and the width figure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sweeplib import THREADS, env, jobs, overrides, result, runner

from runner.aggregate import collect, write
from runner.plot_width import plot_width, width_table

SWEEP = ["loss=ce,dce", "model.width=4,8", "seed=0,1", "train.steps=60", "train.eval_every=20", "wandb.mode=disabled", THREADS]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """An 8-job multirun (2 losses x 2 widths x 2 seeds), run once for this module; tests copy it to edit."""
    tmp = tmp_path_factory.mktemp("agg")
    runner(["-m", *SWEEP, f"hydra.sweep.dir={tmp}/sweep"], tmp)
    return tmp / "sweep"


def copy(sweep: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sweep, tmp_path / "sweep"))


def test_one_row_per_job_with_the_swept_values(sweep):
    runs = collect(sweep)
    assert len(runs) == 8 and runs["job"].tolist() == [str(i) for i in range(8)]
    assert runs.attrs["swept"] == ["loss", "model.width", "seed"]
    for job in jobs(sweep):
        row = runs.set_index("job").loc[job.name]
        written = dict(o.split("=", 1) for o in overrides(job))
        assert row["loss"] == written["loss"]
        assert row["model.width"] == int(written["model.width"]) == row["width"]
        assert row["seed"] == int(written["seed"])
        r = result(job)
        assert row["status"] == "finished" and row["final_val_acc"] == r["final_val_acc"]
        assert row["final_train_loss"] == r["final_train_loss"] and row["steps"] == 60
        assert (row["dataset"], row["depth"], row["optimizer"], row["lr"]) == ("spiral", 1, "gd", 1.0)
        if row["loss"] == "ce":
            assert pd.isna(row["A"]) and pd.isna(row["T"])  # a static loss has no A, T
        else:
            assert (row["A"], row["T"]) == (70, 5000)


def test_cli_writes_the_tables(sweep, tmp_path):
    sweep = copy(sweep, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "runner.aggregate", str(sweep)], env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "8 jobs (8 finished)" in proc.stdout
    runs = pd.read_parquet(sweep / "runs.parquet")
    assert len(runs) == 8 and len(pd.read_csv(sweep / "runs.csv")) == 8
    assert runs["final_val_acc"].tolist() == [result(j)["final_val_acc"] for j in jobs(sweep)]
    long = pd.read_parquet(sweep / "curves.parquet")
    assert len(long) == sum(len(pd.read_csv(j / "history.csv")) for j in jobs(sweep)) == 8 * 4  # steps 0,20,40,60
    last = long[long["step"] == 60].set_index("job")["val/acc"]
    assert last.loc["3"] == result(sweep / "3")["final_val_acc"]
    assert set(long.columns) >= {"job", "loss", "width", "seed", "step", "train/loss", "val/acc"}


def test_failed_missing_and_running_jobs_are_rows_with_their_status(sweep, tmp_path):
    sweep = copy(sweep, tmp_path)
    failed = result(sweep / "1") | {"status": "failed", "final_val_acc": None}
    (sweep / "1" / "result.json").write_text(json.dumps(failed))
    (sweep / "2" / "result.json").unlink()  # killed long ago
    old = time.time() - 3600
    for p in [sweep / "2", *(sweep / "2").iterdir()]:
        os.utime(p, (old, old))
    (sweep / "3" / "result.json").unlink()  # still writing (its files are fresh)
    (sweep / "3" / "history.csv").touch()
    started = sweep / "8"  # a job Hydra started that wrote nothing of its own yet
    shutil.copytree(sweep / "0" / ".hydra", started / ".hydra")

    runs, long = write(sweep)
    status = runs.set_index("job")["status"]
    assert status.to_dict() == {
        **{str(i): "finished" for i in (0, 4, 5, 6, 7)},
        "1": "failed",
        "2": "incomplete",
        "3": "running",
        "8": "running",
    }
    by_job = runs.set_index("job")
    assert by_job[["final_val_acc"]].loc[["1", "2", "3", "8"]].isna().all().all()
    assert by_job.loc["2", "last_step"] == 60  # how far an unfinished job got, from its history
    assert by_job.loc["8", "loss"] == "ce" and pd.isna(by_job.loc["8", "width"])  # overrides known, config not yet
    assert pd.read_parquet(sweep / "runs.parquet")["status"].tolist() == runs["status"].tolist()
    assert len(long) == 8 * 4  # job 8 has no history


def test_nested_sweeps_are_one_table(sweep, tmp_path):
    parent = tmp_path / "width"
    shutil.copytree(sweep, parent / "static")
    shutil.copytree(sweep, parent / "dynamic")
    runs = collect(parent)
    assert len(runs) == 16
    assert runs["job"].tolist() == [f"dynamic/{i}" for i in range(8)] + [f"static/{i}" for i in range(8)]
    one_job = collect(sweep / "5")  # a single job folder is a one-row table
    assert one_job["job"].tolist() == ["."] and one_job["final_val_acc"].item() == result(sweep / "5")["final_val_acc"]


def test_width_table_averages_over_seeds(sweep):
    table = width_table(collect(sweep))
    assert len(table) == 4 and (table["count"] == 2).all()  # (ce, dce) x widths (4, 8), 2 seeds each
    runs = collect(sweep)
    pick = runs[(runs["loss"] == "dce") & (runs["width"] == 8)]["final_val_acc"]
    row = table[(table["loss"] == "dce") & (table["width"] == 8)].iloc[0]
    assert row["mean"] == pytest.approx(pick.mean()) and row["std"] == pytest.approx(pick.std())


def test_width_table_splits_lines_by_a_setting_that_varies_within_a_loss():
    runs = pd.DataFrame(
        {
            "status": ["finished"] * 6 + ["diverged"],
            "loss": ["ce"] * 4 + ["dce"] * 3,
            "A": [None] * 4 + [70.0] * 3,
            "T": [None] * 4 + [100.0] * 3,
            "width": [8] * 7,
            "lr": [0.1, 0.1, 1.0, 1.0, 1.0, 1.0, 1.0],
            "final_val_acc": [0.5, 0.7, 0.8, 0.9, 0.6, 0.7, 0.1],
        }
    )
    table = width_table(runs)
    assert table[["loss", "lr", "count"]].values.tolist() == [["ce", 0.1, 2], ["ce", 1.0, 2], ["dce", 1.0, 2]]
    assert table["mean"].tolist() == pytest.approx([0.6, 0.85, 0.65])  # the diverged run is left out


def test_width_figure_is_written(sweep, tmp_path):
    out = plot_width([sweep], tmp_path / "width.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    cli = [sys.executable, "-m", "runner.plot", "width", str(sweep), "--out", str(tmp_path / "cli.png")]
    proc = subprocess.run(cli, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "cli.png").stat().st_size > 10_000
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no job folders"):
        plot_width(empty)
