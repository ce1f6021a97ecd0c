"""Sharpness: the top Hessian eigenvalues of the loss being minimised, for a stack of M runs.

lambda_max of the dynamical loss at the current Gamma(t) on the full training set (METHOD.md
section 5), by Lanczos on Hessian-vector products. Three choices keep it cheap enough to measure
every 25 steps of a ~100 microsecond training step:
- the product is hand-written (Pearlmutter's R-operator) in model.py's column layout: one forward and
  backward pass per measurement, then each product is an R-forward and R-backward pass of ~15 batched
  ops, instead of autograd's double backward that rebuilds a graph every time;
- Lanczos starts from the previous measurement's top Ritz vectors and stops as soon as the error
  estimate of each top-k Ritz value, from its residual, is below `tol` (relative): 2-6 products, not 20;
- the Hessian of the sum of the stacked runs' losses is block-diagonal (runs share no weights), so one
  product of the summed loss serves every run; dot products and norms are per run (vectors are
  [M, N], reductions over N only).
Vectors are flat [M, N]: run m's weights of every layer, in layer order, each [out, in + 1] row-major.
Activation-sized buffers are reused from one measurement to the next (Workspace).
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pandas as pd
import torch

from runner.losses import LossHead, stack_loss
from runner.optim import StackedAdam, stability_threshold

log = logging.getLogger(__name__)


class FlatLayout:
    """Views of a flat [M, N] vector as the stack's per-layer [M, out, in + 1] tensors."""

    def __init__(self, shapes: list[tuple[int, int]]):
        self.shapes = shapes
        self.sizes = [o * i for o, i in shapes]
        self.numel = sum(self.sizes)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for (o, i), n in zip(self.shapes, self.sizes):
            out.append(flat[:, start : start + n].view(flat.shape[0], o, i))
            start += n
        return out

    def flatten(self, layers: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([x.reshape(x.shape[0], -1) for x in layers], 1)


def _derivatives(z: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(sigma(z), sigma'(z), sigma''(z)); ReLU's second derivative is zero almost everywhere: None."""
    if activation == "relu":
        a = z.relu_()
        return a, torch.sign(a), None  # a >= 0: sign(a) is the 0/1 derivative in one op
    if activation == "tanh":
        a = z.tanh()
        d1 = 1 - a * a
        return a, d1, -2 * a * d1
    if activation == "sigmoid":
        a = z.sigmoid()
        d1 = a * (1 - a)
        return a, d1, d1 * (1 - 2 * a)
    if activation == "gelu":  # exact (erf) GELU, as model.py uses: z Phi(z)
        phi = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
        cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
        return z * cdf, cdf + z * phi, phi * (2 - z * z)
    raise ValueError(f"model.activation={activation!r}: no Hessian-vector product for it")


class Workspace:
    """Buffers reused from one measurement to the next (same shapes every time).

    Fresh [width, P] tensors at every measurement cost page faults and cold caches: glibc hands
    blocks this size back to the system between measurements. Reusing them keeps the memory warm.
    """

    def __init__(self):
        self._bufs: dict = {}

    def get(self, name, shape, like: torch.Tensor, fill: float | None = None) -> torch.Tensor:
        key = (name, tuple(shape), like.dtype, like.device)
        buf = self._bufs.get(key)
        if buf is None:
            buf = torch.empty(shape, dtype=like.dtype, device=like.device)
            if fill is not None:
                buf.fill_(fill)  # set once: e.g. the ones row of an augmented activation
            self._bufs[key] = buf
        return buf


class StackHessian:
    """v -> H v for the summed loss of a stack at fixed weights and Gamma (M runs, [M, N] vectors).

    The loss is the true loss (learning rate not folded in): (1/P) sum_c Gamma_c s_c as in losses.py.
    `precond` [M, N], if given, makes the operator diag(precond) H diag(precond) (Adam's preconditioned
    sharpness, symmetric so Lanczos still applies).
    Every batched matmul here takes contiguous tensors or plain transposes of them: strided views
    (a layer's slice of a flat vector, W without its bias column) send bmm to a slow path, tens of
    times slower with two threads on a busy machine. So R{h} keeps the zero in its ones row, and the
    full weights (bias column included) multiply it. Activation-sized tensors live in `workspace`
    (valid until the next StackHessian built on the same workspace).
    """

    def __init__(
        self,
        weights: list[torch.Tensor],
        activation: str,
        xa: torch.Tensor,
        head: LossHead,
        gamma: torch.Tensor,
        precond: torch.Tensor | None = None,
        workspace: Workspace | None = None,
    ):
        M = weights[0].shape[0]
        ws = self.ws = workspace or Workspace()
        self.layout = FlatLayout([tuple(w.shape[1:]) for w in weights])
        self.M = M
        self.precond = precond
        self.w = [w.contiguous() for w in weights]
        self.w_t = [w.transpose(1, 2) for w in self.w]
        # Forward pass, keeping what the R-passes need.
        h = xa.expand(M, -1, -1).contiguous()
        P = h.shape[-1]
        self.hs, self.d1, self.d2 = [h], [], []
        for layer, w in enumerate(self.w[:-1]):
            z = torch.bmm(w, h, out=ws.get(("z", layer), (M, w.shape[1], P), h))
            h = ws.get(("h", layer), (M, w.shape[1] + 1, P), h, fill=1.0)  # its last row stays 1
            if activation == "relu":
                a = torch.clamp_min(z, 0, out=h[:, :-1])
                d1, d2 = torch.sign(a, out=ws.get(("d1", layer), a.shape, a)), None  # a >= 0: sign(a) is relu'
            else:
                a, d1, d2 = _derivatives(z, activation)
                h[:, :-1].copy_(a)
            self.hs.append(h)
            self.d1.append(d1)
            self.d2.append(d2)
        self.hs_t = [x.transpose(1, 2) for x in self.hs]
        f = torch.bmm(self.w[-1], h)
        # R{h} buffers: R{a} on top of a row of zeros (the ones row does not vary).
        self.rh = [ws.get(("rh", layer), (M, w.shape[2], P), h, fill=0.0) for layer, w in enumerate(self.w[1:])]
        self.rh_t = [x.transpose(1, 2) for x in self.rh]
        # dLoss/dOutputs and the loss's Hessian with respect to the outputs (per sample, C x C).
        ow = head.output_weights(gamma[None], torch.ones(M, dtype=f.dtype, device=f.device))[0]
        if head.family == "ce":
            p = f.softmax(1)
            g = (p - head.targets) * ow
            self.p, self.pw = p, p * ow  # H_out u = w (diag(p) - p p^T) u
        else:
            g = (f - head.targets) * ow
            self.p, self.pw = None, ow  # H_out u = w u
        # Backward pass: each layer's delta, and for curved activations sigma'' * (W^T delta).
        L = len(weights)
        self.deltas: list[torch.Tensor] = [g] * L
        self.d2b: list[torch.Tensor | None] = [None] * L
        delta = g
        for layer in range(L - 1, 0, -1):
            self.deltas[layer] = delta
            b = torch.bmm(self.w_t[layer], delta, out=ws.get(("b", layer), (M, self.w[layer].shape[2], P), h))[:, :-1]
            d2 = self.d2[layer - 1]
            self.d2b[layer - 1] = None if d2 is None else d2 * b
            delta = torch.mul(self.d1[layer - 1], b, out=ws.get(("delta", layer - 1), b.shape, b))
        self.deltas[0] = delta

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if self.precond is not None:
            v = v * self.precond
        V = [x.contiguous() for x in self.layout.views(v)]
        L, ws, hs = len(V), self.ws, self.hs
        # R-forward: R{z} = V h + W R{h}; R{a} = sigma'(z) R{z}.
        rzs = []
        for layer in range(L - 1):
            rz = torch.bmm(V[layer], hs[layer], out=ws.get(("rz", layer), self.d1[layer].shape, v))
            if layer > 0:
                rz.baddbmm_(self.w[layer], self.rh[layer - 1])
            rzs.append(rz)
            torch.mul(rz, self.d1[layer], out=self.rh[layer][:, :-1])
        rf = torch.bmm(V[L - 1], hs[L - 1])
        if L > 1:
            rf.baddbmm_(self.w[L - 1], self.rh[L - 2])
        # R{dLoss/dOutputs} = H_out R{f}
        if self.p is not None:
            rdelta = (rf - (self.p * rf).sum(1, keepdim=True)).mul_(self.pw)
        else:
            rdelta = rf.mul_(self.pw)
        # R-backward: R{grad W_l} = R{delta_l} h_l^T + delta_l R{h_l}^T, layer by layer from the top.
        grads: list[torch.Tensor] = [None] * L  # type: ignore[list-item]
        for layer in range(L - 1, -1, -1):
            gr = torch.bmm(rdelta, self.hs_t[layer])
            grads[layer] = gr
            if layer == 0:
                break
            gr.baddbmm_(self.deltas[layer], self.rh_t[layer - 1])
            rb = torch.bmm(V[layer].transpose(1, 2), self.deltas[layer], out=ws.get(("rb", layer), self.rh[layer - 1].shape, v))
            rb.baddbmm_(self.w_t[layer], rdelta)
            rdelta = torch.mul(rb[:, :-1], self.d1[layer - 1], out=ws.get(("rdelta", layer - 1), self.d1[layer - 1].shape, v))
            if self.d2b[layer - 1] is not None:
                rdelta.addcmul_(self.d2b[layer - 1], rzs[layer - 1])
        out = self.layout.flatten(grads)
        if self.precond is not None:
            out.mul_(self.precond)
        return out


class Lanczos:
    """Top-k eigenvalues of M symmetric operators at once, warm-started from the last call's Ritz vectors.

    Full reorthogonalisation (classical Gram-Schmidt against every Lanczos vector: two batched
    matmuls; a second pass where the first one cancelled most of the vector) keeps the Ritz values
    free of ghost copies of converged ones.
    Stopping: after each product, the error of each top-k Ritz value theta is estimated from its
    residual r = beta_j |s_j| as min(r, r^2 / gap) (gap: distance to the next Ritz value); all runs
    stop when every estimate is below tol * |theta|. This needs no extra product to confirm, unlike
    comparing successive Ritz values. Warm-started, it typically stops after 3-5 products.
    """

    def __init__(self, k: int = 1, iters: int = 20, tol: float = 1e-6, seed: int = 0):
        self.k, self.iters, self.tol = int(k), int(iters), float(tol)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.ritz: torch.Tensor | None = None  # [M, k, N]
        self.last_iters = 0
        self.subspace: torch.Tensor | None = None  # [M, N] 0/1: coordinates the vectors may use (see top)

    def _random(self, M: int, N: int, like: torch.Tensor) -> torch.Tensor:
        r = torch.randn(M, N, generator=self.gen, dtype=torch.float64).to(dtype=like.dtype, device=like.device)
        return r if self.subspace is None else r * self.subspace

    def _start(self, M: int, N: int, like: torch.Tensor) -> torch.Tensor:
        if self.ritz is not None and self.ritz.shape[0] == M and self.ritz.shape[2] == N:
            q = self.ritz.sum(1)  # all previous top-k directions, so each of them is in the Krylov space
            norm = q.norm(dim=1, keepdim=True)
            ok = torch.isfinite(norm) & (norm > 0)
            if bool(ok.all()):
                return q / norm
            q = torch.where(ok, q, self._random(M, N, like))  # a run that had no finite vector starts afresh
        else:
            q = self._random(M, N, like)
        return q / q.norm(dim=1, keepdim=True)

    @staticmethod
    def _orthogonalise(w: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """w [M, N] minus its projection on the basis [M, j, N] (two ops); and the coefficients [M, j, 1]."""
        c = torch.bmm(basis, w[:, :, None])  # per-run dot products
        return torch.baddbmm(w[:, None], c.transpose(1, 2), basis, alpha=-1)[:, 0], c

    def _converged(self, theta: np.ndarray, last_row: np.ndarray, beta: np.ndarray, k: int, skip: np.ndarray) -> bool:
        """Whether every run's top-k Ritz values have error estimates below tol (relative).

        theta [M, j] ascending Ritz values, last_row [M, j] the last components of their eigenvectors.
        """
        if k == 1:  # the common case, in few numpy calls: this runs after every product
            top = theta[:, -1]
            resid = np.abs(beta * last_row[:, -1])
            err = np.minimum(resid, resid * resid / np.maximum(top - theta[:, -2], 1e-300))
            return bool(((err <= self.tol * np.abs(top)) | skip).all())
        top = theta[:, ::-1][:, :k]
        resid = np.abs(beta[:, None] * last_row[:, ::-1][:, :k])
        gap = np.zeros_like(top)  # no Ritz value below: the plain residual bound
        below = theta[:, ::-1][:, 1 : k + 1]
        gap[:, : below.shape[1]] = top[:, : below.shape[1]] - below
        err = np.minimum(resid, resid * resid / np.maximum(gap, 1e-300))
        return bool(((err <= self.tol * np.abs(top)).all(1) | skip).all())

    def top(
        self, matvec, M: int, N: int, like: torch.Tensor, active: np.ndarray | None = None, subspace: torch.Tensor | None = None
    ) -> np.ndarray:
        """[M, k] largest eigenvalues (descending) of each run's operator; NaN where not computable.

        subspace [M, N] (0/1), if given: the operator acts on those coordinates only (it must map into
        them too), e.g. a narrower run's real weights in a zero-padded stack.
        """
        self.subspace = subspace
        m = min(self.iters, N)  # a Krylov space has at most N dimensions
        k = min(self.k, m)
        skip = np.zeros(M, dtype=bool) if active is None else ~np.asarray(active, dtype=bool)
        Q = torch.empty(M, m, N, dtype=like.dtype, device=like.device)  # the Lanczos vectors
        Q[:, 0] = self._start(M, N, like)
        T = np.zeros((M, m, m))  # the tridiagonal projection, filled as it grows
        finite = np.ones(M, dtype=bool)  # a run whose product went non-finite gets NaN values
        scale = np.zeros(M)  # largest |alpha| + beta so far: the operator's norm, roughly
        for j in range(m):
            basis = Q[:, : j + 1]
            w, c = self._orthogonalise(matvec(Q[:, j]), basis)
            b = torch.linalg.vector_norm(w, dim=1, keepdim=True)
            host = torch.cat([c[:, j], b], 1).cpu().numpy()  # one transfer: alpha_j, beta_j of each run
            if not np.isfinite(host).all():
                finite &= np.isfinite(host).all(1)
                host = np.where(finite[:, None], host, 0.0)
            alpha, beta = host[:, 0].copy(), host[:, 1].copy()
            scale = np.maximum(scale, np.abs(alpha) + beta)
            if (beta < 1e-3 * scale).any():
                # H q lay almost in the basis: what is left in w is mostly rounding; project once more.
                w, c2 = self._orthogonalise(w, basis)
                b = torch.linalg.vector_norm(w, dim=1, keepdim=True)
                alpha += np.nan_to_num(c2[:, j, 0].cpu().numpy())
                beta = np.nan_to_num(b[:, 0].cpu().numpy().copy())
                # Breakdown: an invariant subspace was found (e.g. the start vector was an eigenvector).
                # Continue from a fresh random direction orthogonal to the basis, with a zero coupling.
                broken = ~(beta > 1e-10 * scale)
                if broken.any() and j < m - 1:
                    r = self._orthogonalise(self._orthogonalise(self._random(M, N, like), basis)[0], basis)[0]
                    mask = torch.from_numpy(broken).to(like.device)[:, None]
                    w = torch.where(mask, r, w)
                    b = torch.where(mask, torch.linalg.vector_norm(r, dim=1, keepdim=True), b)
                    beta = np.where(broken, 0.0, beta)
            T[:, j, j] = alpha
            theta, S = np.linalg.eigh(T[:, : j + 1, : j + 1])  # ascending
            self.last_iters = j + 1
            if j == m - 1 or (j + 1 >= max(k, 2) and self._converged(theta, S[:, j], beta, k, skip | ~finite)):
                break
            T[:, j, j + 1] = T[:, j + 1, j] = beta
            torch.div(w, b, out=Q[:, j + 1])
        j = self.last_iters
        top_vecs = torch.from_numpy(S[:, :, ::-1][:, :, :k].copy()).to(dtype=like.dtype, device=like.device)
        self.ritz = torch.bmm(top_vecs.transpose(1, 2), Q[:, :j])  # [M, k, N]: the next call's start
        values = np.full((M, self.k), np.nan)
        values[:, :k] = theta[:, ::-1][:, :k]
        values[~finite] = np.nan
        return values


def padding_mask(stack, layout: FlatLayout) -> torch.Tensor | None:
    """[M, N] 1 on each run's own weights, 0 on the zero padding of narrower runs; None without padding.

    Padded units stay zero in training, but the padded network's Hessian still couples a padded unit's
    incoming and outgoing weights through act'(0) (1 for tanh, 1/2 for gelu): restricted to the run's
    own weights it is the run's Hessian.
    """
    sizes = getattr(stack, "run_sizes", None)
    full = [stack.weights[0].shape[2] - 1] + [w.shape[1] for w in stack.weights]
    if not sizes or all(list(s) == full for s in sizes):
        return None
    layers = []
    for layer, w in enumerate(stack.weights):
        mask = torch.zeros_like(w)
        for m, s in enumerate(sizes):
            mask[m, : s[layer + 1], : s[layer]] = 1
            mask[m, : s[layer + 1], -1] = 1  # the bias column is always last
        layers.append(mask)
    return layout.flatten(layers)


def adam_preconditioner(opt: StackedAdam, layout: FlatLayout) -> torch.Tensor | None:
    """sqrt of P^-1 with P = (1 - beta1^t) diag(sqrt(v_hat) + eps), Adam's preconditioner at its last step.

    lambda_max(P^-1 H) is Adam's preconditioned sharpness (Cohen et al. 2022, "Adaptive gradient
    methods at the edge of stability"); it is stable below (2 + 2 beta1) / ((1 - beta1) lr).
    None before the first step, when Adam has no preconditioner yet.
    """
    if opt.t == 0:
        return None
    c1, c2 = 1 - opt.beta1**opt.t, 1 - opt.beta2**opt.t
    p = layout.flatten([(v / c2).sqrt().add_(opt.eps).mul_(c1) for v in opt.v])
    return p.rsqrt()


class SharpnessMonitor:
    """What the trainer calls: whether a step is measured, the measurement's row entries, the result fields.

    Off (sharpness.every = 0) it measures nothing and adds nothing, so the trainer needs no branches.
    """

    def __init__(self, jobs: list, stack, xa: torch.Tensor, labels: torch.Tensor, classes: int, opt):
        cfg = jobs[0].config
        sc = cfg.get("sharpness") or {}
        self.every = int(sc.get("every") or 0)
        self.pending: list[tuple] = []  # measurements inside the current chunk, for add_rows
        self._measured = -1  # the last measured step (evaluate() may have measured the chunk's first step)
        if not self.every:
            return
        self.stack, self.xa, self.opt = stack, xa, opt
        # its own head: the trainer's may hold a minibatch; ce and dce runs share the dce head (Gamma = 1 for ce)
        self.head = LossHead(stack_loss([j.config["loss"]["name"] for j in jobs]), labels, classes, xa.dtype)
        self.layout = FlatLayout([tuple(w.shape[1:]) for w in stack.weights])
        self.mask = padding_mask(stack, self.layout)
        self.workspace = Workspace()
        self.k = int(sc.get("k", 1))
        self.lanczos = Lanczos(self.k, int(sc.get("iters", 20)), float(sc.get("tol", 1e-5)), seed=int(cfg["seed"]))
        o = cfg["optim"]  # jobs of one stack share the optimiser; the learning rate is per run
        self.thresholds = np.array(
            [stability_threshold(o["name"], float(j.config["optim"]["lr"]), float(o["momentum"]), float(o["beta1"])) for j in jobs]
        )
        self.preconditioned = isinstance(opt, StackedAdam)
        if self.preconditioned:
            log.info("sharpness with Adam: the preconditioned sharpness lambda_max(P^-1 H) against (2 + 2 beta1) / ((1 - beta1) lr)")
        batch = cfg["optim"].get("batch_size")
        self.full_batch = batch is None or int(batch) >= labels.shape[0]
        self.values: list[np.ndarray] = []  # lambda_max [M] of each measurement
        self.seconds = 0.0  # time spent measuring, for the benchmark

    def due(self, t: int) -> bool:
        return self.every > 0 and t % self.every == 0

    def before_step(self, t: int, gamma: torch.Tensor, alive: np.ndarray) -> None:
        """Called before every training step's update: measures on sharpness steps, for add_rows.

        Measuring inside the trainer's chunks (rather than ending a chunk at every sharpness step)
        keeps the per-chunk costs (schedule, steps.csv, evaluation) at their usual rate.
        """
        if self.every and t % self.every == 0 and t != self._measured:
            entries = self.measure(t, gamma, alive)
            self.pending.append((t, entries, gamma.cpu().numpy(), alive.copy()))

    def add_rows(self, first: int, losses: np.ndarray, recorders: list) -> None:
        """History rows of the chunk's measured steps; losses [K, M, 2] are the chunk's per-step losses.

        A row carries the step's Gamma and, for full-batch training, its training loss (the loss at
        theta_t is what that step's forward pass computed). Runs that diverged before the step get none.
        """
        for t, entries, gamma, alive in self.pending:
            k = t - first
            for m in np.flatnonzero(alive):
                if not np.isfinite(losses[:k, m]).all():
                    continue
                row = {"step": t}
                if self.full_batch:
                    row["train/loss"], row["train/dyn_loss"] = float(losses[k, m, 0]), float(losses[k, m, 1])
                row.update({f"gamma/{c}": float(gamma[m, c]) for c in range(gamma.shape[1])})
                row.update({key: float(v[m]) for key, v in entries.items()})
                recorders[m].add_row(row)
        self.pending = []

    def measure(self, t: int, gamma: torch.Tensor, alive: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Row entries, each [M], at the weights theta_t (before step t's update) and step t's gamma [M, C]."""
        tic = time.perf_counter()
        self._measured = t
        M = self.stack.runs
        lam = np.full((M, self.k), np.nan)
        iters = 0
        precond = adam_preconditioner(self.opt, self.layout) if self.preconditioned else None
        if not (self.preconditioned and precond is None):  # Adam has no preconditioner before its first step
            if self.mask is not None:
                precond = self.mask if precond is None else precond * self.mask
            with torch.no_grad():
                op = StackHessian(self.stack.weights, self.stack.activation, self.xa, self.head, gamma, precond, self.workspace)
                lam = self.lanczos.top(op, M, self.layout.numel, self.xa, alive, self.mask)
            iters = self.lanczos.last_iters
        self.values.append(np.where(np.ones(M, dtype=bool) if alive is None else alive, lam[:, 0], np.nan))
        row = {"sharpness/lambda_max": lam[:, 0], "sharpness/threshold": self.thresholds}
        if self.k > 1:
            row.update({f"sharpness/lambda_{i + 1}": lam[:, i] for i in range(self.k)})
        row["sharpness/iters"] = np.full(M, float(iters))
        self.seconds += time.perf_counter() - tic
        return row

    def summary(self, m: int, recorder) -> dict:
        """result.json fields of run m, from its whole history.csv (so a resumed run counts its first part too).

        final and maximum lambda_max, the fraction of measured steps above the threshold.
        """
        if not self.every:
            return {}
        lam = np.array([v[m] for v in self.values], dtype=float)  # this process's measurements
        history = getattr(recorder, "history", None)  # a streamed history file (records.HistoryFile)
        if history is not None and hasattr(history, "flush"):
            history.flush()
            if history.path.exists():
                frame = pd.read_csv(history.path, usecols=lambda c: c == "sharpness/lambda_max")
                if "sharpness/lambda_max" in frame:
                    lam = frame["sharpness/lambda_max"].to_numpy(dtype=float)
        return sharpness_summary(lam, self.thresholds[m], "preconditioned" if self.preconditioned else "hessian")


def sharpness_summary(lam: np.ndarray, threshold: float, kind: str) -> dict:
    lam = lam[np.isfinite(lam)]
    known = bool(np.isfinite(threshold))
    return {
        "sharpness_kind": kind,
        "sharpness_threshold": float(threshold) if known else None,
        "sharpness_measurements": int(len(lam)),
        "final_lambda_max": float(lam[-1]) if len(lam) else None,
        "max_lambda_max": float(lam.max()) if len(lam) else None,
        "frac_above_threshold": float((lam > threshold).mean()) if len(lam) and known else None,
    }
