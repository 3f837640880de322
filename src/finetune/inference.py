"""The one inference path of eval, predict, analyze and export: the model named by `ckpt=`, the
data it is evaluated on, and Lightning's predict loop under the settings that make scores
reproduce (`inference.precision`), whatever the training profile says."""

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from finetune.checkpoint import LoadedModel, load_checkpoint
from finetune.errors import UserError
from finetune.trainer import build_trainer

log = logging.getLogger(__name__)

DATA_SOURCE_KEYS = {"data", "data.kind", "data.root", "data.manifest"}
TRANSFORM_KEYS = ("image_size", "resize_size", "mean", "std")


def load_model(cfg: DictConfig) -> LoadedModel:
    """The model named by `ckpt=`, rebuilt from the checkpoint's own metadata."""
    if not cfg.ckpt:
        raise UserError(f"ckpt is not set: add ckpt=path/to/best_model.pt (mode={cfg.mode})")
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
    """A loaded network as a LightningModule whose predict step returns softmax scores."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).float().softmax(dim=1)


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
def _process_flags_restored(full_float32: bool) -> Iterator[None]:
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
        log.info(
            "scoring with inference.precision=%s (trainer.precision=%s is for training)",
            settings["precision"],
            trainer_cfg.precision,
        )
    single = OmegaConf.merge(cfg, {"trainer": settings})
    with _process_flags_restored(full_float32=settings["precision"] == "32-true"):
        trainer = build_trainer(single, run_dir)
        started = time.perf_counter()
        outputs = trainer.predict(module, dataloaders=loader)
        seconds = time.perf_counter() - started
    return outputs, seconds


def softmax_scores(
    cfg: DictConfig, run_dir: Path, net: nn.Module, loader: DataLoader
) -> tuple[torch.Tensor, float]:
    """N x C float32 softmax scores in loader order, and the seconds they took."""
    batches, seconds = run_predict(cfg, run_dir, Scorer(net), loader)
    return torch.cat(batches).float(), seconds


# -- which data ------------------------------------------------------------------------------
def override_keys(overrides: Sequence[str]) -> set[str]:
    """The config keys and groups that command-line overrides set, add or delete."""
    return {
        override.key_or_group
        for override in OverridesParser.create().parse_overrides(list(overrides))
    }


def names_data(keys: set[str]) -> bool:
    """True when the command line points at data of its own (see the module docstring)."""
    return bool(keys & DATA_SOURCE_KEYS)


def evaluation_data(cfg: DictConfig, loaded: LoadedModel) -> dict[str, Any]:
    """The data config to evaluate on (see eval_data_config)."""
    return eval_data_config(cfg, loaded, override_keys(HydraConfig.get().overrides.task))


def eval_data_config(cfg: DictConfig, loaded: LoadedModel, keys: set[str]) -> dict[str, Any]:
    """The data config to evaluate on: the command line's or the checkpoint's data, always
    with the checkpoint's evaluation transform."""
    named = names_data(keys)
    data = OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=named)
    ignored = sorted(keys & {f"data.{key}" for key in TRANSFORM_KEYS})
    if ignored:
        log.warning(
            "ignoring %s from the command line: the model is evaluated with the transform it "
            "was trained with (%d px)",
            ", ".join(ignored),
            loaded.data["image_size"],
        )
    data.update({key: loaded.data[key] for key in TRANSFORM_KEYS})
    moved = keys & DATA_SOURCE_KEYS == {"data.root"}  # the same data, in another folder
    if named and not moved:
        if not data["manifest"]:
            log.info(
                "data named on the command line: split=%s of a fresh split of %s (add "
                "data.manifest=%s to evaluate the checkpoint's own split)",
                cfg.split,
                data["root"],
                loaded.manifest or "<split.csv>",
            )
        return data
    data.update(kind=loaded.data["kind"], root=data["root"] if moved else loaded.data["root"])
    data["manifest"] = None if loaded.manifest is None else str(loaded.manifest)
    if loaded.manifest is None:
        log.warning(
            "%s has no split manifest (split.csv not found where it was written nor beside the "
            "checkpoint): split=%s is taken from a fresh split of %s (data.split, seed=%s), the "
            "training split only if those and the data are unchanged; data.root=... and "
            "data.manifest=... on the command line choose other data",
            loaded.path,
            cfg.split,
            data["root"],
            cfg.seed,
        )
    return data
