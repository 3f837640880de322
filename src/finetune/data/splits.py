"""Stratified train/val/test splits and the manifest file that records them."""

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from finetune.errors import UserError
from finetune.io import TEXT, write_csv

SPLITS = ("train", "val", "test")


def as_count(size: float, total: int, name: str) -> int:
    """A size given as a count (>= 1) or a fraction of `total` (< 1)."""
    count = round(size * total) if size < 1 else int(size)
    if count != size and size >= 1:
        raise UserError(f"data.split.{name}={size} must be a whole count or a fraction below 1")
    return count


def stratified_split(
    labels: Sequence[int],
    test: float,
    val: float,
    seed: int,
    class_names: Sequence[str] | None = None,
) -> list[str]:
    """Assign each item to train/val/test; per-class proportions are kept (scikit-learn). What
    scikit-learn would refuse in its own words (a split smaller than the number of classes, a
    class too small to be in every part) is said first, with the classes by name."""
    from sklearn.model_selection import train_test_split  # not for the config check's SPLITS

    labels = np.asarray(labels)
    total = len(labels)
    n_test, n_val = as_count(test, total, "test"), as_count(val, total, "val")
    if n_test + n_val >= total:
        raise UserError(
            f"data.split asks for {n_test} test + {n_val} val images but there are only {total}:"
            " lower data.split.test / data.split.val"
        )
    _check_stratifiable(labels, {"test": n_test, "val": n_val}, class_names)
    assigned = np.full(total, "train", dtype=object)
    rest = np.arange(total)
    for name, count in (("test", n_test), ("val", n_val)):
        if count == 0:
            continue
        try:
            rest, taken = train_test_split(
                rest, test_size=count, stratify=labels[rest], random_state=seed
            )
        except ValueError as error:
            raise UserError(f"cannot split {total} images into {name}={count}: {error}") from None
        assigned[taken] = name
    return assigned.tolist()


def _check_stratifiable(
    labels: np.ndarray, counts: dict[str, int], class_names: Sequence[str] | None
) -> None:
    """Every non-empty part of a stratified split holds every class: each part needs at least
    one image per class, and each class one image per part (train included)."""
    classes, sizes = np.unique(labels, return_counts=True)
    for name, count in counts.items():
        if 0 < count < len(classes):
            raise UserError(
                f"data.split.{name}={count} images cannot hold one of each of the "
                f"{len(classes)} classes: use at least {len(classes)}, or 0 for no {name} split"
            )
    left = len(labels) - sum(counts.values())
    if left < len(classes):
        raise UserError(
            f"data.split leaves {left} images for training, fewer than the {len(classes)} "
            "classes: lower data.split.test / data.split.val"
        )
    parts = 1 + sum(count > 0 for count in counts.values())
    small = [(c, n) for c, n in zip(classes.tolist(), sizes.tolist(), strict=True) if n < parts]
    if small:
        named = ", ".join(f"{class_names[c] if class_names else c} ({n})" for c, n in small)
        raise UserError(
            f"too few images to split by class: {named} cannot be in all {parts} parts "
            "(train, val, test): add images or set data.split.val=0 / data.split.test=0"
        )


def stratified_subset(labels: Sequence[int], count: int, seed: int) -> list[int]:
    """Sorted indices of `count` items holding every class: one of each, then the rest shared in
    proportion to the class sizes (largest remainders), drawn at random with `seed`."""
    labels = np.asarray(labels)
    if count >= len(labels):
        return list(range(len(labels)))
    classes, sizes = np.unique(labels, return_counts=True)
    if count < len(classes):
        raise ValueError(f"{count} items cannot hold {len(classes)} classes")
    # after one per class, class c gets its share of the rest: at most sizes[c] - 1
    shares = (count - len(classes)) * (sizes - 1) / (len(labels) - len(classes))
    quotas = 1 + np.floor(shares).astype(int)
    by_remainder = np.argsort(-(shares - np.floor(shares)), kind="stable")
    quotas[by_remainder[: count - quotas.sum()]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == label), size=quota, replace=False)
        for label, quota in zip(classes, quotas, strict=True)
    ]
    return sorted(int(i) for i in np.concatenate(chosen))


def write_manifest(
    path: Path,
    items: Sequence[str],
    labels: Sequence[int],
    splits: Sequence[str],
    class_names: Sequence[str],
) -> Path:
    rows = zip(items, (class_names[label] for label in labels), splits, strict=True)
    return write_csv(path, ["path", "label", "split"], rows, overwrite=False)


def read_manifest(path: Path, class_names: Sequence[str]) -> tuple[list[str], list[int], list[str]]:
    """Items, labels (indices into class_names) and splits of a manifest written before."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest {path} does not exist: pass the split.csv of an earlier run")
    index = {name: i for i, name in enumerate(class_names)}
    items, labels, splits = [], [], []
    with path.open(newline="", **TEXT) as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != ["path", "label", "split"]:
            raise UserError(f"{path} is not a split manifest (columns path,label,split)")
        for row in reader:
            if row["label"] not in index or row["split"] not in SPLITS:
                raise UserError(
                    f"{path}: row {row['path']!r} has label {row['label']!r} / split "
                    f"{row['split']!r}, expected one of {list(class_names)} / {list(SPLITS)}"
                )
            items.append(row["path"])
            labels.append(index[row["label"]])
            splits.append(row["split"])
    if len(set(items)) != len(items):
        raise UserError(f"{path} lists some images twice: the splits must be disjoint")
    return items, labels, splits
