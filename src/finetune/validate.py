"""Values Hydra cannot check by type: refused before any work starts, with the fix in one line."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from finetune.data.kinds import check_kind
from finetune.errors import UserError
from finetune.optim import OPTIMIZERS, SCHEDULERS, known_name
from finetune.precision import AUTO, trainer_precisions

INFERENCE_PRECISIONS = ("32-true", "bf16-mixed")
EXPORT_FORMATS = ("onnx", "torchscript")
CKPT_MODES = ("eval", "analyze", "predict", "export")  # the modes that load a model from `ckpt`


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_fine_tuning(cfg: DictConfig) -> None:
    """Staged unfreezing, the backbone's learning rate and early stopping, and how they mix."""
    mult = cfg.optimizer.backbone_lr_mult
    _require(_is_number(mult) and mult > 0, f"optimizer.backbone_lr_mult={mult!r} must be > 0")
    stage = cfg.model.unfreeze_at_epoch
    _require(
        stage is None or (_is_whole(stage) and stage >= 1),
        f"model.unfreeze_at_epoch={stage!r} must be null (off) or a whole number of epochs >= 1",
    )
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
    patience = cfg.early_stopping.patience
    _require(
        patience is None or (_is_whole(patience) and patience >= 0),
        f"early_stopping.patience={patience!r} must be null (off) or a whole number of epochs",
    )


def check_ckpt(cfg: DictConfig) -> None:
    """A mode that loads a model needs `ckpt`: said before the task imports torch (5 s)."""
    _require(
        cfg.mode not in CKPT_MODES or bool(cfg.ckpt),
        f"ckpt is not set: add ckpt=path/to/best_model.pt (mode={cfg.mode})",
    )


def validate_config(cfg: DictConfig) -> None:
    """Every value Hydra cannot check by type, in one pass, with no torch or Lightning import
    (except for a trainer.precision other than auto, checked against Lightning's own list)."""
    if cfg.mode == "train" and OmegaConf.is_missing(cfg.data, "root"):
        raise UserError(
            "data.root is not set: add data.root=/path/to/class/folders to the command "
            "(or try the embedded demo: experiment=demo)"
        )
    loader = cfg.data.loader
    for key in ("batch_size", "eval_batch_size"):
        value = loader[key]
        _require(
            isinstance(value, int) and value >= 1,
            f"data.loader.{key}={value!r} must be a whole number >= 1",
        )
    workers = loader.num_workers
    _require(
        workers == "auto" or (isinstance(workers, int) and workers >= 0),
        f"data.loader.num_workers={workers!r} must be 'auto' or a whole number >= 0",
    )
    lr = cfg.optimizer.lr
    _require(_is_number(lr) and lr > 0, f"optimizer.lr={lr!r} must be a number > 0")
    known_name("optimizer", cfg.optimizer.name, OPTIMIZERS)
    known_name("scheduler", cfg.scheduler.name, SCHEDULERS)
    _check_fine_tuning(cfg)
    size = cfg.data.image_size
    _require(isinstance(size, int) and size >= 16, f"data.image_size={size!r} must be >= 16")
    _require(
        cfg.data.bad_images in ("skip", "error"),
        f"data.bad_images={cfg.data.bad_images!r} must be skip or error",
    )
    _require(
        cfg.data.source in ("checkpoint", "config"),
        f"data.source={cfg.data.source!r}: use checkpoint (its own data) or config (data as set)",
    )
    _require(
        cfg.monitor_mode in ("min", "max"), f"monitor_mode={cfg.monitor_mode!r}: use min or max"
    )
    split, _, metric = str(cfg.monitor).partition("/")
    _require(
        split in ("val", "train_eval", "train")
        and (metric in ("loss", "acc", "acc_mean", "map") or metric.startswith(("acc/", "ap/"))),
        f"monitor={cfg.monitor!r} is not a logged metric: use val/<loss|acc|acc_mean|map> "
        "(or val/acc/<class>, val/ap/<class>; train_eval/... and train/... too)",
    )
    smoothing = cfg.model.label_smoothing
    _require(
        _is_number(smoothing) and 0 <= smoothing < 1,
        f"model.label_smoothing={smoothing!r} must be in [0, 1)",
    )
    _require(
        _is_number(cfg.eval.tolerance) and cfg.eval.tolerance >= 0,
        f"eval.tolerance={cfg.eval.tolerance!r} must be a number >= 0",
    )
    _require(
        cfg.export.format in EXPORT_FORMATS,
        f"export.format={cfg.export.format!r}: use {' or '.join(EXPORT_FORMATS)}",
    )
    if str(cfg.trainer.precision) != AUTO:  # Lightning's list imports lightning.fabric (4 s)
        accepted = trainer_precisions()
        _require(
            str(cfg.trainer.precision) in accepted,
            f"trainer.precision={cfg.trainer.precision!r}: use {', '.join(accepted)}",
        )
    layout = cfg.model.channels_last
    _require(
        isinstance(layout, bool) or layout == AUTO,
        f"model.channels_last={layout!r}: use true, false or auto",
    )
    precision = str(cfg.inference.precision)
    _require(
        precision in INFERENCE_PRECISIONS,
        f"inference.precision={precision!r}: use {' or '.join(INFERENCE_PRECISIONS)}",
    )
    for key in ("test", "val"):
        value = cfg.data.split[key]
        _require(
            _is_number(value) and value >= 0 and (value < 1 or float(value).is_integer()),
            f"data.split.{key}={value!r} must be a whole count >= 1, or a fraction in [0, 1)",
        )
    check_kind(cfg.data.kind)  # one line naming the registry's kinds
    for key, minimum in (("num_images", 2), ("top_k", 1), ("batch_size", 1)):
        value = cfg.analysis[key]
        _require(
            _is_whole(value) and value >= minimum,
            f"analysis.{key}={value!r} must be a whole number >= {minimum}",
        )
    if cfg.mode == "train" and cfg.data.kind != "demo":
        root = Path(cfg.data.root).expanduser()
        _require(root.is_dir(), f"data folder {root} does not exist: set data.root=...")
