"""mode=analyze: feature-map statistics of the fine-tuned and the ImageNet-pretrained network.

For every (model, dataset) pair whose inputs exist, and every module in analysis.modules: the
share of non-positive values and the eigenvalue spectrum of the channel covariance (see
finetune.features). A missing dataset or missing ImageNet weights skip their pairs with one
warning each; the rest still runs.
"""

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.progress import track
from torch import nn
from torch.utils.data import DataLoader

from finetune.checkpoint import LoadedModel, load_checkpoint
from finetune.data import cifar10
from finetune.data.datamodule import loader_settings
from finetune.data.datasets import ImageDataset
from finetune.data.demo import materialise_demo
from finetune.data.folder import FolderReader
from finetune.data.imagenet_val import imagenet_items
from finetune.data.images import describe, split_readable
from finetune.data.splits import read_manifest
from finetune.data.transforms import eval_transform
from finetune.errors import UserError
from finetune.features import (
    FeatureStats,
    collect_feature_stats,
    feature_extractor,
    spectrum_summary,
)
from finetune.io import write_csv, write_json, write_text
from finetune.network import build_network
from finetune.reports.analysis_figures import spectrum_path, write_spectrum_figures
from finetune.reports.figures import FigureSink
from finetune.reports.markdown import markdown_table

log = logging.getLogger(__name__)

STATS = "feature_stats.json"
NONPOSITIVE = "nonpositive.csv"
SUMMARY = "analysis.md"
DATA_LABELS = {"folder": "scenes", "demo": "demo", "cifar10": "cifar10"}
DEFINITIONS = {
    "nonpositive_fraction": "share of the feature-map elements <= 0, over all elements of all "
    "N maps (N x C x H x W)",
    "covariance": "unbiased (N - 1) covariance over channels of the spatially averaged maps "
    "(one C-vector per image), accumulated in float64",
    "eigenvalues": "eigenvalues of that C x C covariance, largest first",
    "rank": "eigenvalues above rounding noise (numpy.linalg.matrix_rank's tolerance); at most "
    "N - 1",
    "share_top1": "largest eigenvalue / sum of eigenvalues",
    "share_top10": "sum of the 10 largest eigenvalues / sum of eigenvalues",
    "effective_rank": "exp(entropy of the normalised spectrum lambda / sum(lambda)) (Roy & "
    "Vetterli 2007): C for a flat spectrum, 1 if one direction holds all the variance",
    "sample": "up to analysis.num_images images per dataset: the first of a shuffle seeded by "
    "`seed`, read in file order (a manifest lists its images class by class: its first N "
    "would be one class)",
}


def _whole(value: Any, key: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"{key}={value!r} must be a whole number >= {minimum}")
    return value


def _modules(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | ListConfig) or not all(isinstance(n, str) for n in names):
        raise UserError(f"analysis.modules={value!r} must be a list of module names")
    return list(dict.fromkeys(names))


def _device(accelerator: str) -> torch.device:
    """trainer.accelerator picks the device: plain inference needs no Lightning Trainer."""
    cuda = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not cuda:
        raise UserError(f"trainer.accelerator={accelerator} but no CUDA GPU is visible: use cpu")
    return torch.device("cuda" if cuda and accelerator in ("gpu", "cuda", "auto") else "cpu")


# -- datasets ----------------------------------------------------------------------------------
def _sample(items: list[str], labels: list[int], count: int, seed: int):
    """The first `count` of a seeded shuffle, back in file order (see DEFINITIONS["sample"])."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(items))[:count])
    if len(chosen) < 2:
        raise UserError(f"it holds {len(chosen)} image(s): the covariance needs at least 2")
    return [items[i] for i in chosen], [labels[i] for i in chosen]


def _folder_dataset(root: Path, items, labels, transform) -> ImageDataset:
    keep, bad = split_readable(root, items)
    if bad:
        log.warning("skipping %d sampled file(s) that do not decode: %s", len(bad), describe(bad))
    return ImageDataset(
        FolderReader(root), [items[i] for i in keep], [labels[i] for i in keep], transform
    )


def _configured_folder(value: Any, key: str, what: str) -> Path:
    if not value:
        raise UserError(f"{key} is not set (add {key}=PATH, {what})")
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise UserError(f"{key}={path} does not exist (it must be {what})")
    return path


def checkpoint_split(loaded: LoadedModel, split: str, transform, count: int, seed: int):
    """A sample of the split the checkpoint was evaluated on, from its training manifest."""
    if loaded.manifest is None:
        raise UserError(f"no split.csv found for {loaded.path}: the checkpoint's split is unknown")
    items, labels, splits = read_manifest(loaded.manifest, loaded.class_names)
    index = [i for i, name in enumerate(splits) if name == split]
    items, labels = _sample([items[i] for i in index], [labels[i] for i in index], count, seed)
    root = Path(str(loaded.data["root"])).expanduser()
    if loaded.data["kind"] == "cifar10":
        _, _, images = cifar10.read_batches(root, sorted({i.rsplit(":", 1)[0] for i in items}))
        return ImageDataset(cifar10.CifarReader(root, images), items, labels, transform)
    if loaded.data["kind"] == "demo":
        materialise_demo(root)
    return _folder_dataset(root, items, labels, transform)


def imagenet_split(analysis: DictConfig, transform, count: int, seed: int) -> ImageDataset:
    root = _configured_folder(
        analysis.imagenet_root, "analysis.imagenet_root", "the flat folder of ILSVRC2012_val_*.JPEG"
    )
    labels_file = Path(analysis.imagenet_labels).expanduser() if analysis.imagenet_labels else None
    items, labels = _sample(*imagenet_items(root, labels_file), count, seed)
    return _folder_dataset(root, items, labels, transform)


def cifar_split(analysis: DictConfig, transform, count: int, seed: int) -> ImageDataset:
    root = _configured_folder(
        analysis.cifar_root, "analysis.cifar_root", "the cifar-10-batches-py folder"
    )
    items, labels, images = cifar10.read_batches(root, [cifar10.TEST_BATCH])
    items, labels = _sample(items, labels, count, seed)
    return ImageDataset(cifar10.CifarReader(root, images), items, labels, transform)


def _available(builders: list[tuple[str, Callable]], what: str, skipped: list) -> dict[str, Any]:
    """Build each named input; one that cannot be built is skipped with one warning."""
    built: dict[str, Any] = {}
    for name, build in builders:
        try:
            if name in built:
                raise UserError(f"a {what} named {name} is already analysed")
            built[name] = build()
        except UserError as error:
            log.warning("skipping %s %s and its pairs: %s", what, name, error)
            skipped.append({what: name, "reason": str(error)})
    return built


# -- reports -----------------------------------------------------------------------------------
def _record(model: str, dataset: str, module: str, stats: FeatureStats) -> dict[str, Any]:
    eigenvalues = stats.eigenvalues()
    return {
        "model": model,
        "dataset": dataset,
        "module": module,
        "num_images": stats.count,
        "shape": list(stats.shape),
        "nonpositive_fraction": stats.nonpositive_fraction,
        "nonpositive_elements": stats.nonpositive,
        "elements": stats.elements,
        **spectrum_summary(eigenvalues),
        "eigenvalues": eigenvalues.tolist(),
    }


def _by_pair(records: list[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    pairs: dict[tuple[str, str], dict[str, dict]] = {}
    for record in records:
        pairs.setdefault((record["model"], record["dataset"]), {})[record["module"]] = record
    return pairs


def nonpositive_rows(records: list[dict], modules: list[str]) -> list[list[Any]]:
    """One row per (model, dataset): the non-positive % of each module (the report's table)."""
    return [
        [model, dataset, *(round(100 * by[m]["nonpositive_fraction"], 4) for m in modules)]
        for (model, dataset), by in _by_pair(records).items()
    ]


def summary_markdown(payload: dict[str, Any]) -> str:
    modules, top_k, records = payload["modules"], payload["top_k"], payload["results"]
    pairs = _by_pair(records)
    lines = [
        "# Feature-map statistics (mode=analyze)",
        "",
        f"Checkpoint `{payload['checkpoint']}`; up to {payload['num_images']} images per dataset "
        f"(seeded sample, seed {payload['seed']}), evaluation transform "
        f"{payload['image_size']} px; computed in {payload['wall_time_s']} s "
        f"on {payload['device']}.",
        "",
        "## Non-positive values (% of all feature-map elements)",
        "",
        markdown_table(
            ["model", "dataset", "N", *modules],
            [
                [
                    model,
                    dataset,
                    next(iter(by.values()))["num_images"],
                    *(100 * by[m]["nonpositive_fraction"] for m in modules),
                ]
                for (model, dataset), by in pairs.items()
            ],
            digits=2,
        ),
        "## Eigenvalues of the channel covariance",
        "",
        *(f"- **{key}**: {text}" for key, text in DEFINITIONS.items()),
        "",
    ]
    for module in modules:
        shape = next(iter(pairs.values()))[module]["shape"]
        lines += [
            f"### {module} ({shape[0]} channels, {' x '.join(map(str, shape[1:])) or '1'})",
            "",
            markdown_table(
                [
                    "model",
                    "dataset",
                    f"top-{top_k} eigenvalues",
                    "top-1 share",
                    "top-10 share",
                    "effective rank",
                    "rank",
                ],
                [
                    [
                        model,
                        dataset,
                        ", ".join(f"{v:.3g}" for v in r["eigenvalues"][:top_k]),
                        r["share_top1"],
                        r["share_top10"],
                        r["effective_rank"],
                        r["rank"],
                    ]
                    for (model, dataset), r in ((pair, by[module]) for pair, by in pairs.items())
                ],
                digits=3,
            ),
            f"![{module}]({spectrum_path(module)})",
            "",
        ]
    if payload["skipped"]:
        lines += ["## Skipped", ""]
        lines += [
            f"- {what} {name}: {reason}"
            for (what, name), (_, reason) in (s.items() for s in payload["skipped"])
        ]
    return "\n".join(lines) + "\n"


def _spectra(records: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    spectra: dict[str, dict[str, np.ndarray]] = {}
    for record in records:
        label = f"{record['model']} / {record['dataset']}"
        spectra.setdefault(record["module"], {})[label] = np.asarray(record["eigenvalues"])
    return spectra


# -- the task ----------------------------------------------------------------------------------
def _measure(
    extractors: dict[str, nn.Module],
    datasets: dict[str, ImageDataset],
    modules: list[str],
    cfg: DictConfig,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Every (model, dataset) pair: one pass over the dataset per model, logged as it goes."""
    records: list[dict[str, Any]] = []
    pair, total = 0, len(extractors) * len(datasets)
    for dataset_name, dataset in datasets.items():
        kwargs = loader_settings(OmegaConf.to_container(cfg.data.loader, resolve=True))
        kwargs["pin_memory"] = device.type == "cuda"
        loader = DataLoader(dataset, batch_size=cfg.analysis.batch_size, shuffle=False, **kwargs)
        for model_name, extractor in extractors.items():
            pair, pair_started = pair + 1, time.perf_counter()
            label = f"[{pair}/{total}] {model_name} x {dataset_name}"
            log.info("%s: %d images ...", label, len(dataset))
            batches = (
                images
                for images, _ in track(
                    loader,
                    description=label,
                    disable=not cfg.trainer.enable_progress_bar,
                    transient=True,
                )
            )
            stats = collect_feature_stats(extractor, batches, device)
            records += [_record(model_name, dataset_name, m, stats[m]) for m in modules]
            log.info("%s: done in %.1f s", label, time.perf_counter() - pair_started)
    return records


def _write_reports(run_dir: Path, payload: dict[str, Any]) -> None:
    modules, records = payload["modules"], payload["results"]
    write_json(run_dir / STATS, payload)
    write_csv(
        run_dir / NONPOSITIVE, ["model", "dataset", *modules], nonpositive_rows(records, modules)
    )
    markdown = summary_markdown(payload)
    sink = FigureSink(run_dir)
    try:
        write_spectrum_figures(sink, _spectra(records))
        sink.writer.add_text("analysis/summary", markdown)
    finally:
        sink.close()
    write_text(run_dir / SUMMARY, markdown)
    log.info(
        "wrote %s, %s, %s and %d spectrum plots to %s",
        STATS,
        NONPOSITIVE,
        SUMMARY,
        len(modules),
        run_dir,
    )


def analyze(cfg: DictConfig) -> dict[str, Any]:
    started = time.perf_counter()
    settings = cfg.analysis
    modules = _modules(settings.modules)
    count = _whole(settings.num_images, "analysis.num_images", 2)
    top_k = _whole(settings.top_k, "analysis.top_k", 1)
    _whole(settings.batch_size, "analysis.batch_size", 1)
    if not cfg.ckpt:
        raise UserError("ckpt is not set: add ckpt=path/to/best_model.pt (the model to analyse)")
    device = _device(cfg.trainer.accelerator)
    loaded = load_checkpoint(cfg.ckpt)
    data = loaded.data
    transform = eval_transform(data["image_size"], data["resize_size"], data["mean"], data["std"])
    skipped: list[dict[str, str]] = []

    def pretrained() -> nn.Module:
        return build_network(len(loaded.class_names), "imagenet", cfg.model.head_seed).eval()

    models = _available(
        [("fine-tuned", lambda: loaded.net), ("pretrained", pretrained)], "model", skipped
    )
    # Unknown module names are a mistake in the command: refused before any data is read.
    extractors = {name: feature_extractor(net, modules) for name, net in models.items()}
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    taken = [run_dir / name for name in (STATS, NONPOSITIVE, SUMMARY) if (run_dir / name).exists()]
    if taken:
        raise UserError(f"{taken[0]} already exists and is kept: write into a new run folder")
    own = f"{DATA_LABELS.get(data['kind'], data['kind'])}-{cfg.split}"
    datasets = _available(
        [
            (own, lambda: checkpoint_split(loaded, cfg.split, transform, count, cfg.seed)),
            ("imagenet-val", lambda: imagenet_split(settings, transform, count, cfg.seed)),
            ("cifar10-test", lambda: cifar_split(settings, transform, count, cfg.seed)),
        ],
        "dataset",
        skipped,
    )
    if not models or not datasets:
        raise UserError("nothing to analyse: " + "; ".join(s["reason"] for s in skipped))

    records = _measure(extractors, datasets, modules, cfg, device)
    payload = {
        "checkpoint": str(loaded.path),
        "modules": modules,
        "num_images": count,
        "top_k": top_k,
        "seed": cfg.seed,
        "image_size": data["image_size"],
        "device": str(device),
        "definitions": DEFINITIONS,
        "skipped": skipped,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "results": records,
    }
    _write_reports(run_dir, payload)
    return payload
