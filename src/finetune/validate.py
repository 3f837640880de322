"""Values Hydra cannot check by type: refused before any work starts, with the fix in one line.

Most rules are a row of finetune.value_rules.RULES (key, test of its value, what it must be);
the rules here relate keys to each other, name one of a registry's options, or look for the
files and folders a mode starts from. Before all of them, finetune.config_keys.check_keys: every
key the code reads is there and every interpolation resolves."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from finetune.data.kinds import check_kind
from finetune.errors import UserError
from finetune.io import not_a_folder
from finetune.optim import OPTIMIZERS, SCHEDULERS, known_name
from finetune.precision import AUTO, trainer_precisions
from finetune.resume import resume_checkpoint
from finetune.sweep import job_folders
from finetune.value_rules import as_text_hint, check_rules, is_whole

CKPT_MODES = ("eval", "analyze", "predict", "export")  # the modes that load a model from `ckpt`
# What data.root must name, by data.kind (demo: a cache folder the config sets itself)
ROOT_HINTS = {"folder": "/path/to/class/folders", "cifar10": "/path/to/cifar-10-batches-py"}
_ABSENT = object()


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _check_combinations(cfg: DictConfig) -> None:
    """Values each right alone that together would break or waste the run."""
    size, resize = cfg.data.image_size, cfg.data.resize_size
    _require(
        is_whole(resize) and resize >= size,
        f"data.resize_size={resize!r} must be a whole number >= data.image_size={size}: the "
        f"center crop would pad the image with black (e.g. data.resize_size={size * 8 // 7})"
        + as_text_hint(cfg, "data.resize_size", resize),
    )
    stage, mult = cfg.model.unfreeze_at_epoch, cfg.optimizer.backbone_lr_mult
    if cfg.model.freeze_backbone:
        _require(
            stage is None,
            f"model.freeze_backbone=true never trains the backbone, model.unfreeze_at_epoch="
            f"{stage} trains it from epoch {stage}: set only one of them",
        )
        _require(
            mult == 1,
            f"optimizer.backbone_lr_mult={mult} has no backbone to act on with "
            "model.freeze_backbone=true: leave it at 1",
        )
    _require(
        not cfg.optimizer.get("nesterov") or cfg.optimizer.get("momentum", 0) > 0,
        f"optimizer.nesterov=true needs momentum: optimizer.momentum="
        f"{cfg.optimizer.get('momentum')} "
        "must be > 0 (or set optimizer.nesterov=false)",
    )
    epochs = cfg.trainer.get("max_epochs", _ABSENT)
    _require(
        cfg.scheduler.name != "cosine" or (epochs is not _ABSENT and epochs >= 1),
        f"scheduler=cosine decays over trainer.max_epochs={epochs}: set trainer.max_epochs to "
        "a whole number >= 1 (or choose scheduler=step or scheduler=none)",
    )


def _check_choices(cfg: DictConfig) -> None:
    """Values that name one of a few options."""
    known_name("optimizer", cfg.optimizer.name, OPTIMIZERS)
    known_name("scheduler", cfg.scheduler.name, SCHEDULERS)
    check_kind(cfg.data.kind)  # one line naming the registry's kinds
    _require(
        cfg.data.source in ("checkpoint", "config"),
        f"data.source={cfg.data.source!r}: use checkpoint (its own data) or config (data as set)",
    )
    split, _, metric = str(cfg.monitor).partition("/")
    _require(
        split in ("val", "train_eval", "train")
        and (metric in ("loss", "acc", "acc_mean", "map") or metric.startswith(("acc/", "ap/"))),
        f"monitor={cfg.monitor!r} is not a logged metric: use val/<loss|acc|acc_mean|map> "
        "(or val/acc/<class>, val/ap/<class>; train_eval/... and train/... too)",
    )
    if str(cfg.trainer.precision) != AUTO:  # Lightning's list imports lightning.fabric (4 s)
        accepted = trainer_precisions()
        _require(
            str(cfg.trainer.precision) in accepted,
            f"trainer.precision={cfg.trainer.precision!r}: use {', '.join(accepted)}",
        )


def _check_training_inputs(cfg: DictConfig) -> None:
    """mode=train: the data folder and the weights file exist (said before data is read)."""
    weights = cfg.model.weights
    if weights not in (None, "none", "imagenet"):
        _require(
            Path(str(weights)).expanduser().is_file(),
            f"model.weights={weights}: no such file; use imagenet (torchvision's weights), none "
            "(from scratch) or the path of a state-dict file",
        )
    if cfg.data.kind != "demo":
        root = Path(cfg.data.root).expanduser()
        problem = not_a_folder("data.root", root, "a folder of class folders")
        _require(problem is None, str(problem))
        _require(root.is_dir(), f"data folder {root} does not exist: set data.root=...")


def no_ckpt_there(path: Path) -> str:
    return f"ckpt={path} does not exist: pass the best_model.pt of a training run"


def check_inputs(cfg: DictConfig) -> None:
    """The file or folder a mode starts from (`ckpt`, `resume`, `predict.input`, mode=report's
    `sweep`) is given and is there (resume's a checkpoint, not a file cut short): said before
    the task imports torch (5 s) and before Hydra makes a run folder."""
    if cfg.mode in CKPT_MODES:
        unset = f"ckpt is not set: add ckpt=path/to/best_model.pt (mode={cfg.mode})"
        _require(bool(cfg.ckpt), unset)
        ckpt = Path(str(cfg.ckpt)).expanduser()
        _require(ckpt.exists(), no_ckpt_there(ckpt))
    if cfg.mode == "train":
        resume_checkpoint(cfg.resume)  # there, and a whole checkpoint archive (no torch)
    if cfg.mode == "predict":
        _require(
            bool(cfg.predict.input),
            "predict.input is not set: add predict.input=<image file or folder of images>",
        )
        given = Path(str(cfg.predict.input)).expanduser()
        _require(given.exists(), f"predict.input={given} does not exist")
    if cfg.mode == "report":
        sweeps = "outputs/multirun/<date>/<time>"
        _require(cfg.sweep is not None, f"mode=report needs the sweep folder: add sweep={sweeps}")
        sweep = Path(str(cfg.sweep)).expanduser()
        _require(
            not sweep.is_file(), f"sweep={sweep} is a file, not a sweep folder: give one ({sweeps})"
        )
        _require(sweep.is_dir(), f"sweep={sweep} does not exist: give a sweep folder ({sweeps})")
        single = (sweep / ".hydra").is_dir()
        _require(
            bool(job_folders(sweep)),
            f"sweep={sweep} is {'a single run' if single else 'not a sweep folder'}: it has no job "
            f"folders (<n>/.hydra); give the folder of a -m sweep ({sweeps})",
        )
        _require(  # runs trained apart (outputs/train/<date>) may be on other data altogether
            (sweep / "multirun.yaml").is_file() or all(map(_ran_in_a_sweep, job_folders(sweep))),
            f"sweep={sweep} holds runs but is not one sweep (they ran one by one, not as the "
            f"jobs of a -m sweep): runs trained apart are not ranked together; give the folder "
            f"of a -m sweep ({sweeps})",
        )


def _ran_in_a_sweep(job: Path) -> bool:
    """The job's Hydra record says it ran in a -m sweep (Hydra's basic sweeper also writes
    multirun.yaml beside the jobs; Optuna's does not)."""
    record = job / ".hydra" / "hydra.yaml"
    return record.is_file() and OmegaConf.load(record).hydra.get("mode") == "MULTIRUN"


def validate_config(cfg: DictConfig) -> None:
    """Every value Hydra cannot check by type, in one pass, with no torch or Lightning import
    (except for a trainer.precision other than auto, checked against Lightning's own list);
    after finetune.config_keys.check_keys."""
    if cfg.mode == "train" and OmegaConf.is_missing(cfg.data, "root"):
        hint = ROOT_HINTS.get(cfg.data.kind, ROOT_HINTS["folder"])
        raise UserError(
            f"data.root is not set: add data.root={hint} to the command "
            "(or try the embedded demo: experiment=demo)"
        )
    check_rules(cfg)
    _check_combinations(cfg)
    _check_choices(cfg)
    if cfg.mode == "train":
        _check_training_inputs(cfg)
