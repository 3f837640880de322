"""The scene layout (data.kind=folder): a root folder with one sub-folder of images per class."""

from pathlib import Path
from typing import Any

from PIL import Image

from finetune.data.images import list_images, load_rgb
from finetune.data.sources import Listing, drop_unreadable, manifest_listing, missing_class
from finetune.data.splits import stratified_split
from finetune.errors import UserError


def class_folders(root: Path) -> list[Path]:
    """Class sub-folders in sorted order (never os.listdir order); hidden folders are ignored."""
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist: set data.root=/path/to/class/folders")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise UserError(
            f"{root} has {len(folders)} class folder(s), need at least 2: "
            "data.root must hold one sub-folder of images per class"
        )
    return folders


def scan_folder(root: Path) -> tuple[list[str], list[str], list[int]]:
    """Class names, image paths relative to `root` (POSIX style) and their labels."""
    folders = class_folders(root)
    items: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        images = list_images(folder)
        if not images:
            raise UserError(f"class folder {folder} holds no images: remove it or add images to it")
        items += [image.relative_to(root).as_posix() for image in images]
        labels += [label] * len(images)
    return [folder.name for folder in folders], items, labels


class FolderReader:
    """Reads an item (a path relative to the root) as an RGB image. Picklable for workers."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __call__(self, item: str) -> Image.Image:
        return load_rgb(self.root / item)


class FolderKind:
    """data.kind=folder: class folders, every image decode-checked before it is used."""

    label = "scenes"

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
            listing.labels, test=split["test"], val=split["val"], seed=split["seed"]
        )
        return listing
