"""The LightningDataModule: one interface over every data kind (finetune.data.kinds).

The kind lists the data into splits (from a manifest or a fresh split, unreadable files dropped:
finetune.data.sources); the DataModule writes that split down (split.csv, skipped_images.txt),
checks that every split in use holds every class, and serves the loaders (finetune.data.loaders).
"""

import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from finetune.data.datasets import EpochSeededSampler, ImageDataset
from finetune.data.kinds import data_kind
from finetune.data.loaders import image_loader
from finetune.data.sources import Listing, missing_class
from finetune.data.splits import SPLITS, stratified_subset, write_manifest
from finetune.data.transforms import eval_transform, train_transform
from finetune.errors import UserError
from finetune.io import write_text

log = logging.getLogger(__name__)

MANIFEST = "split.csv"
SKIPPED = "skipped_images.txt"


def data_root(data_cfg: dict[str, Any]) -> Path:
    """data.root as an absolute path (~ expanded): a checkpoint names its data from anywhere."""
    return Path(os.path.expanduser(str(data_cfg["root"]))).absolute()


class ImageDataModule(L.LightningDataModule):
    """Splits the data (or reuses a manifest), writes the manifest, and serves the loaders.

    `run_dir` receives split.csv (and skipped_images.txt); None writes nothing. `only` names the
    one split an evaluation needs: with a manifest, the other splits' images are not even read.
    """

    def __init__(
        self,
        data_cfg: dict[str, Any],
        seed: int,
        run_dir: Path | None = None,
        train_eval_images: int = 0,
        only: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.kind = data_cfg["kind"]
        self.data_kind = data_kind(self.kind)
        self.root = data_root(data_cfg)
        self.seed = seed
        self.run_dir = run_dir
        self.train_eval_images = train_eval_images
        self.only = only
        self.datasets: dict[str, ImageDataset] = {}
        self.skipped: list[str] = []

    # -- what the data is ------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.data_kind.prepare(self.root)

    @cached_property
    def class_names(self) -> list[str]:
        return self.data_kind.class_names(self.root)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def manifest_path(self) -> Path | None:
        return None if self.run_dir is None else Path(self.run_dir) / MANIFEST

    # -- splitting -------------------------------------------------------------------------
    def _require_every_class(self, split: str, labels: list[int], listing: Listing) -> None:
        """A split that lacks a class would score it as NaN, silently dropped from the means."""
        name = missing_class(labels, self.class_names)
        if name is None:
            return
        if self.cfg.get("manifest"):
            fix = f"manifest {self.cfg['manifest']} puts none there{listing.skipped_note()}"
        else:
            fix = (
                f"its {listing.labels.count(self.class_names.index(name))} image(s) are too few "
                "to reach every split: add images of it, or change data.split.test / data.split.val"
            )
        raise UserError(f"the {split} split has no image of class {name!r}: {fix}")

    @rank_zero_only
    def _write_manifest(self, listing: Listing) -> None:
        if self.run_dir is None:
            return
        write_manifest(
            self.manifest_path, listing.items, listing.labels, listing.splits, self.class_names
        )
        if self.skipped:
            write_text(Path(self.run_dir) / SKIPPED, "\n".join(self.skipped) + "\n")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.prepare_data()
        listing = self.data_kind.listing(self.root, self.cfg, self.only)
        self.skipped = [f"{item} ({reason})" for item, reason in listing.skipped.items()]
        self._write_manifest(listing)
        c = self.cfg
        train_tf = train_transform(c["image_size"], c["train_crop_scale"], c["mean"], c["std"])
        eval_tf = eval_transform(c["image_size"], c["resize_size"], c["mean"], c["std"])
        # augmentation is for training only: a split that is evaluated (`only`) is seen as it is
        datasets = {
            split: listing.dataset(
                train_tf if split == "train" and self.only is None else eval_tf, self.seed, split
            )
            for split in SPLITS
        }
        # the splits in use must hold every class: all non-empty ones, or the one evaluated
        for split in ("train", "val") if self.only is None else ():
            if not len(datasets[split]):
                raise UserError(f"the {split} split is empty: check data.split and the data")
        for split in (self.only,) if self.only else SPLITS:
            if len(datasets[split]):
                self._require_every_class(split, datasets[split].labels, listing)
        if self.train_eval_images and self.only is None:
            datasets["train_eval"] = self._train_eval_subset(datasets["train"], eval_tf)
        self.datasets = datasets
        sizes = {name: len(dataset) for name, dataset in datasets.items()}
        log.info("data %s (%d classes): %s", self.root, self.num_classes, sizes)

    def _train_eval_subset(self, train: ImageDataset, transform: Any) -> ImageDataset:
        """A fixed, stratified subset of train_eval_images training images (every class in it),
        seen with the evaluation transform."""
        if self.train_eval_images < self.num_classes:
            raise UserError(
                f"train_eval_images={self.train_eval_images} cannot hold one image of each of the "
                f"{self.num_classes} classes: set it to at least {self.num_classes}, or 0 (off)"
            )
        chosen = stratified_subset(train.labels, self.train_eval_images, self.seed)
        return train.subset(chosen, transform)

    # -- loaders ---------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer else (1, 0)

    def _loader(self, dataset: ImageDataset, **kwargs: Any) -> DataLoader:
        trainer = getattr(self, "trainer", None)
        processes = trainer.num_devices if trainer else 1
        return image_loader(dataset, self.cfg["loader"], processes=processes, **kwargs)

    def eval_loader(self, dataset: ImageDataset) -> DataLoader:
        """Sequential, unpadded: each image once, in manifest order (sharded under DDP)."""
        world, rank = self._world()
        sampler = (
            UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
            if world > 1
            else None
        )
        return self._loader(dataset, sampler=sampler)

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        dataset = self.datasets["train"]
        sampler = EpochSeededSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
        )
        batch_size = self.cfg["loader"]["batch_size"]
        return self._loader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=len(dataset) > batch_size * world,
        )

    def val_dataloader(self) -> list[DataLoader]:
        """The val split, then (if asked) a train subset with the evaluation transform."""
        names = ["val", "train_eval"] if "train_eval" in self.datasets else ["val"]
        return [self.eval_loader(self.datasets[name]) for name in names]

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["test"])
