"""The papers' main figure: validation accuracy against network width, one line per loss and (A, T).

  python -m runner.plot width SWEEP_DIR [--out width.png]      (SWEEP_DIR may hold several sweeps)
  python -m runner.plot_width SWEEP_DIR [SWEEP_DIR ...] [--out width.png] [--metric best_val_acc]

Each point is the mean over seeds of the finished runs with that width, loss and (A, T); the band
is +- one standard deviation, the label says how many seeds. Cross-entropy losses (ce, dce) and MSE
losses (mse, dmse1, dmse2) get one panel each, so a dynamical loss sits next to its static version.
Diverged, failed and unfinished runs are left out of the means and counted in the panel title.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from runner.aggregate import collect  # noqa: E402

FAMILIES = {"cross-entropy": ("ce", "dce"), "MSE": ("mse", "dmse1", "dmse2")}
COLORS = {"ce": "black", "dce": "tab:red", "mse": "black", "dmse1": "tab:blue", "dmse2": "tab:green"}
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "v", "D", "x")
LINE = ["loss", "A", "T"]
# Settings that, when they vary within one (loss, A, T), split it into several lines instead of being
# averaged together with the seeds (e.g. the two learning rates of a fig1 sweep).
OTHER = ["lr", "depth", "dataset", "optimizer", "steps"]


def line_keys(runs: pd.DataFrame) -> list[str]:
    """loss, A, T and every other setting that varies within one of their groups."""
    extra = [c for c in OTHER if c in runs and runs.groupby(LINE, dropna=False)[c].nunique(dropna=False).max() > 1]
    return LINE + extra


def width_table(runs: pd.DataFrame, metric: str = "final_val_acc") -> pd.DataFrame:
    """Mean, std and count of `metric` over seeds, per line (line_keys) and width, finished runs only."""
    done = runs[runs["status"] == "finished"].copy()
    done[metric] = pd.to_numeric(done[metric], errors="coerce")
    keys = [*line_keys(done), "width"]
    # dropna=False: static losses have no A and T (NaN) and must still form their group
    table = done.groupby(keys, dropna=False)[metric].agg(["mean", "std", "count"]).reset_index()
    return table.sort_values(keys, na_position="first").reset_index(drop=True)


def _label(loss: str, A, T, extra: dict, n: int) -> str:
    at = "" if pd.isna(A) else f" A={A:g} T={T:g}"
    more = "".join(f" {k}={v:g}" if isinstance(v, float) else f" {k}={v}" for k, v in extra.items())
    return f"{loss}{at}{more} (n={n})"


def plot_width(sweep_dirs: str | Path | list[str | Path], out: str | Path | None = None, metric: str = "final_val_acc") -> Path:
    """Draw the figure from one or more sweep folders (e.g. the static and dynamic halves); returns the PNG path."""
    dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else sweep_dirs)]
    runs = pd.concat([collect(d) for d in dirs], ignore_index=True)
    if runs.empty:
        raise FileNotFoundError(f"no job folders under {', '.join(map(str, dirs))}")
    table = width_table(runs, metric)
    if table.empty:
        raise FileNotFoundError(f"no finished runs under {', '.join(map(str, dirs))}")  # nothing to draw
    families = [(name, losses) for name, losses in FAMILIES.items() if table["loss"].isin(losses).any()]
    others = sorted(set(table["loss"]) - {loss for _, losses in FAMILIES.items() for loss in losses})
    if others:
        families.append(("other", tuple(others)))
    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 4.2), sharey=True, squeeze=False)
    for ax, (name, losses) in zip(axes[0], families):
        sub = table[table["loss"].isin(losses)]
        extra = [c for c in table.columns if c in OTHER]
        for loss in losses:
            groups = list(sub[sub["loss"] == loss].groupby(["A", "T", *extra], dropna=False, sort=True))
            for i, ((A, T, *values), g) in enumerate(groups):
                g = g.sort_values("width")
                color = COLORS.get(loss)
                style = LINESTYLES[i % len(LINESTYLES)]
                n = int(g["count"].min())
                ax.plot(
                    g["width"],
                    g["mean"],
                    style,
                    marker=MARKERS[i % len(MARKERS)],
                    ms=3,
                    color=color,
                    label=_label(loss, A, T, dict(zip(extra, values)), n),
                )
                std = g["std"].fillna(0.0)
                ax.fill_between(g["width"], g["mean"] - std, g["mean"] + std, color=color, alpha=0.12, lw=0)
        fam = runs[runs["loss"].isin(losses)]
        left_out = int((fam["status"] != "finished").sum())
        ax.set_title(f"{name}" + (f" ({left_out} unfinished/diverged runs left out)" if left_out else ""), fontsize=10)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width (hidden units)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(metric.replace("_", " ") + " (mean +- std over seeds)")
    fig.tight_layout()
    out = Path(out) if out is not None else dirs[0] / "width.png"
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `width` subcommand's arguments (shared with runner.plot)."""
    parser.add_argument("sweep_dirs", nargs="+", type=Path, help="sweep folders (any folder above job folders)")
    parser.add_argument("-o", "--out", type=Path, default=None, help="PNG path (default: FIRST_SWEEP_DIR/width.png)")
    parser.add_argument("--metric", default="final_val_acc", help="a result column: final_val_acc (default), best_val_acc, ...")


def run_from_args(args: argparse.Namespace) -> int:
    try:
        path = plot_width(args.sweep_dirs, args.out, args.metric)
    except FileNotFoundError as e:
        print(f"plot width: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.plot_width", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
