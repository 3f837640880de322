"""Every interpolation of a config resolves (${oc.env:MYDATA}, ${seed}): checked before any
rule reads a value, and said in one line naming the key, its value as written and why, in a
user's words (an unset variable, a key that is not there and the closest one that is)."""

import difflib
import re
from collections.abc import Iterator
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


def unresolved_reason(error: InterpolationResolutionError, cfg: DictConfig) -> str:
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


def check_resolvable(cfg: DictConfig) -> None:
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
            reason = unresolved_reason(error, cfg)
            raise UserError(f"{name}={written} cannot be resolved: {reason}") from None
