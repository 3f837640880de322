"""An ImageNet validation folder: a flat folder of JPEGs (the feature statistics need no
labels)."""

from pathlib import Path

from finetune.data.images import deeper_note, images_below, list_images
from finetune.errors import UserError


def imagenet_items(root: Path) -> tuple[list[str], list[int]]:
    """File names in sorted order (ILSVRC2012_val_00000001.JPEG, ...), each labelled -1."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"ImageNet folder {root} does not exist: set analysis.imagenet_root=...")
    items = [path.name for path in list_images(root)]
    if not items:
        below = images_below(root)
        hint = (
            f" directly inside it (its {deeper_note(below, root)}: only a flat folder of "
            "ILSVRC2012_val_*.JPEG is read)"
            if below
            else ""
        )
        raise UserError(f"ImageNet folder {root} holds no images{hint}")
    return items, [-1] * len(items)
