"""Dispatch on `cfg.mode`: each task is a function of the config that returns its results."""

import logging
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from finetune.config_keys import check_keys
from finetune.console import FILE_ONLY, quiet_console
from finetune.errors import UserError
from finetune.validate import check_inputs, validate_config

log = logging.getLogger(__name__)

TASKS = {
    "train": "finetune.tasks.train:train",
    "eval": "finetune.tasks.evaluate:evaluate",
    "analyze": "finetune.tasks.analyze:analyze",
    "predict": "finetune.tasks.predict:predict",
    "export": "finetune.tasks.export:export",
    "report": "finetune.tasks.report:report",
}


def run_folder() -> Path:
    """The folder Hydra made for this run (hydra.run.dir, or the sweep job's folder)."""
    return Path(HydraConfig.get().runtime.output_dir)


def _task(mode: str) -> Callable[[DictConfig], dict]:
    module, name = TASKS[mode].split(":")
    return getattr(import_module(module), name)


def check_config(cfg: DictConfig) -> None:
    """The keys, the mode, the values and `ckpt`, each mistake one UserError line; no torch or
    Lightning import. The command line and run() call it before Hydra makes a run folder,
    run_task again (a sweep's job, a job of another launcher)."""
    check_keys(cfg)  # every key there and resolvable, before any is read
    if cfg.mode not in TASKS:  # the one list of modes
        raise UserError(f"unknown mode={cfg.mode!r}: choose one of {', '.join(TASKS)}")
    validate_config(cfg)
    check_inputs(cfg)


def run_task(cfg: DictConfig) -> dict:
    """Check the config, then run the task it names, turning library errors into one line; the
    run's finetune.log ends with why it stopped, for the command line and run() alike.

    The checks come before the task's import (torch and Lightning, 5 s): a mistyped value or a
    missing ckpt answers in a second."""
    try:
        return _checked_and_run(cfg)
    except UserError as error:
        log.error("stopped: %s", error, extra=FILE_ONLY)
        raise
    except KeyboardInterrupt as interrupt:  # Ctrl-C: training's says how to resume
        said = str(interrupt) or f"mode={cfg.mode} stopped before it finished"
        log.error("interrupted: %s", said, extra=FILE_ONLY)
        raise KeyboardInterrupt(said) from None


def _checked_and_run(cfg: DictConfig) -> dict:
    check_config(cfg)
    task = _task(cfg.mode)
    quiet_console()  # after the import: importing Lightning adds the console handler it removes
    log.info("config (resolved):\n%s", OmegaConf.to_yaml(cfg, resolve=True), extra=FILE_ONLY)
    if HydraConfig.initialized():
        run_dir = HydraConfig.get().runtime.output_dir
        log.info("mode=%s: writing to %s (full config in its log file)", cfg.mode, run_dir)
    try:
        return task(cfg)
    except MissingMandatoryValue as error:
        key = getattr(error, "full_key", None) or str(error)
        raise UserError(f"{key} is not set: add {key}=... to the command") from None
