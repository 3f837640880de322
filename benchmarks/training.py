"""Training images/s side by side: the seed's way (a plain PyTorch loop in float32), the same
plain loop in the package's fast numerics, and the package (its LightningModule in a
Trainer, fast numerics) on the same tensors, batch size, optimizer and steps; and what
Lightning's extra per-step work costs, one piece at a time."""

import io
import tempfile
import time
from typing import Any

import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from benchmarks.common import NUM_CLASSES, SEED_WAY, Settings, compose_cfg, now, run_overrides
from benchmarks.loops import (
    autocast,
    build_module,
    interleaved,
    paired_ratio,
    run_lightning,
    seed_and_default,
    tensor_batches,
    to_layout,
)
from finetune.metrics import ClassificationMetrics
from finetune.model import ImageClassifier
from finetune.optim import build_optimizer

# The scene data at the default split: 17,034 images - 3,000 test - 2,000 val.
SCENE_TRAIN_IMAGES = 12_034
PACKAGE_MODULE = "+ self.log per step (the package module)"
SEED = "plain loop, float32 (the seed's way)"
PLAIN_DEFAULT = "plain loop, fast numerics"
PACKAGE = "package fast setting (Lightning)"


def fit_plain(
    module: ImageClassifier, batches: DataLoader, device: str, precision: str = "32-true"
) -> list[float]:
    """The training step without Lightning: forward, loss, zero_grad, backward, optimizer step.

    Same network, loss, optimizer (built from the module's own parameter groups and settings),
    memory layout and autocast (`precision`) as Lightning runs.
    """
    net = module.net.to(device).train()
    optimizer = build_optimizer(module.param_groups(), module.hparams.optimizer)
    stamps = []
    for images, labels in batches:
        images, labels = to_layout(module, images.to(device)), labels.to(device)
        with autocast(device, precision):
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
    """The seed's plain float32 loop, the plain loop in the fast numerics and the package's
    default, interleaved block by block; the package's speed over each plain loop."""
    seed_cfg, default_cfg = seed_and_default(size, batch, device)
    precision = default_cfg.trainer.precision
    steps = settings.warmup_steps + max(1, settings.train_images // batch)
    batches = tensor_batches(size, batch, steps)
    seed, plain, package = (build_module(cfg) for cfg in (seed_cfg, default_cfg, default_cfg))
    first = tensor_batches(size, batch, 1)  # first-call kernel setup, untimed
    fit_plain(seed, first, device)
    fit_plain(plain, first, device, precision)
    results = interleaved(
        {
            SEED: lambda: fit_plain(seed, batches, device),
            PLAIN_DEFAULT: lambda: fit_plain(plain, batches, device, precision),
            PACKAGE: lambda: run_lightning("fit", package, batches, default_cfg, device),
        },
        settings.reps,
        settings.warmup_steps,
        batch,
    )
    return {
        "image_size": size,
        "batch": batch,
        "timed_steps": steps - settings.warmup_steps,
        "numerics": {"precision": precision, "channels_last": default_cfg.model.channels_last},
        "variants": results,
        "default_over_seed": paired_ratio(results, PACKAGE, SEED),
        "lightning_over_plain": paired_ratio(results, PACKAGE, PLAIN_DEFAULT),
    }


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
    overrides = run_overrides(size, batch, device, *SEED_WAY, "model.freeze_backbone=true")
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
