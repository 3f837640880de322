"""Which data a checkpoint is evaluated on (eval, analyze; predict takes the transform), by a
rule that reads the composed config alone: the checkpoint's own data and split manifest unless
`data.source=config`; `data.root`, when set, says where the checkpoint's data lives now. The
evaluation transform (image_size, resize_size, mean, std) is always the checkpoint's.
"""

import logging
from pathlib import Path
from typing import Any, NamedTuple

from omegaconf import DictConfig, OmegaConf

from finetune.checkpoint import LoadedModel
from finetune.data.datamodule import ImageDataModule
from finetune.data.datasets import ImageDataset
from finetune.data.splits import SPLITS
from finetune.errors import UserError

log = logging.getLogger(__name__)

TRANSFORM_KEYS = ("image_size", "resize_size", "mean", "std")  # always the checkpoint's


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
    unused = [key for key in TRANSFORM_KEYS if data[key] != loaded.data[key]]
    if unused:  # the config's defaults differ from any checkpoint's: a note, not a warning
        log.info(
            "evaluated with the checkpoint's transform (%s), not the config's data.%s",
            ", ".join(f"{key}={loaded.data[key]}" for key in unused),
            ", data.".join(unused),
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
        _recompute_split(data, loaded, cfg.split)
    return data


def _recompute_split(data: dict[str, Any], loaded: LoadedModel, split: str) -> None:
    """Without its manifest, the checkpoint's split is made again from the data.split (test,
    val, seed) it was trained with: the same split as long as the data are unchanged. (Every
    checkpoint written by mode=train records it; else the configured data.split is used.)"""
    source = "the checkpoint's own" if loaded.split is not None else "the configured"
    data["split"] = dict(loaded.split or data["split"])
    log.warning(
        "%s has no split manifest (split.csv not found where it was written nor beside the "
        "checkpoint): split=%s is recomputed from %s data.split (%s) on %s, the training split "
        "as long as the data are unchanged; data.source=config data.manifest=... chooses "
        "another split",
        loaded.path,
        split,
        source,
        ", ".join(f"{key}={value}" for key, value in data["split"].items()),
        data["root"],
    )


def model_labels(loaded: LoadedModel, data_classes: list[str], root: Any) -> list[int]:
    """The checkpoint's label of each of the data's classes, matched by name: the same names in
    another order are matched; another count or other names are refused (matching those by
    position would score silently wrong labels)."""
    model_classes = list(loaded.class_names)
    if len(data_classes) != len(model_classes):
        raise UserError(
            f"ckpt={loaded.path} predicts {len(model_classes)} classes but the data at "
            f"{root} has {len(data_classes)}: evaluate a model on data with its own classes"
        )
    if sorted(data_classes) != sorted(model_classes):
        raise UserError(
            f"the classes of the data at {root} ({', '.join(data_classes)}) are not those "
            f"ckpt={loaded.path} predicts ({', '.join(model_classes)}): labels are matched by "
            "name, so rename the data's class folders to the model's names"
        )
    if list(data_classes) != model_classes:
        log.info("the data lists the model's classes in another order: labels matched by name")
    return [model_classes.index(name) for name in data_classes]


class EvaluationSplit(NamedTuple):
    data: dict[str, Any]  # the data config of evaluation_data
    datamodule: ImageDataModule  # its eval_loader serves `dataset`
    dataset: ImageDataset  # split `split=`, never empty, labelled as the model labels it


def evaluation_split(cfg: DictConfig, loaded: LoadedModel, run_dir: Path | None) -> EvaluationSplit:
    """The split `split=` of `evaluation_data`, read by the DataModule (its split.csv and
    skipped-image list go to `run_dir`; None writes nothing); refused when empty."""
    data_cfg = evaluation_data(cfg, loaded)
    datamodule = ImageDataModule(data_cfg, cfg.seed, run_dir, only=cfg.split)
    its_own_root = data_cfg["root"] == loaded.data["root"]
    if not datamodule.root.is_dir():  # the demo is written again, but only where it was
        if not its_own_root:
            raise UserError(f"data.root={datamodule.root} does not exist")
        if not datamodule.data_kind.writes_its_data:
            raise UserError(
                f"the checkpoint's data folder {datamodule.root} does not exist: if the data "
                "has moved, add data.root=<its folder now> (the checkpoint's split is kept)"
            )
    labels = model_labels(loaded, datamodule.class_names, datamodule.root)
    datamodule.setup()
    dataset = datamodule.datasets[cfg.split]
    if not len(dataset):
        others = [name for name in SPLITS if name != cfg.split and name != "train"]
        raise UserError(
            f"split={cfg.split} of {datamodule.root} is empty (data.split.{cfg.split}=0 when it "
            f"was made?): use {' or '.join(f'split={name}' for name in others)}"
        )
    if labels != list(range(len(labels))):  # the model's labels, for every use of the split
        dataset.labels = [labels[label] for label in dataset.labels]
    return EvaluationSplit(data_cfg, datamodule, dataset)
