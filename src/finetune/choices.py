"""One-line answers to a bad command line, given before Hydra writes anything.

Hydra reports its own errors (an unknown key, a malformed override, a missing config) in 4 to 20
lines with exit status 1, and a run into an existing folder rewrites its `.hydra/*.yaml` before
the task can refuse. `check_command_line` parses and composes the command line the way Hydra is
about to, with the configs found where Hydra will look (the package's conf/, the user's folders
of --config-dir and hydra.searchpath; finetune.composition says a failed composition in one
line), and says the first problem in one line. Only hydra and omegaconf are imported here:
`--help` and `--cfg job` stay fast.
"""

import argparse
import functools
import os
from collections.abc import Sequence
from pathlib import Path

import yaml
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.types import Override
from hydra.core.utils import setup_globals
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from finetune.composition import (
    compose_as_cli,
    explain,
    group_options,
    refuse_added_keys_nothing_reads,
    search_path,
)
from finetune.errors import UserError
from finetune.interpolations import unresolved_reason
from finetune.overrides import first_job, parse_nth, unexpanded_tilde, unknown_choice
from finetune.sweep_check import check_sweep

# Flags Hydra answers itself (help, plugins, shell completion, a primary config folder of the
# user's own). --config-dir, which adds the user's folder to the package's, is checked here.
HYDRA_ANSWERS = (
    "help",
    "hydra_help",
    "info",
    "shell_completion",
    "experimental_rerun",
    "config_path",
)
EXCLUSIVE = ("run", "multirun", "cfg", "info", "shell_completion")
SHELL_COMPLETION = ("install", "uninstall", "query")  # what --shell-completion=... does
VERSIONED = ("hydra-core", "torch", "torchvision", "lightning", "torchmetrics")  # --version
# A process that is not rank 0 of a distributed launch re-runs the command line into the run
# folder its rank 0 made (Lightning's DDP launcher passes hydra.run.dir=<that folder>).
RANK_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "RANK")


def check_command_line(argv: Sequence[str], config_dir: Path) -> DictConfig | None:
    """Raise a one-line UserError for what Hydra would refuse in many lines, for a run (or
    sweep) folder that already holds files or starts with ~, and for hydra.job.chdir=true;
    return when the command line may run: with the config of the run it will make (of a sweep,
    its first run: the others are checked when they start; None for --cfg, --help and the like),
    whose values the caller can check before Hydra makes a run or sweep folder."""
    args = _parse_arguments(argv)
    flags = [f"--{name.replace('_', '-')}" for name in EXCLUSIVE]
    given = [flag for name, flag in zip(EXCLUSIVE, flags, strict=True) if getattr(args, name)]
    if len(given) > 1:
        raise UserError(f"only one of {', '.join(flags)} at a time (got {' and '.join(given)})")
    search = search_path(config_dir, _added_config_dir(args.config_dir))
    if any(getattr(args, name) for name in HYDRA_ANSWERS):
        return None
    overrides = [parse_nth(args.overrides, i) for i in range(len(args.overrides))]
    if args.multirun:
        lines = [line for line in map(first_job, overrides) if line is not None]
    else:
        lines = list(args.overrides)
    config_name = args.config_name or "config"
    _refuse_missing_search_folders(overrides)
    try:
        options = group_options(search, config_name, lines, [o.key_or_group for o in overrides])
    except (HydraException, OmegaConfBaseException, yaml.YAMLError):
        options = {}  # a broken primary config or hydra.searchpath: composing says what is wrong
    typo = unknown_choice(overrides, options)
    if typo:
        raise UserError(typo)
    try:
        cfg = compose_as_cli(search, config_name, lines)
    # (AttributeError, AssertionError: Hydra's own, e.g. hydra.sweeper.params={...} set on the
    # command line over the sweeper's null)
    except (
        HydraException,
        OmegaConfBaseException,
        ValueError,
        yaml.YAMLError,
        AttributeError,
        AssertionError,
    ) as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise  # the user asked for Hydra's full report
        if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
            mark = error.problem_mark  # a config file of the user's own that is not YAML
            raise UserError(
                f"{mark.name} is not valid YAML: {error.problem} (line {mark.line + 1}, column "
                f"{mark.column + 1})"
            ) from None
        raise UserError(explain(error, overrides, search, config_name, lines)) from None
    refuse_added_keys_nothing_reads(overrides, search, config_name, lines)
    sweep = args.multirun or OmegaConf.select(cfg, "hydra.mode") == RunMode.MULTIRUN
    if args.cfg is None and not sweep and cfg.mode == "train":
        _refuse_report_without_sweep(cfg)
    if args.cfg is None:
        _refuse_job_chdir(cfg)
    if args.cfg is None and not any(os.environ.get(name, "0") != "0" for name in RANK_VARIABLES):
        _refuse_used_folder(cfg, "hydra.sweep.dir" if args.multirun else "hydra.run.dir")
    if args.cfg is None and sweep:  # interval() for the basic sweeper, jobs sharing a folder
        check_sweep(overrides, cfg, search, config_name)
    return None if args.cfg is not None else cfg


def _added_config_dir(given: str | None) -> Path | None:
    """The user's config folder that --config-dir adds, as Hydra reads it (from the working
    folder); one that is not there is said in one line, not in Hydra's traceback-like report."""
    if given is None:
        return None
    folder = Path(os.path.abspath(given))
    if not folder.is_dir():
        tilde = "; ~ is expanded only at the start of a word: write $HOME" if "~" in given else ""
        raise UserError(
            f"--config-dir {given}: no folder {folder} (the folder of your own configs, such as "
            f"experiment/<name>.yaml){tilde}"
        )
    return folder


def _refuse_missing_search_folders(overrides: Sequence[Override]) -> None:
    """A `file://` folder of a hydra.searchpath override that is not there: Hydra would only warn,
    and then not find the options the user keeps in it."""
    for override in overrides:
        if override.get_key_element() != "hydra.searchpath":
            continue
        for entry in override.value() if isinstance(override.value(), list) else []:
            scheme, separator, path = str(entry).partition("://")
            if separator and scheme != "file":
                continue  # pkg://...: a package's configs, Hydra's to find
            folder = Path(os.path.abspath(path if separator else entry))
            if not folder.is_dir():
                raise UserError(
                    f"hydra.searchpath: no folder {folder} ({entry}): name the folder of your own "
                    "configs, as in hydra.searchpath=[file:///path/to/my_configs]"
                )


def _parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """Hydra's own argument parser, its usage errors said in one line."""
    parser = get_args_parser()

    def refuse(message: str) -> None:
        first = next((i for i, item in enumerate(argv) if not item.startswith("-")), len(argv))
        late = [item for item in argv[first:] if item.startswith("-")]
        if late and message.startswith("unrecognized arguments"):  # argparse stops at a flag
            raise UserError(
                f"{' '.join(late)} after the overrides: put the flags first "
                "(python -m finetune <flags> key=value ...)"
            )
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


@functools.cache
def _versions() -> str:
    """`finetune X (Hydra Y, torch Z, ...)`, read from the installed metadata: no import (10 ms,
    once per process: run() and the tests parse many command lines)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in VERSIONED)
    return f"finetune {installed('finetune')} ({libraries})"


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


def _refuse_job_chdir(cfg: DictConfig) -> None:
    """hydra.job.chdir=true would run the task inside its run folder, where the relative paths
    checked here (data.root, ckpt, ...) no longer lead: refuse before the folder is made."""
    if OmegaConf.select(cfg, "hydra.job.chdir", default=False) is True:
        raise UserError(
            "hydra.job.chdir=true is not supported: finetune reads data.root, ckpt and its other "
            "paths from the folder the command is typed in and writes into its run folder by "
            "itself; leave hydra.job.chdir out"
        )


def _refuse_used_folder(cfg: DictConfig, key: str) -> None:
    """A run folder that holds files keeps them: refuse before Hydra writes `.hydra/` there.
    Hydra does not expand `~`: `~/runs/x` would be a folder named `~` here, refused too."""
    setup_globals()  # the ${now:...} resolver, as Hydra registers it when it runs
    try:
        folder = Path(str(OmegaConf.select(cfg, key)))
    except OmegaConfBaseException as error:
        if "HydraConfig was not set" in str(error):
            return  # depends on the running job (${hydra:...}): nothing to check before the run
        written = OmegaConf.to_container(cfg.hydra, resolve=False)
        for name in key.split(".")[1:]:
            written = written[name]
        reason = (
            unresolved_reason(error, cfg)
            if isinstance(error, InterpolationResolutionError)
            else str(error).splitlines()[0]
        )
        raise UserError(f"{key}={written} cannot be resolved: {reason}") from None
    if str(folder).startswith("~"):
        raise UserError(unexpanded_tilde(key, str(folder)))
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{key}={folder} is a file, not a folder")
    held = next((p for p in folder.rglob("*") if not p.is_dir()), None) if folder.is_dir() else None
    if held is not None:
        raise UserError(
            f"run folder {folder} already exists and is kept (it holds {held.relative_to(folder)}):"
            f" choose a new {key}, or leave it out for a new dated folder"
        )
