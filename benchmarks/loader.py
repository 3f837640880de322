"""Data-loader images/s of the scene pipeline (JPEG decode + transform) through the package's
own ImageDataModule, and what one image costs: decoding it vs transforming it."""

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.common import (
    NUM_CLASSES,
    PeakMemory,
    Settings,
    children_peak_rss_mb,
    compose_cfg,
    eval_resize,
    summary,
)
from finetune.data.datamodule import ImageDataModule

SCENE_SIDE = 150  # the real scene images are 150x150 JPEGs of about 6-20 KB


def write_scene_jpegs(root: Path, count: int, seed: int = 0) -> Path:
    """`count` photo-like 150x150 JPEGs in six class folders, the scene data's layout.

    Smooth colour fields plus grain: about the size (~10 KB) and decode cost of the real ones.
    """
    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / f"class{i % NUM_CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((SCENE_SIDE, SCENE_SIDE), Image.Resampling.BICUBIC))
        grain = rng.normal(0, 12, size=smooth.shape)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def scene_datamodule(
    root: Path, images: int, size: int, batch: int, workers: int | None = None
) -> ImageDataModule:
    """The package's data module over `root`: `images` train and `images` val images.

    workers=None keeps the configured default (data.loader.num_workers=auto).
    """
    overrides = [
        f"data.root={root}",
        "data.split.test=0",
        f"data.split.val={images}",
        f"data.image_size={size}",
        f"data.resize_size={eval_resize(size)}",
        f"data.loader.batch_size={batch}",
        f"data.loader.eval_batch_size={batch}",
    ]
    if workers is not None:
        overrides.append(f"data.loader.num_workers={workers}")
    cfg = compose_cfg(overrides)
    datamodule = ImageDataModule(OmegaConf.to_container(cfg.data, resolve=True), cfg.seed)
    datamodule.setup()
    return datamodule


def default_workers(root: Path, images: int) -> int:
    """What data.loader.num_workers=auto (the configured default) resolves to here."""
    return scene_datamodule(root, images, SCENE_SIDE, 16).train_dataloader().num_workers


def epoch_rates(loader: DataLoader, epochs: int) -> list[float]:
    """Images/s of each full pass over `loader` (the sampler's epoch set as Lightning does)."""
    rates = []
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        start, count = time.perf_counter(), 0
        for images, _ in loader:
            count += len(images)
        rates.append(count / (time.perf_counter() - start))
    return rates


def per_worker(rates: list[float], workers: int) -> dict[str, Any] | None:
    """Images/s each worker delivers (the loader's rate / workers): a model that trains R images/s
    needs about R / this many workers to stay fed. None without workers (the main process loads).
    """
    return summary([rate / workers for rate in rates]) if workers else None


def measure_loaders(settings: Settings, root: Path, workers: list[int]) -> list[dict[str, Any]]:
    """Images/s of the train loader (decode + random crop/flip) and the eval loader (decode +
    resize/center crop) for each image size, batch size and worker count, in all and per worker.

    The first epoch (worker start-up) is the warm-up; persistent workers live on after it.
    """
    rows = []
    for size in settings.sizes:
        for batch in settings.batches:
            for count in workers:
                datamodule = scene_datamodule(root, settings.loader_images, size, batch, count)
                loaders = {
                    "train": datamodule.train_dataloader,
                    "eval": lambda dm=datamodule: dm.eval_loader(dm.datasets["val"]),
                }
                for transform, make in loaders.items():
                    with PeakMemory() as memory:
                        loader = make()
                        rates = epoch_rates(loader, 1 + settings.reps)[1:]
                        worker_peak = children_peak_rss_mb() if count else None
                        del loader  # shuts the persistent workers down
                    rows.append(
                        {
                            "image_size": size,
                            "batch": batch,
                            "transform": transform,
                            "workers": count,
                            "images_per_s": summary(rates),
                            "images_per_s_per_worker": per_worker(rates, count),
                            **memory.as_dict(),
                            "worker_rss_peak_mb": worker_peak,
                        }
                    )
    return rows


def _ms_per_item(fetch, count: int, reps: int) -> float:
    """Median over `reps` passes of the milliseconds `fetch(i)` takes per item."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for i in range(count):
            fetch(i)
        times.append(1000 * (time.perf_counter() - start) / count)
    return statistics.median(times)


def per_image_costs(settings: Settings, root: Path) -> list[dict[str, Any]]:
    """Milliseconds per image, in one thread as in a loader worker: JPEG decode alone, and a
    whole dataset item (decode + transform) with the train and with the eval transform."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        for size in settings.sizes:
            datamodule = scene_datamodule(root, settings.loader_images, size, min(settings.batches))
            train, val = datamodule.datasets["train"], datamodule.datasets["val"]
            count, reps = len(train), 1 + settings.reps
            decode = _ms_per_item(lambda i, ds=train: ds.reader(ds.items[i]), count, reps)
            train_item = _ms_per_item(lambda i, ds=train: ds[(0, i)], count, reps)
            eval_item = _ms_per_item(lambda i, ds=val: ds[i], count, reps)
            rows.append(
                {
                    "image_size": size,
                    "decode_ms": round(decode, 3),
                    "train_item_ms": round(train_item, 3),
                    "eval_item_ms": round(eval_item, 3),
                    "decode_share_train": round(decode / train_item, 3),
                }
            )
        return rows
    finally:
        torch.set_num_threads(threads)
