"""Data sets: generated 2-D problems and the 8x8 digits that scikit-learn ships (nothing downloads).

Each builder returns float64 arrays drawn with its own numpy Generator; the validation set is an
independent draw (generated problems) or a disjoint split (digits), and inputs are standardised with
the training set's mean and std.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DATASETS = ("spiral", "moons", "circles", "blobs", "xor", "digits")
# Classes each generated problem can have; None = any C >= 2.
FIXED_CLASSES = {"moons": 2, "xor": 2}
DIGITS_MAX_PER_CLASS = 174  # the rarest digit has 174 images in scikit-learn's copy
VAL_SEED_OFFSET = 1_000_003  # the validation draw's seed: far from any training seed a user sweeps


@dataclass
class Split:
    x: torch.Tensor  # [P, d]
    y: torch.Tensor  # [P] int64 labels


@dataclass
class Data:
    train: Split
    val: Split
    classes: int

    @property
    def features(self) -> int:
        return self.train.x.shape[1]

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Data:
        def move(s: Split) -> Split:
            return Split(s.x.to(device=device, dtype=dtype), s.y.to(device))

        return Data(move(self.train), move(self.val), self.classes)


def spiral(n: int, classes: int, noise: float, rng: np.random.Generator, grid: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """C arms of two turns each, Gaussian noise on the angle (METHOD.md section 4).

    grid=True (training): r evenly spaced in [0, 1], as the authors. grid=False (validation): r drawn
    uniformly in [0, 1], the same distribution along the arm; a grid would repeat the training radii,
    and r = 0 would put one point of every arm exactly on a training point (the origin).
    """
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.0, 1.0, n) if grid else np.sort(rng.uniform(0.0, 1.0, n))
        start = 2 * np.pi * k / classes
        angle = start + 4 * np.pi * r + rng.normal(0.0, noise, n)
        xs.append(np.stack([r * np.cos(angle), r * np.sin(angle)], 1))
        ys.append(np.full(n, k))
    return np.concatenate(xs), np.concatenate(ys)


def moons(n: int, classes: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles (as scikit-learn's make_moons), Gaussian noise on x and y."""
    a = rng.uniform(0.0, np.pi, n)
    b = rng.uniform(0.0, np.pi, n)
    x = np.concatenate([np.stack([np.cos(a), np.sin(a)], 1), np.stack([1 - np.cos(b), 0.5 - np.sin(b)], 1)])
    return x + rng.normal(0.0, noise, x.shape), np.repeat(np.arange(2), n)


def circles(n: int, classes: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """C concentric rings of radius 1..C, Gaussian noise on the radius."""
    xs, ys = [], []
    for k in range(classes):
        a = rng.uniform(0.0, 2 * np.pi, n)
        r = (k + 1) + rng.normal(0.0, noise, n)
        xs.append(np.stack([r * np.cos(a), r * np.sin(a)], 1))
        ys.append(np.full(n, k))
    return np.concatenate(xs), np.concatenate(ys)


def blobs(n: int, classes: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """C Gaussian blobs of std `noise` with centres evenly spaced on the unit circle."""
    angle = 2 * np.pi * np.arange(classes) / classes
    centres = np.stack([np.cos(angle), np.sin(angle)], 1)
    y = np.repeat(np.arange(classes), n)
    return centres[y] + rng.normal(0.0, noise, (len(y), 2)), y


def xor(n: int, classes: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Four Gaussian clusters at (+-1, +-1); the label is the XOR of the two signs."""
    signs = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=float)
    half = [n // 2, n - n // 2] * 2  # n points per class, split over its two clusters
    x = np.concatenate([s + rng.normal(0.0, noise, (m, 2)) for s, m in zip(signs, half)])
    return x, np.repeat([0, 0, 1, 1], half)


GENERATORS = {"spiral": spiral, "moons": moons, "circles": circles, "blobs": blobs, "xor": xor}


def digits(n_train: int, n_val: int, classes: int, rng: np.random.Generator):
    """scikit-learn's 8x8 digits 0..C-1 (shipped inside the package): disjoint per-class split."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    tr, va = [], []
    for k in range(classes):
        idx = rng.permutation(np.flatnonzero(y == k))
        tr.append(idx[:n_train])
        va.append(idx[n_train : n_train + n_val])
    tr, va = np.concatenate(tr), np.concatenate(va)
    return (x[tr], y[tr]), (x[va], y[va])


def standardise(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(0)
    std = train.std(0)
    std[std == 0] = 1.0  # constant pixels of the digits
    return (train - mean) / std, (val - mean) / std


def make_data(name: str, classes: int, n_train: int, n_val: int, noise: float, seed: int) -> Data:
    """Build a data set from its config values (see conf/dataset/*.yaml)."""
    if name == "digits":
        (xt, yt), (xv, yv) = digits(n_train, n_val, classes, np.random.default_rng(seed))
    elif name in GENERATORS:
        gen = GENERATORS[name]
        xt, yt = gen(n_train, classes, noise, np.random.default_rng(seed))
        val_rng = np.random.default_rng(seed + VAL_SEED_OFFSET)
        xv, yv = spiral(n_val, classes, noise, val_rng, grid=False) if name == "spiral" else gen(n_val, classes, noise, val_rng)
    else:
        raise ValueError(f"dataset.name={name!r}: allowed values are {', '.join(DATASETS)}")
    xt, xv = standardise(xt, xv)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)), torch.from_numpy(y.astype(np.int64)))

    return Data(split(xt, yt), split(xv, yv), classes)


def data_from_config(cfg) -> Data:
    """From a composed config (DictConfig) or the resolved plain dict of one."""
    d = cfg["dataset"]
    return make_data(d["name"], int(d["classes"]), int(d["n_train"]), int(d["n_val"]), float(d["noise"]), int(d["seed"]))
