"""Data-loader images/s of the scene pipeline (JPEG decode + transform) through the package's
own ImageDataModule, and what one image costs: decoding it vs transforming it; and, during
training in the package's fast numerics, the loader workers' share of the CPU and what a
decoded-image cache could save (the decode replaced by a lookup of the decoded image)."""

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.common import (
    NUM_CLASSES,
    PeakMemory,
    Settings,
    child_pids,
    children_peak_rss_mb,
    compose_cfg,
    cpu_seconds,
    eval_resize,
    run_overrides,
    summary,
)
from benchmarks.loops import build_module
from finetune.data.datamodule import ImageDataModule
from finetune.trainer import build_trainer

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
            eval_item = _ms_per_item(lambda i, ds=val: ds[i], len(val), reps)
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


class CpuClock(L.Callback):
    """Wall time and CPU seconds of the main process and of its loader workers, from the end of
    the warm-up steps to the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start: tuple[float, float, float] | None = None
        self.end: tuple[float, float, float] | None = None

    @staticmethod
    def sample() -> tuple[float, float, float]:
        workers = sum(cpu_seconds(pid) for pid in child_pids())
        return time.perf_counter(), cpu_seconds(), workers

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 == self.warmup:
            self.start = self.sample()
        elif batch_idx + 1 > self.warmup:
            self.end = self.sample()


class DecodedImages:
    """A stand-in for a decoded-image cache: every image decoded once, up front; a lookup (and a
    copy, as a memory-mapped cache would make) replaces the JPEG decode."""

    def __init__(self, reader, items: list[str]) -> None:
        self.root = reader.root
        self.images = {item: reader(item) for item in items}

    def __call__(self, item: str):
        return self.images[item].copy()


def _train_from_jpegs(
    root: Path, settings: Settings, size: int, batch: int, cached: bool
) -> dict[str, float]:
    """The package's fast-setting training (default workers) fed from JPEGs, or from
    decoded images: images/s and CPU seconds over the timed steps."""
    steps = settings.share_warmup + settings.share_steps
    datamodule = scene_datamodule(root, steps * batch, size, batch)
    if cached:
        train = datamodule.datasets["train"]
        train.reader = DecodedImages(train.reader, train.items)
    cfg = compose_cfg(
        run_overrides(
            size,
            batch,
            "cpu",
            f"trainer.limit_train_batches={steps}",
            "trainer.limit_val_batches=0",
        )
    )
    clock = CpuClock(settings.share_warmup)
    with tempfile.TemporaryDirectory(prefix="bench-share-") as run_dir:
        trainer = build_trainer(cfg, run_dir, [clock])
        trainer.fit(build_module(cfg), datamodule=datamodule)
    (t0, main0, workers0), (t1, main1, workers1) = clock.start, clock.end
    return {
        "images_per_s": settings.share_steps * batch / (t1 - t0),
        "wall_s": t1 - t0,
        "main_cpu_s": main1 - main0,
        "workers_cpu_s": workers1 - workers0,
    }


def loader_share_in_training(
    settings: Settings, root: Path, size: int, batch: int, decode_share: float
) -> dict[str, Any]:
    """During training from JPEGs (CPU, fast numerics, default workers): the workers' share of the
    CPU time, the cores each side keeps busy, and the training time a decoded-image cache
    saves, measured (JPEG and decoded runs alternating) and estimated (workers' share x the
    decode share of a train item)."""
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(settings.share_reps):
        for cached in (False, True):
            runs[cached].append(_train_from_jpegs(root, settings, size, batch, cached))
    jpeg = runs[False]
    shares = [r["workers_cpu_s"] / (r["workers_cpu_s"] + r["main_cpu_s"]) for r in jpeg]
    # the share of the training time a cache saves: 1 - time with it / time without it
    savings = [
        1 - plain["images_per_s"] / cached["images_per_s"]
        for plain, cached in zip(jpeg, runs[True], strict=True)
    ]
    return {
        "image_size": size,
        "batch": batch,
        "timed_steps": settings.share_steps,
        "workers": default_workers(root, settings.loader_images),
        "images_per_s": summary([r["images_per_s"] for r in jpeg], 1),
        "images_per_s_decoded": summary([r["images_per_s"] for r in runs[True]], 1),
        "loader_share": round(statistics.median(shares), 3),
        "loader_cores": round(statistics.median(r["workers_cpu_s"] / r["wall_s"] for r in jpeg), 2),
        "main_cores": round(statistics.median(r["main_cpu_s"] / r["wall_s"] for r in jpeg), 2),
        "cache_saving_measured": round(statistics.median(savings), 3),
        "cache_saving_estimated": round(statistics.median(shares) * decode_share, 3),
    }
