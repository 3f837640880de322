"""Values Hydra cannot check by type: refused before any work starts, with the fix in one line.

Most rules are a row of RULES (key, test of its value, what it must be), skipped where the
composed config lacks the key (optimizer.momentum under optimizer=adamw); rules that relate keys
to each other or to files follow it."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from finetune.data.kinds import check_kind
from finetune.errors import UserError
from finetune.optim import OPTIMIZERS, SCHEDULERS, known_name
from finetune.precision import AUTO, trainer_precisions
from finetune.sweep import job_folders

INFERENCE_PRECISIONS = ("32-true", "bf16-mixed")
EXPORT_FORMATS = ("onnx", "torchscript")
CKPT_MODES = ("eval", "analyze", "predict", "export")  # the modes that load a model from `ckpt`
SEED_MAX = 2**32 - 1  # the largest seed numpy and scikit-learn take
# What data.root must name, by data.kind (demo: a cache folder the config sets itself)
ROOT_HINTS = {"folder": "/path/to/class/folders", "cifar10": "/path/to/cifar-10-batches-py"}
_ABSENT = object()
Test = Callable[[Any], bool]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(test: Test) -> Test:
    """A number (1 and 1.0 alike; not a boolean) that passes `test`."""
    return lambda value: _number(value) and test(value)


def _integer(test: Test) -> Test:
    """A whole number (not a boolean) that passes `test`."""
    return lambda value: _whole(value) and test(value)


def _or(special: object, test: Test) -> Test:
    """`special` itself, or a value that passes `test`."""
    return lambda value: value == special or test(value)


def _numbers(count: int, test: Test) -> Test:
    """A list of `count` numbers, each passing `test`."""
    return lambda value: (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == count
        and all(_real(test)(item) for item in value)
    )


def _one_of(*options: str) -> tuple[Test, str]:
    """A test and its words for a value that names one of `options`."""
    return (lambda value: isinstance(value, str) and value in options), " or ".join(options)


def _boolean(value: object) -> bool:
    return isinstance(value, bool)


def _crop_scale(value: Any) -> bool:
    return _numbers(2, lambda share: 0 < share <= 1)(value) and value[0] <= value[1]


POSITIVE, NON_NEGATIVE = _real(lambda v: v > 0), _real(lambda v: v >= 0)
SHARE = _real(lambda v: 0 <= v < 1)  # label smoothing, momentum, Adam's betas
SEED_VALUE = _integer(lambda v: 0 <= v <= SEED_MAX)
SPLIT_SIZE = _real(lambda v: v >= 0 and (v < 1 or float(v).is_integer()))
FROM_0, FROM_1 = _integer(lambda v: v >= 0), _integer(lambda v: v >= 1)
BOOLEAN = "true or false"
WHOLE_1 = "a whole number >= 1"
SEED = f"a whole number in [0, {SEED_MAX}]"
RGB = "one per RGB channel, on the 0-1 scale of the pixels"
# (key, test of its value, what the value must be)
RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("seed", SEED_VALUE, SEED),
    ("data.split.seed", SEED_VALUE, SEED),
    ("model.head_seed", SEED_VALUE, SEED),
    # a batch of one has no batch statistics for batch normalisation to train on
    ("data.loader.batch_size", _integer(lambda v: v >= 2), "a whole number >= 2"),
    ("data.loader.eval_batch_size", FROM_1, WHOLE_1),
    ("data.loader.num_workers", _or("auto", FROM_0), "auto or a whole number >= 0"),
    ("data.loader.pin_memory", _or("auto", _boolean), "true, false or auto"),
    ("data.loader.persistent_workers", _boolean, BOOLEAN),
    ("data.loader.prefetch_factor", FROM_1, WHOLE_1),
    ("data.image_size", _integer(lambda v: v >= 16), "a whole number >= 16"),
    ("data.train_crop_scale", _crop_scale, "[min, max] area shares, 0 < min <= max <= 1"),
    ("data.mean", _numbers(3, lambda v: 0 <= v <= 1), f"three numbers in [0, 1], {RGB}"),
    ("data.std", _numbers(3, lambda v: 0 < v <= 1), f"three numbers in (0, 1], {RGB}"),
    ("data.split.test", SPLIT_SIZE, "a whole count >= 1, or a fraction in [0, 1)"),
    ("data.split.val", SPLIT_SIZE, "a whole count >= 1, or a fraction in [0, 1)"),
    ("optimizer.lr", POSITIVE, "a number > 0"),
    ("optimizer.weight_decay", NON_NEGATIVE, "a number >= 0"),
    ("optimizer.momentum", SHARE, "a number in [0, 1)"),
    ("optimizer.nesterov", _boolean, BOOLEAN),
    ("optimizer.betas", _numbers(2, SHARE), "two numbers in [0, 1)"),
    ("optimizer.backbone_lr_mult", POSITIVE, "a number > 0"),
    ("scheduler.step_size", FROM_1, "a whole number of epochs >= 1"),
    ("scheduler.gamma", POSITIVE, "a number > 0"),
    ("scheduler.eta_min", NON_NEGATIVE, "a number >= 0"),
    ("model.label_smoothing", SHARE, "a number in [0, 1)"),
    ("model.unfreeze_at_epoch", _or(None, FROM_1), "null (off) or a whole number >= 1"),
    ("model.freeze_backbone", _boolean, BOOLEAN),
    ("model.compile", _boolean, BOOLEAN),
    ("model.channels_last", _or(AUTO, _boolean), "true, false or auto"),
    ("early_stopping.patience", _or(None, FROM_0), "null (off) or a whole number >= 0"),
    ("train_eval_images", FROM_0, "a whole number >= 0 (0: off)"),
    ("cpu_bf16", _boolean, BOOLEAN),
    ("trainer.max_epochs", _or(-1, FROM_1), f"{WHOLE_1}, or -1 (no limit)"),
    ("trainer.max_steps", _or(-1, FROM_1), f"{WHOLE_1}, or -1 (no limit)"),
    ("trainer.min_epochs", _or(None, FROM_0), "null or a whole number >= 0"),
    ("trainer.accumulate_grad_batches", FROM_1, WHOLE_1),
    ("trainer.gradient_clip_val", _or(None, NON_NEGATIVE), "null or a number >= 0"),
    ("trainer.check_val_every_n_epoch", _or(None, FROM_1), f"null or {WHOLE_1}"),
    ("trainer.log_every_n_steps", FROM_1, WHOLE_1),
    ("trainer.deterministic", _or("warn", _boolean), "true, false or warn"),
    ("trainer.benchmark", _or(None, _boolean), "null, true or false"),
    ("trainer.enable_progress_bar", _boolean, BOOLEAN),
    ("trainer.enable_model_summary", _boolean, BOOLEAN),
    ("eval.tolerance", NON_NEGATIVE, "a number >= 0"),
    ("analysis.num_images", _integer(lambda v: v >= 2), "a whole number >= 2"),
    ("analysis.top_k", FROM_1, WHOLE_1),
    ("analysis.batch_size", FROM_1, WHOLE_1),
    ("report.after_sweep", _boolean, BOOLEAN),
    ("data.bad_images", *_one_of("skip", "error")),
    ("monitor_mode", *_one_of("min", "max")),
    ("export.format", *_one_of(*EXPORT_FORMATS)),
    ("inference.precision", *_one_of(*INFERENCE_PRECISIONS)),
)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _as_typed(value: object) -> str:
    """A value as written on the command line: null, true, 'text', [1, 2]."""
    return "null" if value is None else str(value).lower() if _boolean(value) else repr(value)


def _check_rules(cfg: DictConfig) -> None:
    for key, test, what in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        _require(value is _ABSENT or test(value), f"{key}={_as_typed(value)} must be {what}")


def _check_combinations(cfg: DictConfig) -> None:
    """Values each right alone that together would break or waste the run."""
    size, resize = cfg.data.image_size, cfg.data.resize_size
    _require(
        _whole(resize) and resize >= size,
        f"data.resize_size={resize!r} must be a whole number >= data.image_size={size}: the "
        f"center crop would pad the image with black (e.g. data.resize_size={size * 8 // 7})",
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
        archive = root.is_file() and root.name.endswith((".tar.gz", ".tgz", ".tar", ".zip"))
        _require(not archive, f"data.root={root} is an archive: unpack it and give the folder")
        _require(root.is_dir(), f"data folder {root} does not exist: set data.root=...")


def no_ckpt_there(path: Path) -> str:
    return f"ckpt={path} does not exist: pass the best_model.pt of a training run"


def check_inputs(cfg: DictConfig) -> None:
    """The file or folder a mode starts from (`ckpt`, mode=report's `sweep`) is given and is
    there: said before the task imports torch (5 s) and before Hydra makes a run folder."""
    if cfg.mode in CKPT_MODES:
        unset = f"ckpt is not set: add ckpt=path/to/best_model.pt (mode={cfg.mode})"
        _require(bool(cfg.ckpt), unset)
        ckpt = Path(str(cfg.ckpt)).expanduser()
        _require(ckpt.exists(), no_ckpt_there(ckpt))
    if cfg.mode == "report":
        sweeps = "outputs/multirun/<date>/<time>"
        _require(cfg.sweep is not None, f"mode=report needs the sweep folder: add sweep={sweeps}")
        sweep = Path(str(cfg.sweep)).expanduser()
        _require(sweep.is_dir(), f"sweep={sweep} does not exist: give a sweep folder ({sweeps})")
        single = (sweep / ".hydra").is_dir()
        _require(
            bool(job_folders(sweep)),
            f"sweep={sweep} is {'a single run' if single else 'not a sweep folder'}: it has no job "
            f"folders (<n>/.hydra); give the folder of a -m sweep ({sweeps})",
        )


def validate_config(cfg: DictConfig) -> None:
    """Every value Hydra cannot check by type, in one pass, with no torch or Lightning import
    (except for a trainer.precision other than auto, checked against Lightning's own list)."""
    if cfg.mode == "train" and OmegaConf.is_missing(cfg.data, "root"):
        hint = ROOT_HINTS.get(cfg.data.kind, ROOT_HINTS["folder"])
        raise UserError(
            f"data.root is not set: add data.root={hint} to the command "
            "(or try the embedded demo: experiment=demo)"
        )
    _check_rules(cfg)
    _check_combinations(cfg)
    _check_choices(cfg)
    if cfg.mode == "train":
        _check_training_inputs(cfg)
