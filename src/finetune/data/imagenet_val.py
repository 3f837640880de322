"""An ImageNet validation folder, flat (ILSVRC2012_val_*.JPEG) or in synset sub-folders
(n01440764/ILSVRC2012_val_*.JPEG, the layout after valprep): the feature statistics need no
labels, so every image of the folder and of its sub-folders is read, whatever the layout."""

from pathlib import Path

from finetune.data.images import images_below, list_images
from finetune.errors import UserError


def imagenet_items(root: Path) -> tuple[list[str], list[int]]:
    """The images directly inside `root` and in its sub-folders at any depth (hidden files and
    folders left out, as everywhere), as sorted POSIX paths relative to it
    (ILSVRC2012_val_00000001.JPEG or n01440764/ILSVRC2012_val_00000293.JPEG), each labelled -1."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"ImageNet folder {root} does not exist: set analysis.imagenet_root=...")
    images = [*list_images(root), *images_below(root)]
    items = sorted(image.relative_to(root).as_posix() for image in images)
    if not items:
        raise UserError(
            f"ImageNet folder {root} holds no images, neither directly inside it nor in its "
            "sub-folders: set analysis.imagenet_root to the folder of ILSVRC2012_val_*.JPEG"
        )
    return items, [-1] * len(items)
