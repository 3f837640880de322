"""Resuming a training run: which checkpoint, and the optimizer and scheduler settings it was
saved with (Lightning restores their state from it, so those are the settings in use)."""

import logging
from pathlib import Path
from typing import Any

from finetune.checkpoint import weights_only_load
from finetune.errors import UserError

log = logging.getLogger(__name__)


def resume_checkpoint(resume: str | None) -> Path | None:
    """`resume` names a .ckpt file, or a run folder whose checkpoints/last.ckpt is used."""
    if not resume:
        return None
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise UserError(f"resume={resume}: {path} does not exist (pass a .ckpt or a run folder)")
    return path


def resumed_settings(
    path: Path, class_names: list[str], optimizer: dict[str, Any], scheduler: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The optimizer and scheduler settings of the checkpoint to resume from.

    Lightning restores the optimizer and scheduler *state* (learning rate included) from the
    checkpoint, so other settings on the command line would be recorded but not used: they are
    named in a warning and the checkpoint's settings are recorded instead. What Lightning would
    refuse with a traceback (not a training checkpoint, other classes) is refused in one line.
    """
    ckpt = weights_only_load(
        path,
        f"resume={path}: not a weights-only Lightning checkpoint",
        f"resume={path} is not a Lightning checkpoint file",
    )
    if not isinstance(ckpt, dict) or not {"optimizer_states", "loops"} <= ckpt.keys():
        raise UserError(
            f"resume={path} is not a Lightning training checkpoint (best_model.pt holds weights "
            "only): pass the run folder or its checkpoints/last.ckpt"
        )
    hparams = ckpt.get("hyper_parameters", {})
    if hparams.get("class_names") != class_names:
        raise UserError(
            f"resume={path} was trained on classes {hparams.get('class_names')}, the data has "
            f"{class_names}: resume with the same data"
        )
    earlier = {"optimizer": hparams["optimizer"], "scheduler": hparams["scheduler"]}
    for group, now in (("optimizer", optimizer), ("scheduler", scheduler)):
        changed = sorted(
            key
            for key in now.keys() | earlier[group].keys()
            if now.get(key) != earlier[group].get(key)
        )
        if changed:
            log.warning(
                "resume: the %s state comes from %s; %s not used (%s)",
                group,
                path,
                ", ".join(f"{group}.{key}={now.get(key)}" for key in changed),
                ", ".join(f"checkpoint: {key}={earlier[group].get(key)}" for key in changed),
            )
    return earlier["optimizer"], earlier["scheduler"]
