"""One-line answers to a bad command line, given before Hydra writes anything.

Hydra reports its own errors (an unknown key, a malformed override, a missing config) in 4 to 20
lines with exit status 1, and a run into an existing folder rewrites its `.hydra/*.yaml` before
the task can refuse. `check_command_line` parses and composes the command line the way Hydra is
about to, and says the first problem in one line. Only hydra and omegaconf are imported here:
`--help` and `--cfg job` stay fast.
"""

import argparse
import difflib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra import initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.types import Override
from hydra.core.utils import setup_globals
from hydra.errors import HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from finetune.errors import UserError
from finetune.overrides import first_job, parse_override, unknown_choice

# Flags Hydra answers itself (help, plugins, shell completion, other config folders).
HYDRA_ANSWERS = (
    "help",
    "hydra_help",
    "info",
    "shell_completion",
    "experimental_rerun",
    "config_path",
    "config_dir",
)
EXCLUSIVE = ("run", "multirun", "cfg", "info", "shell_completion")
SHELL_COMPLETION = ("install", "uninstall", "query")  # what --shell-completion=... does
VERSIONED = ("hydra-core", "torch", "torchvision", "lightning", "torchmetrics")  # --version
# A process that is not rank 0 of a distributed launch re-runs the command line into the run
# folder its rank 0 made (Lightning's DDP launcher passes hydra.run.dir=<that folder>).
RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK")
TRAINER_FLAGS = "trainer."  # +trainer.<flag>=...: a Lightning Trainer flag the config lacks
# The keys +key=value may add: arguments of the Trainer and of a logger (each passed on to its
# Lightning class, which refuses one it does not take), and Hydra's own keys.
ADDABLE = (TRAINER_FLAGS, "logger.", "hydra.")
# Hydra plugins that come with an extra of this package: a missing one names the extra.
PLUGIN_EXTRAS = {
    "hydra/sweeper/optuna": "optuna",
    "hydra/launcher/submitit_local": "slurm",
    "hydra/launcher/submitit_slurm": "slurm",
}


def check_command_line(argv: Sequence[str], config_dir: Path) -> DictConfig | None:
    """Raise a one-line UserError for what Hydra would refuse in many lines, and for a run (or
    sweep) folder that already holds files; return when the command line may run: with the
    config of the run it will make (of a sweep, its first run: the others are checked when they
    start; None for --cfg, --help and the like), whose values the caller can check before Hydra
    makes a run or sweep folder."""
    args = _parse_arguments(argv)
    flags = [f"--{name.replace('_', '-')}" for name in EXCLUSIVE]
    given = [flag for name, flag in zip(EXCLUSIVE, flags, strict=True) if getattr(args, name)]
    if len(given) > 1:
        raise UserError(f"only one of {', '.join(flags)} at a time (got {' and '.join(given)})")
    if any(getattr(args, name) for name in HYDRA_ANSWERS):
        return None
    overrides = [_parse(args.overrides, i) for i in range(len(args.overrides))]
    typo = unknown_choice(overrides, config_dir)
    if typo:
        raise UserError(typo)
    if args.multirun:
        lines = [line for line in map(first_job, overrides) if line is not None]
    else:
        lines = list(args.overrides)
    config_name = args.config_name or "config"
    try:
        cfg = _compose(config_dir, config_name, lines)
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # the user asked for Hydra's full report
        raise UserError(_explain(error, overrides, config_dir, config_name, lines)) from None
    _refuse_added_keys_nothing_reads(overrides, config_dir, config_name, lines)
    sweep = args.multirun or OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN
    if args.cfg is None and not sweep and cfg.mode == "train":
        _refuse_report_without_sweep(cfg)
    if args.cfg is None and not any(os.environ.get(name, "0") != "0" for name in RANK_VARIABLES):
        _refuse_used_folder(cfg, "hydra.sweep.dir" if args.multirun else "hydra.run.dir")
    return None if args.cfg is not None else cfg


def _parse(lines: Sequence[str], i: int) -> Override:
    """Override i of the command line; a word without '=' is most often a mode typed alone
    (`python -m finetune train`) or an override split by spaces (`data.root = /x`)."""
    try:
        return parse_override(lines[i])
    except UserError:
        line, before = lines[i], lines[i - 1] if i else ""
        after, then = (list(lines[i + 1 : i + 3]) + ["", ""])[:2]
        if "=" in line:
            raise
        from finetune.tasks import TASKS  # light: the registry of modes, no torch

        if line in TASKS:
            raise UserError(f"bad override {line!r}: did you mean mode={line}?") from None
        if after == "=":  # the override as one word, by where the spaces were
            spaced = f"{line}={then}"
        elif after.startswith("="):
            spaced = line + after
        elif before.endswith("="):
            spaced = before + line
        else:
            raise
        raise UserError(
            f"bad override {line!r}: no spaces around '=': write {spaced} as one word"
        ) from None


def _parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """Hydra's own argument parser, its usage errors said in one line."""
    parser = get_args_parser()

    def refuse(message: str) -> None:
        raise UserError(f"{message} (python -m finetune --help lists the flags)")

    parser.error = refuse  # type: ignore[method-assign]
    for action in parser._actions:  # --version: this package's, not only Hydra's
        if "--version" in action.option_strings:
            action.version = _versions()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # the version on one line
    args = parser.parse_args(list(argv))
    if args.shell_completion and not any(
        line.partition("=")[0] in SHELL_COMPLETION for line in args.overrides
    ):
        refuse(
            f"--shell-completion needs one of {', '.join(f'{s}=bash' for s in SHELL_COMPLETION)}"
        )
    return args


def _versions() -> str:
    """`finetune X (Hydra Y, torch Z, ...)`, read from the installed metadata: no import."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in VERSIONED)
    return f"finetune {installed('finetune')} ({libraries})"


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    """Compose as `python -m finetune` will, hydra node included; leave Hydra uninitialised."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return GlobalHydra.instance().hydra.compose_config(
            config_name=config_name,
            overrides=overrides,
            run_mode=RunMode.RUN,
            from_shell=True,
            with_log_configuration=False,
        )


def _explain(
    error: Exception,
    overrides: list[Override],
    config_dir: Path,
    config_name: str,
    lines: list[str],
) -> str:
    """Hydra's report of a failed composition, in one line."""
    text = str(error).split("Config search path:")[0]
    parts = [part.strip() for part in text.splitlines() if part.strip()]
    if isinstance(error.__cause__, ConfigKeyError | ConfigAttributeError):
        key = getattr(error.__cause__, "full_key", "") or ""  # optimiser for optimiser.lr
        faulty = [o for o in overrides if f"{o.key_or_group}.".startswith(f"{key}.")]
        if key and faulty:
            line = faulty[0].input_line
            others = [other for other in lines if other != line]
            keys = _config_keys(config_dir, config_name, others)
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
    """Name the closest existing keys, and say how to add a key that is not in the config."""
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
            "Lightning's Trainer and loggers can be added, as +trainer.<flag>=... or "
            "+logger.<name>.<argument>=..."
        )
    if key.startswith(TRAINER_FLAGS):
        return (
            f"unknown key {key} ({hint}): +{line} passes it to Lightning's Trainer as a flag "
            "this config does not list"
        )
    return f"unknown key {key} ({hint})"


def _refuse_added_keys_nothing_reads(
    overrides: list[Override], config_dir: Path, config_name: str, lines: list[str]
) -> None:
    """`+key=value` adds a key: one that nothing reads would be ignored in silence (+model.foo)
    or fail deep in a run (+optimizer.foo reaches SGD). Only ADDABLE keys and config groups
    (+group=option) may be added."""
    for override in overrides:
        key = override.key_or_group
        adds = override.is_add() or override.is_force_add()  # +key=value, ++key=value
        if not adds or key.startswith(ADDABLE) or (config_dir / key).is_dir():
            continue
        line = override.input_line
        keys = _config_keys(config_dir, config_name, [other for other in lines if other != line])
        if key not in keys:
            raise UserError(_unknown_key(key, line, keys))


def _config_keys(config_dir: Path, config_name: str, overrides: list[str]) -> list[str]:
    """Every dotted key of the config composed without the faulty override."""
    for attempt in (overrides, []):
        try:
            cfg = _compose(config_dir, config_name, attempt)
        except (HydraException, OmegaConfBaseException, ValueError):
            continue
        return list(_dotted(OmegaConf.to_container(cfg, resolve=False)))
    return []


def _dotted(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}{key}"
            yield from _dotted(value, f"{prefix}{key}.")


def _refuse_report_without_sweep(cfg: DictConfig) -> None:
    """report.after_sweep=true (experiment=report) reports when a sweep ends: a single run would
    train once, at one learning rate, and write no report."""
    if OmegaConf.select(cfg, "report.after_sweep", default=False) is True:
        grid = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
        swept = " ".join(f"{key}={value}" for key, value in grid.items())
        raise UserError(
            "report.after_sweep=true (experiment=report) builds its report when a sweep ends: "
            f"add -m to run the sweep{f' ({swept})' if swept else ''}, as in "
            "python -m finetune -m experiment=report data.root=..."
        )


def _refuse_used_folder(cfg: DictConfig, key: str) -> None:
    """A run folder that holds files keeps them: refuse before Hydra writes `.hydra/` there."""
    setup_globals()  # the ${now:...} resolver, as Hydra registers it when it runs
    try:
        folder = Path(str(OmegaConf.select(cfg, key)))
    except OmegaConfBaseException:
        return  # depends on the running job (${hydra:...}): nothing to check before the run
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{key}={folder} is a file, not a folder")
    held = next((p for p in folder.rglob("*") if not p.is_dir()), None) if folder.is_dir() else None
    if held is not None:
        raise UserError(
            f"run folder {folder} already exists and is kept (it holds {held.relative_to(folder)}):"
            f" choose a new {key}, or leave it out for a new dated folder"
        )
