"""Building the Lightning Trainer from `cfg.trainer`, with its errors said in one line."""

from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from finetune.errors import UserError


def build_trainer(
    cfg: DictConfig, run_dir: Path, callbacks: list[Any] | None = None, logger: Any = False
) -> L.Trainer:
    """lightning.Trainer(**cfg.trainer) writing into `run_dir`."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    try:
        return L.Trainer(
            **kwargs, callbacks=callbacks or [], logger=logger, default_root_dir=str(run_dir)
        )
    except MisconfigurationException as error:
        message = str(error).strip().splitlines()[0]
        if "gpu" in message.lower() or "cuda" in message.lower():
            raise UserError(
                f"trainer.accelerator={kwargs.get('accelerator')} but no GPU is usable here "
                f"({message}): use trainer=cpu"
            ) from None
        raise UserError(f"trainer settings rejected by Lightning: {message}") from None
    except (TypeError, ValueError) as error:
        raise UserError(f"trainer settings rejected by Lightning: {error}") from None
