"""What one run leaves in its job directory, written as it trains.

config.yaml     the resolved config (written first)
history.csv     one row per evaluation; streamed: rows are buffered (at most HISTORY_BUFFER of them) and
                the file is rewritten atomically with them appended, at most every few seconds and at
                the end, so a reader always sees a whole file and memory stays bounded
steps.csv       the training loss and the dynamical loss at every step, appended chunk by chunk (one
                write of whole lines per chunk; not atomic: a reader of a *running* job may see a
                partial last line, and a resumed run cuts the file back to its checkpoint)
weights.pt      the final weights (augmented [out, in + 1] matrices, see model.py)
result.json     the summary; written last, so its presence with status "finished" marks a finished run
checkpoint.pt   the training state while a run with train.checkpoint_every > 0 trains (checkpoint.py)
wandb/          the W&B run (offline unless wandb.mode says otherwise)
"""

from __future__ import annotations

import io
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from runner.files import atomic_write, atomic_write_bytes, to_yaml, write_json, write_text
from runner.tracking import Tracker

HISTORY_REWRITE_S = 5.0  # the longest a finished evaluation row waits before it is on disk
HISTORY_BUFFER = 1000  # rows held in memory at most
FLOAT_FORMAT = "%.17g"  # round-trips float64 exactly
STEPS_HEADER = "step,train/loss,train/dyn_loss\n"


class HistoryFile:
    """history.csv, appended by atomic rewrites: a bounded buffer in memory, the rest on disk.

    Each flush copies the file on disk plus the buffered rows into a temporary file and renames it
    over history.csv. The rewrite interval grows with the cost of the copy (never more than ~5% of
    the time is spent copying), so a very long history does not turn the flushes quadratic.
    """

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] | None = None
        self.pending: list[dict] = []
        self.rows = 0  # on disk
        self._last_flush = time.monotonic()
        self._interval = HISTORY_REWRITE_S

    def start(self) -> None:
        self.path.unlink(missing_ok=True)  # a rerun in this folder starts a new history

    def restore(self, n_bytes: int, rows: int) -> None:
        """Cut history.csv back to the first n_bytes (a checkpoint's length), atomically."""
        if not self.path.exists() or self.path.stat().st_size < n_bytes:
            raise FileNotFoundError(f"{self.path} is shorter than its checkpoint says ({n_bytes} bytes)")
        with open(self.path, "rb") as f:
            head = f.read(n_bytes)
        atomic_write_bytes(self.path, head)
        self.columns = head.decode().split("\n", 1)[0].split(",") if head else None
        self.rows = rows

    def add(self, row: dict) -> None:
        self.pending.append(row)
        if len(self.pending) >= HISTORY_BUFFER or time.monotonic() - self._last_flush > self._interval:
            self.flush()

    def flush(self) -> int:
        """Write the buffered rows; returns the file's size in bytes."""
        if self.pending:
            tic = time.monotonic()
            keys = list(dict.fromkeys(k for r in self.pending for k in r))
            if self.columns is None or any(k not in self.columns for k in keys):
                self._rewrite(keys)  # new columns (the first rows, or a metric that appears later)
            else:
                frame = pd.DataFrame(self.pending, columns=self.columns)
                atomic_write(self.path, lambda p: self._append_copy(p, frame))
            self.rows += len(self.pending)
            self.pending = []
            self._last_flush = time.monotonic()
            self._interval = max(HISTORY_REWRITE_S, 20 * (self._last_flush - tic))
        return self.path.stat().st_size if self.path.exists() else 0

    def _append_copy(self, tmp: Path, frame: pd.DataFrame) -> None:
        with open(tmp, "wb") as out:
            with open(self.path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            out.write(frame.to_csv(header=False, index=False, float_format=FLOAT_FORMAT).encode())

    def _rewrite(self, keys: list[str]) -> None:
        columns = list(self.columns or []) + [k for k in keys if k not in (self.columns or [])]
        # The old rows are re-read as text and written back verbatim (no float re-parsing), with an
        # empty cell in each new column: the file equals a one-shot write of all rows.
        old = pd.read_csv(self.path, dtype=str, keep_default_na=False) if self.path.exists() and self.rows else None
        frame = pd.DataFrame(self.pending, columns=columns)

        out = io.StringIO()  # in memory, then one atomic write (one open of the temporary file, not three)
        out.write(",".join(columns) + "\n")
        if old is not None:
            old.reindex(columns=columns, fill_value="").to_csv(out, header=False, index=False)
        frame.to_csv(out, header=False, index=False, float_format=FLOAT_FORMAT)
        atomic_write_bytes(self.path, out.getvalue().encode())
        self.columns = columns


class RunRecorder:
    """The files of one run; `resume` is the recorder state of a checkpoint (see state())."""

    def __init__(self, config: dict, job_dir: Path, name: str, group: str | None, resume: dict | None = None):
        self.config = config
        self.dir = Path(job_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.record_steps = bool(config["train"]["record_steps"])
        self.history = HistoryFile(self.dir / "history.csv")
        self.last_row: dict = {}
        self.best_val_acc: float | None = None
        self.steps_rows = 0
        write_text(self.dir / "config.yaml", to_yaml(config))
        (self.dir / "result.json").unlink(missing_ok=True)  # a rerun in this folder is not finished yet
        if resume is None:
            self.history.start()
            if self.record_steps:
                (self.dir / "steps.csv").write_text(STEPS_HEADER)
        else:
            self._restore(resume)
        self.tracker = Tracker(config, self.dir, name, group, run_id=(resume or {}).get("wandb_id"))

    def _restore(self, state: dict) -> None:
        self.history.restore(state["history_bytes"], state["history_rows"])
        self.last_row, self.best_val_acc = dict(state["last_row"]), state["best_val_acc"]
        if self.record_steps:
            steps = self.dir / "steps.csv"
            if not steps.exists() or steps.stat().st_size < state["steps_bytes"]:
                raise FileNotFoundError(f"{steps} is shorter than its checkpoint says")
            os.truncate(steps, state["steps_bytes"])  # drop the steps after the checkpoint
            self.steps_rows = state["steps_rows"]

    def state(self) -> dict:
        """What a checkpoint needs to continue these files exactly (plain types: torch.load weights_only)."""
        steps = self.dir / "steps.csv"
        return {
            "history_bytes": self.history.flush(),
            "history_rows": self.history.rows,
            "steps_bytes": steps.stat().st_size if self.record_steps else 0,
            "steps_rows": self.steps_rows,
            "last_row": dict(self.last_row),
            "best_val_acc": self.best_val_acc,
            "wandb_id": self.tracker.run_id,
        }

    def add_row(self, row: dict) -> None:
        self.last_row = row
        acc = row.get("val/acc")
        if acc is not None and (self.best_val_acc is None or acc > self.best_val_acc):
            self.best_val_acc = acc
        self.history.add(row)
        self.tracker.log(row)

    def add_steps(self, first_step: int, losses: np.ndarray) -> None:
        """losses: [K, 2] (static, dynamical) for steps first_step .. first_step + K - 1."""
        if not self.record_steps or len(losses) == 0:
            return
        rows = zip(range(first_step, first_step + len(losses)), losses[:, 0].tolist(), losses[:, 1].tolist())
        text = "".join(f"{t},{a:.17g},{b:.17g}\n" for t, a, b in rows)  # np.savetxt's text, 2x faster
        with open(self.dir / "steps.csv", "a") as f:
            f.write(text)  # one write per chunk: whole lines
        self.steps_rows += len(losses)

    def finish(self, result: dict, weights: list[torch.Tensor] | None) -> None:
        """Local files first, result.json last (it marks the run done), then W&B, which may be slow."""
        self.history.flush()
        if weights is not None:
            buffer = io.BytesIO()
            torch.save([w.cpu() for w in weights], buffer)
            atomic_write_bytes(self.dir / "weights.pt", buffer.getvalue())
        write_json(self.dir / "result.json", result)
        summary = {k: v for k, v in result.items() if k != "config" and isinstance(v, (int, float, str)) and v is not None}
        self.tracker.finish(summary, status=result["status"])
