"""Evaluation images/s: the package module's test step in Lightning (forward + metrics) against
a plain inference loop over the same network and tensors."""

from typing import Any

import torch
from torch.utils.data import DataLoader

from benchmarks.common import Settings, now
from benchmarks.loops import lightning_vs_plain
from finetune.model import ImageClassifier


def test_plain(module: ImageClassifier, batches: DataLoader, device: str) -> list[float]:
    """Forward passes in eval mode under inference_mode, as Lightning's test loop runs them."""
    net = module.net.to(device).eval()
    stamps = []
    with torch.inference_mode():
        for images, _ in batches:
            net(images.to(device))
            stamps.append(now(device))
    return stamps


def compare_evaluation(settings: Settings, size: int, batch: int, device: str) -> dict[str, Any]:
    return lightning_vs_plain(
        "test", test_plain, settings.eval_images, settings, size, batch, device
    )
