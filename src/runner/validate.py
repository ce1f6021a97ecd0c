"""Checks of a composed config before any work starts: one line per problem, naming key and allowed values."""

from __future__ import annotations

import numbers

import torch

from runner.data import DATASETS, DIGITS_MAX_PER_CLASS, FIXED_CLASSES
from runner.losses import LOSSES
from runner.model import ACTIVATIONS, INITS
from runner.optim import OPTIMIZERS
from runner.schedule import SHAPES
from runner.tracking import MODES


class ConfigError(ValueError):
    """A config value the runner cannot use; str() is one line per problem."""


def _num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def problems(cfg: dict) -> list[str]:
    """Every problem of a resolved config (a plain dict), as `key=value: what is allowed` lines."""
    out: list[str] = []

    def need(ok: bool, key: str, value, allowed: str) -> None:
        if not ok:
            out.append(f"{key}={value!r}: {allowed}")

    def choice(key: str, value, allowed) -> None:
        need(value in allowed, key, value, "allowed values are " + ", ".join(map(str, allowed)))

    def integer(key: str, value, low: int) -> None:
        need(_int(value) and value >= low, key, value, f"must be an integer >= {low}")

    d, m, lo, o, t, w = (cfg.get(k, {}) for k in ("dataset", "model", "loss", "optim", "train", "wandb"))
    choice("dataset.name", d.get("name"), DATASETS)
    integer("dataset.classes", d.get("classes"), 2)
    integer("dataset.n_train", d.get("n_train"), 1)
    integer("dataset.n_val", d.get("n_val"), 1)
    need(_num(d.get("noise")) and d.get("noise") >= 0, "dataset.noise", d.get("noise"), "must be a number >= 0")
    integer("dataset.seed", d.get("seed"), 0)
    name, classes = d.get("name"), d.get("classes")
    if name in FIXED_CLASSES and classes != FIXED_CLASSES[name]:
        out.append(f"dataset.classes={classes!r}: dataset {name} has exactly {FIXED_CLASSES[name]} classes")
    if name == "digits":
        need(_int(classes) and classes <= 10, "dataset.classes", classes, "digits has at most 10 classes")
        total = (d.get("n_train") or 0) + (d.get("n_val") or 0) if _int(d.get("n_train")) and _int(d.get("n_val")) else 0
        need(total <= DIGITS_MAX_PER_CLASS, "dataset.n_train+n_val", total, f"digits has {DIGITS_MAX_PER_CLASS} images per class at most")

    integer("model.width", m.get("width"), 1)
    integer("model.depth", m.get("depth"), 1)
    choice("model.activation", m.get("activation"), ACTIVATIONS)
    choice("model.init", m.get("init"), INITS)

    choice("loss.name", lo.get("name"), list(LOSSES))
    need(_num(lo.get("A")) and lo.get("A") >= 1, "loss.A", lo.get("A"), "must be a number >= 1")
    need(_num(lo.get("T")) and lo.get("T") >= 1, "loss.T", lo.get("T"), "must be a number >= 1 (steps)")
    choice("loss.shape", lo.get("shape"), SHAPES)
    need(isinstance(lo.get("normalize"), bool), "loss.normalize", lo.get("normalize"), "must be true or false")
    need(_num(lo.get("phase")) and 0 <= lo.get("phase") < 1, "loss.phase", lo.get("phase"), "must be a number in [0, 1)")
    sf = lo.get("static_from")
    need(sf is None or (_int(sf) and sf >= 0), "loss.static_from", sf, "must be null or an integer >= 0")

    choice("optim.name", o.get("name"), OPTIMIZERS)
    need(_num(o.get("lr")) and o.get("lr") > 0, "optim.lr", o.get("lr"), "must be a number > 0")
    need(_num(o.get("momentum")) and 0 <= o.get("momentum") < 1, "optim.momentum", o.get("momentum"), "must be a number in [0, 1)")
    bs = o.get("batch_size")
    need(bs is None or (_int(bs) and bs >= 1), "optim.batch_size", bs, "must be null (full batch) or an integer >= 1")
    if _int(bs) and _int(d.get("n_train")) and _int(classes) and bs > d["n_train"] * classes:
        out.append(f"optim.batch_size={bs!r}: larger than the training set ({d['n_train'] * classes} points)")
    for key in ("beta1", "beta2"):
        need(_num(o.get(key)) and 0 <= o.get(key) < 1, f"optim.{key}", o.get(key), "must be a number in [0, 1)")
    need(_num(o.get("eps")) and o.get("eps") > 0, "optim.eps", o.get("eps"), "must be a number > 0")

    integer("train.steps", t.get("steps"), 1)
    integer("train.eval_every", t.get("eval_every"), 1)
    choice("train.dtype", t.get("dtype"), ("float32", "float64"))
    choice("train.device", t.get("device"), ("auto", "cpu", "cuda"))
    if t.get("device") == "cuda" and not torch.cuda.is_available():
        out.append("train.device='cuda': no CUDA device is present here; use auto or cpu")
    th = t.get("threads")
    need(th is None or (_int(th) and th >= 1), "train.threads", th, "must be null or an integer >= 1")
    integer("seed", cfg.get("seed"), 0)
    choice("wandb.mode", w.get("mode"), MODES)
    return out


def validate(cfg: dict) -> None:
    found = problems(cfg)
    if found:
        raise ConfigError("\n".join(f"invalid config: {p}" for p in found))
