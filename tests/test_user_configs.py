"""A user's own config folder, added with `--config-dir DIR` or `hydra.searchpath=[file://DIR]`:
its options are known to every check, so a mistake is still one line before Hydra writes
anything; and the Hydra settings this package cannot honour (hydra.job.chdir=true, a run folder
starting with ~) are refused before a folder is made."""

from pathlib import Path

import pytest
import yaml

from finetune.api import config_dir
from finetune.choices import check_command_line
from finetune.errors import UserError

from conftest import TINY, assert_one_line_error, assert_run_refuses, run_cli, run_in_process

QUICK = ["model.weights=none", "train_eval_images=0", "data.split.test=12", "data.split.val=12"]


@pytest.fixture
def user_configs(tmp_path) -> Path:
    """DIR/experiment/mine.yaml (a global experiment that picks the user's optimizer option) and
    DIR/optimizer/fast.yaml."""
    folder = tmp_path / "my_configs"
    (folder / "experiment").mkdir(parents=True)
    (folder / "optimizer").mkdir()
    (folder / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /optimizer: fast\ntrainer:\n  max_epochs: 1\n"
    )
    (folder / "optimizer" / "fast.yaml").write_text(
        "name: sgd\nlr: 0.02\nmomentum: 0.5\nweight_decay: 0.0\nnesterov: false\n"
        "backbone_lr_mult: 1.0\n"
    )
    return folder


def checked(*argv: str) -> str:
    """The one line the command line's check refuses `argv` with."""
    with pytest.raises(UserError) as raised:
        check_command_line(list(argv), config_dir())
    message = str(raised.value)
    assert "\n" not in message, message
    return message


def test_config_dir_options_compose_and_are_checked(user_configs, user_folder):
    cfg = check_command_line(["--config-dir", str(user_configs), "experiment=mine"], config_dir())
    assert cfg.optimizer.momentum == 0.5 and cfg.trainer.max_epochs == 1
    add = ["--config-dir", str(user_configs)]
    assert "choose one of demo, mine, report" in checked(*add, "experiment=mien")
    assert "choose one of adamw, fast, sgd" in checked(*add, "optimizer=adamx")
    assert "did you mean optimizer.lr" in checked(*add, "optimiser.lr=0.1")
    assert "did you mean mode=eval?" in checked(*add, "eval")
    assert "adds key model.foo, which nothing reads" in checked(*add, "+model.foo=1")
    assert "--config-dir nowhere: no folder" in checked("--config-dir", "nowhere", "mode=eval")
    # an option of one's own without a key the code needs, that key then set: missing, not unknown
    (user_configs / "data").mkdir()
    (user_configs / "data" / "mine.yaml").write_text("kind: folder\nroot: /data\n")
    for line in ("data.image_size=32", "+data.image_size=32"):
        assert checked(*add, "data=mine", line).startswith(
            "data.image_size is missing: every data option sets it"
        )
    (user_configs / "optimizer" / "broken.yaml").write_text("name: sgd\nlr: [0.1\n")
    assert checked(*add, "optimizer=broken").startswith(
        f"{user_configs / 'optimizer' / 'broken.yaml'} is not valid YAML: expected ','"
    )


def test_a_used_run_folder_is_refused_with_config_dir_and_kept(user_configs, tmp_path):
    run_dir = tmp_path / "runA"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("the earlier run's config\n")
    result = run_cli(
        "--config-dir", str(user_configs), "experiment=mine", "hydra.run.dir=runA", cwd=tmp_path
    )
    assert_one_line_error(result, "runA already exists and is kept")
    assert result.returncode == 2
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "the earlier run's config\n"
    assert [p.name for p in run_dir.rglob("*")] == [".hydra", "config.yaml"]


def test_searchpath_on_the_command_line(user_configs, tmp_path):
    searched = f"hydra.searchpath=[file://{user_configs}]"
    result = run_cli(searched, "experiment=mine", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["optimizer"]["momentum"] == 0.5


def test_searchpath_from_run_trains_with_the_users_configs(user_configs, scene_root, user_folder):
    searched = f"hydra.searchpath=[file://{user_configs}]"
    assert_run_refuses(searched, "experiment=mien")("unknown experiment=mien", "mine")
    missing = "hydra.searchpath=[file:///nowhere/configs]"
    assert_run_refuses(missing, "experiment=mine")("hydra.searchpath: no folder /nowhere/configs")
    run_dir = user_folder / "run"
    results = run_in_process(
        searched, "experiment=mine", f"data.root={scene_root}", f"hydra.run.dir={run_dir}",
        *QUICK, *TINY,
    )  # fmt: skip
    assert results["run_dir"] == str(run_dir)
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert saved["optimizer"]["momentum"] == 0.5 and saved["trainer"]["max_epochs"] == 1


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_hydra_job_chdir_is_refused(user_configs, user_folder, sweep):
    if sweep:
        message = checked("-m", "hydra.job.chdir=true", "optimizer.lr=0.1,0.01")
    else:  # set by the user's experiment file
        experiment = user_configs / "experiment" / "mine.yaml"
        experiment.write_text(experiment.read_text() + "hydra:\n  job:\n    chdir: true\n")
        add = f"hydra.searchpath=[file://{user_configs}]"
        message = assert_run_refuses(add, "experiment=mine", "data.root=data")()
    assert "hydra.job.chdir=true is not supported" in message
    assert "leave hydra.job.chdir out" in message
    assert list(user_folder.iterdir()) == [user_configs]  # no run or sweep folder made


def test_a_run_folder_starting_with_tilde_is_refused(user_folder):
    home = Path.home()  # the full path: $HOME would stay literal in run()'s list
    message = assert_run_refuses('hydra.run.dir="~/runs/x"', "data.root=data")()
    assert f"write the full path, as in hydra.run.dir={home / 'runs' / 'x'}" in message
    message = checked("-m", 'hydra.sweep.dir="~/sweeps"', "optimizer.lr=0.1,0.01")
    assert f"hydra.sweep.dir={home / 'sweeps'}" in message
    # unquoted (the shell left the ~): the same line at once, not "quote the value" first
    assert checked("hydra.run.dir=~/runs/x", "data.root=data").startswith(
        "hydra.run.dir=~/runs/x: Hydra does not expand ~"
    )
    assert not (user_folder / "~").exists()
