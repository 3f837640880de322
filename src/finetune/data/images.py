"""Reading any image file as 8-bit RGB, and finding the files that cannot be used."""

import errno
import logging
import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from PIL.Image import DecompressionBombError

from finetune.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {
    *(".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"),
    *(".ppm", ".pgm", ".pbm", ".pnm"),  # Netpbm: colour, gray, black and white, any
}
# The longer side over the shorter side of an image that is used, at most. Resizing the short
# side to data.resize_size takes memory in proportion (a 1 x 20000 px strip at 256 px: 5 GB),
# and a center crop of a longer strip shows under 2 % of it.
MAX_ASPECT = 50


def is_image_name(path: Path) -> bool:
    """Image files by name: hidden files (.DS_Store, ._x.jpg) and other suffixes are not."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def is_ignored_folder(path: Path) -> bool:
    """Folders no one keeps images in: hidden ones (.git, .ipynb_checkpoints) and the
    __MACOSX folder a zip made on a Mac unpacks (its ._x.jpg files are metadata)."""
    return path.name.startswith(".") or path.name == "__MACOSX"


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name: the one rule of every folder
    this package reads (a class folder, predict.input). Images deeper down are not read here:
    `images_below` finds them, to say so (or, in an ImageNet folder, to read them too). A link
    whose target is missing is listed, so that the decode check names it instead of the image
    silently going missing."""
    return _listing(folder)[0]


def _listing(folder: Path) -> tuple[list[Path], list[Path]]:
    """The files directly inside `folder` (links too), hidden ones left out, sorted: those that
    are images by name (list_images) and the others."""
    files = sorted(
        p
        for p in folder.iterdir()
        if (p.is_file() or p.is_symlink()) and not p.name.startswith(".")
    )
    return [p for p in files if is_image_name(p)], [p for p in files if not is_image_name(p)]


def images_below(folder: Path) -> list[Path]:
    """The image files in the sub-folders of `folder`, at any depth, hidden folders left out
    (sorted): the images `list_images` does not read. Cheap for flat folders (one listing)."""
    found = []
    for current, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not is_ignored_folder(Path(name)))
        if Path(current) != folder:
            found += [Path(current) / name for name in files if is_image_name(Path(name))]
    return sorted(found)


def deeper_note(skipped: Sequence[Path], root: Path) -> str:
    """'3 image(s) in sub-folders, e.g. a/b/x.jpg' for warnings and errors."""
    return f"{len(skipped)} image(s) in sub-folders, e.g. {skipped[0].relative_to(root).as_posix()}"


def find_images(path: Path, key: str) -> tuple[Path, list[str]]:
    """An image file, or the image files directly inside a folder (`list_images`), as a root
    folder and names relative to it (sorted); images in its sub-folders are skipped with one
    warning that counts them. `key` names the setting that gave `path` in the errors."""
    if path.is_file():
        if path.name.startswith("."):
            raise UserError(
                f"{key}={path} is a hidden file (its name starts with '.'), which is never read "
                "as an image (.DS_Store, ._x.jpg): rename it"
            )
        if not is_image_name(path):
            raise UserError(
                f"{key}={path} is not an image file (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return path.parent, [path.name]
    if not path.is_dir():
        raise UserError(f"{key}={path} does not exist: pass an image file or a folder of images")
    (images, others), deeper = _listing(path), images_below(path)
    if not images:
        hint = f" (its {deeper_note(deeper, path)}: pass one of those folders)" if deeper else ""
        raise UserError(f"{key}={path} holds no image files directly inside it{hint}")
    if deeper:
        log.warning(
            "skipping %s: only the images directly inside %s=%s are read (pass a sub-folder to "
            "read its images)",
            deeper_note(deeper, path),
            key,
            path,
        )
    if others:
        log.warning(
            "ignoring %d file(s) in %s=%s that are not images by their suffix, e.g. %s (image "
            "suffixes: %s)",
            len(others),
            key,
            path,
            ", ".join(other.name for other in others[:3]),
            ", ".join(sorted(IMAGE_SUFFIXES)),
        )
    return path, [image.name for image in images]


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (1, L, LA, P, RGBA, CMYK, I;16, I, F, ...) as 8-bit RGB.

    Deep gray has no fixed white, so it is scaled to 0-255 by a rule, not clipped (PIL's own
    convert clips 16-bit values to white and float 0..1 to black): float images whose values all
    lie in [0, 1] follow the float convention (0 black, 1 white, a dark image stays dark); any
    other deep image (16- or 32-bit integers, e.g. 12-bit data, or floats outside [0, 1]) is
    stretched linearly from its own minimum (black) to its maximum (white), which keeps the order
    of the pixel values; a constant image becomes black. NaN counts as the minimum, infinities as
    the extremes. Transparency is composited over black so that no hidden pixels leak in.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = _deep_gray_to_8bit(np.asarray(image, dtype=np.float64), image.mode == "F")
        image = Image.fromarray(pixels, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _deep_gray_to_8bit(array: np.ndarray, is_float: bool) -> np.ndarray:
    finite = array[np.isfinite(array)]
    if not finite.size:
        return np.zeros(array.shape, np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if is_float and 0.0 <= low and high <= 1.0:
        low, high = 0.0, 1.0
    array = np.nan_to_num(array, nan=low, posinf=high, neginf=low)
    scaled = (array - low) * (255.0 / (high - low)) if high > low else np.zeros_like(array)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def load_rgb(path: Path) -> Image.Image:
    """Decode the whole file (truncated files fail here, not later) and return it as RGB, turned
    upright by its EXIF orientation as every image viewer shows it (a phone photo held upright
    is stored sideways, with the turn in its EXIF data)."""
    with Image.open(path) as image:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return to_rgb(image)


# What PIL raises for broken or hostile image data while it identifies or decodes a file (its own
# fuzz tests catch the same). An OSError is one of them only without an errno: PIL raises bare
# OSError("image file is truncated ..."), UnidentifiedImageError, "broken data stream ...", while
# the operating system's errors (EACCES, ENOENT, EISDIR, EMFILE, EIO, ...) carry an errno.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, DecompressionBombError)


def _decode_problem(path: Path) -> str | None:
    """None if `path` decodes to an image whose longer side is at most MAX_ASPECT times its
    shorter side, else why it cannot be used; an I/O error is a UserError, since skipping would
    silently drop images that are fine (a whole class, for a permission error)."""
    if path.is_symlink() and not path.exists():  # e.g. git-annex or DVC data not fetched yet
        raise UserError(
            f"{path} is a link to {os.readlink(path)}, which does not exist: fetch the data it "
            "points to (git annex get, dvc pull, ...) or remove the link"
        )
    try:
        with Image.open(path) as image:  # the header: the size, before the pixels are decoded
            width, height = image.size
            if max(width, height) > MAX_ASPECT * min(width, height):
                return (
                    f"{width} x {height} px: its longer side is more than {MAX_ASPECT} times "
                    "its shorter side"
                )
            image.load()
        return None
    except DecompressionBombError:  # PIL refuses more than twice MAX_IMAGE_PIXELS
        return (
            f"too large: more than {2 * Image.MAX_IMAGE_PIXELS:,} px, PIL's decompression-bomb "
            "limit (twice PIL.Image.MAX_IMAGE_PIXELS); downscale it"
        )
    except DECODE_ERRORS as error:
        if isinstance(error, OSError) and error.errno is not None:
            code = errno.errorcode.get(error.errno, str(error.errno))
            raise UserError(
                f"cannot read {path}: {error.strerror or error} ({code}): an I/O error, not a "
                "broken image; fix it (permissions, open-file limit `ulimit -n`, disk) and rerun"
            ) from None
        detail = str(error).splitlines()[0] if str(error) else ""
        return f"{type(error).__name__}: {detail}".rstrip(": ")


def split_readable(
    root: Path, items: Sequence[str], threads: int = 8
) -> tuple[list[int], dict[str, str]]:
    """Decode every `root / item` (in threads: PIL releases the GIL); return the indices of
    the items that decode and {item: reason} for those whose data is broken. A file that cannot
    be read at all (permissions, too many open files, ...) raises a UserError naming it."""
    if items:
        log.info("checking that %d image(s) decode ...", len(items))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        problems = list(pool.map(_decode_problem, [Path(root) / item for item in items]))
    keep = [i for i, problem in enumerate(problems) if problem is None]
    bad = {item: problem for item, problem in zip(items, problems, strict=True) if problem}
    return keep, bad


def describe(bad: dict[str, str]) -> str:
    """'a.jpg (reason); b.jpg (reason)' for warnings and errors."""
    return "; ".join(f"{item} ({reason})" for item, reason in bad.items())
