"""The data kinds (`data.kind`): one registry, read by the DataModule and by config validation.

Each kind is a class in the module that reads its format (finetune.data.folder, .demo,
.cifar10): it knows the class names, prepares the data, and lists it into splits (a
finetune.data.sources.Listing). The registry names each as "module:Class", as the task registry
does, so validation checks a name without importing torch.
"""

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from finetune.errors import UserError

if TYPE_CHECKING:
    from finetune.data.sources import Listing

DATA_KINDS = {
    "folder": "finetune.data.folder:FolderKind",
    "demo": "finetune.data.demo:DemoKind",
    "cifar10": "finetune.data.cifar10:CifarKind",
}


class DataKind(Protocol):
    """What the DataModule asks of a data kind."""

    label: str  # its name in reports (mode=analyze calls a scene folder's test split scenes-test)
    writes_its_data: bool  # prepare() makes the folder (the demo); else the folder must exist

    def prepare(self, root: Path) -> None:
        """Make the data exist (the demo writes its folder once); a no-op for real data."""

    def class_names(self, root: Path) -> list[str]:
        """The class names, in label order."""

    def listing(self, root: Path, data_cfg: dict[str, Any], only: str | None) -> "Listing":
        """Every item with its label and split: from `data.manifest`, or a fresh split made by
        `data.split`; with a manifest and `only`, just that split's items (the others unread)."""


def check_kind(name: object) -> str:
    """`name` if it is a data kind, else one line naming them all."""
    if name not in DATA_KINDS:
        raise UserError(f"data.kind={name!r} is unknown: use one of {', '.join(DATA_KINDS)}")
    return str(name)


def data_kind(name: object) -> DataKind:
    """The data kind called `name` (a UserError naming the kinds when there is none)."""
    module, attribute = DATA_KINDS[check_kind(name)].split(":")
    return getattr(import_module(module), attribute)()
