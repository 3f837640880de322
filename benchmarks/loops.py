"""Timed training / evaluation blocks on pre-made tensors, inside Lightning and without it,
in the seed's numerics (float32) and in the package's fast ones."""

import statistics
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from benchmarks.common import (
    NUM_CLASSES,
    SEED_WAY,
    PeakMemory,
    compose_cfg,
    now,
    run_overrides,
    summary,
)
from finetune.model import ImageClassifier
from finetune.trainer import build_trainer


class StepClock(L.Callback):
    """A timestamp at the end of every training batch (after the optimizer step) or test batch."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.stamps: list[float] = []

    def on_train_batch_end(self, *args: Any) -> None:
        self.stamps.append(now(self.device))

    def on_test_batch_end(self, *args: Any) -> None:
        self.stamps.append(now(self.device))


def autocast(device: str, precision: str) -> AbstractContextManager:
    """What Lightning's precision plugin wraps a step in: bf16 autocast for bf16-mixed."""
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def to_layout(module: ImageClassifier, images: torch.Tensor) -> torch.Tensor:
    """The input in the module's memory layout (model.channels_last), as its forward makes it."""
    if module.hparams.model["channels_last"]:
        return images.contiguous(memory_format=torch.channels_last)
    return images


def seed_and_default(size: int, batch: int, device: str) -> tuple[DictConfig, DictConfig]:
    """The config of the seed's way (float32, default layout) and the package's fast one
    (trainer.precision=auto, model.channels_last=auto, resolved for `device`)."""
    return (
        compose_cfg(run_overrides(size, batch, device, *SEED_WAY)),
        compose_cfg(run_overrides(size, batch, device)),
    )


def tensor_batches(size: int, batch: int, steps: int, seed: int = 0) -> DataLoader:
    """`steps` pre-made batches (two distinct ones, repeated), so no data loading is measured.

    batch_size=None hands each (images, labels) pair over as it is, to Lightning and to a loop.
    """
    generator = torch.Generator().manual_seed(seed)
    made = [
        (
            torch.randn(batch, 3, size, size, generator=generator),
            torch.randint(0, NUM_CLASSES, (batch,), generator=generator),
        )
        for _ in range(2)
    ]
    return DataLoader([made[i % 2] for i in range(steps)], batch_size=None)


def build_module(cfg: DictConfig, cls: type[ImageClassifier] = ImageClassifier) -> ImageClassifier:
    """The package's LightningModule (or a variant of it) built as the train task builds it."""
    plain = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    return cls(
        class_names=[f"class{i}" for i in range(NUM_CLASSES)],
        model=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
        data=plain(cfg.data),
    )


def run_lightning(
    stage: str,
    module: L.LightningModule,
    batches: DataLoader,
    cfg: DictConfig,
    device: str,
    callbacks: Sequence[L.Callback] = (),
    logger: Any = False,
) -> list[float]:
    """trainer.fit (stage "fit") or trainer.test over `batches`; the end time of every batch."""
    clock = StepClock(device)
    with tempfile.TemporaryDirectory(prefix="bench-") as run_dir:
        trainer = build_trainer(cfg, run_dir, [clock, *callbacks], logger)
        if stage == "fit":
            trainer.fit(module, train_dataloaders=batches)
        else:
            trainer.test(module, dataloaders=batches, verbose=False)
    return clock.stamps


def block_rate(stamps: list[float], warmup: int, batch: int) -> float:
    """Images/s from the end of the last warm-up step to the end of the last step.

    Each interval holds a whole cycle: fetching the batch, the hooks, the step, the logging.
    """
    if warmup < 1 or len(stamps) <= warmup:
        raise ValueError(f"need at least one warm-up and one timed step, got {len(stamps)} stamps")
    return (len(stamps) - warmup) * batch / (stamps[-1] - stamps[warmup - 1])


def interleaved(
    variants: dict[str, Callable[[], list[float]]], reps: int, warmup: int, batch: int
) -> dict[str, dict[str, Any]]:
    """Run each variant once per repetition, in rotated order, so that a change in the machine's
    load during the run hits every variant alike. Median images/s and peak memory per variant."""
    names = list(variants)
    rates: dict[str, list[float]] = {name: [] for name in names}
    peaks: dict[str, PeakMemory] = {}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            with PeakMemory() as memory:
                stamps = variants[name]()
            rates[name].append(block_rate(stamps, warmup, batch))
            if name not in peaks or memory.rss_mb > peaks[name].rss_mb:
                peaks[name] = memory
    return {name: {"images_per_s": summary(rates[name]), **peaks[name].as_dict()} for name in names}


def paired_ratio(results: dict[str, dict[str, Any]], over: str, under: str) -> float:
    """The median over repetitions of `over`'s images/s / `under`'s, each pair run back to back
    (interleaved), so that load changing between repetitions cancels out."""
    pairs = zip(
        results[over]["images_per_s"]["values"],
        results[under]["images_per_s"]["values"],
        strict=True,
    )
    return round(statistics.median(a / b for a, b in pairs), 3)
