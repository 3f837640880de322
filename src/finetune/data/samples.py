"""What mode=analyze reads: seeded samples of N images of a split of the data mode=eval would
score (through the DataModule), of an ImageNet validation folder (flat or in synset sub-folders:
finetune.data.imagenet_val), and of CIFAR-10's test batch.

Each is the first N of a shuffle seeded by `seed`, read back in file order (a manifest lists its
images class by class: its first N would be one class), and holds at least 2 readable images
(a covariance needs 2)."""

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from finetune.data import cifar10
from finetune.data.datamodule import ImageDataModule
from finetune.data.datasets import ImageDataset
from finetune.data.folder import FolderReader
from finetune.data.imagenet_val import imagenet_items
from finetune.data.sources import Listing, drop_unreadable, seeded_sample
from finetune.errors import UserError
from finetune.io import not_a_folder

# the extra datasets: name, the analysis key of their folder, what that folder is
EXTRA_DATASETS = (
    (
        "imagenet-val",
        "imagenet_root",
        "the folder of ILSVRC2012_val_*.JPEG, flat or in synset sub-folders",
    ),
    ("cifar10-test", "cifar_root", f"the {cifar10.FOLDER} folder"),
)


def _enough(dataset: ImageDataset, what: str) -> ImageDataset:
    if len(dataset) < 2:
        raise UserError(
            f"{what}: {len(dataset)} readable image(s) to analyse, the covariance needs at least 2"
        )
    return dataset


def _not_a_folder(key: str, root: Path, what: str) -> UserError:
    """Why analysis.<key>=<root>, which is not a folder, cannot be read."""
    problem = not_a_folder(f"analysis.{key}", root, f"a folder (it must be {what})")
    return UserError(problem or f"analysis.{key}={root} does not exist (it must be {what})")


def imagenet_sample(root: Path, transform: Callable, count: int, seed: int) -> ImageDataset:
    """`count` images of an ImageNet validation folder; sampled files that do not decode are
    dropped (only the sample is decode-checked, not all 50,000)."""
    listing = Listing(FolderReader(root), *imagenet_items(root))
    listing = drop_unreadable(listing.take(seeded_sample(len(listing.items), count, seed)))
    return _enough(listing.dataset(transform), f"analysis.imagenet_root={root}")


def cifar_test_sample(root: Path, transform: Callable, count: int, seed: int) -> ImageDataset:
    """`count` images of CIFAR-10's test_batch (the only file of the folder it needs)."""
    if not (root / cifar10.TEST_BATCH).is_file():
        raise cifar10.missing_file(
            root / cifar10.TEST_BATCH,
            f"analysis.cifar_root must be the {cifar10.FOLDER} folder (only its "
            f"{cifar10.TEST_BATCH} is read)",
        )
    items, labels, images = cifar10.read_batches(root, [cifar10.TEST_BATCH])
    listing = Listing(cifar10.CifarReader(root, images), items, labels)
    listing = listing.take(seeded_sample(len(items), count, seed))
    return _enough(listing.dataset(transform), f"analysis.cifar_root={root}")


def analysis_samples(
    analysis: Mapping[str, Any],
    datamodule: ImageDataModule,
    split: str,
    seed: int,
    transform: Callable,
) -> tuple[dict[str, ImageDataset], dict[str, dict], list[tuple[str, str]]]:
    """The samples named by `analysis` (the analysis config): of split `split` that
    `datamodule` has read, and of the extra datasets whose folders are given. Each is read and
    checked here, before any compute; a folder given but missing (or a file) is a UserError,
    one not given is absent. Returns the datasets by name, where each came from and how many
    images were read of it (`num_images`: fewer than asked where it holds fewer), and (name,
    why) of the absent ones."""
    count = analysis["num_images"]
    whole = datamodule.datasets[split]
    own = whole.subset(seeded_sample(len(whole), count, seed))
    own_name = f"{datamodule.data_kind.label}-{split}"
    datasets = {own_name: _enough(own, f"split={split} of {datamodule.root}")}
    manifest = str(datamodule.cfg["manifest"]) if datamodule.cfg["manifest"] else None
    sources = {
        own_name: {"kind": datamodule.kind, "root": str(datamodule.root), "manifest": manifest}
    }
    absent: list[tuple[str, str]] = []
    for name, key, what in EXTRA_DATASETS:
        root = Path(str(analysis[key])).expanduser() if analysis[key] else None
        if root is None:
            absent.append((name, f"analysis.{key} is not set (add analysis.{key}=PATH, {what})"))
        elif not root.is_dir():
            raise _not_a_folder(key, root, what)
        elif name in datasets:  # the checkpoint's own data is CIFAR-10's test batch already
            absent.append((name, f"the checkpoint's own split is {name} already"))
        else:
            datasets[name] = (
                imagenet_sample(root, transform, count, seed)
                if name == "imagenet-val"
                else cifar_test_sample(root, transform, count, seed)
            )
            sources[name] = {"kind": name.split("-")[0], "root": str(root), "manifest": None}
    for name, dataset in datasets.items():
        sources[name].update(num_images=len(dataset), images=dataset.items)
    return datasets, sources, absent
