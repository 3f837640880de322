"""The data-source layer under the DataModule, mode=analyze and mode=predict: a Listing (items,
labels, splits and the reader that opens them), the one check that drops files which do not
decode, reading a split manifest, and seeded samples. The data kinds build Listings
(finetune.data.kinds); everything that reads images goes through `drop_unreadable`."""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from finetune.data.datasets import ImageDataset, Reader
from finetune.data.images import describe, split_readable
from finetune.data.splits import read_manifest
from finetune.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Listing:
    """Items with their labels and (once split) split names, and the reader that opens them."""

    reader: Reader
    items: list[str]
    labels: list[int]
    splits: list[str] | None = None  # None until a split is made
    skipped: dict[str, str] = field(default_factory=dict)  # item -> why it does not decode

    def take(self, indices: Sequence[int]) -> "Listing":
        """The rows at `indices`, in that order."""
        pick = lambda values: None if values is None else [values[i] for i in indices]  # noqa: E731
        return replace(
            self, items=pick(self.items), labels=pick(self.labels), splits=pick(self.splits)
        )

    def dataset(self, transform: Callable, seed: int = 0, split: str | None = None) -> ImageDataset:
        """The items of `split` (all of them when None) seen through `transform`."""
        whole = ImageDataset(self.reader, self.items, self.labels, transform, seed)
        if split is None:
            return whole
        return whole.subset([i for i, name in enumerate(self.splits or ()) if name == split])

    def skipped_note(self) -> str:
        return f" ({len(self.skipped)} unreadable file(s) skipped)" if self.skipped else ""


def drop_unreadable(listing: Listing, bad_images: str = "skip") -> Listing:
    """The listing without the files whose data does not decode (finetune.data.images), which
    `skipped` records: dropped with one warning naming each (`skip`), or refused in one line
    (`error`, data.bad_images). A file that cannot be read at all stops the run there."""
    root = listing.reader.root
    keep, bad = split_readable(root, listing.items)
    if not bad:
        return listing
    if bad_images == "error":
        raise UserError(
            f"{len(bad)} file(s) under {root} are not readable images: {describe(bad)}"
            " (remove them, or set data.bad_images=skip)"
        )
    log.warning(
        "skipping %d file(s) under %s that cannot be used as images: %s",
        len(bad),
        root,
        describe(bad),
    )
    return replace(listing.take(keep), skipped=listing.skipped | bad)


def manifest_listing(
    reader: Reader, manifest: Path, class_names: Sequence[str], only: str | None
) -> Listing:
    """The split a manifest (split.csv) records; with `only`, just the rows of that split."""
    listing = Listing(reader, *read_manifest(Path(manifest), class_names))
    if only is None:
        return listing
    return listing.take([i for i, split in enumerate(listing.splits) if split == only])


def missing_class(labels: Sequence[int], class_names: Sequence[str]) -> str | None:
    """The first class without an item among `labels`, or None when every class has one."""
    present = set(labels)
    return next((name for label, name in enumerate(class_names) if label not in present), None)


def seeded_sample(total: int, count: int, seed: int) -> list[int]:
    """The first `count` of a shuffle of range(total) seeded by `seed`, back in sorted order."""
    return np.sort(np.random.default_rng(seed).permutation(total)[:count]).tolist()
