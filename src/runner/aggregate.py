"""One table of a sweep: python -m runner.aggregate SWEEP_DIR (or runner.aggregate.collect in Python).

SWEEP_DIR is any folder holding job folders at any depth: a multirun (multirun/DATE/TIME), a SLURM
sweep (the same layout, plus .submitit/), a parent of several sweeps (multirun/width holding static/
and dynamic/), or one job folder. Writes into SWEEP_DIR:

  runs.csv, runs.parquet  one row per job: its relative folder (job), status, every key its
                          .hydra/overrides.yaml sets (as written: model.width, loss, seed, ...), the key
                          settings from its resolved config (dataset width depth loss A T lr optimizer
                          seed steps) and the final metrics of its result.json
  curves.parquet          every job's history.csv stacked: one row per job and evaluation step, with
                          the job's settings alongside so curves can be grouped without a join

Works on a sweep that is still running or partly failed: a job without result.json is a row with
status "running" (a file in it changed within --running-s seconds) or "incomplete" (killed, or never
got far); failed and diverged jobs are rows with that status. A static loss (ce, mse) has no A and T:
those columns are empty for it, so "one line per loss and (A, T)" groups all its runs together.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from runner.files import atomic_write
from runner.tracking import DASHBOARD_KEYS

# column -> dotted key in the resolved config: the keys W&B's dashboard config has, plus steps
SETTINGS = {**DASHBOARD_KEYS, "steps": "train.steps"}
STATIC_LOSSES = ("ce", "mse")
METRICS = (
    "final_val_acc",
    "best_val_acc",
    "final_train_acc",
    "final_train_loss",
    "final_val_loss",
    "diverged_step",
    "runtime_s",
    "device",
)
RUNNING_S = 300.0  # a job folder without result.json that changed more recently than this is "running"
SKIP_DIRS = {".hydra", ".submitit", "wandb"}


def _natural(path: str) -> list:
    """Sort key that puts job 2 before job 10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every job folder under sweep_dir (one that has config.yaml or .hydra/overrides.yaml), in job order."""
    root = Path(sweep_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if "config.yaml" in filenames or (here / ".hydra" / "overrides.yaml").exists():
            found.append(here)
            dirnames[:] = []  # a job folder holds no other jobs (only .hydra, wandb)
        else:
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
    return sorted(found, key=lambda p: _natural(p.relative_to(root).as_posix()))


def read_overrides(job_dir: Path) -> dict:
    """The keys the command line and the sweeper set for this job, with typed values."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    lines = yaml.safe_load(path.read_text()) or []
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(lines)
        return {o.key_or_group: o.value() for o in parsed if not o.is_delete()}
    except Exception:  # noqa: BLE001 - an override Hydra's grammar rejects today: fall back to text
        out = {}
        for line in lines:
            key, _, value = line.partition("=")
            if not key.startswith("~"):
                out[key.lstrip("+")] = yaml.safe_load(value) if value else None
        return out


def _select(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or (never from this runner's atomic writes) unreadable
        return None


def _config(job_dir: Path, result: dict | None) -> dict | None:
    if result and isinstance(result.get("config"), dict):
        return result["config"]
    path = job_dir / "config.yaml"  # the resolved config, written before training starts
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _newest_mtime(job_dir: Path) -> float:
    paths = [p for p in job_dir.iterdir() if p.is_file()] + [job_dir]
    return max(p.stat().st_mtime for p in paths)


def settings(config: dict | None) -> dict:
    out = {col: (_select(config, key) if config else None) for col, key in SETTINGS.items()}
    if out["loss"] in STATIC_LOSSES:
        out["A"] = out["T"] = None  # not used by a static loss: its runs form one group
    return out


def job_row(job_dir: Path, root: Path, now: float | None = None, running_s: float = RUNNING_S) -> dict:
    """One job's row: folder, status, overrides, settings, final metrics."""
    now = time.time() if now is None else now
    result = _read_json(job_dir / "result.json")
    if result is not None:
        status = str(result.get("status", "unknown"))
    else:
        status = "running" if now - _newest_mtime(job_dir) < running_s else "incomplete"
    overrides = read_overrides(job_dir)
    row = {"job": job_dir.relative_to(root).as_posix() or ".", "status": status}
    row.update(overrides)
    # the resolved value wins over the override text; without a config yet, the override still says it
    row.update({k: v for k, v in settings(_config(job_dir, result)).items() if v is not None or k not in row})
    row.update({m: (result or {}).get(m) for m in METRICS})
    row["steps_run"] = (result or {}).get("steps")
    history = job_dir / "history.csv"
    if history.exists():  # also for unfinished jobs: how far they got
        try:
            last = pd.read_csv(history).iloc[-1]
            row["last_step"], row["last_val_acc"] = int(last["step"]), float(last["val/acc"])
        except (ValueError, KeyError, IndexError, pd.errors.EmptyDataError):
            pass
    row["overrides"] = " ".join(f"{k}={v}" for k, v in overrides.items())
    row["job_dir"] = str(job_dir)
    return row


def collect(sweep_dir: str | Path, running_s: float = RUNNING_S) -> pd.DataFrame:
    """One row per job under sweep_dir. df.attrs["swept"]: the override keys whose value varies."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    now = time.time()
    dirs = job_dirs(root)
    rows = [job_row(d, root, now, running_s) for d in dirs]
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=["job", "status", *SETTINGS, *METRICS])
    override_keys = list(dict.fromkeys(k for d in dirs for k in read_overrides(d)))
    df.attrs["swept"] = [k for k in override_keys if k in df and df[k].astype(str).nunique(dropna=False) > 1]
    return df


def curves(sweep_dir: str | Path, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every job's history.csv, stacked (one row per job and evaluation step), with its settings."""
    runs = collect(sweep_dir) if runs is None else runs
    keep = ["job", "status", *SETTINGS]
    frames = []
    for _, run in runs.iterrows():
        path = Path(run["job_dir"]) / "history.csv"
        try:
            h = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        for col in reversed(keep):
            h.insert(0, col, run[col])
        frames.append(h)
    if not frames:
        return pd.DataFrame(columns=[*keep, "step"])
    return pd.concat(frames, ignore_index=True)


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Columns that mix types (e.g. an override that is 1 in one job and "a" in another) become text."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and pd.isna(v))}
            if len(kinds) > 1 or kinds & {list, dict, tuple}:
                out[col] = out[col].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    return out


def write(sweep_dir: str | Path, running_s: float = RUNNING_S) -> tuple[pd.DataFrame, pd.DataFrame]:
    """collect() and curves(), written as runs.csv, runs.parquet and curves.parquet into sweep_dir."""
    root = Path(sweep_dir)
    runs = collect(root, running_s)
    long = curves(root, runs)
    # atomic: a notebook reading the table while a new aggregate runs never sees half a file
    atomic_write(root / "runs.csv", lambda p: runs.to_csv(p, index=False))
    atomic_write(root / "runs.parquet", lambda p: _parquet_safe(runs).to_parquet(p, index=False))
    atomic_write(root / "curves.parquet", lambda p: _parquet_safe(long).to_parquet(p, index=False))
    return runs, long


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun or SLURM sweep folder (or any folder above job folders)")
    parser.add_argument(
        "--running-s", type=float, default=RUNNING_S, help="a job without result.json is running if it changed this recently"
    )
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"{args.sweep_dir}: no such folder", file=sys.stderr)
        return 2
    runs, long = write(args.sweep_dir, args.running_s)
    if runs.empty:
        print(f"{args.sweep_dir}: no job folders found", file=sys.stderr)
        return 1
    show = ["job", "status", *runs.attrs["swept"], "final_val_acc", "best_val_acc"]
    show = [c for c in dict.fromkeys(show) if c in runs]
    with pd.option_context("display.max_rows", 60, "display.width", 160):
        print(runs[show].to_string(index=False, max_rows=60))
    counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
    print(f"{len(runs)} jobs ({counts}); wrote runs.csv, runs.parquet, curves.parquet ({len(long)} rows) in {args.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
