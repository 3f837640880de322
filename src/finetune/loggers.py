"""The experiment loggers of a training run: one Lightning logger per entry of the `logger`
config group (`logger=tensorboard`, `logger=[tensorboard,csv,mlflow]`), built by Hydra's
`instantiate` from its `_target_` and keys. Lightning sends every logger the same metrics.

The one argument of each logger that places it in the run (TensorBoard's and CSV's save_dir,
MLflow's run name) is null in the config and filled in here with the run folder, so that the
logger configs hold for any run folder, also where no Hydra job runs (training_loggers takes
the folder); a value set in the config (e.g. save_dir=${hydra:runtime.output_dir}/tb) is kept.
"""

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from finetune.errors import UserError
from finetune.io import user_path


def _folder(run_dir: Path) -> str:
    return os.fspath(run_dir)


# The argument, per logger class, that a null in the config leaves to the run folder.
RUN_FOLDER_ARGUMENT: dict[str, tuple[str, Callable[[Path], str]]] = {
    "lightning.pytorch.loggers.TensorBoardLogger": ("save_dir", _folder),
    "lightning.pytorch.loggers.CSVLogger": ("save_dir", _folder),
    "lightning.pytorch.loggers.MLFlowLogger": ("run_name", user_path),
}
# Loggers that pass the keys they do not know on to a writer they make at the first log (the
# TensorBoard SummaryWriter): the writer is made here, so that a wrong key is one line now.
WRITER_MADE_AT_FIRST_LOG = ("lightning.pytorch.loggers.TensorBoardLogger",)
# The optional package a logger class needs, and the extra of this project that installs it.
OPTIONAL_PACKAGE = {"lightning.pytorch.loggers.MLFlowLogger": ("mlflow", "mlflow")}


def _require_package(name: str, target: str) -> None:
    module, extra = OPTIONAL_PACKAGE.get(target, (None, None))
    if module and importlib.util.find_spec(module) is None:
        raise UserError(
            f"logger={name} needs the {module} package: pip install -e '.[{extra}]' "
            f"(or pip install 'finetune[{extra}]'), or choose another logger"
        )


def training_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """The Lightning loggers chosen by `cfg.logger` (none for `logger=[]`), writing to `run_dir`."""
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        target = node.get("_target_")
        if not target:
            raise UserError(f"logger.{name} has no _target_: choose logger=tensorboard|csv|mlflow")
        _require_package(name, target)
        filled = {}
        if target in RUN_FOLDER_ARGUMENT:
            argument, value_for = RUN_FOLDER_ARGUMENT[target]
            if node.get(argument) is None:
                filled[argument] = value_for(run_dir)
        try:
            logger = instantiate(node, **filled)
            if target in WRITER_MADE_AT_FIRST_LOG:
                logger.experiment  # noqa: B018 (made now: its TypeError is the user's key)
        except (InstantiationException, TypeError) as error:
            reason = " ".join(str(error.__cause__ or error).split())[:300]
            raise UserError(f"logger.{name} rejected by {target}: {reason}") from None
        loggers.append(logger)
    return loggers
