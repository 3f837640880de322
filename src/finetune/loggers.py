"""The experiment loggers of a training run."""

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig


def training_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """TensorBoard event files in <run_dir>/tensorboard (read back by eval's training curves)."""
    return [TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False)]
