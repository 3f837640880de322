"""A command built from Hydra's record of this one keeps the user's config folder (`--config-dir
DIR` or `hydra.searchpath=[file://DIR]`): the resume command printed on Ctrl-C, and the command
line of each step of a report, so that `experiment=mine` is found there too."""

import json
import re
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from finetune.api import config_dir
from finetune.choices import check_command_line
from finetune.errors import UserError
from finetune.resume import resume_hint
from finetune.tasks import report as report_module


@pytest.fixture
def user_configs(user_folder) -> Path:
    """my_configs/ in the user's folder: experiment/mine.yaml (a training of its own) and
    experiment/myreport.yaml (the user's copy of the package's experiment=report)."""
    folder = user_folder / "my_configs" / "experiment"
    folder.mkdir(parents=True)
    (folder / "mine.yaml").write_text("# @package _global_\noptimizer:\n  lr: 0.0123\n")
    shutil.copyfile(config_dir() / "experiment" / "report.yaml", folder / "myreport.yaml")
    return folder.parent


def finding(how: str, user_configs: Path) -> list[str]:
    """The words that add the user's folder, as a user types them (`--config-dir` relative to
    the working folder)."""
    if how == "config-dir":
        return ["--config-dir", str(user_configs.relative_to(Path.cwd()))]
    return [f"hydra.searchpath=[file://{user_configs}]"]


def as_rebuilt(how: str, user_configs: Path) -> list[str]:
    """The same words in a command built from Hydra's record: the --config-dir folder absolute,
    so that the command works from any folder."""
    if how == "config-dir":
        return ["--config-dir", str(user_configs)]
    return finding(how, user_configs)


@contextmanager
def hydra_records(cfg: DictConfig) -> Iterator[None]:
    """HydraConfig as a job of `cfg` (composed with its hydra node) sees it; restored after."""
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = before


def composes(argv: list[str]) -> DictConfig:
    """The config the command line `python -m finetune ARGV` composes (its check passed)."""
    cfg = check_command_line(argv, config_dir())
    assert cfg is not None
    return cfg


@pytest.mark.parametrize("how", ["config-dir", "searchpath"])
def test_the_resume_command_keeps_the_users_config_folder(how, user_configs, user_folder):
    typed = [*finding(how, user_configs), "experiment=mine", "data.root=data"]
    cfg = composes([*typed, "hydra.run.dir=runA"])
    run_dir = user_folder / "runA"  # the run, stopped after its first epoch
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    with hydra_records(cfg):
        hint = resume_hint(run_dir, resume=None)
    command = re.fullmatch(r"the last checkpoint is \S+; resume with: (.+)", hint).group(1)
    argv = shlex.split(command)
    rebuilt = as_rebuilt(how, user_configs)  # hydra.run.dir=runA, Hydra's, is left out
    assert argv == ["python", "-m", "finetune", *rebuilt, "experiment=mine", "data.root=data",
                    "resume=runA"], command  # fmt: skip
    elsewhere = user_folder / "elsewhere"
    elsewhere.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(elsewhere)  # the folder is found from anywhere: --config-dir is absolute
        assert composes(argv[3:]).optimizer.lr == 0.0123


@pytest.mark.parametrize("how", ["config-dir", "searchpath"])
@pytest.mark.parametrize("entry", ["after the sweep", "mode=report"])
def test_the_report_steps_get_the_users_config_folder(how, entry, user_configs, monkeypatch):
    given = {}

    def build_report(sweep: Path, passed_on: list[str], original) -> dict:
        given["passed_on"] = passed_on
        return {}

    monkeypatch.setattr(report_module, "build_report", build_report)
    add = finding(how, user_configs)
    if entry == "after the sweep":
        typed = ["experiment=myreport", "data.root=d"]
        report_module.report_after_sweep(composes(["-m", *add, *typed]))
    else:  # the keys the report sets for each step itself (mode, sweep) are not passed on
        typed = ["experiment=mine", "data.root=d"]
        cfg = composes([*add, "mode=report", "sweep=s", *typed])
        with hydra_records(cfg):
            report_module.report(cfg)
    assert given["passed_on"] == [*as_rebuilt(how, user_configs), *typed]
    step = [*given["passed_on"], "mode=eval", "split=test", "ckpt=best_model.pt"]
    assert composes(step).mode == "eval"  # an experiment of the user's own is found


def test_a_step_that_fails_before_its_run_folder_names_no_log(user_configs, user_folder):
    """One cheap step subprocess (it stops at the command-line check, before torch): the sweep's
    --config-dir reaches it (it is refused for eval.tolerance=-1, not for an unknown
    experiment=myreport), and as it stopped before Hydra made its run folder, its error line
    names no finetune.log, which was never written."""
    sweep = user_folder / "sweep"
    cfg = composes(["-m", "--config-dir", "my_configs", "experiment=myreport",
                    "eval.tolerance=-1", f"hydra.sweep.dir={sweep}"])  # fmt: skip
    job = sweep / "0"  # the sweep's one training, its winner
    (job / ".hydra").mkdir(parents=True)
    monitor = {"name": "val/map", "mode": "max", "value": 0.5}
    (job / "metrics.json").write_text(json.dumps({"monitor": monitor}))
    (job / "best_model.pt").write_bytes(b"")
    with pytest.raises(UserError) as raised:
        report_module.report_after_sweep(cfg)
    message = str(raised.value)
    assert message.startswith("step eval failed: eval.tolerance"), message
    assert "myreport" not in message and "finetune.log" not in message, message
    assert "(it stopped before writing a log)" in message
    assert not (sweep / "report" / "eval").exists()


def test_the_step_commands_read_back_paths_hydra_would_misparse(tmp_path, monkeypatch):
    """A sweep with hydra.sweep.subdir=${hydra.job.override_dirname} puts its winner in a folder
    named like `data=tiny,optimizer.lr=0.1`: each step's ckpt=, eval.reference= and
    hydra.run.dir= are quoted where Hydra's grammar would read `=` and `,`, so every override of
    the command reads back as the same path."""
    from finetune.overrides import parse_override

    sweep = tmp_path / "sweep=a,b"
    ckpt = sweep / "data=tiny,optimizer.lr=0.1" / "best_model.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    commands = []

    def recorded(name, command, done_file):
        commands.append(command)
        done_file.parent.mkdir(parents=True, exist_ok=True)
        return 0.0

    monkeypatch.setattr(report_module, "_run_step", recorded)
    monkeypatch.setattr(report_module, "hardware", dict)
    folders = {name: sweep / "report" / name for name in report_module.STEPS}
    report_module._run_missing_steps(ckpt, folders, [])
    values = {}
    for command in commands:
        for line in command:
            override = parse_override(line)  # a parse error would fail the step
            values[override.key_or_group] = override.value()
    assert values["ckpt"] == str(ckpt)
    assert values["eval.reference"] == str(folders["eval"] / "softmax_scores.pt")
    assert values["hydra.run.dir"] == str(folders["analyze"])
