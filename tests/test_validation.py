"""Bad configs fail fast through the real CLI: exit 2, one line naming key and value, nothing trained."""

from __future__ import annotations

import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import CONF, compose_config, run_cli

from runner import data, losses, model, optim, schedule, validate

# (overrides, text the error line must contain: the key and the offending value)
SINGLE = [
    (["model.width=0"], "model.width=0"),
    (["model.depth=0"], "model.depth=0"),
    (["loss=dce", "loss.A=0.5"], "loss.A=0.5"),
    (["loss.T=0"], "loss.T=0"),
    (["optim.lr=0"], "optim.lr=0"),
    (["optim.lr=-0.1"], "optim.lr=-0.1"),
    (["optim.lr=abc"], "optim.lr='abc'"),
    (["optim.lr=nan"], "optim.lr=nan"),
    (["train.steps=0"], "train.steps=0"),
    (["train.eval_every=0"], "train.eval_every=0"),
    (["dataset.classes=1"], "dataset.classes=1"),
    (["dataset.n_train=0"], "dataset.n_train=0"),
    (["dataset.n_val=-5"], "dataset.n_val=-5"),
    (["optim=sgd", "optim.batch_size=1000"], "optim.batch_size=1000"),
    (["dataset=nope"], "dataset='nope'"),
    (["dataset.name=nope"], "dataset.name='nope'"),
    (["loss=nope"], "loss='nope'"),
    (["loss.name=nope"], "loss.name='nope'"),
    (["optim=nope"], "optim='nope'"),
    (["model.activation=swish"], "model.activation='swish'"),
    (["model.init=zeros"], "model.init='zeros'"),
    (["loss.shape=square"], "loss.shape='square'"),
    (["train.dtype=float16"], "train.dtype='float16'"),
    (["train.checkpoint_every=-1"], "train.checkpoint_every=-1"),
    (["wandb.figure=maybe"], "wandb.figure='maybe'"),
]
if not torch.cuda.is_available():
    SINGLE.append((["train.device=cuda"], "train.device='cuda'"))
# Multiruns: validated before the first job, so no sweep folder may appear.
MULTI = [
    (["-m", "model.width=4,0"], "model.width=0"),
    (["-m", "loss=ce,dce", "loss.foo=1,2"], "loss.foo=1"),  # a swept key no option has
    (["-m", "optim=gd,adam", "optim.lr=0.1,-1"], "optim.lr=-1"),
    (["-m", "loss=ce,bogus"], "loss='bogus'"),
    # the task function's config has no hydra node: ${hydra.job.num} (no colon) cannot resolve there
    (["-m", "seed=${hydra.job.num}"], "seed: cannot be resolved"),
    (
        ["-m", "hydra/launcher=batched", "hydra.launcher.max_batch=0", "seed=0,1"],
        "hydra.launcher.max_batch=0: must be null or an integer >= 1",
    ),
    (["-m", "hydra/launcher=batched_slurm", "hydra.launcher.runs_per_task=two"], "hydra.launcher.runs_per_task='two'"),
    (["-m", "hydra/launcher=batched_slurm", "hydra.launcher.nodes=2"], "hydra.launcher.nodes=2: must be 1"),
]


def _case(tmp_path, i: int, args: list[str]):
    out = tmp_path / f"case{i}"
    where = f"hydra.sweep.dir={out}" if args[0] == "-m" else f"hydra.run.dir={out}"
    return out, run_cli([*args, where, "train.steps=50" if "train.steps=0" not in args else "seed=0"], tmp_path, timeout=60)


def test_bad_configs_exit_2_with_a_named_key_and_train_nothing(tmp_path):
    cases = SINGLE + MULTI
    assert len(cases) >= 15
    crowded = os.getloadavg()[0] > (os.cpu_count() or 1)  # before our own processes add to it
    tic, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with ThreadPoolExecutor(4) as pool:  # each case is its own CLI process: ~0.5 s, no torch import
        procs = list(pool.map(lambda c: _case(tmp_path, c[0], c[1][0]), enumerate(cases)))
    elapsed = time.perf_counter() - tic
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)  # the CLI processes' own CPU time
    for (args, needle), (out, proc) in zip(cases, procs):
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("invalid config: ")]
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr[-2000:])
        assert any(needle in ln for ln in lines), (args, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        # nothing trained: no config.yaml, steps or result written, and no sweep folder at all
        if args[0] == "-m":
            assert not out.exists(), (args, list(out.rglob("*")))
        else:
            assert not any((out / f).exists() for f in ("config.yaml", "steps.csv", "history.csv", "result.json")), args
    print(f"{len(cases)} bad configs in {elapsed:.1f} s wall, {cpu:.1f} s CPU")
    # ~4 s wall, ~0.3 s CPU per case on an idle 2-core machine. The per-case CPU time is the
    # load-independent check: a config check that imported torch (~2 s) would fail it. The 10 s wall
    # bound holds unless other processes (the rest of the suite, other users) crowd the cores.
    assert cpu / len(cases) < 1.0, f"{cpu / len(cases):.2f} s of CPU per bad config"
    assert elapsed < (60 if crowded else 10), f"{len(cases)} bad configs took {elapsed:.1f} s"


def test_one_line_per_problem_and_every_problem_reported(tmp_path):
    proc = run_cli(["model.width=0", "optim.lr=-1", "train.steps=0", f"hydra.run.dir={tmp_path}/j"], tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [
        "invalid config: model.width=0: must be an integer >= 1",
        "invalid config: optim.lr=-1: must be a number > 0",
        "invalid config: train.steps=0: must be an integer >= 1",
    ]


def test_default_config_and_presets_are_valid():
    assert validate.config_problems(compose_config()) == []
    for preset in validate.group_options("experiment"):
        assert validate.config_problems(compose_config([f"experiment={preset}"])) == [], preset


def test_names_match_the_modules_that_implement_them():
    # validate.py lists them itself so that the CLI can check a config before importing torch.
    assert validate.DATASETS == data.DATASETS
    assert validate.FIXED_CLASSES == data.FIXED_CLASSES
    assert validate.DIGITS_MAX_PER_CLASS == data.DIGITS_MAX_PER_CLASS
    assert set(validate.LOSS_NAMES) == set(losses.LOSSES)
    assert validate.ACTIVATIONS == model.ACTIVATIONS
    assert validate.INITS == model.INITS
    assert validate.OPTIMIZERS == optim.OPTIMIZERS
    assert validate.SHAPES == schedule.SHAPES


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["loss=dce"], []),
        (["loss=dce,nope", "seed=1"], ["loss='nope': allowed values are ce, dce, dmse1, dmse2, mse (files in conf/loss/)"]),
        (["-m", "optim=choice(gd,adamw)"], ["optim='adamw': allowed values are adam, gd, sgd (files in conf/optim/)"]),
        (["seed=3", "hydra/launcher=basic", "loss.A=3"], []),  # plain keys and Hydra's own groups: not ours
        (["-cd", "/elsewhere", "loss=nope"], []),  # another config tree
    ],
)
def test_group_problems(argv, expected):
    assert validate.group_problems(argv) == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no CUDA device is present")
def test_cuda_is_required_where_the_jobs_train_not_where_a_slurm_sweep_is_submitted(monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from runner.validate import config_problems

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # given back after the test
    found = {}
    for launcher in ("basic", "batched", "slurm", "batched_slurm"):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("config", overrides=[f"hydra/launcher={launcher}", "train.device=cuda"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # as in the submitting process of a multirun
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        found[launcher] = any("no CUDA device" in p for p in config_problems(task))
    assert found == {"basic": True, "batched": True, "slurm": False, "batched_slurm": False}
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # on the node itself the check applies again
    assert any("no CUDA device" in p for p in config_problems(task))


def test_plain_resolves_like_a_masked_copy_of_the_config(monkeypatch):
    """validate.plain resolves node by node (no copy of the tree): the same dict as the copy it replaced."""
    from omegaconf import OmegaConf

    monkeypatch.setenv("RUNNER_TEST_TAG", "from-env")
    cfg = OmegaConf.create(
        {
            "seed": "${model.width}",  # a top-level value pointing into a nested node
            "model": {"width": 8, "same": "${.width}"},  # a relative interpolation
            "wandb": {"tags": ["${oc.env:RUNNER_TEST_TAG}", "${oc.env:RUNNER_NOT_SET,fallback}"], "group": None},
            "alias": "${wandb}",  # a whole node by interpolation
            "missing": "???",
            "hydra": {"job": {"num": 3}},
        }
    )
    keys = [k for k in cfg if k != "hydra"]
    assert validate.plain(cfg) == OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    assert validate.plain(cfg)["alias"]["tags"] == ["from-env", "fallback"] and validate.plain(cfg)["missing"] == "???"
