"""A map-style dataset over items read by a reader, with augmentation seeded by (epoch, index)."""

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler


class Reader(Protocol):
    """Opens an item (a path relative to `root`, or a CIFAR-10 "<batch>:<row>") as RGB."""

    root: Path

    def __call__(self, item: str) -> Image.Image: ...


class ImageDataset(Dataset):
    """Images `reader(item)` with integer labels, passed through `transform`.

    Indexed by an int, or by (epoch, index) from EpochSeededSampler: the random transform is
    then seeded by (seed, epoch, index), so a resumed run, a DDP run or a run with more workers
    sees exactly the same augmented images as an uninterrupted single-process run.
    """

    def __init__(
        self,
        reader: Reader,
        items: Sequence[str],
        labels: Sequence[int],
        transform: Callable,
        seed: int = 0,
    ) -> None:
        self.reader = reader
        self.items = list(items)
        self.labels = list(labels)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, indices: Sequence[int], transform: Callable | None = None) -> "ImageDataset":
        """The items at `indices` (in that order), seen through `transform` (default: this one)."""
        return ImageDataset(
            self.reader,
            [self.items[i] for i in indices],
            [self.labels[i] for i in indices],
            self.transform if transform is None else transform,
            self.seed,
        )

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(index, tuple):
            epoch, index = index
            image = self.reader(self.items[index])
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF)
                tensor = self.transform(image)
        else:
            tensor = self.transform(self.reader(self.items[index]))
        return tensor, self.labels[index]


class EpochSeededSampler(DistributedSampler):
    """DistributedSampler (also for one process) that yields (epoch, index) pairs.

    Shuffling depends only on (seed, epoch); Lightning calls set_epoch every epoch.
    """

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in super().__iter__())
