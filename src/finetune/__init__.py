"""finetune: fine-tune an ImageNet-pretrained ResNet18 with Lightning + Hydra, evaluate it class
by class, look inside it, and prove its saved results reproduce.

`from finetune import run`: the command line as a function (finetune.api), imported on first use
so that `import finetune` stays light."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from finetune.api import run

        return run
    raise AttributeError(f"module 'finetune' has no attribute {name!r}")
