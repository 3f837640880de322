"""CIFAR-10 (data.kind=cifar10) from the official python pickle batches, read without
torchvision's MD5 check: train and val come from data_batch_1..5, test is test_batch.

The batches are pickles; a restricted unpickler accepts only the numpy and builtin types the
real files contain, so a planted file cannot run code.
"""

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from finetune.data.sources import Listing, manifest_listing
from finetune.data.splits import stratified_split
from finetune.errors import UserError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META = "batches.meta"

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


FOLDER = "cifar-10-batches-py"  # what the official archive unpacks to


def missing_file(path: Path, needed: str) -> UserError:
    """The error for a batch file that is not there; `needed` says what the caller's folder
    must be (training reads every file, mode=analyze only test_batch)."""
    inside = path.parent / FOLDER / path.name  # the folder that holds the unpacked archive
    hint = f": did you mean {path.parent / FOLDER}?" if inside.is_file() else ""
    return UserError(f"CIFAR-10 file {path} is missing: {needed}{hint}")


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        files = ", ".join([*TRAIN_BATCHES, TEST_BATCH, META])
        raise missing_file(path, f"the folder must be {FOLDER}/ ({files})")
    try:
        with path.open("rb") as handle:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # noqa: BLE001 - whatever a damaged pickle raises: refuse it
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise UserError(f"{path} is not a CIFAR-10 python batch ({reason})") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path} is not a CIFAR-10 python batch (it holds {type(batch).__name__})")
    return batch


def read_batch(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as uint8 N x 32 x 32 x 3 (HWC) and labels as int64 N."""
    batch = _unpickle(Path(root) / name)
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (KeyError, ValueError, TypeError) as error:
        raise UserError(f"{Path(root) / name} is not a CIFAR-10 python batch ({error})") from None
    if labels.shape != (len(images),) or not ((labels >= 0) & (labels < 10)).all():
        raise UserError(
            f"{Path(root) / name} has {labels.size} labels for {len(images)} images, or labels "
            "outside 0-9: not a CIFAR-10 python batch"
        )
    return np.ascontiguousarray(images), labels


def read_class_names(root: Path) -> list[str]:
    meta = _unpickle(Path(root) / META)
    try:
        return [name.decode("utf-8") for name in meta[b"label_names"]]
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise UserError(f"{Path(root) / META} is not CIFAR-10's batches.meta ({error!r})") from None


def read_batches(root: Path, batches: list[str]) -> tuple[list[str], list[int], dict]:
    """Items "<batch>:<row>", their labels, and the decoded images of each batch."""
    items: list[str] = []
    labels: list[int] = []
    images: dict[str, np.ndarray] = {}
    for name in batches:
        images[name], batch_labels = read_batch(root, name)
        items += [f"{name}:{row}" for row in range(len(batch_labels))]
        labels += batch_labels.tolist()
    return items, labels, images


class CifarReader:
    """Reads an item "<batch>:<row>" as an RGB image from batches decoded in memory."""

    def __init__(self, root: Path, images: dict[str, np.ndarray]) -> None:
        self.root = Path(root)
        self.images = images

    def __call__(self, item: str) -> Image.Image:
        batch, row = item.rsplit(":", 1)
        return Image.fromarray(self.images[batch][int(row)], mode="RGB")


class CifarKind:
    """data.kind=cifar10: val is drawn (stratified) from the training batches, test_batch is
    test; the images are decoded arrays, so there is nothing to decode-check."""

    label = "cifar10"
    writes_its_data = False

    def prepare(self, root: Path) -> None:
        """The batches are there or not: nothing to make."""

    def class_names(self, root: Path) -> list[str]:
        return read_class_names(root)

    def listing(self, root: Path, data_cfg: dict[str, Any], only: str | None) -> Listing:
        test = data_cfg["split"]["test"]
        if test and not data_cfg.get("manifest"):  # would be ignored in silence
            raise UserError(
                f"data.split.test={test}: CIFAR-10's test split is its own test_batch, so "
                "data.split.test must stay 0 (data.split.val is taken from the training batches)"
            )
        items, labels, images = read_batches(root, [*TRAIN_BATCHES, TEST_BATCH])
        reader = CifarReader(root, images)
        if data_cfg.get("manifest"):
            return manifest_listing(reader, data_cfg["manifest"], self.class_names(root), only)
        pool = len(items) - len(images[TEST_BATCH])
        split = data_cfg["split"]
        splits = stratified_split(labels[:pool], test=0, val=split["val"], seed=split["seed"])
        return Listing(reader, items, labels, splits + ["test"] * (len(items) - pool))
