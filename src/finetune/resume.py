"""Resuming a training run: which checkpoint, the optimizer and scheduler settings it was
saved with (Lightning restores their state from it, so those are the settings in use), and the
command that resumes a run stopped with Ctrl-C.

Which checkpoint `resume=` names is checked without torch (finetune.validate says it before
Hydra makes a run folder); torch reads the checkpoint only in `resumed_settings`."""

import logging
import shlex
import zipfile
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from finetune.errors import UserError, ctrl_c_interrupts
from finetune.io import user_path
from finetune.overrides import path_override

if TYPE_CHECKING:  # Lightning is imported by the training, not by the checks before it
    from lightning.pytorch.callbacks import Timer

log = logging.getLogger(__name__)

LAST = Path("checkpoints", "last.ckpt")  # in a run folder: what resume=<run folder> continues
BEST = "epoch[0-9][0-9][0-9].ckpt"  # the best epoch's checkpoint beside it (finetune.callbacks)


def resume_checkpoint(resume: str | None) -> Path | None:
    """`resume` names a .ckpt file, or a run folder whose checkpoints/last.ckpt is used. The
    file must be a whole zip archive, as torch.save writes one: a copy that stopped early or a
    kill while the file was written leaves it cut short. Where the run folder's last.ckpt is
    missing or damaged, its intact best-epoch checkpoint is named as the way on."""
    if not resume:
        return None
    given = Path(str(resume)).expanduser()
    if not given.exists():
        raise UserError(f"resume={given} does not exist (pass a .ckpt or a run folder)")
    path = given / LAST if given.is_dir() else given
    if path.is_file():
        damage = _damage(path)
        if not damage:
            return path
        problem = f"resume={path} is not a Lightning checkpoint file: {damage}"
    elif _intact_best(path.parent):
        problem = f"resume={given} has no {LAST}"
    else:
        raise UserError(
            f"resume={given} holds no checkpoint: its run stopped before its first epoch ended, "
            "or it is not a training run folder; train again without resume="
        )
    intact = [best for best in _intact_best(path.parent) if best != path]
    if intact:  # the epochs after the best one are trained again: slower, but nothing is lost
        problem += (
            f"; the best epoch's checkpoint beside it is intact: resume={intact[0]} goes on "
            "from that epoch"
        )
    raise UserError(problem)


def _damage(path: Path) -> str | None:
    """What is wrong with `path` as a torch.save zip archive, or None (its contents are read
    by torch later; only the archive is checked here, without torch)."""
    try:
        with zipfile.ZipFile(path) as archive:
            whole = any(name.endswith("/data.pkl") for name in archive.namelist())
    except OSError as error:  # a folder (a sharded checkpoint, not this package's), no access
        return f"it cannot be read as a file ({error.strerror or error})"
    except zipfile.BadZipFile as error:
        with path.open("rb") as handle:
            zipped = handle.read(4) == b"PK\x03\x04"
        if zipped:
            return f"it is cut short or damaged ({error})"
        return "torch.save writes a zip archive, and this file is not one"
    return None if whole else "a zip archive without the data.pkl torch.save writes"


def _intact_best(checkpoints: Path) -> list[Path]:
    """The best-epoch checkpoints in a run's checkpoints folder that are whole archives."""
    return [path for path in sorted(checkpoints.glob(BEST), reverse=True) if not _damage(path)]


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
    resume from, its `class_names` (check them with `check_resumed_classes`), the number of
    epochs it had trained (`epochs_done`) and the state of its trainer.max_time Timer (`timer`,
    None without one; see `refuse_spent_time_limit`).

    Values on the command line that differ would be recorded but not used (the optimizer state)
    or would not fit the saved weights (another arch) or disagree with them (another image
    size): each is named in a warning, and the checkpoint's value is used and recorded. What
    Lightning would refuse with a traceback (not a training checkpoint) is one line.
    """
    from finetune.safe_load import weights_only_load  # torch: only once a run has begun

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
        "steps_done": ckpt.get("global_step", 0),
        "timer": ckpt.get("callbacks", {}).get("Timer"),
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


def ignored_when_resuming(key: str) -> bool:
    """Whether a resumed run takes `key` (`optimizer.lr`, or a config group such as
    `optimizer`) from its checkpoint, not from the command line."""
    group, _, name = key.partition(".")
    if group not in RESUMED_KEYS:
        return False
    taken = RESUMED_KEYS[group]
    return taken is None or name in taken


def refuse_nothing_to_train(path: Path, resumed: dict[str, Any], trainer: Any) -> None:
    """trainer.max_epochs and trainer.max_steps count from the start of the training, not from
    the checkpoint. A resumed run that would train nothing is refused rather than warned about:
    it would still write a best_model.pt and a metrics.json that look like a new training but
    hold the earlier run's, and a warning among the log lines is easily missed."""
    epochs_done, max_epochs = resumed["epochs_done"], trainer.max_epochs
    steps_done, max_steps = resumed["steps_done"], trainer.get("max_steps", -1)
    if max_steps is not None and 0 <= max_steps <= steps_done:
        raise UserError(
            f"resume={path} has trained {steps_done} step(s) and trainer.max_steps={max_steps} "
            f"counts from the start of the training: set it to more than {steps_done}, or -1"
        )
    if max_epochs is not None and 0 <= max_epochs <= epochs_done:
        raise UserError(
            f"resume={path} has trained {epochs_done} epoch(s) and trainer.max_epochs="
            f"{max_epochs} counts from the start of the training: set trainer.max_epochs to "
            f"more than {epochs_done} (e.g. trainer.max_epochs={epochs_done + max_epochs})"
        )


def refuse_spent_time_limit(path: Path, resumed: dict[str, Any], timer: "Timer | None") -> None:
    """Lightning's Timer (trainer.max_time) limits the whole training, resumes included: it
    takes the time trained so far from the checkpoint. A resumed run whose limit is used up
    would stop before its first step, and is refused like one with no epoch left."""
    if timer is None or not resumed["timer"]:
        return
    timer.load_state_dict(resumed["timer"])  # as Lightning will when fit starts
    remaining = timer.time_remaining()
    if remaining is not None and remaining <= 0:
        trained = timedelta(seconds=int(timer.time_elapsed()))
        raise UserError(
            f"resume={path} has trained for {trained} (h:mm:ss), and trainer.max_time limits the "
            "whole training, resumes included: no time is left; set a longer trainer.max_time "
            "(DD:HH:MM:SS) or leave it out"
        )


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
