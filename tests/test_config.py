"""Every option of every config group, and every experiment, composes and passes validation;
and every key of the config is read by the code (no dead keys)."""

import re
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from finetune.api import config_dir
from finetune.validate import validate_config

from conftest import REPO, compose_config

CONF = config_dir()
SRC = Path(__file__).resolve().parents[1] / "src" / "finetune"
# Sections handed to a library as keyword arguments (Lightning's Trainer and loggers, torch's
# optimizers and schedulers): their keys are the library's names.
PASSED_THROUGH = ("trainer", "optimizer", "scheduler", "logger")


def _options() -> list[tuple[str, str]]:
    """(group, option) for every YAML file under conf/, hydra's own groups included."""
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        group = path.parent.relative_to(CONF).as_posix()
        if group not in (".", "hydra/help"):
            found.append((group, path.stem))
    return found


def _compose(overrides: list[str]) -> DictConfig:
    return compose_config(*overrides, hydra_node=True)


def test_every_group_is_covered():
    groups = {group for group, _ in _options()}
    assert {"data", "model", "optimizer", "scheduler", "trainer", "experiment"} <= groups


@pytest.mark.parametrize(("group", "option"), _options(), ids=lambda value: str(value))
def test_every_option_composes_and_validates(tmp_path, group, option):
    cfg = _compose([f"{group}={option}", f"data.root={tmp_path}", "mode=eval"])
    chosen = cfg.hydra.runtime.choices.get(group)
    assert chosen == option, f"{group}={option} composed as {chosen}"
    task = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    OmegaConf.to_container(task, resolve=True, throw_on_missing=True)  # every value resolves
    validate_config(task)


def _leaves(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def test_no_dead_keys(tmp_path):
    """A key nothing reads is a promise the package does not keep: each key's last name must be
    read somewhere in src/ (sections passed to a library as keywords are that library's)."""
    source = "\n".join(path.read_text() for path in SRC.rglob("*.py"))
    keys = set()
    for group, option in _options():
        if group.startswith("hydra") or group == "hparams_search":
            continue
        cfg = _compose([f"{group}={option}", f"data.root={tmp_path}"])
        task = OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), resolve=False
        )
        keys |= set(_leaves(task))
    dead = sorted(
        key
        for key in keys
        if not key.startswith(PASSED_THROUGH)
        and not re.search(rf"\b{re.escape(key.split('.')[-1])}\b", source)
    )
    assert not dead, f"keys read by nothing in src/: {dead}"


def test_every_config_folder_ships_with_the_package():
    """conf/ is installed as finetune.conf: every folder under it is a listed package with its
    YAML files as package data (an unlisted one makes setuptools warn at every install, and a
    new group would rest on that warning's fallback)."""
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        ".".join(("finetune", "conf", *folder.relative_to(REPO / "conf").parts))
        for folder in [REPO / "conf", *(p for p in (REPO / "conf").rglob("*") if p.is_dir())]
    }
    listed = {name for name in setuptools["packages"] if name.startswith("finetune.conf")}
    assert listed == folders
    assert {name for name in setuptools["package-data"]} == folders
