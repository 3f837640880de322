"""Hydra's composition of a command line, and its errors said in one line.

Hydra reports a failed composition (an unknown key, a missing config group option, a plugin that
is not installed, +key for a key that exists) in 4 to 20 lines; `explain` turns its exception
into the one line the user needs, naming the closest keys. A `+key=value` that nothing would read
is refused here too. Only hydra and omegaconf are imported: the command line is answered before
torch is.
"""

import difflib
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from hydra import version
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from finetune.errors import UserError

TRAINER_FLAGS = "trainer."  # +trainer.<flag>=...: a Lightning Trainer flag the config lacks
# The keys +key=value may add: arguments of the Trainer and of a logger (each passed on to its
# Lightning class, which refuses one it does not take), of the optimizer and the scheduler (each
# passed on to its torch class; finetune.optim names one it does not take), and Hydra's own keys.
TORCH_ARGUMENTS = ("optimizer.", "scheduler.")  # +optimizer.eps=1e-7: an argument of the class
ADDABLE = (TRAINER_FLAGS, "logger.", *TORCH_ARGUMENTS, "hydra.")
# Hydra plugins that come with an extra of this package: a missing one names the extra.
PLUGIN_EXTRAS = {
    "hydra/sweeper/optuna": "optuna",
    "hydra/launcher/submitit_local": "slurm",
    "hydra/launcher/submitit_slurm": "slurm",
}


def search_path(config_dir: Path, added: Path | None = None) -> ConfigSearchPath:
    """Where `python -m finetune` finds configs: Hydra's own, the package's conf/ and the user's
    folder `--config-dir` adds, in the order Hydra's command line gives them (`hydra.searchpath`,
    in the primary config or an override, adds more when a config is composed)."""
    path = create_config_search_path(str(config_dir))
    if added is not None:
        path.prepend("command-line", f"file://{added}", anchor=SearchPathQuery(provider="schema"))
    return path


def compose_as_cli(search: ConfigSearchPath, config_name: str, overrides: list[str]) -> DictConfig:
    """Compose as `python -m finetune` will, hydra node included; leave Hydra uninitialised."""
    return config_loader(search).load_configuration(
        config_name=config_name, overrides=overrides, run_mode=RunMode.RUN, from_shell=True
    )


def group_options(
    search: ConfigSearchPath, config_name: str, overrides: list[str], keys: Iterable[str]
) -> dict[str, list[str]]:
    """The options of each of `keys` that names a config group (`data`, `hydra/launcher`), as
    Hydra finds them on the whole search path: `hydra.searchpath` folders included."""
    loader = config_loader(search)

    def listed(group: str, kind: ObjectType) -> list[str]:
        return loader.get_group_options(group, kind, config_name, overrides)

    groups_in: dict[str, list[str]] = {}  # the groups inside each parent group ("": the top)
    options = {}
    for key in dict.fromkeys(keys):
        parent, _, name = key.rpartition("/")
        if parent not in groups_in:
            groups_in[parent] = listed(parent, ObjectType.GROUP)
        if name in groups_in[parent]:
            options[key] = listed(key, ObjectType.CONFIG)
    return options


def config_loader(search: ConfigSearchPath) -> ConfigLoader:
    """Hydra's config loader on `search`, set up as @hydra.main sets it up (version_base 1.3),
    without initialising Hydra's global state."""
    version.setbase("1.3")
    return Hydra(task_name="finetune", config_loader=ConfigLoaderImpl(search)).config_loader


def explain(
    error: Exception,
    overrides: list[Override],
    search: ConfigSearchPath,
    config_name: str,
    lines: list[str],
) -> str:
    """Hydra's report of a failed composition, in one line."""
    text = str(error).split("Config search path:")[0]
    parts = [part.strip() for part in text.splitlines() if part.strip()]
    ambiguous = re.match(r"Ambiguous value for argument '(.*?)=(.*)'", text)
    if ambiguous:  # a comma in a value: a list, a sweep, or text
        key, value = ambiguous.groups()
        return (
            f"{key}={value}: a comma makes a list or a sweep; for text, quote the value, as in "
            f"'{key}=\"{value}\"' (a list: {key}=[...]; a sweep: add --multirun)"
        )
    if isinstance(error.__cause__, ConfigKeyError | ConfigAttributeError):
        key = getattr(error.__cause__, "full_key", "") or ""  # optimiser for optimiser.lr
        faulty = [o for o in overrides if f"{o.key_or_group}.".startswith(f"{key}.")]
        if key and faulty:
            line = faulty[0].input_line
            others = [other for other in lines if other != line]
            keys = _config_keys(search, config_name, others)
            return _unknown_key(faulty[0].key_or_group, line, keys)
    plugin = next((name for name in PLUGIN_EXTRAS if f"'{name}'" in text), None)
    if isinstance(error, MissingConfigException) and plugin:
        return f"{plugin} is not installed: pip install -e '.[{PLUGIN_EXTRAS[plugin]}]'"
    if isinstance(error, MissingConfigException) and error.options:
        return f"{parts[0]}: choose one of {', '.join(error.options)}"
    added = [o.input_line for o in overrides if o.is_add() and f"'{o.key_or_group}'" in text]
    if added and parts[0].startswith("Could not append to config"):
        line = added[0]
        return f"{parts[0]} Write {line[1:]} to change it, or +{line} to set it either way"
    message = "; ".join(parts) or type(error).__name__
    if isinstance(error.__cause__, OmegaConfBaseException):
        message += f": {str(error.__cause__).splitlines()[0]}"
    return message


def _unknown_key(key: str, line: str, keys: list[str]) -> str:
    """Name the closest existing keys, and say how to add a key that is not in the config; a key
    the code needs that an option of the user's own leaves out is said to be missing there."""
    from finetune.config_keys import required_keys  # reads conf/ once: only for this message

    missing = required_keys().get(tuple(key.split(".")))
    if missing and key not in keys:
        return missing
    in_hydra = key.startswith("hydra.")
    candidates = [k for k in keys if k.startswith("hydra.") == in_hydra]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    if not close:  # `lr` for `optimizer.lr`: compare the last names
        by_name: dict[str, list[str]] = {}
        for candidate in candidates:
            by_name.setdefault(candidate.rsplit(".", 1)[-1], []).append(candidate)
        names = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_name), n=3, cutoff=0.6)
        close = [candidate for name in names for candidate in by_name[name]][:3]
    hint = f"did you mean {', '.join(close)}?" if close else "`--cfg job` lists the keys"
    if line.startswith("+"):  # + or ++
        return (
            f"{line} adds key {key}, which nothing reads ({hint}): only arguments of "
            "Lightning's Trainer and loggers, and of torch's optimizer and scheduler, can be "
            "added, as +trainer.<flag>=..., +logger.<name>.<argument>=... or "
            "+optimizer.<argument>=..."
        )
    if key.startswith(TRAINER_FLAGS):
        return (
            f"unknown key {key} ({hint}): +{line} passes it to Lightning's Trainer as a flag "
            "this config does not list"
        )
    if key.startswith(TORCH_ARGUMENTS):
        return (
            f"unknown key {key} ({hint}): +{line} passes it to torch's "
            f"{key.split('.')[0]} class as an argument this config does not list"
        )
    return f"unknown key {key} ({hint})"


def refuse_added_keys_nothing_reads(
    overrides: list[Override], search: ConfigSearchPath, config_name: str, lines: list[str]
) -> None:
    """`+key=value` adds a key: one that nothing reads would be ignored in silence (+model.foo).
    Only ADDABLE keys (each passed on to a class that names one it does not take) and config
    groups (+group=option) may be added."""
    for override in overrides:
        key = override.key_or_group
        adds = override.is_add() or override.is_force_add()  # +key=value, ++key=value
        if not adds or key.startswith(ADDABLE):
            continue
        if key in group_options(search, config_name, lines, [key]):
            continue
        line = override.input_line
        keys = _config_keys(search, config_name, [other for other in lines if other != line])
        if key not in keys:
            raise UserError(_unknown_key(key, line, keys))


def _config_keys(search: ConfigSearchPath, config_name: str, overrides: list[str]) -> list[str]:
    """Every dotted key of the config composed without the faulty override."""
    for attempt in (overrides, []):
        try:
            cfg = compose_as_cli(search, config_name, attempt)
        except (HydraException, OmegaConfBaseException, ValueError):
            continue
        return list(_dotted(OmegaConf.to_container(cfg, resolve=False)))
    return []


def _dotted(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}{key}"
            yield from _dotted(value, f"{prefix}{key}.")
