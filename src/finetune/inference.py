"""The one inference path of eval, predict, analyze and export.

- `load_model`: the model named by `ckpt=` (an unset ckpt is refused before the imports, by
  finetune.validate.check_inputs).
- the data it is evaluated on: finetune.evaluation_data (evaluation_split).
- `run_predict` / `softmax_scores`: Lightning's predict loop on one device under the settings
  that make scores reproduce (`inference.precision`), whatever the training profile says.
"""

import copy
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, open_dict
from torch import nn
from torch.utils.data import DataLoader

from finetune.checkpoint import LoadedModel, load_checkpoint
from finetune.errors import ctrl_c_interrupts
from finetune.trainer import build_trainer

log = logging.getLogger(__name__)

PREDICTIONS_CSV = "predictions.csv"  # eval's and predict's scores, one row per image


def load_model(cfg: DictConfig) -> LoadedModel:
    """The model named by `ckpt=`, rebuilt from the checkpoint's own metadata."""
    loaded = load_checkpoint(cfg.ckpt)
    log.info(
        "loaded %s: %d classes (%s), %d px",
        loaded.path,
        len(loaded.class_names),
        ", ".join(loaded.class_names),
        loaded.data["image_size"],
    )
    return loaded


class Scorer(L.LightningModule):
    """A loaded network as a LightningModule whose predict step returns softmax scores.

    Under bf16 (`precision` other than 32-true) the network and each batch are laid out
    channels-last, which doubles bf16 throughput on a CPU; float32 keeps the default layout, whose
    bits are the reference that saved scores are compared with."""

    def __init__(self, net: nn.Module, precision: str) -> None:
        super().__init__()
        fast = precision != "32-true"
        self.layout = torch.channels_last if fast else torch.contiguous_format
        self.net = net.to(memory_format=self.layout)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images = batch[0].contiguous(memory_format=self.layout)
        return self.net(images).float().softmax(dim=1)


def scoring_settings(cfg: DictConfig) -> dict[str, Any]:
    """The trainer flags scoring runs under, whatever the training profile says.

    `inference.precision=32-true` (the default): float32 with deterministic kernels and no
    cuDNN autotuning, so scores reproduce under any trainer profile (bf16 and benchmark on GPU).
    `bf16-mixed` (opt-in): autocast, autotuning as `trainer.benchmark` says, not deterministic.
    Always one device, and every batch (no limit_predict_batches, no fast_dev_run): every row
    must end up in this process, in order.
    """
    precision = str(cfg.inference.precision)
    reproducible = precision == "32-true"
    return {
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": precision,
        "deterministic": reproducible,
        "benchmark": False if reproducible else cfg.trainer.benchmark,
        "limit_predict_batches": None,
        "fast_dev_run": False,
    }


@contextmanager
def process_flags_restored(full_float32: bool) -> Iterator[None]:
    """Scoring changes process-wide torch flags (Lightning sets deterministic algorithms and
    cudnn.benchmark; float32 also turns off TF32, which cuDNN uses for float32 convolutions by
    default on recent GPUs): the caller's flags come back afterwards."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    if full_float32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        deterministic, warn_only, benchmark, conv_tf32, matmul_tf32 = saved
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.allow_tf32 = conv_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def run_predict(
    cfg: DictConfig, run_dir: Path, module: L.LightningModule, loader: DataLoader
) -> tuple[list[Any], float]:
    """Lightning's predict loop over `loader` (no logger, the flags of `scoring_settings`, one
    device): the predict-step outputs in loader order, and the seconds it took."""
    trainer_cfg = cfg.trainer
    if trainer_cfg.devices != 1 or trainer_cfg.num_nodes != 1:
        log.info("scoring on one device (trainer.devices=%s ignored)", trainer_cfg.devices)
    settings = scoring_settings(cfg)
    if settings["precision"] != trainer_cfg.precision:
        log.debug(  # eval's and predict's summary lines and files say the precision used
            "scoring with inference.precision=%s (trainer.precision=%s is for training)",
            settings["precision"],
            trainer_cfg.precision,
        )
    single = copy.deepcopy(cfg)
    with open_dict(single):  # limit_predict_batches is not a config key: scoring adds it
        single.trainer.merge_with(settings)
    with process_flags_restored(full_float32=settings["precision"] == "32-true"):
        trainer = build_trainer(single, run_dir)
        started = time.perf_counter()
        with ctrl_c_interrupts():
            outputs = trainer.predict(module, dataloaders=loader)
        seconds = time.perf_counter() - started
    return outputs, seconds


def softmax_scores(
    cfg: DictConfig, run_dir: Path, net: nn.Module, loader: DataLoader
) -> tuple[torch.Tensor, float]:
    """N x C float32 softmax scores in loader order, and the seconds they took."""
    scorer = Scorer(net, scoring_settings(cfg)["precision"])
    batches, seconds = run_predict(cfg, run_dir, scorer, loader)
    return torch.cat(batches).float(), seconds
