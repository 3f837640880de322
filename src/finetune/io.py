"""Atomic, no-clobber file writing (a kill at any moment leaves the old file or the new one), and
paths written as the user typed them.

Text is UTF-8 with `surrogateescape`: a file name that is not UTF-8 (as unzip makes from some
archives) is written back as the bytes it has, so split.csv names the same file when read."""

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from finetune.errors import UserError

TEXT = {"encoding": "utf-8", "errors": "surrogateescape"}  # how every text file is read and written
_UMASK = os.umask(0)
os.umask(_UMASK)


def user_path(path: Path | str) -> str:
    """`path` as a user types it: relative to the working folder when inside it."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


ARCHIVES = (".tar.gz", ".tgz", ".tar", ".zip")  # what a download of a data set often still is


def not_a_folder(setting: str, path: Path, what: str) -> str | None:
    """Why `setting`=`path`, which must be a folder, is not one: an archive (to unpack) or
    another file; None for a folder or nothing there (each caller words a missing one)."""
    if path.is_file() and path.name.lower().endswith(ARCHIVES):
        return f"{setting}={path} is an archive: unpack it and give the folder"
    if path.is_file():
        return f"{setting}={path} is a file, not {what}"
    return None


def atomic_write(path: Path, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then move it into place.

    With overwrite=False an existing `path` is never replaced (results of earlier runs are kept):
    the move is a hard link, which fails if the name is taken, even in a race.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UserError(
                    f"{path} already exists and is kept: write into a new run folder"
                ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path: Path, text: str, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, **TEXT), overwrite)


def write_json(path: Path, data: Any, overwrite: bool = False) -> Path:
    return write_text(path, json.dumps(data, indent=2, allow_nan=True) + "\n", overwrite)


def write_csv(
    path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]], overwrite: bool = False
) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", **TEXT) as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    return atomic_write(path, write, overwrite)


def save_torch(path: Path, obj: Any, overwrite: bool = False) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp), overwrite)


def save_figure(path: Path, figure: Any, overwrite: bool = False) -> Path:
    """Save a matplotlib figure as PNG, atomically."""
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110), overwrite)
