"""Training images/s: the package's LightningModule in a Trainer against a plain PyTorch loop
on the same network, tensors, batch size, optimizer and steps; and what Lightning's extra
per-step work costs, one piece at a time."""

import io
import tempfile
import time
from typing import Any

import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from benchmarks.common import NUM_CLASSES, Settings, compose_cfg, now, run_overrides
from benchmarks.loops import (
    build_module,
    interleaved,
    lightning_vs_plain,
    run_lightning,
    tensor_batches,
)
from finetune.metrics import ClassificationMetrics
from finetune.model import ImageClassifier

# The scene data at the default split: 17,034 images - 3,000 test - 2,000 val.
SCENE_TRAIN_IMAGES = 12_034
PACKAGE_MODULE = "+ self.log per step (the package module)"


def fit_plain(module: ImageClassifier, batches: DataLoader, device: str) -> list[float]:
    """The training step without Lightning: forward, loss, zero_grad, backward, optimizer step.

    Same network, loss and optimizer (the module's own configure_optimizers) as Lightning runs.
    """
    net = module.net.to(device).train()
    optimizer = module.configure_optimizers()["optimizer"]
    stamps = []
    for images, labels in batches:
        images, labels = images.to(device), labels.to(device)
        loss = module.criterion(net(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stamps.append(now(device))
    return stamps


class LossOnly(ImageClassifier):
    """The package module without its per-step metric update and logging: Lightning's own cost."""

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return self.criterion(self(images), labels)


class MetricsNoLog(ImageClassifier):
    """The package module without its per-step self.log (it still updates torchmetrics)."""

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")


def compare_training(settings: Settings, size: int, batch: int, device: str) -> dict[str, Any]:
    return lightning_vs_plain(
        "fit", fit_plain, settings.train_images, settings, size, batch, device
    )


def _silent_progress_bar() -> RichProgressBar:
    """The train task's progress bar, rendering as to a terminal, into a string."""
    return RichProgressBar(console_kwargs={"file": io.StringIO(), "force_terminal": True})


def _fit_with_tensorboard(module, batches, cfg, device) -> list[float]:
    """run_lightning("fit") with the train task's progress bar and TensorBoard logger."""
    with tempfile.TemporaryDirectory(prefix="bench-tb-") as folder:
        logger = TensorBoardLogger(folder, name="tensorboard", default_hp_metric=False)
        return run_lightning("fit", module, batches, cfg, device, [_silent_progress_bar()], logger)


def lightning_overhead(settings: Settings, device: str) -> dict[str, Any]:
    """Milliseconds per step of each layer of work Lightning and the package add to a step.

    Each variant adds one piece to the one before. The per-step overhead does not depend on
    the network's work, so it is measured where that work is small and the overhead shows: a
    small image size, and the package's linear-probe mode (model.freeze_backbone=true: no
    backward pass through the backbone, no optimizer step over its 11M weights). Each
    variant's figure is its fastest block: load from other processes only ever adds time.
    """
    size, batch = settings.overhead_size, min(settings.batches)
    overrides = run_overrides(size, batch, device, "model.freeze_backbone=true")
    cfg = compose_cfg(overrides)
    cfg_bar = compose_cfg([*overrides, "trainer.enable_progress_bar=true"])
    warmup = max(settings.warmup_steps, 3)
    batches = tensor_batches(size, batch, warmup + settings.overhead_steps)
    modules = {cls: build_module(cfg, cls) for cls in (LossOnly, MetricsNoLog, ImageClassifier)}
    plain, package = build_module(cfg), modules[ImageClassifier]
    variants = {
        "plain loop": lambda: fit_plain(plain, batches, device),
        "Lightning, loss only": lambda: run_lightning(
            "fit", modules[LossOnly], batches, cfg, device
        ),
        "+ torchmetrics update per step": lambda: run_lightning(
            "fit", modules[MetricsNoLog], batches, cfg, device
        ),
        PACKAGE_MODULE: lambda: run_lightning("fit", package, batches, cfg, device),
        "+ Rich progress bar": lambda: run_lightning(
            "fit", package, batches, cfg_bar, device, [_silent_progress_bar()]
        ),
        "+ TensorBoard logger": lambda: _fit_with_tensorboard(package, batches, cfg_bar, device),
    }
    fit_plain(plain, tensor_batches(size, batch, warmup), device)
    results = interleaved(variants, settings.overhead_reps, warmup, batch)
    step_ms = {
        name: 1000.0 * batch / result["images_per_s"]["max"] for name, result in results.items()
    }
    rows, previous = [], None
    for name, ms in step_ms.items():
        rows.append(
            {
                "variant": name,
                "ms_per_step": round(ms, 2),
                "added_ms": None if previous is None else round(ms - previous, 2),
                "images_per_s": results[name]["images_per_s"],
            }
        )
        previous = ms
    return {
        "image_size": size,
        "batch": batch,
        "freeze_backbone": True,
        "timed_steps": settings.overhead_steps,
        "reps": settings.overhead_reps,
        "package_overhead_ms": round(step_ms[PACKAGE_MODULE] - step_ms["plain loop"], 2),
        "log_every_n_steps": int(cfg.trainer.log_every_n_steps),
        "variants": rows,
        "epoch_end_metrics_ms": epoch_end_metrics_ms(SCENE_TRAIN_IMAGES),
    }


def epoch_end_metrics_ms(images: int, batch: int = 64, seed: int = 0) -> dict[str, Any]:
    """Cost of the module's training metrics over one scene epoch: the per-step updates in
    total, and the compute at the epoch end (AP keeps every score and sorts them there)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(images, NUM_CLASSES, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (images,), generator=generator)
    metrics = ClassificationMetrics(NUM_CLASSES)
    start = time.perf_counter()
    for first in range(0, images, batch):
        chunk = slice(first, first + batch)
        metrics.update(logits[chunk], labels[chunk], torch.tensor(1.0))
    updated = time.perf_counter()
    metrics.compute()
    done = time.perf_counter()
    return {
        "images": images,
        "updates_total_ms": round(1000 * (updated - start), 1),
        "compute_ms": round(1000 * (done - updated), 1),
    }
