"""The embedded demo data: scikit-learn's bundled handwritten digits 0-5 as a six-class JPEG
folder, in the scene data's layout, written once into a cache folder (data.kind=demo) and then
read as a class folder."""

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from finetune.data.folder import FolderKind

log = logging.getLogger(__name__)

DEMO_CLASSES = 6
DEMO_SIDE = 48  # the 8x8 digits, upscaled so that a ResNet has something to look at


def materialise_demo(root: Path) -> Path:
    """Write the demo folder once; later calls (and racing processes) find it complete."""
    root = Path(root).expanduser()
    if root.is_dir():
        return root
    from sklearn.datasets import load_digits

    digits = load_digits()
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=root.parent))
    counts = np.zeros(DEMO_CLASSES, dtype=int)
    for image, label in zip(digits.images, digits.target, strict=True):
        if label >= DEMO_CLASSES:
            continue
        folder = staging / f"digit{label}"
        folder.mkdir(exist_ok=True)
        gray = Image.fromarray((image * (255.0 / 16.0)).astype(np.uint8), mode="L")
        rgb = gray.resize((DEMO_SIDE, DEMO_SIDE), Image.Resampling.BICUBIC).convert("RGB")
        rgb.save(folder / f"{counts[label]:04d}.jpg", quality=95)
        counts[label] += 1
    try:
        os.rename(staging, root)
        log.info("wrote the demo data (%d images) to %s", counts.sum(), root)
    except OSError:  # another process finished first: keep its folder
        shutil.rmtree(staging, ignore_errors=True)
    return root


class DemoKind(FolderKind):
    """data.kind=demo: the folder kind, over a folder it writes on first use."""

    label = "demo"
    writes_its_data = True

    def prepare(self, root: Path) -> None:
        materialise_demo(root)
