"""Values Hydra cannot check by type: refused before any work starts, with the fix in one line."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from finetune.errors import UserError

INFERENCE_PRECISIONS = ("32-true", "bf16-mixed")
EXPORT_FORMATS = ("onnx", "torchscript")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def validate_config(cfg: DictConfig) -> None:
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
    _require(
        cfg.optimizer.name in ("sgd", "adamw"),
        f"optimizer.name={cfg.optimizer.name!r} is unknown: use optimizer=sgd or optimizer=adamw",
    )
    _require(
        cfg.scheduler.name in ("none", "cosine", "step"),
        f"scheduler.name={cfg.scheduler.name!r} is unknown: use none, cosine or step",
    )
    size = cfg.data.image_size
    _require(isinstance(size, int) and size >= 16, f"data.image_size={size!r} must be >= 16")
    _require(
        cfg.data.bad_images in ("skip", "error"),
        f"data.bad_images={cfg.data.bad_images!r} must be skip or error",
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
    if cfg.mode == "train" and cfg.data.kind != "demo":
        root = Path(cfg.data.root).expanduser()
        _require(root.is_dir(), f"data folder {root} does not exist: set data.root=...")
