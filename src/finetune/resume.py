"""Resuming a training run: which checkpoint, the optimizer and scheduler settings it was
saved with (Lightning restores their state from it, so those are the settings in use), and the
command that resumes a run stopped with Ctrl-C."""

import logging
import shlex
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from finetune.errors import UserError, ctrl_c_interrupts
from finetune.io import user_path
from finetune.overrides import path_override
from finetune.safe_load import weights_only_load

log = logging.getLogger(__name__)

LAST = Path("checkpoints", "last.ckpt")  # in a run folder: what resume=<run folder> continues


def resume_checkpoint(resume: str | None) -> Path | None:
    """`resume` names a .ckpt file, or a run folder whose checkpoints/last.ckpt is used."""
    if not resume:
        return None
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise UserError(f"resume={resume}: {path} does not exist (pass a .ckpt or a run folder)")
    return path


# What a resumed run takes from its checkpoint, by config group (None: every key): the state
# Lightning restores (optimizer, scheduler), the network it fits (arch, head, weights, loss)
# and what that network was trained to see (the transform). Other keys (epochs, loader, speed
# settings such as channels_last) are this command line's.
RESUMED_KEYS: dict[str, tuple[str, ...] | None] = {
    "optimizer": None,
    "scheduler": None,
    "model": ("arch", "weights", "weights_url", "head_seed", "freeze_backbone", "label_smoothing"),
    "data": ("image_size", "resize_size", "mean", "std", "train_crop_scale"),
}


def resumed_settings(path: Path, settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`settings` (config groups as dicts) with the RESUMED_KEYS values of the checkpoint to
    resume from, its `class_names` (check them with `check_resumed_classes`) and the number of
    epochs it had trained (`epochs_done`).

    Values on the command line that differ would be recorded but not used (the optimizer state)
    or would not fit the saved weights (another arch) or disagree with them (another image
    size): each is named in a warning, and the checkpoint's value is used and recorded. What
    Lightning would refuse with a traceback (not a training checkpoint) is one line.
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
    if not isinstance(hparams, dict) or not {"class_names", *RESUMED_KEYS} <= hparams.keys():
        raise UserError(  # another project's LightningModule: no settings of ours to resume
            f"resume={path} is a Lightning checkpoint of another model, not of a "
            "python -m finetune mode=train run: pass such a run's folder or its last.ckpt"
        )
    # epochs_done: the checkpoint is written when an epoch ends, so the run goes on at the next
    resumed: dict[str, Any] = {
        "class_names": hparams["class_names"],
        "epochs_done": ckpt["epoch"] + 1,
    }
    for group, keys in RESUMED_KEYS.items():
        now, earlier = settings[group], hparams.get(group, {})
        taken = {key: earlier[key] for key in keys or earlier if key in earlier}
        compared = taken.keys() if keys else taken.keys() | now.keys()
        changed = sorted(key for key in compared if now.get(key) != taken.get(key))
        if changed:
            log.warning(
                "resume: the %s settings come from %s; %s not used (%s)",
                group,
                path,
                ", ".join(f"{group}.{key}={now.get(key)}" for key in changed),
                ", ".join(f"checkpoint: {key}={taken.get(key)}" for key in changed),
            )
        resumed[group] = taken if keys is None else now | taken
    return resumed


def check_resumed_classes(path: Path, resumed: dict[str, Any], class_names: list[str]) -> None:
    """The data must hold the classes the checkpoint was trained on (its head has one output
    each): Lightning would refuse other classes with a traceback."""
    if resumed["class_names"] != class_names:
        raise UserError(
            f"resume={path} was trained on classes {resumed['class_names']}, the data has "
            f"{class_names}: resume with the same data"
        )


def resume_hint(run_dir: Path, resume: Path | None) -> str:
    """Where an interrupted run can go on from, and the command that does it: this command with
    resume=<this run folder> (the README's syntax), once the run has saved a checkpoint."""
    last = run_dir / LAST
    if not last.is_file() and not resume:
        return "no epoch had ended, there is no checkpoint to resume from: run the command again"
    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    if last.is_file():
        checkpoint = last
        overrides = [o for o in overrides if o.lstrip("+").split("=")[0] != "resume"]
        overrides.append(path_override("resume", user_path(run_dir)))
    else:  # resumed, and interrupted before its first epoch ended: the same command again
        checkpoint = resume
    command = shlex.join(["python", "-m", "finetune", *user_config_arguments(hydra), *overrides])
    return f"the last checkpoint is {user_path(checkpoint)}; resume with: {command}"


def user_config_arguments(hydra: DictConfig) -> list[str]:
    """What finds the user's own configs, for a command built from Hydra's record of this one
    (whose task overrides leave it out, so that `experiment=mine` would be unknown there): the
    folder --config-dir added (a config source of provider 'command-line', recorded absolute)
    and a hydra.searchpath override (one of Hydra's overrides, not the task's)."""
    folders = [
        argument
        for source in hydra.runtime.config_sources
        if source.provider == "command-line"
        for argument in ("--config-dir", source.path)
    ]
    searched = [
        line
        for line in hydra.overrides.hydra
        if line.lstrip("+~").split("=")[0] == "hydra.searchpath"
    ]
    return [*folders, *searched]


def ctrl_c_says_how_to_resume(run_dir: Path, resume: Path | None) -> AbstractContextManager[None]:
    """Ctrl-C during training: a KeyboardInterrupt carrying resume_hint (finetune.errors)."""
    return ctrl_c_interrupts(lambda: resume_hint(run_dir, resume))
