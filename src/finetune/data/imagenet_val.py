"""An ImageNet validation folder: a flat folder of JPEGs, labels optional."""

from pathlib import Path

from finetune.data.images import list_images
from finetune.errors import UserError


def imagenet_items(root: Path, labels_file: Path | None = None) -> tuple[list[str], list[int]]:
    """File names in sorted order (ILSVRC2012_val_00000001.JPEG, ...) and their labels.

    Without a labels file every label is -1. A labels file holds one 0-999 class index per
    line, in the same sorted file-name order.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"ImageNet folder {root} does not exist: set analysis.imagenet_root=...")
    items = [path.name for path in list_images(root)]
    if not items:
        raise UserError(f"ImageNet folder {root} holds no images")
    if labels_file is None:
        return items, [-1] * len(items)
    lines = Path(labels_file).read_text().split()
    if len(lines) != len(items):
        raise UserError(
            f"{labels_file} has {len(lines)} labels for {len(items)} images in {root}: "
            "one label per image, in sorted file-name order"
        )
    return items, [int(line) for line in lines]
