"""The scene layout: a root folder with one sub-folder of images per class."""

from pathlib import Path

from PIL import Image

from finetune.data.images import list_images, load_rgb
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

    def path(self, item: str) -> Path:
        return self.root / item
