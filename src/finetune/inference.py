"""The one inference path of eval, predict, analyze and export.

- `load_model`: the model named by `ckpt=` (the one "ckpt is not set" answer).
- `evaluation_data` / `evaluation_split`: the data it is evaluated on, by a rule that reads the
  composed config alone: the checkpoint's own data and split manifest unless
  `data.source=config`; `data.root`, when set, says where the checkpoint's data lives now. The
  evaluation transform (image_size, resize_size, mean, std) is always the checkpoint's.
- `run_predict` / `softmax_scores`: Lightning's predict loop on one device under the settings
  that make scores reproduce (`inference.precision`), whatever the training profile says.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from finetune.checkpoint import LoadedModel, load_checkpoint
from finetune.data.datamodule import ImageDataModule
from finetune.data.splits import SPLITS
from finetune.errors import UserError
from finetune.trainer import build_trainer

log = logging.getLogger(__name__)

TRANSFORM_KEYS = ("image_size", "resize_size", "mean", "std")  # always the checkpoint's
PREDICTIONS_CSV = "predictions.csv"  # eval's and predict's scores, one row per image


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
    """A loaded network as a LightningModule whose predict step returns softmax scores.

    `channels_last` (the bf16 path only) lays the network and each batch out channels-last: with
    bf16 that doubles CPU throughput; float32 keeps the default layout, whose bits are the
    reference that saved scores are compared with."""

    def __init__(self, net: nn.Module, channels_last: bool = False) -> None:
        super().__init__()
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
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
    single = OmegaConf.merge(cfg, {"trainer": settings})
    with process_flags_restored(full_float32=settings["precision"] == "32-true"):
        trainer = build_trainer(single, run_dir)
        started = time.perf_counter()
        outputs = trainer.predict(module, dataloaders=loader)
        seconds = time.perf_counter() - started
    return outputs, seconds


def softmax_scores(
    cfg: DictConfig, run_dir: Path, net: nn.Module, loader: DataLoader
) -> tuple[torch.Tensor, float]:
    """N x C float32 softmax scores in loader order, and the seconds they took."""
    fast = scoring_settings(cfg)["precision"] != "32-true"
    batches, seconds = run_predict(cfg, run_dir, Scorer(net, channels_last=fast), loader)
    return torch.cat(batches).float(), seconds


# -- which data ------------------------------------------------------------------------------
def evaluation_data(cfg: DictConfig, loaded: LoadedModel) -> dict[str, Any]:
    """The data config to evaluate on, from the composed config alone (a value set on the
    command line or in an experiment file means the same). `data.source=checkpoint`: the
    checkpoint's kind and manifest, in `data.root` when set (the data moved; the demo's default
    root, its cache folder, is where the demo is materialised), else in the checkpoint's root.
    `data.source=config`: `data` as composed (its manifest, or a fresh split by data.split and
    seed). Either way with the checkpoint's evaluation transform."""
    if cfg.data.source == "config":
        data = _configured_data(cfg, loaded)
    else:
        data = _checkpoint_data(cfg, loaded)
    return data | {key: loaded.data[key] for key in TRANSFORM_KEYS}


def _configured_data(cfg: DictConfig, loaded: LoadedModel) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=True)
    ignored = [key for key in TRANSFORM_KEYS if data[key] != loaded.data[key]]
    if ignored:
        log.warning(
            "%s ignored: the model is evaluated with the transform it was trained with (%s)",
            ", ".join(f"data.{key}={data[key]}" for key in ignored),
            ", ".join(f"{key}={loaded.data[key]}" for key in ignored),
        )
    if not data["manifest"]:
        log.info(
            "data.source=config: split=%s of a fresh split of %s (add data.manifest=%s to "
            "evaluate the checkpoint's own split)",
            cfg.split,
            data["root"],
            loaded.manifest or "<split.csv>",
        )
    return data


def _checkpoint_data(cfg: DictConfig, loaded: LoadedModel) -> dict[str, Any]:
    data = OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=False)
    moved = not OmegaConf.is_missing(cfg.data, "root") and data["root"] is not None
    if data["manifest"] or (moved and data["kind"] != loaded.data["kind"]):
        log.warning(
            "data.source=checkpoint: evaluating the checkpoint's %s data and split, not "
            "data.kind=%s data.manifest=%s (add data.source=config to evaluate those)",
            loaded.data["kind"],
            data["kind"],
            data["manifest"],
        )
    data.update(
        kind=loaded.data["kind"],
        root=data["root"] if moved else loaded.data["root"],
        manifest=None if loaded.manifest is None else str(loaded.manifest),
    )
    if loaded.manifest is None:
        log.warning(
            "%s has no split manifest (split.csv not found where it was written nor beside the "
            "checkpoint): split=%s is taken from a fresh split of %s (data.split, seed=%s), the "
            "training split only if those and the data are unchanged; data.source=config "
            "data.manifest=... chooses another split",
            loaded.path,
            cfg.split,
            data["root"],
            cfg.seed,
        )
    return data


def check_classes(loaded: LoadedModel, data_classes: list[str], root: Any) -> None:
    """Refuse data with another class count; warn when only the names differ."""
    if len(data_classes) != len(loaded.class_names):
        raise UserError(
            f"ckpt={loaded.path} predicts {len(loaded.class_names)} classes but the data at "
            f"{root} has {len(data_classes)}: evaluate a model on data with its own classes"
        )
    if list(data_classes) != list(loaded.class_names):
        log.warning(
            "class names differ (model: %s; data: %s): labels are matched by position",
            ", ".join(loaded.class_names),
            ", ".join(data_classes),
        )


class EvaluationSplit(NamedTuple):
    data: dict[str, Any]  # the data config of evaluation_data
    datamodule: ImageDataModule  # its eval_loader serves `dataset`
    dataset: Dataset  # split `split=`, never empty


def evaluation_split(cfg: DictConfig, loaded: LoadedModel, run_dir: Path | None) -> EvaluationSplit:
    """The split `split=` of `evaluation_data`, read by the DataModule (its split.csv and
    skipped-image list go to `run_dir`; None writes nothing); refused when empty."""
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split!r} is unknown: use one of {', '.join(SPLITS)}")
    data_cfg = evaluation_data(cfg, loaded)
    datamodule = ImageDataModule(data_cfg, cfg.seed, run_dir, only=cfg.split)
    if datamodule.kind != "demo" and not datamodule.root.is_dir():
        if data_cfg["root"] == loaded.data["root"]:
            raise UserError(
                f"the checkpoint's data folder {datamodule.root} does not exist: if the data "
                "has moved, add data.root=<its folder now> (the checkpoint's split is kept)"
            )
        raise UserError(f"data.root={datamodule.root} does not exist")
    check_classes(loaded, datamodule.class_names, datamodule.root)
    datamodule.setup()
    dataset = datamodule.datasets[cfg.split]
    if not len(dataset):
        raise UserError(f"split={cfg.split} of {datamodule.root} is empty: choose another split")
    return EvaluationSplit(data_cfg, datamodule, dataset)
