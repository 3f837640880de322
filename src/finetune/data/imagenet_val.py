"""An ImageNet validation folder, flat (ILSVRC2012_val_*.JPEG) or in synset sub-folders
(n01440764/ILSVRC2012_val_*.JPEG, the layout after valprep): the feature statistics need no
labels, so the images directly inside it and inside its synset folders (links to folders too)
are read. Images in any other sub-folder (a parent folder's train/, say) are not validation
images: they are named in one warning, or in the error when nothing else is there."""

import logging
import re
from pathlib import Path

from finetune.data.images import deeper_note, images_below, is_ignored_folder, list_images
from finetune.errors import UserError

log = logging.getLogger(__name__)

SYNSET = re.compile(r"n\d{8}")  # a WordNet id: ImageNet's class folders


def imagenet_items(root: Path) -> tuple[list[str], list[int]]:
    """The images directly inside `root` and in its synset folders (hidden files left out, as
    everywhere), as sorted POSIX paths relative to it (ILSVRC2012_val_00000001.JPEG or
    n01440764/ILSVRC2012_val_00000293.JPEG), each labelled -1."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"ImageNet folder {root} does not exist: set analysis.imagenet_root=...")
    synsets = [
        folder
        for folder in sorted(root.iterdir())
        if folder.is_dir() and SYNSET.fullmatch(folder.name) and not is_ignored_folder(folder)
    ]
    images = [*list_images(root), *(image for folder in synsets for image in list_images(folder))]
    items = sorted(image.relative_to(root).as_posix() for image in images)
    elsewhere = [image for image in images_below(root) if image.parent not in synsets]
    if not items:
        hint = f" (its {deeper_note(elsewhere, root)}: not a synset folder)" if elsewhere else ""
        raise UserError(
            f"ImageNet folder {root} holds no images directly inside it or in synset folders "
            f"(n01440764/...){hint}: set analysis.imagenet_root to the folder of "
            "ILSVRC2012_val_*.JPEG"
        )
    if elsewhere:
        log.warning(
            "ImageNet folder %s: %s, which are not read (only the folder and its synset "
            "folders n01440764/... are)",
            root,
            deeper_note(elsewhere, root),
        )
    return items, [-1] * len(items)
