"""Training augmentation and the deterministic evaluation transform (torchvision v2)."""

from collections.abc import Sequence

import torch
from torchvision.transforms import v2


def _to_normalized_tensor(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ]


def train_transform(
    image_size: int, crop_scale: Sequence[float], mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """Random resized crop + horizontal flip: the only random transform in the package."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=tuple(crop_scale), antialias=True),
            v2.RandomHorizontalFlip(),
            *_to_normalized_tensor(mean, std),
        ]
    )


def eval_transform(
    image_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float]
) -> v2.Compose:
    """Resize the short side, then center-crop: the same tensor every time."""
    return v2.Compose(
        [
            v2.Resize(resize_size, antialias=True),
            v2.CenterCrop(image_size),
            *_to_normalized_tensor(mean, std),
        ]
    )


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo Normalize for display: N x 3 x H x W in [0, 1]."""
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1)
