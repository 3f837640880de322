"""torch.load with weights_only=True, its refusals said in one line: the one way this package
unpickles a file it did not just write (checkpoints, weights files, saved scores). A file that
would run code when loaded is refused, and torch's advice to turn the check off is never passed on.
"""

import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from finetune.errors import UserError

# How torch (2.6+) begins the UnpicklingError of a file its weights-only unpickler refuses, and
# the warning it gives first for a pickle that torch.save did not write.
_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"
_PICKLE_PROTOCOL_WARNING = r"Detected pickle protocol \d+ in the checkpoint"
# The pickle opcodes that import (and may call) a name when the file is unpickled.
_IMPORTING_OPCODES = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}


def weights_only_load(path: Path, refusal: str, unreadable: str | None = None) -> Any:
    """torch.load with weights_only=True. A pickle that the safe unpickler refuses (it names
    code to import and call, or is not a torch.save file) is `refusal`; a file torch.load cannot
    read at all (text, empty, damaged) is `unreadable` (default `refusal`): each one UserError
    line. Torch's own advice in the refusal (turn the check off) is never passed on, nor its
    warning about a raw pickle's protocol, which comes before that refusal."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=_PICKLE_PROTOCOL_WARNING, category=UserWarning
            )
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        if message.startswith(_WEIGHTS_ONLY_REFUSAL) and _imports(path):
            raise UserError(f"{refusal}: it would run code when loaded, refused") from None
        raise UserError(_unreadable_message(unreadable or refusal)) from None
    except Exception:  # noqa: BLE001 - text, an empty or a damaged file: all mean the same here
        raise UserError(_unreadable_message(unreadable or refusal)) from None


def _imports(path: Path) -> bool:
    """Whether `path` is a whole pickle (pickle.dump's, or the data.pkl in torch.save's zip)
    that imports a name when loaded; its opcodes are read to the end, nothing is run. A text
    file that happens to begin like a pickle opcode ("cat", "checkpoint") is not one."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        return any(op.name in _IMPORTING_OPCODES for op, _, _ in pickletools.genops(data))
    except Exception:  # noqa: BLE001 - not a pickle at all (text, garbage): it imports nothing
        return False


def _unreadable_message(subject: str) -> str:
    return f"{subject}: torch.load cannot read it (not a file written by torch.save, or damaged)"
