"""A sweep (-m) checked before Hydra's basic sweeper starts it: interval() is refused (a search
space for Optuna), and so are two jobs given one folder by hydra.sweep.subdir (the second would
rewrite the first's files). A subdir that tells the jobs apart passes; Optuna's sweeps are left to
Optuna. Nothing is trained: the check composes configs only."""

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

import finetune.sweep_check
from finetune.api import config_dir
from finetune.composition import compose_as_cli, search_path
from finetune.errors import UserError
from finetune.overrides import first_job, parse_override
from finetune.sweep_check import JOB_NUMBER, check_sweep


def check(*argv: str) -> None:
    """check_sweep on `python -m finetune -m ARGV`, given its first job's config as
    finetune.choices composes it."""
    overrides = [parse_override(line) for line in ("data.root=/data", *argv)]
    lines = [line for line in map(first_job, overrides) if line is not None]
    search = search_path(config_dir())
    check_sweep(overrides, compose_as_cli(search, "config", lines), search, "config")


def refused(*argv: str) -> str:
    with pytest.raises(UserError) as raised:
        check(*argv)
    message = str(raised.value)
    assert "\n" not in message and message, message
    return message


def test_jobs_given_one_folder_are_refused(tmp_path):
    """The QA sweep: only the learning rate varies, the subdir names the optimizer."""
    sweep = ["optimizer.lr=0.01,0.001", "hydra.sweep.subdir=${optimizer.name}"]
    hydra_config = HydraConfig.instance().cfg  # as earlier tests left it (None, or a job's)
    message = refused(*sweep, f"hydra.sweep.dir={tmp_path}")
    for words in ("jobs 0 (optimizer.lr=0.01) and 1 (optimizer.lr=0.001)", f"{tmp_path}/sgd"):
        assert words in message, message
    assert "hydra.sweep.subdir=${optimizer.name}" in message, message
    assert "hydra.sweep.subdir=${hydra.job.num}_${optimizer.name}" in message, message
    assert not GlobalHydra.instance().is_initialized()  # the real run starts from scratch
    assert HydraConfig.instance().cfg is hydra_config  # each job's, set to resolve it, is gone


@pytest.mark.parametrize(
    ("argv", "jobs"),
    [
        (["data=demo,scenes", "hydra.sweep.subdir=${optimizer.lr}"], "0 (data=demo) and 1"),
        (["experiment=report", "hydra.sweep.subdir=sgd"], "0 (optimizer.lr=0.01) and 1"),
        (["seed=1,2", "optimizer.lr=0.1,0.2", "hydra.sweep.subdir=${seed}"], "0 (optimizer.lr"),
        (["seed=1,2", "hydra.sweep.subdir=${hydra:job.name}"], "0 (seed=1) and 1 (seed=2)"),
    ],
    ids=["group-sweep", "experiment-grid", "second-key", "hydra-resolver"],
)
def test_every_job_is_composed(argv, jobs):
    """Group options, the sweeper's own grid (experiment=report) and each swept key count; the
    subdir is resolved as in the job (${hydra:...} reads the job's hydra node)."""
    assert f"jobs {jobs}" in refused(*argv)


@pytest.mark.parametrize(
    "subdir",
    [
        "${optimizer.lr}",
        "${hydra.job.override_dirname}",
        "${hydra:job.override_dirname}",
        "${hydra.job.num}_${optimizer.name}",
    ],
)
def test_a_subdir_that_tells_the_jobs_apart_passes(subdir):
    check("optimizer.lr=0.1,0.01,0.001", f"hydra.sweep.subdir={subdir}")


def test_a_subdir_that_does_not_resolve_is_refused():
    """Hydra would say it in a traceback when the first job starts, after making the sweep."""
    message = refused("optimizer.lr=0.01,0.001", "hydra.sweep.subdir=${optimizer.nme}")
    for words in ("hydra.sweep.subdir=${optimizer.nme}", "job 0", "'optimizer.nme' not found"):
        assert words in message, message


def test_the_default_subdir_composes_no_job(monkeypatch):
    """${hydra.job.num} (conf/config.yaml's) gives each job its own folder: no job is composed."""
    sweep = OmegaConf.load(config_dir() / "config.yaml").hydra.sweep
    assert OmegaConf.to_container(sweep)["subdir"] == JOB_NUMBER

    def composed(*args):
        raise AssertionError("jobs composed under the default subdir")

    monkeypatch.setattr(finetune.sweep_check, "_refuse_shared_folders", composed)
    check("optimizer.lr=0.01,0.001", "seed=1,2,3")


@pytest.mark.parametrize(
    "line", ["optimizer.lr=interval(0.001,0.01)", "optimizer.lr=tag(log,interval(0.001,0.01))"]
)
def test_interval_is_refused_by_the_basic_sweeper(line):
    message = refused(line)
    for words in (line, "hparams_search=optuna", "optimizer.lr=0.01,0.001", "range("):
        assert words in message, message


def test_optuna_sweeps_are_left_to_optuna():
    """Optuna picks its trials as it goes: interval() is its search space, and its jobs cannot be
    listed before the sweep starts."""
    check("hparams_search=optuna", "optimizer.lr=interval(0.001,0.01)", "hydra.sweep.subdir=x")


@pytest.mark.parametrize(
    ("argv", "keys"),
    [
        (["optimizer.lr=0.01,0.05"], "optimizer.lr"),
        (["optimizer=sgd,adamw", "model.arch=resnet18,resnet34"], "optimizer, model.arch"),
        (["experiment=report"], "optimizer.lr"),  # the sweeper's own grid
        (["hparams_search=optuna"], "optimizer.lr, optimizer.weight_decay"),  # any sweeper
    ],
    ids=["lr", "group-and-key", "experiment-grid", "optuna"],
)
def test_a_sweep_of_keys_a_resumed_run_ignores_is_refused(tmp_path, argv, keys):
    """A resumed run takes the optimizer, scheduler, network and transform from its checkpoint:
    each job would train the same run, and the sweep would rank the copies by unused values."""
    message = refused(*argv, f"resume={tmp_path}")
    for words in (f"a sweep of {keys}", f"resume={tmp_path}", "every job would train the same run"):
        assert words in message, message


@pytest.mark.parametrize(
    "argv",
    [
        ["optimizer.lr=0.01,0.05", "seed=1,2", "resume=run"],
        ["trainer.max_epochs=3,4", "resume=run"],
        ["resume=run1,run2", "optimizer.lr=0.01"],
        ["optimizer.lr=0.01,0.05"],
    ],
    ids=["a-key-it-reads", "epochs", "the-checkpoint", "not-resumed"],
)
def test_a_sweep_whose_jobs_differ_passes(argv):
    check(*argv)
