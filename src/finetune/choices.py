"""One-line answers to config-group typos (`data=scnes`), before Hydra prints its long report."""

from collections.abc import Sequence
from pathlib import Path


def unknown_choice(argv: Sequence[str], config_dir: Path) -> str | None:
    """The message for the first `group=option` override naming an option that does not exist."""
    groups = {p.name for p in config_dir.iterdir() if p.is_dir() and p.name != "hydra"}
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.removeprefix("+").removeprefix("override ")
        if not sep or key not in groups or value in ("", "null"):
            continue
        options = sorted(p.stem for p in (config_dir / key).glob("*.yaml"))
        for option in value.split(","):  # a sweep: data=scenes,cifar10
            if option.strip() not in options:
                return f"unknown {key}={option.strip()}: choose one of {', '.join(options)}"
    return None
