"""Figures from job directories (matplotlib, Agg backend: no display needed).

    python -m runner.plot dynamics JOB_DIR [--out FILE]   # one run: the authors' dynamics figure
    python -m runner.plot fig1 SWEEP_DIR [--out FILE]     # many runs: loss and lambda_max over seeds
    python -m runner.plot width SWEEP_DIR [--out FILE]    # sweeps: val/acc against width (runner.plot_width)

A new figure is one function `name(path, out) -> Path` plus one line in COMMANDS.
Only the files a job leaves are read (config.yaml, history.csv, steps.csv), so a figure can be made
of a running job, and at the end of a run for W&B (log_dynamics_figure).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

DPI = 100
DYNAMICS_SIZE = (10.0, 13.0)  # inches: 1000 x 1300 pixels at DPI
FIG1_SIZE = (10.0, 8.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: files only, no display
    import matplotlib.pyplot as plt

    return plt


def _read_config(job_dir: Path) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(job_dir / "config.yaml"))


def _read_csv(path: Path) -> pd.DataFrame | None:
    """A csv a running job may still be appending to (a partial last line is dropped)."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path, on_bad_lines="skip")


def _gamma(config: dict, steps: np.ndarray, history: pd.DataFrame | None) -> np.ndarray | None:
    """Gamma_i(t) [len(steps), C] from the run's own schedule; history's gamma/* columns as a fallback."""
    try:
        import torch

        from runner.trainer import Job, gamma_for, schedule_tensors

        job = Job(config, Path("."), "plot")
        sched = schedule_tensors([job], torch.float64, "cpu")
        g = gamma_for(torch.tensor(np.asarray(steps), dtype=torch.long), [job], int(config["dataset"]["classes"]), sched)
        return g[:, 0].numpy()
    except Exception:  # noqa: BLE001 - an old or partial config: use what was recorded
        if history is None:
            return None
        cols = sorted((c for c in history if c.startswith("gamma/")), key=lambda c: int(c.split("/")[1]))
        return history[cols].to_numpy() if cols else None


def dynamics(job_dir: Path, out: Path | None = None) -> Path:
    """Gamma_i(t); static and dynamical loss; F(t) - F(t-1); accuracies; lambda_max against 2/lr."""
    job_dir = Path(job_dir)
    out = Path(out) if out is not None else job_dir / "dynamics.png"
    config = _read_config(job_dir)
    history = _read_csv(job_dir / "history.csv")
    steps = _read_csv(job_dir / "steps.csv")
    plt = _pyplot()
    fig, ax = plt.subplots(5, 1, figsize=DYNAMICS_SIZE, dpi=DPI, sharex=True)
    loss = config.get("loss", {})
    fig.suptitle(f"{job_dir.name}: {loss.get('name')} A={loss.get('A')} T={loss.get('T')}, width {config['model']['width']}, "
                 f"{config['optim']['name']} lr {config['optim']['lr']}", fontsize=10)  # fmt: skip

    # The per-step losses when recorded (train.record_steps), else the evaluation rows.
    if steps is not None and len(steps):
        t, static, dyn = steps["step"].to_numpy(), steps["train/loss"].to_numpy(), steps["train/dyn_loss"].to_numpy()
    elif history is not None:
        t, static, dyn = history["step"].to_numpy(), history["train/loss"].to_numpy(), history["train/dyn_loss"].to_numpy()
    else:
        t = static = dyn = np.array([])

    gamma_t = t if len(t) else (history["step"].to_numpy() if history is not None else np.array([]))
    gamma = _gamma(config, gamma_t, history) if len(gamma_t) else None
    if gamma is not None:
        if len(gamma) != len(gamma_t):  # the history fallback
            gamma_t = history["step"].to_numpy()
        for c in range(gamma.shape[1]):
            ax[0].plot(gamma_t, gamma[:, c], lw=1, label=f"class {c}")
        ax[0].legend(loc="upper right", fontsize=8, ncol=gamma.shape[1])
    ax[0].set_ylabel(r"$\Gamma_i(t)$")

    ax[1].semilogy(t, static, lw=0.8, label="static loss")
    ax[1].semilogy(t, dyn, lw=0.8, label="dynamical loss")
    ax[1].legend(loc="upper right", fontsize=8)
    ax[1].set_ylabel("training loss")

    # One point per step: where lambda_max crosses 2/lr the points split into 2, 4, ... branches.
    ax[2].plot(t[1:], np.diff(dyn), ",", color="k", rasterized=True)
    ax[2].set_ylabel(r"$F(t) - F(t-1)$")

    if history is not None:
        for key, label in (("train/acc", "training"), ("val/acc", "validation")):
            if key in history:
                h = history[["step", key]].dropna()
                ax[3].plot(h["step"], h[key], lw=1, label=label)
        ax[3].legend(loc="lower right", fontsize=8)
    ax[3].set_ylabel("accuracy")

    sharp = history[["step", "sharpness/lambda_max"]].dropna() if history is not None and "sharpness/lambda_max" in history else None
    if sharp is not None and len(sharp):
        ax[4].plot(sharp["step"], sharp["sharpness/lambda_max"], lw=1, label=r"$\lambda_{max}$")
        thr = history["sharpness/threshold"].dropna() if "sharpness/threshold" in history else pd.Series(dtype=float)
        if len(thr):
            ax[4].axhline(float(thr.iloc[-1]), color="r", ls="--", lw=1, label=_threshold_label(config))
        ax[4].legend(loc="upper right", fontsize=8)
    else:
        ax[4].text(0.5, 0.5, "sharpness not measured (sharpness.every=0)", ha="center", va="center", transform=ax[4].transAxes)
    ax[4].set_ylabel("sharpness")
    ax[4].set_xlabel("step")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)  # no bbox_inches="tight": the size in pixels stays DYNAMICS_SIZE * DPI
    plt.close(fig)
    return out


def _threshold_label(config: dict) -> str:
    o = config["optim"]
    if o["name"] == "adam":
        return r"$(2 + 2\beta_1) / ((1 - \beta_1)\,\eta)$ (preconditioned)"
    return r"$(2 + 2\beta)/\eta$" if o.get("momentum") else r"$2/\eta$"


def find_jobs(sweep_dir: Path) -> list[Path]:
    """Job directories under a sweep (any depth): a config.yaml next to a history.csv.

    Hidden folders are skipped: Hydra's .hydra/config.yaml is the unresolved config, and W&B's
    wandb/*/files/config.yaml is not a job either (neither has a history.csv beside it).
    """
    sweep_dir = Path(sweep_dir)
    jobs = []
    for cfg in sorted(sweep_dir.glob("**/config.yaml")):
        rel = cfg.relative_to(sweep_dir).parts
        if any(p.startswith(".") for p in rel) or not (cfg.parent / "history.csv").exists():
            continue
        jobs.append(cfg.parent)
    return jobs


def _mean_band(series: list[pd.Series]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """step, mean, and a band of one std either side, kept inside the seeds' range (positive for log axes)."""
    frame = pd.concat(series, axis=1).sort_index()
    mean, std = frame.mean(axis=1), frame.std(axis=1, ddof=0)
    lo = np.maximum(mean - std, frame.min(axis=1))
    hi = np.minimum(mean + std, frame.max(axis=1))
    return frame.index.to_numpy(), mean.to_numpy(), lo.to_numpy(), hi.to_numpy()


def fig1(sweep_dir: Path, out: Path | None = None) -> Path:
    """The second paper's Fig. 1: mean and spread over seeds of the loss and lambda_max, one curve per (width, lr)."""
    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir / "fig1.png"
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no job directories (config.yaml with history.csv) under {sweep_dir}")
    runs = []
    for job in jobs:
        config, history = _read_config(job), _read_csv(job / "history.csv")
        if history is not None and len(history):
            runs.append((config, history))
    several_losses = len({c["loss"]["name"] for c, _ in runs}) > 1
    groups: dict[tuple, list[tuple[dict, pd.DataFrame]]] = {}
    for config, history in runs:
        key = (config["model"]["width"], float(config["optim"]["lr"])) + ((config["loss"]["name"],) if several_losses else ())
        groups.setdefault(key, []).append((config, history))

    plt = _pyplot()
    fig, (ax_loss, ax_sharp) = plt.subplots(2, 1, figsize=FIG1_SIZE, dpi=DPI, sharex=True)
    colors = plt.get_cmap("tab10")
    for i, (key, members) in enumerate(sorted(groups.items())):
        color = colors(i % 10)
        label = f"width {key[0]}, lr {key[1]:g}" + (f", {key[2]}" if several_losses else "") + f" ({len(members)} runs)"
        loss = [h.set_index("step")["train/dyn_loss"].dropna() for _, h in members]
        t, mean, lo, hi = _mean_band(loss)
        ax_loss.plot(t, mean, color=color, lw=1.2, label=label)
        ax_loss.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0)
        sharp = [h.set_index("step")["sharpness/lambda_max"].dropna() for _, h in members if "sharpness/lambda_max" in h]
        sharp = [s for s in sharp if len(s)]
        if sharp:
            t, mean, lo, hi = _mean_band(sharp)
            ax_sharp.plot(t, mean, color=color, lw=1.2, label=label)
            ax_sharp.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0)
            thr = members[0][1]["sharpness/threshold"].dropna() if "sharpness/threshold" in members[0][1] else None
            if thr is not None and len(thr):
                ax_sharp.axhline(float(thr.iloc[0]), color=color, ls="--", lw=0.8)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(fontsize=8)
    ax_sharp.set_ylabel(r"$\lambda_{max}$ (dashed: $2/\eta$)")
    ax_sharp.set_xlabel("step")
    if not ax_sharp.lines:
        ax_sharp.text(0.5, 0.5, "sharpness not measured (sharpness.every=0)", ha="center", va="center", transform=ax_sharp.transAxes)
    fig.suptitle(f"{sweep_dir}: mean and one std over seeds", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def log_dynamics_figure(recorder) -> None:
    """At the end of a run with W&B on: write JOB_DIR/dynamics.png and put it in the run as a wandb.Image.

    Nothing happens with W&B off (figures cost ~1 s each: sweeps of many short runs should not pay
    it); any error is a warning, never a failed run.
    """
    run = getattr(getattr(recorder, "tracker", None), "run", None)
    if run is None:
        return
    try:
        history = getattr(recorder, "history", None)
        if history is not None and hasattr(history, "flush"):
            history.flush()  # the figure reads history.csv
        path = dynamics(recorder.dir)
        import wandb

        # In the summary, not a history row: the run's history stays its metric rows, one per step.
        run.summary["figures/dynamics"] = wandb.Image(str(path))
    except Exception as e:  # noqa: BLE001
        log.warning("dynamics figure not logged to W&B (%s: %s); the run is unaffected", type(e).__name__, e)


def width(path: Path, out: Path | None = None) -> Path:
    """Validation accuracy against width; lives in runner.plot_width (imported here only when asked for)."""
    from runner.plot_width import plot_width

    return plot_width(path, out)


# name -> (what the positional argument is, help, function(path, out) -> written file)
COMMANDS: dict[str, tuple[str, str, Callable[[Path, Path | None], Path]]] = {
    "dynamics": ("JOB_DIR", "one run: Gamma, losses, F(t) - F(t-1), accuracy, lambda_max", dynamics),
    "fig1": ("SWEEP_DIR", "a sweep: loss and lambda_max against time, mean and spread per (width, lr)", fig1),
    "width": ("SWEEP_DIR", "sweeps: val/acc against width, mean and spread over seeds, per loss and (A, T)", width),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.plot", description="Figures from runner job directories.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (arg, help_, func) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("path", metavar=arg, type=Path)
        p.add_argument("--out", type=Path, default=None, help="the PNG to write (default: inside the directory)")
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    try:
        out = args.func(args.path, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
