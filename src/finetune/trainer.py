"""Building the Lightning Trainer from `cfg.trainer`, with its errors said in one line."""

from pathlib import Path
from typing import Any

import lightning as L
import torch
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
        if _no_gpu_for(str(kwargs.get("accelerator")).lower()):
            raise UserError(
                f"trainer.accelerator={kwargs.get('accelerator')} but no GPU is usable here "
                f"({_one_line(error)}): use trainer=cpu"
            ) from None
        raise UserError(f"trainer settings rejected by Lightning: {_one_line(error)}") from None
    except (TypeError, ValueError) as error:
        raise UserError(f"trainer settings rejected by Lightning: {_one_line(error)}") from None


def _no_gpu_for(accelerator: str) -> bool:
    """True only where torch sees no device at all of the kind asked for; any other GPU problem
    (more devices than GPUs, a strategy that needs several) keeps Lightning's own reason."""
    if accelerator == "cuda":
        return not torch.cuda.is_available()
    if accelerator == "gpu":  # Lightning's "gpu" is CUDA, or MPS on a Mac
        return not torch.cuda.is_available() and not torch.backends.mps.is_available()
    return False


def _one_line(error: Exception) -> str:
    return " ".join(line.strip() for line in str(error).strip().splitlines() if line.strip())
