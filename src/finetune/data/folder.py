"""The scene layout (data.kind=folder): a root folder with one sub-folder of images per class."""

import logging
from pathlib import Path
from typing import Any

from PIL import Image

from finetune.data.images import (
    deeper_note,
    images_below,
    is_ignored_folder,
    list_images,
    load_rgb,
)
from finetune.data.sources import Listing, drop_unreadable, manifest_listing, missing_class
from finetune.data.splits import stratified_split
from finetune.errors import UserError

log = logging.getLogger(__name__)


def _sub_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_ignored_folder(p))


def _root_one_level_too_high(root: Path, depth: int = 3, most: int = 500) -> str:
    """The hint for data.root=<root> when its folders hold class folders and no images of their
    own (root/train/<class>, or an archive's root/seg_train/seg_train/<class>): among the
    folders below root (`depth` levels, `most` folders at the most), the one whose sub-folders
    hold images in two or more of them: one named like train, else the most images in all. ""
    when some folder of `root` holds images: it is a class folder, root is right."""
    if any(list_images(folder) for folder in _sub_folders(root)):
        return ""
    holding: dict[Path, int] = {}
    level, seen = [root], 0
    for _ in range(depth):
        below = [sub for folder in level for sub in _sub_folders(folder)][: most - seen]
        seen += len(below)
        for folder in below:
            counts = [len(list_images(sub)) for sub in _sub_folders(folder)]
            if sum(1 for count in counts if count) >= 2:
                holding[folder] = sum(counts)
        level = below
    # a training folder first (train/ and test/ may hold as many images), then the most images
    best = max(holding, key=lambda f: ("train" in f.name.lower(), holding[f]), default=None)
    if best is None:
        return ""
    return (
        ": data.root should be the folder whose sub-folders are the classes; did you mean "
        f"data.root={best}?"
    )


def class_folders(root: Path) -> list[Path]:
    """Class sub-folders in sorted order (never os.listdir order); hidden folders and __MACOSX
    are ignored."""
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist: set data.root=/path/to/class/folders")
    folders = _sub_folders(root)
    if len(folders) < 2:
        raise UserError(
            f"{root} has {len(folders)} class folder(s), need at least 2{_no_class_hint(root)}"
        )
    return folders


def _no_class_hint(root: Path) -> str:
    """What the folder given as data.root is instead of a folder of class folders."""
    if (root / "data_batch_1").is_file():
        return ": it is CIFAR-10's batches folder: add data=cifar10"
    higher = _root_one_level_too_high(root)
    if higher:
        return higher
    loose = len(list_images(root))
    if loose:
        return f": its {loose} images lie in it directly; put them in one sub-folder per class"
    return ": data.root must hold one sub-folder of images per class"


def scan_folder(root: Path) -> tuple[list[str], list[str], list[int]]:
    """Class names, image paths relative to `root` (POSIX style) and their labels: the images
    directly inside each class folder (finetune.data.images.list_images). Images deeper down,
    or directly in `root` (in no class), are skipped with one warning that counts them."""
    folders = class_folders(root)
    items: list[str] = []
    labels: list[int] = []
    deeper: list[Path] = []
    for label, folder in enumerate(folders):
        images, below = list_images(folder), images_below(folder)
        if not images:
            raise UserError(
                f"class folder {folder} holds no images{_empty_class_hint(root, below)}"
            )
        items += [image.relative_to(root).as_posix() for image in images]
        labels += [label] * len(images)
        deeper += below
    if deeper:
        log.warning(
            "skipping %s: only the images directly inside a class folder of %s are read (move "
            "them up into their class folder to use them)",
            deeper_note(deeper, root),
            root,
        )
    loose = list_images(root)
    if loose:
        log.warning(
            "skipping %d image(s) directly in %s, e.g. %s: they are in no class folder",
            len(loose),
            root,
            loose[0].name,
        )
    return [folder.name for folder in folders], items, labels


def _empty_class_hint(root: Path, below: list[Path]) -> str:
    """What to do about a class folder without images of its own: when its sub-folders are
    class folders themselves, data.root is one level too high (root/train/<class>)."""
    if not below:
        return ": remove it or add images to it"
    note = (
        f" directly inside it (its {deeper_note(below, root)}, are not read: only the images "
        "directly inside a class folder are)"
    )
    return note + (_root_one_level_too_high(root) or ": move them up into it")


class FolderReader:
    """Reads an item (a path relative to the root) as an RGB image. Picklable for workers."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __call__(self, item: str) -> Image.Image:
        return load_rgb(self.root / item)


class FolderKind:
    """data.kind=folder: class folders, every image decode-checked before it is used."""

    label = "scenes"
    writes_its_data = False

    def prepare(self, root: Path) -> None:
        """A folder of real data is there or not: nothing to make."""

    def class_names(self, root: Path) -> list[str]:
        self.prepare(root)
        return [folder.name for folder in class_folders(root)]

    def listing(self, root: Path, data_cfg: dict[str, Any], only: str | None) -> Listing:
        manifest = data_cfg.get("manifest")
        if manifest:
            listing = manifest_listing(FolderReader(root), manifest, self.class_names(root), only)
            missing = [item for item in listing.items if not (root / item).is_file()]
            if missing:
                raise UserError(
                    f"{len(missing)} image(s) of manifest {manifest} are not under {root}, "
                    f"e.g. {missing[0]}: is data.root the folder the manifest was made from?"
                )
            return drop_unreadable(listing, data_cfg["bad_images"])
        names, items, labels = scan_folder(root)
        listing = drop_unreadable(
            Listing(FolderReader(root), items, labels), data_cfg["bad_images"]
        )
        empty = missing_class(listing.labels, names)
        if empty is not None:  # it would vanish from all metrics
            raise UserError(
                f"class {empty!r} has no readable images under {root}{listing.skipped_note()}: "
                f"add images to {root / empty} or remove it"
            )
        split = data_cfg["split"]
        listing.splits = stratified_split(
            listing.labels,
            test=split["test"],
            val=split["val"],
            seed=split["seed"],
            class_names=names,
        )
        return listing
