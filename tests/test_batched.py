"""hydra/launcher=batched: the same jobs, the same files and the same numbers as the basic launcher."""

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import CONF
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from runner.batching import cache_bytes, cpu_stack_runs, group_jobs, max_runs, split
from runner.compose_cache import CachingComposer
from runner.files import to_yaml

# 2 seeds x 2 lrs x 2 (A) x 2 (T) x 2 widths = 32 jobs; lr 1.0 is near the edge of stability here
SWEEP = ["loss=dce", "seed=0,1", "optim.lr=0.5,1.0", "loss.A=10,70", "loss.T=20,40", "model.width=12,16"]  # one padded stack
TINY = ["train.steps=300", "train.eval_every=10", "wandb.mode=disabled"]


def jobs(sweep: Path) -> dict[str, Path]:
    """Job dirs by their overrides, so two launchers' sweeps can be matched job by job."""
    out = {}
    for d in sweep.glob("[0-9]*"):
        out[" ".join(OmegaConf.load(d / ".hydra" / "overrides.yaml"))] = d
    return out


def files(job: Path) -> set[str]:
    return {str(p.relative_to(job)) for p in job.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    from conftest import run_cli

    tmp = tmp_path_factory.mktemp("batched")
    for launcher in ("basic", "batched"):
        proc = run_cli(["-m", f"hydra/launcher={launcher}", *SWEEP, *TINY, f"hydra.sweep.dir={tmp / launcher}"], tmp)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return jobs(tmp / "basic"), jobs(tmp / "batched")


def test_same_jobs_and_same_files(sweeps):
    basic, batched = sweeps
    assert len(basic) == 32 and basic.keys() == batched.keys()
    for key in basic:
        assert files(basic[key]) == files(batched[key]), key
        rb = json.loads((basic[key] / "result.json").read_text())
        rs = json.loads((batched[key] / "result.json").read_text())
        assert rb.keys() == rs.keys() and rb["config"] == rs["config"]
        for name in ("config.yaml", "overrides.yaml"):  # the batched launcher writes them itself: the same text
            assert (basic[key] / ".hydra" / name).read_text() == (batched[key] / ".hydra" / name).read_text(), (key, name)
        hb, hs = (OmegaConf.load(d / ".hydra" / "hydra.yaml").hydra for d in (basic[key], batched[key]))
        assert hb.job == hs.job and hb.overrides.task == hs.overrides.task and hb.mode == hs.mode
        assert Path(hb.runtime.output_dir).name == Path(hs.runtime.output_dir).name == str(hb.job.num)
        assert {k: v for k, v in hb.runtime.choices.items() if k != "hydra/launcher"} == {
            k: v for k, v in hs.runtime.choices.items() if k != "hydra/launcher"
        }


def test_each_job_matches_the_same_job_run_alone(sweeps):
    basic, batched = sweeps
    worst_final = 0.0
    for key in basic:
        hb = pd.read_csv(basic[key] / "history.csv")
        hs = pd.read_csv(batched[key] / "history.csv")
        first = hb["step"] <= 50
        for col in ["train/loss", "train/dyn_loss", "train/acc", "val/loss", "val/acc", "gamma/0", "gamma/1"]:
            np.testing.assert_allclose(hs.loc[first, col], hb.loc[first, col], rtol=1e-10, atol=1e-12, err_msg=f"{key} {col}")
        sb = pd.read_csv(basic[key] / "steps.csv").iloc[:50]
        ss = pd.read_csv(batched[key] / "steps.csv").iloc[:50]
        np.testing.assert_allclose(ss.to_numpy(), sb.to_numpy(), rtol=1e-10, atol=1e-12)
        rb = json.loads((basic[key] / "result.json").read_text())
        rs = json.loads((batched[key] / "result.json").read_text())
        worst_final = max(worst_final, abs(rb["final_val_acc"] - rs["final_val_acc"]))
    # 300 steps in float64: only summation order differs (padded widths), far from chaotic separation
    assert worst_final <= 0.01


def test_hydra_interpolations_in_the_job_folder_and_chdir(cli, tmp_path):
    # sweep.subdir may name a job by its overrides (resolved against the job's own hydra node), and
    # hydra.job.chdir=true must not move where anything is written.
    args = ["seed=0,1", "model.width=4", "train.steps=3", "wandb.mode=disabled", "hydra.job.chdir=true"]
    subdir = "hydra.sweep.subdir=${hydra:job.override_dirname}"
    for launcher in ("basic", "batched"):
        cli("-m", f"hydra/launcher={launcher}", *args, subdir, f"hydra.sweep.dir={tmp_path}/{launcher}")
        folders = sorted(p.name for p in (tmp_path / launcher).iterdir() if p.is_dir())
        assert folders == [f"model.width=4,seed={s},train.steps=3,wandb.mode=disabled" for s in (0, 1)], (launcher, folders)
        for f in folders:
            assert json.loads((tmp_path / launcher / f / "result.json").read_text())["status"] == "finished"


def test_float32_first_steps_match(cli, tmp_path):
    args = [
        "loss=dce",
        "seed=0,1",
        "model.width=8,16",
        "train.dtype=float32",
        "train.steps=50",
        "train.eval_every=10",
        "wandb.mode=disabled",
    ]
    cli("-m", *args, f"hydra.sweep.dir={tmp_path}/basic")
    cli("-m", "hydra/launcher=batched", *args, f"hydra.sweep.dir={tmp_path}/batched")
    basic, batched = jobs(tmp_path / "basic"), jobs(tmp_path / "batched")
    assert len(basic) == 4
    for key in basic:
        hb, hs = pd.read_csv(basic[key] / "history.csv"), pd.read_csv(batched[key] / "history.csv")
        np.testing.assert_allclose(hs["train/loss"], hb["train/loss"], rtol=1e-5)
        np.testing.assert_allclose(hs["val/acc"], hb["val/acc"], atol=1e-5)


def test_a_diverging_run_leaves_the_others_untouched(cli, tmp_path):
    # MSE, because cross-entropy at a huge lr saturates instead of overflowing
    common = [
        "hydra/launcher=batched",
        "loss=dmse1",
        "loss.T=20",
        "seed=0,1",
        "train.steps=200",
        "train.eval_every=20",
        "wandb.mode=disabled",
    ]
    cli("-m", *common, "optim.lr=0.1", f"hydra.sweep.dir={tmp_path}/clean")
    cli("-m", *common, "optim.lr=0.1,1000", f"hydra.sweep.dir={tmp_path}/mixed")
    clean, mixed = jobs(tmp_path / "clean"), jobs(tmp_path / "mixed")
    diverged = [k for k in mixed if "optim.lr=1000" in k]
    assert len(diverged) == 2
    for k in diverged:
        r = json.loads((mixed[k] / "result.json").read_text())
        assert r["status"] == "diverged" and r["diverged_step"] is not None
    for k, d in clean.items():
        m = mixed[k]
        # a stack of 4 instead of 2: the batched matmul may block differently, so equal to rounding
        pd.testing.assert_frame_equal(pd.read_csv(d / "history.csv"), pd.read_csv(m / "history.csv"), rtol=1e-10)
        assert json.loads((m / "result.json").read_text())["status"] == "finished"


def test_grouping_keeps_incompatible_jobs_apart():
    def cfg(**kw):
        base = {"seed": 0, "model": {"width": 8, "depth": 1, "activation": "relu"}, "loss": {"name": "dce", "A": 10}, "optim": {"lr": 1.0}}
        for k, v in kw.items():
            section, key = k.split("__")
            base[section] = {**base[section], key: v}
        return base

    configs = [
        cfg(),
        cfg(optim__lr=0.1),
        cfg(model__width=6),  # within a factor of 2 of 8: padded into the same stack
        cfg(loss__name="dmse1"),
        cfg(model__depth=2),
        cfg(loss__A=70),
        cfg(loss__name="ce"),  # ce = dce at A = 1
        cfg(model__width=32),  # too far from 8: its own stack
        cfg(loss__name="mse"),
        cfg(loss__name="dmse2"),
    ]
    assert group_jobs(configs) == [[0, 1, 2, 5, 6], [3, 8], [4], [7], [9]]
    sigmoid = [cfg(model__activation="sigmoid"), cfg(model__activation="sigmoid", model__width=7)]
    assert group_jobs(sigmoid) == [[0], [1]]  # padding is exact only when act(0) = 0


def test_job_yaml_text_equals_omegaconf_to_yaml():
    # runner.files.to_yaml writes .hydra/*.yaml and config.yaml with libyaml where the text is the same
    tricky = ["1", "1e3", "0x1f", "017", "inf", "nan", "true", "yes", "on", "null", "~", "", " lead", "trail ", "${a.b}",
              "${oc.env:X,y}", "'q'", '"dq"', "a: b", "a #b", "- x", "[1]", "{a: 1}", "*x", "!t", "2001-12-14", "12:30",
              "line1\nline2\n", "x" * 200, "ü", "日本語", "emoji \U0001F600", "\x85", "\u2028", "\x7f", "\x01", "é" * 100]  # fmt: skip
    containers = [{"s": v} for v in tricky] + [
        {"l": tricky},
        {"e": [], "d": {}, "n": None, "i": 1, "f": 1.5, "b": True, "nested": {"x": [[], {}, [1, {"a": []}]]}},
        {"f": float("inf"), "g": float("nan"), "h": -0.0, "big": 10**30, "small": 1e-300},
        {"true": 1, "null": 2, "": 3},
    ]
    for c in containers:
        assert to_yaml(c) == OmegaConf.to_yaml(OmegaConf.create(c)), c


def test_cache_size_is_read_from_sysfs(tmp_path):
    for entry, size in [("index0", "48K"), ("index2", "1024K"), ("index3", "16M"), ("index4", ""), ("uevent", None)]:
        if size is None:
            (tmp_path / entry).write_text("DRIVER=x\n")  # a plain file beside the index folders
        else:
            (tmp_path / entry).mkdir()
            (tmp_path / entry / "size").write_text(size + "\n")
    assert cache_bytes(str(tmp_path)) == 16 << 20
    assert cache_bytes(str(tmp_path / "missing")) == 32 << 20
    if Path("/sys/devices/system/cpu/cpu0/cache/index0/size").exists():  # this machine's own, read for real
        real = max(
            int(t[:-1]) * {"K": 1 << 10, "M": 1 << 20}[t[-1]]
            for t in (p.read_text().strip() for p in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"))
        )
        assert cache_bytes() == real


def test_stacks_are_split_evenly_and_bounded_by_the_cache_on_cpu():
    for n, size in [(72, 27), (10, 3), (5, 5), (1, 4), (100, 7)]:
        parts = split(list(range(n)), size)
        assert [i for p in parts for i in p] == list(range(n))  # every job once, in sweep order
        assert max(map(len, parts)) <= size and max(map(len, parts)) - min(map(len, parts)) <= 1
        assert len(parts) == -(-n // size)
    config = lambda w, dtype="float64": {"model": {"width": w, "depth": 1}, "train": {"dtype": dtype}}  # noqa: E731
    cpu = torch.device("cpu")
    for w in (8, 100, 256):
        runs = max_runs(config(w), 300, 2, 3, cpu, None)
        assert runs == cpu_stack_runs(config(w), 300)  # memory is not the binding limit here
        assert runs * (w + 1) * 300 * 8 <= cache_bytes() // 5 < (runs + 1) * (w + 1) * 300 * 8
    assert cpu_stack_runs(config(100, "float32"), 300) >= 2 * cpu_stack_runs(config(100), 300) - 1
    assert max_runs(config(8), 300, 2, 3, cpu, 5) == 5  # hydra.launcher.max_batch wins when smaller


@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=3", "optim.lr=0.1"],
        ["loss=dmse2", "loss.A=7", "model.width=4"],
        ["experiment=p1_long", "train.steps=10", "seed=2"],
        ["optim=adam", "+extra_key=1", "dataset=moons"],
    ],
)
def test_cached_composition_equals_hydra(overrides):
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF)))
    master = loader.load_configuration("config", overrides=["hydra/launcher=batched"], run_mode=RunMode.MULTIRUN)
    composer = CachingComposer(loader.load_sweep_config)
    composer(master, ["seed=9"])  # warm the cache with another job of the same groups
    fast = composer(master, list(overrides))
    full = loader.load_sweep_config(master, list(overrides))
    strip = lambda c: {k: v for k, v in OmegaConf.to_container(c).items()}  # noqa: E731
    assert strip(fast) == strip(full)
    # the task function's config, as run_job makes it: a copy of the job's config less its hydra node
    expected = copy.deepcopy(full)
    with read_write(expected), open_dict(expected):
        del expected["hydra"]
    task = composer.task_config(master, list(overrides))
    assert "hydra" not in task and strip(task) == strip(expected)
    assert OmegaConf.is_struct(task) == OmegaConf.is_struct(expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (the GPU path is checked where one is lent)")
def test_a_cuda_stack_follows_the_cpu_stack(tmp_path):
    from conftest import compose_config

    from runner.app import job_from_config
    from runner.data import data_from_config
    from runner.trainer import train_jobs

    histories = {}
    for device in ("cpu", "cuda"):
        jobs = []
        for i, (seed, width, lr) in enumerate([(0, 8, 0.5), (1, 8, 1.0), (2, 12, 0.5), (3, 16, 1.0)]):
            cfg = compose_config(["loss=dce", "loss.A=10", "loss.T=40", "train.steps=200", "train.eval_every=10", "wandb.mode=disabled",
                                  f"seed={seed}", f"model.width={width}", f"optim.lr={lr}", f"train.device={device}"])  # fmt: skip
            jobs.append(job_from_config(cfg, tmp_path / device / str(i), None))
        results = train_jobs(jobs, data_from_config(cfg), torch.device(device), progress=False)
        assert {r["device"].split(":")[0] for r in results} == {device}
        histories[device] = [pd.read_csv(j.job_dir / "history.csv") for j in jobs]
    for h_cpu, h_gpu in zip(histories["cpu"], histories["cuda"]):
        first = h_cpu["step"] <= 50
        for col in ["train/loss", "train/dyn_loss", "val/loss", "train/acc", "val/acc"]:
            np.testing.assert_allclose(h_gpu.loc[first, col], h_cpu.loc[first, col], rtol=1e-10, atol=1e-12, err_msg=col)


def test_a_requeued_slurm_task_trains_only_its_unfinished_jobs(tmp_path):
    """batched_slurm's array task, run in this process: after a requeue it must not retrain what finished."""
    from conftest import compose_config

    from hydra_plugins.runner_launcher.batched_slurm_launcher import GroupTask, task_parts
    from runner.app import job_from_config

    base = ["loss=dce", "train.steps=40", "train.eval_every=20", "wandb.mode=disabled", "train.threads=1"]
    jobs_ = [job_from_config(compose_config([*base, f"seed={s}"]), tmp_path / str(s), None) for s in range(2)]
    logs = [tmp_path / f"{s}.log" for s in range(2)]
    task = GroupTask(max_batch=None)
    (first,) = task(jobs_[:1], logs[:1])  # job 0 finishes, as in a task that was then preempted
    stamp = (tmp_path / "0" / "result.json").stat().st_mtime_ns
    outcomes = task(jobs_, logs)  # the requeued task gets both jobs again
    assert outcomes[0] == first and (tmp_path / "0" / "result.json").stat().st_mtime_ns == stamp
    assert json.loads((tmp_path / "1" / "result.json").read_text())["final_val_acc"] == outcomes[1] is not None
    assert "finished" in logs[1].read_text() and logs[0].read_text().count("finished") == 1
    # task parts: one per group, split evenly past runs_per_task
    configs = [dict(j.config, model={**j.config["model"], "width": w}) for j in jobs_ for w in (8, 32)]
    assert task_parts(configs, None) == [[0, 2], [1, 3]] and task_parts(configs, 1) == [[0], [2], [1], [3]]


def test_a_failing_stack_is_recorded_but_a_slurm_stop_ends_the_task(tmp_path, monkeypatch):
    """train_groups: an error in one stack fails that stack's jobs (result.json says so) and goes on;
    submitit's own stop (its time-limit handler raising inside the step) must end the task instead."""
    import submitit
    from conftest import compose_config

    from runner import batched
    from runner.app import job_from_config

    jobs_ = [
        job_from_config(compose_config(["train.steps=5", "wandb.mode=disabled", f"seed={s}"]), tmp_path / str(s), None) for s in range(2)
    ]
    logs = [tmp_path / f"{s}.log" for s in range(2)]

    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(batched, "train_jobs", broken)
    outcomes = batched.train_groups(jobs_, logs, None, progress=False)
    assert all(isinstance(o, ValueError) for o in outcomes)
    assert all(json.loads((j.job_dir / "result.json").read_text())["status"] == "failed" for j in jobs_)
    for j in jobs_:
        (j.job_dir / "result.json").unlink()

    def stopped(*args, **kwargs):
        raise submitit.core.utils.UncompletedJobError("Job not requeued because: timed-out too many times.")

    monkeypatch.setattr(batched, "train_jobs", stopped)
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        batched.train_groups(jobs_, logs, None, progress=False)
    assert not any((j.job_dir / "result.json").exists() for j in jobs_)  # unfinished, not failed
