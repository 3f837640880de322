"""Building the Lightning Trainer from `cfg.trainer`, with its errors said in one line."""

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Timer
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
        accelerator = kwargs.get("accelerator")
        if _no_gpu_for(str(accelerator).lower()):
            # the trainer's other settings (DDP's processes, ...) run on CPU processes too
            ddp = " (trainer=ddp trainer.accelerator=cpu: DDP over CPU processes)"
            raise UserError(
                f"trainer.accelerator={accelerator} but no GPU is usable here "
                f"({_one_line(error)}): use trainer=cpu, or add trainer.accelerator=cpu to keep "
                f"the other trainer settings{ddp if 'ddp' in str(kwargs.get('strategy')) else ''}"
            ) from None
        raise UserError(f"trainer settings rejected by Lightning: {_one_line(error)}") from None
    except ModuleNotFoundError as error:  # an accelerator or precision of an optional package
        raise UserError(
            f"trainer settings rejected by Lightning: {_one_line(error)} (an optional package "
            "they need is not installed)"
        ) from None
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


def time_limit(trainer: L.Trainer) -> Timer | None:
    """The Timer callback Lightning adds for trainer.max_time (None without a time limit)."""
    return next((callback for callback in trainer.callbacks if isinstance(callback, Timer)), None)
