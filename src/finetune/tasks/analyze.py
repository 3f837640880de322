"""mode=analyze: feature-map statistics of the fine-tuned and the ImageNet-pretrained network.

For every (model, dataset) pair, and every module in analysis.modules: the share of
non-positive values and the eigenvalue spectrum of the channel covariance (see
finetune.features).

- The checkpoint's own split is chosen as mode=eval chooses its data (finetune.tasks.evaluate:
  the checkpoint's data and manifest; `data.root=` alone moves it; naming other data analyses
  that) and read through the same ImageDataModule.
- Only what is absent is skipped, with one warning: a dataset not given (analysis.imagenet_root
  or analysis.cifar_root null) and ImageNet weights that cannot be had (WeightsUnavailable).
  Anything given but missing or broken is a UserError before any result is written.
- inference.precision, never trainer.precision, sets the arithmetic: 32-true (float32, no TF32,
  deterministic cuDNN) or bf16-mixed (autocast); statistics are float64 either way.
"""

import contextlib
import logging
import time
from collections.abc import Iterator
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
from finetune.data.datamodule import ImageDataModule, loader_settings
from finetune.data.datasets import ImageDataset
from finetune.data.folder import FolderReader
from finetune.data.imagenet_val import imagenet_items
from finetune.data.images import describe, split_readable
from finetune.data.splits import SPLITS
from finetune.data.transforms import eval_transform
from finetune.errors import UserError, WeightsUnavailable
from finetune.features import (
    FeatureStats,
    collect_feature_stats,
    feature_extractor,
    spectrum_summary,
)
from finetune.inference import evaluation_data
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
def _sample(dataset: ImageDataset, count: int, seed: int) -> ImageDataset:
    """The first `count` of a seeded shuffle, back in file order (see DEFINITIONS["sample"])."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(dataset))[:count])
    return ImageDataset(
        dataset.reader,
        [dataset.items[i] for i in chosen],
        [dataset.labels[i] for i in chosen],
        dataset.transform,
    )


def _enough(dataset: ImageDataset, what: str) -> ImageDataset:
    if len(dataset) < 2:
        raise UserError(
            f"{what}: {len(dataset)} readable image(s) to analyse, the covariance needs at least 2"
        )
    return dataset


def _given_folder(value: Any, key: str, what: str) -> Path | None:
    """The folder `key` names; None when it is not set; a UserError when it is not there."""
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise UserError(f"{key}={path} does not exist (it must be {what})")
    return path


def checkpoint_split(cfg: DictConfig, loaded: LoadedModel) -> tuple[str, ImageDataset, dict]:
    """A sample of split `split=` of the data mode=eval would score, read the way eval reads it;
    with its name and where it came from."""
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split!r} is unknown: use one of {', '.join(SPLITS)}")
    data_cfg = evaluation_data(cfg, loaded)
    datamodule = ImageDataModule(data_cfg, cfg.seed, only=cfg.split)
    if datamodule.kind != "demo" and not datamodule.root.is_dir():
        if data_cfg["root"] == loaded.data["root"]:
            raise UserError(
                f"the checkpoint's data folder {datamodule.root} does not exist: if the data "
                "has moved, add data.root=<its folder now> (the checkpoint's split is kept)"
            )
        raise UserError(f"data.root={datamodule.root} does not exist")
    datamodule.setup()
    dataset = datamodule.datasets[cfg.split]
    if not len(dataset):
        raise UserError(f"split={cfg.split} of {datamodule.root} is empty: choose another split")
    what = f"split={cfg.split} of {datamodule.root}"
    dataset = _enough(_sample(dataset, cfg.analysis.num_images, cfg.seed), what)
    manifest = str(data_cfg["manifest"]) if data_cfg["manifest"] else None
    source = {"kind": datamodule.kind, "root": str(datamodule.root), "manifest": manifest}
    return f"{DATA_LABELS.get(datamodule.kind, datamodule.kind)}-{cfg.split}", dataset, source


def imagenet_split(
    analysis: DictConfig, root: Path, transform, count: int, seed: int
) -> ImageDataset:
    """A seeded sample of the ImageNet folder; sampled files that do not decode are dropped."""
    labels_file = Path(analysis.imagenet_labels).expanduser() if analysis.imagenet_labels else None
    items, labels = imagenet_items(root, labels_file)
    dataset = _sample(ImageDataset(FolderReader(root), items, labels, transform), count, seed)
    keep, bad = split_readable(root, dataset.items)
    if bad:
        log.warning("skipping %d sampled file(s) that do not decode: %s", len(bad), describe(bad))
    dataset.items, dataset.labels = (
        [dataset.items[i] for i in keep],
        [dataset.labels[i] for i in keep],
    )
    return _enough(dataset, f"analysis.imagenet_root={root}")


def cifar_split(root: Path, transform, count: int, seed: int) -> ImageDataset:
    items, labels, images = cifar10.read_batches(root, [cifar10.TEST_BATCH])
    dataset = ImageDataset(cifar10.CifarReader(root, images), items, labels, transform)
    return _enough(_sample(dataset, count, seed), f"analysis.cifar_root={root}")


def _skip(skipped: list[dict[str, str]], what: str, name: str, reason: str) -> None:
    log.warning("skipping %s %s and its pairs: %s", what, name, reason)
    skipped.append({what: name, "reason": reason})


def _datasets(
    cfg: DictConfig, loaded: LoadedModel, skipped: list[dict[str, str]]
) -> tuple[dict[str, ImageDataset], dict[str, dict]]:
    """The checkpoint's split, and the ImageNet and CIFAR-10 samples that are given; all are
    read (and checked) before any pair is measured, so a broken one costs no compute."""
    settings, count, seed = cfg.analysis, cfg.analysis.num_images, cfg.seed
    own, dataset, source = checkpoint_split(cfg, loaded)
    datasets, sources = {own: dataset}, {own: source}
    data = loaded.data
    transform = eval_transform(data["image_size"], data["resize_size"], data["mean"], data["std"])
    extra = [
        ("imagenet-val", "imagenet_root", "the flat folder of ILSVRC2012_val_*.JPEG"),
        ("cifar10-test", "cifar_root", "the cifar-10-batches-py folder"),
    ]
    for name, key, what in extra:
        root = _given_folder(settings[key], f"analysis.{key}", what)
        if root is None:
            _skip(
                skipped,
                "dataset",
                name,
                f"analysis.{key} is not set (add analysis.{key}=PATH, {what})",
            )
            continue
        if name in datasets:  # the checkpoint's own data is CIFAR-10's test batch already
            _skip(skipped, "dataset", name, f"the checkpoint's own split is {name} already")
            continue
        if name == "imagenet-val":
            datasets[name] = imagenet_split(settings, root, transform, count, seed)
        else:
            datasets[name] = cifar_split(root, transform, count, seed)
        sources[name] = {"kind": name.split("-")[0], "root": str(root), "manifest": None}
    for name, dataset in datasets.items():
        sources[name]["images"] = dataset.items
    return datasets, sources


@contextlib.contextmanager
def float32_kernels() -> Iterator[None]:
    """Plain float32 and deterministic kernels on a GPU (cuDNN's default for float32
    convolutions is TF32, with a 10-bit mantissa); the previous settings are restored."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (cudnn.benchmark, cudnn.deterministic, cudnn.conv.fp32_precision, matmul.fp32_precision)
    cudnn.benchmark, cudnn.deterministic = False, True
    cudnn.conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic, cudnn.conv.fp32_precision = saved[:3]
        matmul.fp32_precision = saved[3]


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
        f"on {payload['device']} ({payload['precision']}).",
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
    autocast = torch.bfloat16 if cfg.inference.precision == "bf16-mixed" else None
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
            stats = collect_feature_stats(extractor, batches, device, autocast)
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
    skipped: list[dict[str, str]] = []
    models = {"fine-tuned": loaded.net}
    try:
        models["pretrained"] = build_network(
            len(loaded.class_names),
            "imagenet",
            cfg.model.head_seed,
            weights_url=cfg.model.get("weights_url"),
        ).eval()
    except WeightsUnavailable as error:  # absent: skipped; weights there but wrong: UserError
        _skip(skipped, "model", "pretrained", str(error))
    # Unknown module names are a mistake in the command: refused before any data is read.
    extractors = {name: feature_extractor(net, modules) for name, net in models.items()}
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    taken = [run_dir / name for name in (STATS, NONPOSITIVE, SUMMARY) if (run_dir / name).exists()]
    if taken:
        raise UserError(f"{taken[0]} already exists and is kept: write into a new run folder")
    datasets, sources = _datasets(cfg, loaded, skipped)

    with float32_kernels():
        records = _measure(extractors, datasets, modules, cfg, device)
    payload = {
        "checkpoint": str(loaded.path),
        "modules": modules,
        "num_images": count,
        "top_k": top_k,
        "seed": cfg.seed,
        "image_size": loaded.data["image_size"],
        "device": str(device),
        "precision": str(cfg.inference.precision),
        "definitions": DEFINITIONS,
        "datasets": sources,
        "skipped": skipped,
        "wall_time_s": round(time.perf_counter() - started, 2),
        "results": records,
    }
    _write_reports(run_dir, payload)
    return payload
