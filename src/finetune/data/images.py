"""Reading any image file as 8-bit RGB, and finding the files that cannot be read."""

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def is_image_name(path: Path) -> bool:
    """Image files by name: hidden files (.DS_Store, ._x.jpg) and other suffixes are not."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_name(p))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (1, L, LA, P, RGBA, CMYK, I;16, I, F, ...) as 8-bit RGB.

    16-bit and 32-bit gray are rescaled to 0-255 (PIL's own convert would clip them to white);
    transparency is composited over black so that no hidden pixels leak into the image.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / peak * 255.0, 0, 255).astype(np.uint8)
        image = Image.fromarray(array, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    """Decode the whole file (truncated files fail here, not later) and return RGB."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


def _decode_problem(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image.load()
        return None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        detail = str(error).splitlines()[0] if str(error) else ""
        return f"{type(error).__name__}: {detail}".rstrip(": ")


def split_readable(
    root: Path, items: Sequence[str], threads: int = 8
) -> tuple[list[int], dict[str, str]]:
    """Decode every `root / item` (in threads: PIL releases the GIL); return the indices of
    the items that decode and {item: reason} for those that do not."""
    if items:
        log.info("checking that %d images decode ...", len(items))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        problems = list(pool.map(_decode_problem, [Path(root) / item for item in items]))
    keep = [i for i, problem in enumerate(problems) if problem is None]
    bad = {item: problem for item, problem in zip(items, problems, strict=True) if problem}
    return keep, bad


def describe(bad: dict[str, str]) -> str:
    """'a.jpg (reason); b.jpg (reason)' for warnings and errors."""
    return "; ".join(f"{item} ({reason})" for item, reason in bad.items())
