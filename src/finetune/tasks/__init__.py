"""Dispatch on `cfg.mode`: each task is a function of the config that returns its results."""

import logging
from collections.abc import Callable
from importlib import import_module

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from finetune.errors import UserError
from finetune.validate import validate_config

log = logging.getLogger(__name__)

TASKS = {
    "train": "finetune.tasks.train:train",
    "eval": "finetune.tasks.evaluate:evaluate",
    "analyze": "finetune.tasks.analyze:analyze",
    "predict": "finetune.tasks.predict:predict",
    "export": "finetune.tasks.export:export",
}


def _task(mode: str) -> Callable[[DictConfig], dict]:
    if mode not in TASKS:
        raise UserError(f"unknown mode={mode!r}: choose one of {', '.join(TASKS)}")
    module, name = TASKS[mode].split(":")
    return getattr(import_module(module), name)


def _single_console() -> None:
    """Lightning adds its own console handler; Hydra's root handlers already print (and log)."""
    for handler in list(logging.getLogger("lightning").handlers):
        logging.getLogger("lightning").removeHandler(handler)


def run_task(cfg: DictConfig) -> dict:
    """Check the config, then run the task it names, turning library errors into one line."""
    task = _task(cfg.mode)  # the one list of modes: TASKS
    validate_config(cfg)
    _single_console()
    log.info("config (also in .hydra/config.yaml):\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        return task(cfg)
    except MissingMandatoryValue as error:
        key = getattr(error, "full_key", None) or str(error)
        raise UserError(f"{key} is not set: add {key}=... to the command") from None
