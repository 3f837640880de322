"""`from finetune import run`: the command line as a function, for notebooks."""

import json
import logging
import logging.handlers
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetune import run
from finetune.errors import UserError

from conftest import REPO, TINY, assert_one_line_error, run_cli, run_main

TRAIN = [
    "data.split.test=12",
    "data.split.val=12",
    "model.weights=none",
    "trainer.max_epochs=1",
    "train_eval_images=0",
    *TINY,
]


def test_run_trains_and_evaluates_like_the_cli(tmp_path, scene_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "notebook-run"
    results = run(["mode=train", f"data.root={scene_root}", f"hydra.run.dir={run_dir}", *TRAIN])
    assert results["run_dir"] == str(run_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert results["val"] == saved["val"] and results["test"] == saved["test"]
    assert (run_dir / "best_model.pt").is_file() and (run_dir / "finetune.log").is_file()

    # no hydra.run.dir: a fresh folder under outputs/eval/, as the CLI makes
    evaluated = run(["mode=eval", f"ckpt={run_dir / 'best_model.pt'}", *TINY])
    eval_dir = Path(evaluated["run_dir"])
    assert eval_dir.relative_to(tmp_path).parts[:2] == ("outputs", "eval") and eval_dir.is_dir()
    assert evaluated["n"] == 12
    assert json.loads((eval_dir / "metrics.json").read_text())["map"] == evaluated["map"]


def test_api_config_equals_the_cli_config(tmp_path, scene_root, monkeypatch, capsys):
    """run() writes the .hydra/ files the command line writes: the same config, overrides and
    Hydra record (hydra.mode=RUN among Hydra's overrides included), but for the run folder."""
    monkeypatch.chdir(tmp_path)
    not_a_checkpoint = tmp_path / "notes.pt"  # refused by the task, after Hydra wrote the config
    not_a_checkpoint.write_text("not a checkpoint")
    overrides = [
        "mode=eval",
        f"ckpt={not_a_checkpoint}",
        f"data.root={scene_root}",
        "optimizer=adamw",
        *TINY,
    ]
    with pytest.raises(UserError):
        run([*overrides, f"hydra.run.dir={tmp_path / 'run'}"])
    (tmp_path / "run").rename(tmp_path / "api")
    cli = run_main(*overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, capsys=capsys)
    assert cli.returncode == 2, cli.stderr
    for record in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        api, command_line = (
            yaml.safe_load((tmp_path / made / ".hydra" / record).read_text())
            for made in ("api", "run")
        )
        assert api == command_line, record


def test_the_notebooks_own_logging_stays_out_of_the_runs_log(tmp_path, monkeypatch):
    """After run() every logger is as it was: what the notebook logs next does not go on into
    the last run's finetune.log (Hydra set up that file for the run's own lines), its own log
    file opened with mode "w" goes on (Hydra's set-up closes every handler), Lightning's own
    console handler is back, and a run with hydra/job_logging=disabled (which disables every
    existing logger) leaves the notebook's loggers enabled."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    notebook = logging.getLogger("notebook")
    own_file = logging.FileHandler(tmp_path / "notebook.log", mode="w")
    notebook.addHandler(own_file)
    buffered = logging.handlers.MemoryHandler(1, target=logging.FileHandler(tmp_path / "mem.log"))
    notebook.addHandler(buffered)
    lightning = logging.getLogger("lightning.pytorch")  # as imported before any handler: its own
    lightning_console = logging.StreamHandler()
    lightning.addHandler(lightning_console)
    lightning_state = (list(lightning.handlers), lightning.propagate)
    lightning.propagate = False
    before = list(logging.getLogger().handlers)
    try:
        notebook.warning("before the runs")
        for logging_setting in ([], ["hydra/job_logging=disabled"]):
            run_dir = tmp_path / f"run{len(logging_setting)}"
            with pytest.raises(UserError):
                run(["mode=eval", "ckpt=notes.pt", f"hydra.run.dir={run_dir}", *logging_setting])
            assert logging.getLogger().handlers == before
            assert notebook.handlers == [own_file, buffered] and not notebook.disabled
            assert lightning_console in lightning.handlers and not lightning.propagate
        notebook.warning("a line of the notebook's own")
        log = (tmp_path / "run0" / "finetune.log").read_text()
        assert "mode=eval: writing to" in log and "a line of the notebook's own" not in log
        assert "[ERROR] - stopped: notes.pt is not a checkpoint" in log  # as the CLI's log says
        for own_log in ("notebook.log", "mem.log"):
            assert (tmp_path / own_log).read_text().splitlines() == [
                "before the runs",
                "a line of the notebook's own",
            ]
    finally:
        for handler in (own_file, buffered):
            notebook.removeHandler(handler)
            handler.close()
        lightning.handlers[:], lightning.propagate = lightning_state


def test_user_errors_raise_the_line_the_cli_prints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for overrides in (["mode=eval"], ["optimizer.lr=-1", "experiment=demo"], ["mode=nope"]):
        with pytest.raises(UserError) as raised:
            run(overrides)
        line = assert_one_line_error(run_cli(*overrides, cwd=tmp_path))
        assert line == f"error: {raised.value}"
    for not_a_list in ("mode=eval ckpt=x", {"mode": "eval"}, None):
        with pytest.raises(TypeError, match="list of strings"):
            run(not_a_list)
    with pytest.raises(TypeError, match=r"strings such as 'ckpt=.*', not PosixPath"):
        run(["mode=eval", tmp_path / "best_model.pt"])


def test_run_keeps_the_callers_hydra_and_torch_state(tmp_path, scene_root, monkeypatch):
    """A notebook that uses Hydra itself (or a @hydra.main job that calls run) keeps its Hydra:
    run() neither refuses it nor replaces it (its job name and version_base included); a
    deterministic run gives torch's global
    determinism flag back as it found it."""
    import torch
    from hydra import compose, initialize_config_dir, version
    from hydra.core.hydra_config import HydraConfig

    monkeypatch.chdir(tmp_path)
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):  # as a fresh notebook has them
        monkeypatch.delenv(name, raising=False)
    own = tmp_path / "my_conf"
    own.mkdir()
    (own / "mine.yaml").write_text("answer: 42\n")
    hydra_config = HydraConfig.instance().cfg  # as earlier tests left it (None, or a job's)
    notebook = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)  # the notebook's: the run turns it on
    with initialize_config_dir(config_dir=str(own), version_base="1.1", job_name="notebook"):
        results = run(
            [
                "mode=train",
                f"data.root={scene_root}",
                "trainer.deterministic=true",
                f"hydra.run.dir={tmp_path / 'run'}",
                *TRAIN,
            ]
        )
        assert compose("mine").answer == 42
        assert compose("mine", return_hydra_config=True).hydra.job.name == "notebook"
        assert str(version.getbase()) == "1.1"  # run() composes under 1.3, and gives it back
    assert results["run_dir"] == str(tmp_path / "run")
    assert HydraConfig.instance().cfg is hydra_config
    assert not torch.are_deterministic_algorithms_enabled()
    assert "PL_GLOBAL_SEED" not in os.environ and "PL_SEED_WORKERS" not in os.environ
    torch.use_deterministic_algorithms(notebook)


@pytest.mark.parametrize(
    "overrides",
    [["-m", "optimizer.lr=1e-2,1e-3"], ["--multirun", "seed=1,2"], ["--cfg", "job"]],
)
def test_flags_are_for_the_command_line(tmp_path, monkeypatch, overrides):
    """A sweep or a flag is refused in one line that gives the command line instead."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as raised:
        run(overrides)
    message = str(raised.value)
    assert overrides[0] in message and "\n" not in message
    assert f"python -m finetune {' '.join(overrides)}" in message
    assert not list(tmp_path.iterdir())  # nothing written


def test_run_from_a_non_editable_install(tmp_path):
    """`pip install .` into a plain folder (pip builds the wheel, the configs ship inside it)
    runs `run` from anywhere; the editable checkout is not on the path. pip builds in the
    source folder (build/, *.egg-info): it builds a copy, so that test processes running side
    by side (pytest-xdist; test_cli.py installs the checkout too) never share a build folder."""
    source, target = tmp_path / "source", tmp_path / "site"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    unbuilt = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("src", "conf"):
        shutil.copytree(REPO / folder, source / folder, ignore=unbuilt)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    script = (
        "import finetune, json\n"
        "from finetune import run\n"
        "from finetune.errors import UserError\n"
        "try:\n"
        "    run(['mode=eval'])\n"
        "except UserError as error:\n"
        "    print(json.dumps({'file': finetune.__file__, 'error': str(error)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    said = json.loads(result.stdout.strip().splitlines()[-1])
    assert said["file"].startswith(str(target))
    assert said["error"].startswith("ckpt is not set")


class HookSpy:
    """A Hydra callback of a user's own (hydra.callbacks): it records the hooks called."""

    called: list[str] = []

    def __getattr__(self, hook: str):
        return lambda **kwargs: HookSpy.called.append(hook)


def test_a_users_hydra_callbacks_see_every_hook_of_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    HookSpy.called.clear()
    (tmp_path / "notes.pt").write_text("not a checkpoint")  # the task stops at it
    with pytest.raises(UserError):
        run(["mode=eval", "ckpt=notes.pt", "+hydra.callbacks.spy._target_=test_api.HookSpy"])
    assert HookSpy.called == ["on_run_start", "on_job_start", "on_job_end", "on_run_end"]


def test_a_run_without_job_logging_gives_the_root_handlers_back_unfiltered(tmp_path, monkeypatch):
    """With hydra/job_logging=none the run logs through the notebook's own root handler, and
    the console set-up filters it: run() takes its filters off again."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    own = logging.StreamHandler()
    logging.getLogger().addHandler(own)
    try:
        with pytest.raises(UserError):
            run(["mode=eval", "ckpt=notes.pt", "hydra/job_logging=none", "hydra.run.dir=run"])
        assert own.filters == []
    finally:
        logging.getLogger().removeHandler(own)
