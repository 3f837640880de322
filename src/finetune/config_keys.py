"""Every key the code reads is there, and every interpolation resolves: checked first, before
any rule reads a value (finetune.validate), so that a key removed (~optimizer.backbone_lr_mult),
a config file of one's own that leaves a key out, or an unset ${oc.env:...} (checked by
finetune.interpolations) is one line, not Python's error deep in a run. The keys required are
read from the package's conf/; of the trainer group's, which go to Lightning as they are, only
those the package reads itself.
"""

import re
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from finetune.errors import UserError
from finetune.interpolations import check_resolvable

Keys = dict[tuple[str, ...], Any]  # {("split", "seed"): "${seed}", ...}


def _keys_set(node: dict, prefix: tuple[str, ...] = ()) -> Keys:
    """Every key of a mapping, with the keys of its sections: {("split",): {...},
    ("split", "seed"): "${seed}", ...}."""
    keys = {}
    for key, value in node.items():
        keys[(*prefix, str(key))] = value
        if isinstance(value, dict):
            keys |= _keys_set(value, (*prefix, str(key)))
    return keys


def _option_keys(folder: Path, option: str) -> Keys:
    """The keys an option of a config group sets, itself or through the options of its group
    that its defaults list names (data/cifar10 builds on data/scenes)."""
    content = OmegaConf.to_container(OmegaConf.load(folder / f"{option}.yaml"), resolve=False)
    keys = {}
    for base in content.pop("defaults", []):
        if isinstance(base, str) and (folder / f"{base}.yaml").is_file():
            keys |= _option_keys(folder, base)
    return keys | _keys_set(content)


def _missing_line(key: tuple[str, ...], who: str, file: str, value: Any) -> str:
    """The line for a key that is not there: who sets it, and how (a value as YAML writes it)."""
    name = ".".join(key)
    if isinstance(value, dict | list):
        shown = f"see {file}"
    else:
        shown = f"{file}: {OmegaConf.to_yaml({key[-1]: value}).strip()}"
    return f"{name} is missing: {who} ({shown}); add it to your config (or leave out ~{name})"


# The trainer keys this package reads itself (precision.py, inference.py, callbacks.py and
# tasks/train.py, which also merges precision, deterministic and benchmark into the config):
# required like any other key. The group's other keys only go to Lightning as they are, and may be
# removed (~trainer.max_steps). Written out, as no config file can say which keys the code reads;
# tests/test_values.py looks through src/ for a cfg.trainer.<key> read that this tuple lacks.
TRAINER_KEYS_READ = (
    "accelerator",
    "benchmark",
    "deterministic",
    "devices",
    "enable_progress_bar",
    "max_epochs",
    "num_nodes",
    "precision",
)


def _read_of(group: str, keys: Keys) -> Keys:
    """Of the keys a `# @package _global_` option sets (trainer.precision, from the root), those
    of its own group that the package reads, under the group: {("precision",): "auto", ...}."""
    read = {(group, key) for key in TRAINER_KEYS_READ} if group == "trainer" else set()
    return {key[1:]: value for key, value in keys.items() if key in read}


@cache
def _groups() -> dict[str, tuple[str, dict[str, Keys]]]:
    """Each config group of conf/: the option its lines show (config.yaml's default) and the keys
    each option sets, under the group. The trainer group gives only TRAINER_KEYS_READ; the
    optional groups of other groups' keys (experiment, hparams_search) and hydra's own, none."""
    from finetune.api import config_dir  # finetune.api imports the tasks, which import this

    conf = config_dir()
    defaults = OmegaConf.to_container(OmegaConf.load(conf / "config.yaml").defaults)
    chosen = {
        group: option
        for entry in defaults
        if isinstance(entry, dict)
        for group, option in entry.items()
    }
    groups = {}
    for folder in sorted(path for path in conf.iterdir() if path.is_dir() and path.name != "hydra"):
        files = sorted(folder.glob("*.yaml"))
        sets = {path.stem: _option_keys(folder, path.stem) for path in files}
        if any(re.search(r"^# @package", path.read_text(), re.MULTILINE) for path in files):
            sets = {option: _read_of(folder.name, keys) for option, keys in sets.items()}
        shown = chosen[folder.name] if chosen.get(folder.name) in sets else files[0].stem
        groups[folder.name] = shown, sets
    return groups


@cache
def required_keys() -> dict[tuple[str, ...], str]:
    """The keys the code reads without asking whether they are there, each with its line when it
    is not: every key the package's config.yaml sets, and in each group of conf/ the keys every
    option sets (optimizer.lr, not optimizer.momentum; trainer.precision, not trainer.max_steps)."""
    from finetune.api import config_dir

    top = OmegaConf.to_container(OmegaConf.load(config_dir() / "config.yaml"), resolve=False)
    top.pop("defaults")
    top.pop("hydra", None)
    who = "the package's config.yaml sets it"
    required = {
        key: _missing_line(key, who, "conf/config.yaml", value)
        for key, value in _keys_set(top).items()
    }
    for group, (shown, sets) in _groups().items():
        common = [key for key in sets[shown] if all(key in keys for keys in sets.values())]
        if common:
            options = ", ".join(sets)
            required[(group,)] = f"{group} is missing: choose one of {options} ({group}={shown})"
        for key in common:
            required[(group, *key)] = _missing_line(
                (group, *key),
                f"every {group} option sets it",
                f"conf/{group}/{shown}.yaml",
                sets[shown][key],
            )
    return required


@cache
def kind_keys() -> dict[str, dict[str, dict[tuple[str, ...], str]]]:
    """{group: {name: {key: its line}}} for the groups whose options are kinds, each named by its
    `name` (finetune.optim's registries: optimizer/adamw.yaml sets name: adamw). An option of
    one's own with name: adamw needs what the package's adamw sets beyond every option's keys
    (betas): the builder of that kind reads them."""
    kinds = {}
    for group, (_, sets) in _groups().items():
        if not all(keys.get(("name",)) == option for option, keys in sets.items()):
            continue
        kinds[group] = {
            option: {
                (group, *key): _missing_line(
                    (group, *key),
                    f"{group}.name={option} needs it",
                    f"conf/{group}/{option}.yaml",
                    value,
                )
                for key, value in keys.items()
                if not all(key in other for other in sets.values())
            }
            for option, keys in sets.items()
        }
    return kinds


def _say_missing(plain: dict, needed: dict[tuple[str, ...], str]) -> None:
    """The line of the first key of `needed` that is not there; a section set to null leaves out
    every key in it (an interpolation in place of a section is not looked into)."""
    for key, line in needed.items():
        node = plain
        for depth, name in enumerate(key):
            if node is None:
                raise UserError(f"{'.'.join(key[:depth])} is null, but {line}")
            if not isinstance(node, dict):
                break
            if name not in node:
                raise UserError(line)
            node = node[name]


def _check_keys_present(cfg: DictConfig) -> None:
    """A key removed (~optimizer.backbone_lr_mult, ~trainer.precision) or left out of a config
    of one's own (an optimizer file with only name and lr, an adamw one without betas) is said
    here, not as Python's error deep in a run."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    _say_missing(plain, required_keys())
    for group, kinds in kind_keys().items():
        section = plain[group]  # there: every option of the group sets name
        name = section.get("name") if isinstance(section, dict) else None
        _say_missing(plain, kinds.get(name, {}) if isinstance(name, str) else {})


def check_keys(cfg: DictConfig) -> None:
    """Every key the code reads is there and every value resolves: first, as every other check
    reads the keys."""
    _check_keys_present(cfg)
    check_resolvable(cfg)
