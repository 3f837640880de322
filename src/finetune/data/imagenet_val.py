"""An ImageNet validation folder: a flat folder of JPEGs, labels optional."""

from pathlib import Path

from finetune.data.images import deeper_note, images_below, list_images
from finetune.errors import UserError

CLASSES = 1000


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
        below = images_below(root)
        hint = (
            f" directly inside it (its {deeper_note(below, root)}: only a flat folder of "
            "ILSVRC2012_val_*.JPEG is read)"
            if below
            else ""
        )
        raise UserError(f"ImageNet folder {root} holds no images{hint}")
    if labels_file is None:
        return items, [-1] * len(items)
    return items, _read_labels(Path(labels_file), len(items), root)


def _read_labels(labels_file: Path, count: int, root: Path) -> list[int]:
    """`count` class indices 0-999, one a line; anything else names the line at fault."""
    try:
        lines = labels_file.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        raise UserError(
            f"analysis.imagenet_labels={labels_file} does not exist: give a text file of one "
            "0-999 class index per line, or leave it unset"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(
            f"analysis.imagenet_labels={labels_file} cannot be read ({error})"
        ) from None
    if len(lines) != count:
        raise UserError(
            f"{labels_file} has {len(lines)} labels for {count} images in {root}: "
            "one label per image, in sorted file-name order"
        )
    labels = []
    for number, line in enumerate(lines, start=1):
        if not (line.isdecimal() and int(line) < CLASSES):
            raise UserError(
                f"{labels_file} line {number}: {line!r} is not a class index 0-{CLASSES - 1} "
                "(PyTorch's class order, not the devkit's synset ids)"
            )
        labels.append(int(line))
    return labels
