"""The LightningDataModule: one interface over scene folders, the demo folder and CIFAR-10."""

import logging
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from finetune.data import cifar10
from finetune.data.datasets import EpochSeededSampler, ImageDataset, Reader
from finetune.data.demo import materialise_demo
from finetune.data.folder import FolderReader, class_folders, scan_folder
from finetune.data.images import describe, split_readable
from finetune.data.splits import (
    read_manifest,
    stratified_split,
    stratified_subset,
    write_manifest,
)
from finetune.data.transforms import eval_transform, train_transform
from finetune.errors import UserError
from finetune.io import write_text

log = logging.getLogger(__name__)

MANIFEST = "split.csv"
SKIPPED = "skipped_images.txt"


def data_root(data_cfg: dict[str, Any]) -> Path:
    return Path(os.path.expanduser(str(data_cfg["root"])))


def auto_workers(processes: int = 1) -> int:
    """Loader workers for `num_workers=auto`: the CPUs this process may run on (its affinity mask:
    a container or `taskset` limit, which os.cpu_count ignores), shared among the `processes`
    training on this machine (DDP ranks), less one core each for the main process that runs the
    model, and at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(1, cpus // max(processes, 1) - 1)


def loader_settings(loader: dict[str, Any], processes: int = 1) -> dict[str, Any]:
    """DataLoader keyword arguments from `data.loader` ("auto" workers: see auto_workers; "auto"
    pinned memory: when a GPU is there)."""
    workers = loader["num_workers"]
    workers = auto_workers(processes) if workers == "auto" else int(workers)
    pin = loader["pin_memory"]
    kwargs: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": torch.cuda.is_available() if pin == "auto" else bool(pin),
    }
    if workers > 0:
        kwargs["persistent_workers"] = bool(loader["persistent_workers"])
        kwargs["prefetch_factor"] = loader["prefetch_factor"]
    return kwargs


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
        self.root = data_root(data_cfg)
        self.seed = seed
        self.run_dir = run_dir
        self.train_eval_images = train_eval_images
        self.only = only
        self.datasets: dict[str, Dataset] = {}
        self.skipped: list[str] = []
        if self.kind not in ("folder", "demo", "cifar10"):
            raise UserError(f"data.kind={self.kind!r} is unknown: use folder, demo or cifar10")

    # -- what the data is ------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.kind == "demo":
            materialise_demo(self.root)

    @cached_property
    def class_names(self) -> list[str]:
        if self.kind == "cifar10":
            return cifar10.read_class_names(self.root)
        self.prepare_data()
        return [folder.name for folder in class_folders(self.root)]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def manifest_path(self) -> Path | None:
        return None if self.run_dir is None else Path(self.run_dir) / MANIFEST

    # -- splitting -------------------------------------------------------------------------
    def _items(self) -> tuple[Reader, list[str], list[int], list[str]]:
        """Reader, items, labels and split names, from a manifest or a fresh split."""
        manifest = self.cfg.get("manifest")
        split_cfg = self.cfg["split"]
        if self.kind == "cifar10":
            pool = cifar10.TRAIN_BATCHES
            items, labels, images = cifar10.read_batches(self.root, [*pool, cifar10.TEST_BATCH])
            reader: Reader = cifar10.CifarReader(self.root, images)
            n_pool = len(items) - len(images[cifar10.TEST_BATCH])
            if manifest:
                return (reader, *read_manifest(Path(manifest), self.class_names))
            splits = stratified_split(
                labels[:n_pool], test=0, val=split_cfg["val"], seed=split_cfg["seed"]
            )
            return reader, items, labels, splits + ["test"] * (len(items) - n_pool)

        reader = FolderReader(self.root)
        if manifest:
            items, labels, splits = read_manifest(Path(manifest), self.class_names)
            if self.only:  # evaluation: read (and decode-check) only the split it scores
                keep = [i for i, split in enumerate(splits) if split == self.only]
                items, labels, splits = (
                    [values[i] for i in keep] for values in (items, labels, splits)
                )
            missing = [item for item in items if not (self.root / item).is_file()]
            if missing:
                raise UserError(
                    f"{len(missing)} image(s) of manifest {manifest} are not under {self.root}, "
                    f"e.g. {missing[0]}: is data.root the folder the manifest was made from?"
                )
        else:
            _, items, labels = scan_folder(self.root)
            splits = None
        items, labels, splits = self._drop_unreadable(items, labels, splits)
        if splits is None:
            self._require_images_of_every_class(labels)
            splits = stratified_split(
                labels, test=split_cfg["test"], val=split_cfg["val"], seed=split_cfg["seed"]
            )
        return reader, items, labels, splits

    def _drop_unreadable(self, items, labels, splits):
        keep, bad = split_readable(self.root, items)
        if not bad:
            return items, labels, splits
        if self.cfg["bad_images"] == "error":
            raise UserError(
                f"{len(bad)} file(s) under {self.root} are not readable images: {describe(bad)}"
                " (remove them, or set data.bad_images=skip)"
            )
        self.skipped = [f"{item} ({reason})" for item, reason in bad.items()]
        log.warning(
            "skipping %d unreadable file(s) under %s: %s", len(bad), self.root, describe(bad)
        )
        pick = lambda values: None if values is None else [values[i] for i in keep]  # noqa: E731
        return pick(items), pick(labels), pick(splits)

    def _skipped_note(self) -> str:
        return f" ({len(self.skipped)} unreadable file(s) skipped)" if self.skipped else ""

    def _require_images_of_every_class(self, labels: list[int]) -> None:
        """A class whose every file was skipped would vanish from all metrics: refuse."""
        present = set(labels)
        for label, name in enumerate(self.class_names):
            if label not in present:
                raise UserError(
                    f"class {name!r} has no readable images under {self.root}"
                    f"{self._skipped_note()}: add images to {self.root / name} or remove it"
                )

    def _require_every_class(self, split: str, labels: list[int], everywhere: list[int]) -> None:
        """A split that lacks a class would score it as NaN, silently dropped from the means."""
        present = set(labels)
        for label, name in enumerate(self.class_names):
            if label in present:
                continue
            if self.cfg.get("manifest"):
                fix = f"manifest {self.cfg['manifest']} puts none there{self._skipped_note()}"
            else:
                fix = (
                    f"its {everywhere.count(label)} image(s) are too few to reach every split: "
                    "add images of it, or change data.split.test / data.split.val"
                )
            raise UserError(f"the {split} split has no image of class {name!r}: {fix}")

    @rank_zero_only
    def _write_manifest(self, items, labels, splits) -> None:
        if self.run_dir is None:
            return
        write_manifest(self.manifest_path, items, labels, splits, self.class_names)
        if self.skipped:
            write_text(Path(self.run_dir) / SKIPPED, "\n".join(self.skipped) + "\n")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.prepare_data()
        reader, items, labels, splits = self._items()
        self._write_manifest(items, labels, splits)
        c = self.cfg
        train_tf = train_transform(c["image_size"], c["train_crop_scale"], c["mean"], c["std"])
        eval_tf = eval_transform(c["image_size"], c["resize_size"], c["mean"], c["std"])
        splits_arr = np.asarray(splits)
        datasets: dict[str, ImageDataset] = {}
        for split in ("train", "val", "test"):
            index = np.flatnonzero(splits_arr == split)
            transform = train_tf if split == "train" else eval_tf
            datasets[split] = ImageDataset(
                reader, [items[i] for i in index], [labels[i] for i in index], transform, self.seed
            )
        # the splits in use must hold every class: all non-empty ones, or the one evaluated
        for split in ("train", "val") if self.only is None else ():
            if not len(datasets[split]):
                raise UserError(f"the {split} split is empty: check data.split and the data")
        for split in (self.only,) if self.only else ("train", "val", "test"):
            if len(datasets[split]):
                self._require_every_class(split, datasets[split].labels, labels)
        if self.train_eval_images and self.only is None:
            datasets["train_eval"] = self._train_eval_subset(datasets["train"], eval_tf)
        self.datasets = datasets
        sizes = {name: len(dataset) for name, dataset in datasets.items()}
        log.info("data %s (%d classes): %s", self.root, self.num_classes, sizes)

    def _train_eval_subset(self, train: ImageDataset, transform: Callable) -> ImageDataset:
        """A fixed, stratified subset of train_eval_images training images (every class in it),
        seen with the evaluation transform."""
        if self.train_eval_images < self.num_classes:
            raise UserError(
                f"train_eval_images={self.train_eval_images} cannot hold one image of each of the "
                f"{self.num_classes} classes: set it to at least {self.num_classes}, or 0 (off)"
            )
        chosen = stratified_subset(train.labels, self.train_eval_images, self.seed)
        return ImageDataset(
            train.reader,
            [train.items[i] for i in chosen],
            [train.labels[i] for i in chosen],
            transform,
        )

    # -- loaders ---------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.world_size, trainer.global_rank) if trainer else (1, 0)

    def _loader_kwargs(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        return loader_settings(self.cfg["loader"], trainer.num_devices if trainer else 1)

    def eval_loader(self, dataset: Dataset) -> DataLoader:
        """Sequential, unpadded: each image once, in manifest order (sharded under DDP)."""
        world, rank = self._world()
        sampler = (
            UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
            if world > 1
            else None
        )
        return DataLoader(
            dataset,
            batch_size=self.cfg["loader"]["eval_batch_size"],
            sampler=sampler,
            shuffle=False,
            **self._loader_kwargs(),
        )

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        dataset = self.datasets["train"]
        sampler = EpochSeededSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
        )
        return DataLoader(
            dataset,
            batch_size=self.cfg["loader"]["batch_size"],
            sampler=sampler,
            drop_last=len(dataset) > self.cfg["loader"]["batch_size"] * world,
            **self._loader_kwargs(),
        )

    def val_dataloader(self) -> list[DataLoader]:
        """The val split, then (if asked) a train subset with the evaluation transform."""
        names = ["val", "train_eval"] if "train_eval" in self.datasets else ["val"]
        return [self.eval_loader(self.datasets[name]) for name in names]

    def test_dataloader(self) -> DataLoader:
        return self.eval_loader(self.datasets["test"])
