"""Every key the code reads is there, and every interpolation resolves: checked first, before
any rule reads a value (finetune.validate), so that a key removed (~optimizer.backbone_lr_mult),
a config file of one's own that leaves a key out, or an unset ${oc.env:...} is one line, not
Python's error deep in a run. The keys required are read from the package's conf/ alone.
"""

import difflib
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError, InterpolationResolutionError

from finetune.errors import UserError

# Why an interpolation cannot be resolved, from OmegaConf's message: (its pattern, our words)
UNRESOLVED = (
    (r"Environment variable '(.*)' not found", "environment variable {} is not set"),
    (r"Interpolation key '(.*)' not found", "the config has no key {}"),
    (r"Missing mandatory value: (.*)", "{} is not set"),
    (r"Unsupported interpolation type (\S+)", "there is no resolver {}"),
)
# What ${hydra:...} says before Hydra starts the run (the command line's check); the run's own
# check resolves it
HYDRA_NOT_STARTED = "HydraConfig was not set"


def _keys_set(node: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every key of a mapping, with the keys of its sections: {("split",): {...},
    ("split", "seed"): "${seed}", ...}."""
    keys = {}
    for key, value in node.items():
        keys[(*prefix, str(key))] = value
        if isinstance(value, dict):
            keys |= _keys_set(value, (*prefix, str(key)))
    return keys


def _option_keys(folder: Path, option: str) -> dict[tuple[str, ...], Any]:
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


@cache
def required_keys() -> dict[tuple[str, ...], str]:
    """The keys the code reads without asking whether they are there, each with its line when it
    is not: every key the package's config.yaml sets, and in each group of conf/ the keys every
    option sets (optimizer.lr, not optimizer.momentum). Left out: the groups whose options set
    other keys (`# @package _global_`: trainer, whose keys are Lightning's and may go)."""
    from finetune.api import config_dir  # finetune.api imports the tasks, which import this

    conf = config_dir()
    top = OmegaConf.to_container(OmegaConf.load(conf / "config.yaml"), resolve=False)
    chosen = {
        group: option
        for entry in top.pop("defaults")
        if isinstance(entry, dict)
        for group, option in entry.items()
    }
    top.pop("hydra", None)
    who = "the package's config.yaml sets it"
    required = {
        key: _missing_line(key, who, "conf/config.yaml", value)
        for key, value in _keys_set(top).items()
    }
    for folder in sorted(path for path in conf.iterdir() if path.is_dir()):
        files = sorted(folder.glob("*.yaml"))
        if folder.name == "hydra" or any(
            re.search(r"^# @package", path.read_text(), re.MULTILINE) for path in files
        ):
            continue
        group = folder.name
        sets = {path.stem: _option_keys(folder, path.stem) for path in files}
        shown = chosen[group] if chosen.get(group) in sets else files[0].stem
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


def _check_keys_present(cfg: DictConfig) -> None:
    """A key removed (~optimizer.backbone_lr_mult) or left out of a config of one's own (an
    optimizer file with only name and lr) is said here, not as Python's error deep in a run."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for key, line in required_keys().items():
        node = plain
        for name in key:
            if not isinstance(node, dict):  # an interpolation or null in place of a section
                break
            if name not in node:
                raise UserError(line)
            node = node[name]


def _entries(parent: DictConfig | ListConfig, key: Any, name: str) -> Iterator[tuple]:
    """(dotted name, parent, key) of parent[key] and of every value under it, none resolved."""
    yield name, parent, key
    if OmegaConf.is_interpolation(parent, key) or OmegaConf.is_missing(parent, key):
        return
    child = parent[key]
    if isinstance(child, DictConfig):
        for inner in child:
            yield from _entries(child, inner, f"{name}.{inner}")
    elif isinstance(child, ListConfig):
        for index in range(len(child)):
            yield from _entries(child, index, f"{name}[{index}]")


def _config_entries(cfg: DictConfig) -> Iterator[tuple]:
    """Every value of the config but Hydra's own settings (the hydra node, which the command
    line's check has and a run's config does not)."""
    for key in cfg:
        if key != "hydra":
            yield from _entries(cfg, key, str(key))


def _closest_key(cfg: DictConfig, key: str) -> str:
    close = difflib.get_close_matches(key, [name for name, _, _ in _config_entries(cfg)], n=1)
    return f" (did you mean ${{{close[0]}}}?)" if close else ""


def _unresolved_reason(error: InterpolationResolutionError, cfg: DictConfig) -> str:
    """OmegaConf's reason in a user's words; a key not found gets the closest key there is."""
    message = str(error).splitlines()[0]
    for pattern, words in UNRESOLVED:
        found = re.search(pattern, message)
        if found:
            reason = words.format(found.group(1))
            if isinstance(error, InterpolationKeyError):
                reason += _closest_key(cfg, found.group(1))
            return reason
    return message.split("resolving interpolation: ")[-1]


def _check_resolvable(cfg: DictConfig) -> None:
    """Every interpolation of the config resolves (${oc.env:MYDATA}, ${seed}): one line naming
    the key, its value as written and why, before anything reads it."""
    for name, parent, key in _config_entries(cfg):
        if not OmegaConf.is_interpolation(parent, key):
            continue
        try:
            parent[key]
        except InterpolationResolutionError as error:
            if HYDRA_NOT_STARTED in str(error):
                continue
            written = OmegaConf.to_container(parent, resolve=False)[key]
            reason = _unresolved_reason(error, cfg)
            raise UserError(f"{name}={written} cannot be resolved: {reason}") from None


def check_keys(cfg: DictConfig) -> None:
    """Every key the code reads is there and every value resolves: first, as every other check
    reads the keys."""
    _check_keys_present(cfg)
    _check_resolvable(cfg)
