"""mode=analyze: feature-map statistics of the fine-tuned and the ImageNet-pretrained network.

For every (model, dataset) pair, and every module in analysis.modules (`auto`: the
architecture's default, finetune.network.default_feature_modules): the share of non-positive
values and the eigenvalue spectrum of the channel covariance (finetune.features).

- Models: the checkpoint, and the ImageNet-pretrained network of its architecture (new head).
- Datasets (finetune.data.samples): seeded samples of split `split=` of the data mode=eval would
  score (finetune.evaluation_data), of an ImageNet folder and of CIFAR-10's test batch.
- Only what is absent is skipped, with one warning: a dataset not given (analysis.imagenet_root
  or analysis.cifar_root null) and ImageNet weights that cannot be had (WeightsUnavailable).
  Anything given but missing or broken (a mistyped folder too) is a UserError, raised before
  the pretrained weights are loaded (or downloaded) and before any result is written.
- Each pair runs through the one inference path (finetune.inference.run_predict): Lightning's
  predict loop on one device under inference.precision, never trainer.precision; the statistics
  are float64 either way. The reports: finetune.reports.analysis_report.
"""

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from finetune.checkpoint import LoadedModel
from finetune.data.datasets import ImageDataset
from finetune.data.loaders import image_loader
from finetune.data.samples import analysis_samples
from finetune.data.transforms import eval_transform
from finetune.errors import WeightsUnavailable
from finetune.evaluation_data import TRANSFORM_KEYS, evaluation_split
from finetune.features import FeatureStatsModule, feature_extractor
from finetune.inference import load_model, run_predict
from finetune.network import build_network, default_feature_modules
from finetune.reports.analysis_report import (
    DEFINITIONS,
    require_new_run_folder,
    stats_record,
    write_analysis_reports,
)
from finetune.tasks import run_folder

log = logging.getLogger(__name__)


def _module_names(value: Any) -> list[str] | None:
    """The listed module names (finetune.value_rules checked them), or None for `auto` (the
    architecture's default)."""
    if value == "auto":
        return None
    return list(dict.fromkeys([value] if isinstance(value, str) else value))


def _skip(skipped: list[dict[str, str]], what: str, name: str, reason: str) -> None:
    log.warning("skipping %s %s and its pairs: %s", what, name, reason)
    skipped.append({what: name, "reason": reason})


def _pretrained(cfg: DictConfig, loaded: LoadedModel, skipped: list) -> nn.Module | None:
    """The ImageNet-pretrained network of the checkpoint's architecture (new head), or None
    when its weights cannot be had (skipped)."""
    try:
        return build_network(
            len(loaded.class_names),
            "imagenet",
            cfg.model.head_seed,
            weights_url=cfg.model.get("weights_url"),
            arch=loaded.arch,
        ).eval()
    except WeightsUnavailable as error:  # absent: skipped; weights there but wrong: UserError
        _skip(skipped, "model", "pretrained", str(error))
        return None


def _measure(
    cfg: DictConfig,
    run_dir: Path,
    extractors: dict[str, nn.Module],
    datasets: dict[str, ImageDataset],
    modules: list[str],
) -> tuple[list[dict[str, Any]], str]:
    """Every (model, dataset) pair, one predict loop each; the records and the device used."""
    loader_cfg = OmegaConf.to_container(cfg.data.loader, resolve=True)
    records: list[dict[str, Any]] = []
    pair, total, device = 0, len(extractors) * len(datasets), ""
    for dataset_name, dataset in datasets.items():
        loader = image_loader(dataset, loader_cfg, batch_size=cfg.analysis.batch_size)
        for model_name, extractor in extractors.items():
            pair += 1
            label = f"[{pair}/{total}] {model_name} x {dataset_name}"
            log.info("%s: %d images ...", label, len(dataset))
            collector = FeatureStatsModule(extractor)
            _, seconds = run_predict(cfg, run_dir, collector, loader)
            records += [
                stats_record(model_name, dataset_name, m, collector.stats[m]) for m in modules
            ]
            device = collector.device_used
            log.info("%s: done in %.1f s", label, seconds)
    return records, device


def analyze(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    settings = cfg.analysis
    listed = _module_names(settings.modules)  # the numbers: finetune.validate
    loaded = load_model(cfg)
    modules = default_feature_modules(loaded.arch, loaded.net) if listed is None else listed
    skipped: list[dict[str, str]] = []
    # Unknown module names are a mistake in the command: refused before any data is read.
    extractors = {"fine-tuned": feature_extractor(loaded.net, modules)}
    run_dir = run_folder()
    require_new_run_folder(run_dir)
    transform = eval_transform(**{key: loaded.data[key] for key in TRANSFORM_KEYS})
    evaluated = evaluation_split(cfg, loaded, None)  # the data and split mode=eval would score
    # Every dataset given is read and checked before the pretrained weights are loaded (or
    # downloaded): a mistyped folder answers at once.
    datasets, sources, absent = analysis_samples(
        cfg.analysis, evaluated.datamodule, cfg.split, cfg.seed, transform
    )
    for name, reason in absent:
        _skip(skipped, "dataset", name, reason)
    pretrained = _pretrained(cfg, loaded, skipped)
    if pretrained is not None:
        extractors["pretrained"] = feature_extractor(pretrained, modules)
    records, device = _measure(cfg, run_dir, extractors, datasets, modules)
    payload = {
        "checkpoint": str(loaded.path.resolve()),  # read from elsewhere: a relative path breaks
        "arch": loaded.arch,
        "modules": modules,
        "num_images": settings.num_images,  # as asked; datasets.<name>.num_images: as read
        "top_k": settings.top_k,
        "seed": cfg.seed,
        "image_size": loaded.data["image_size"],
        "device": device,
        "precision": str(cfg.inference.precision),
        "definitions": DEFINITIONS,
        "datasets": sources,
        "skipped": skipped,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "results": records,
    }
    write_analysis_reports(run_dir, payload)
    return payload
