"""The table of values Hydra cannot check by type: a row per key (key, test of its value, what
it must be), skipped where the composed config lacks the key (optimizer.momentum under
optimizer=adamw). finetune.validate checks them, then the rules that relate keys to each other.
"""

from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from finetune.data.splits import SPLITS
from finetune.errors import UserError
from finetune.precision import AUTO

INFERENCE_PRECISIONS = ("32-true", "bf16-mixed")
EXPORT_FORMATS = ("onnx", "torchscript")
SEED_MAX = 2**32 - 1  # the largest seed numpy and scikit-learn take
_ABSENT = object()
Test = Callable[[Any], bool]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_whole(value: object) -> bool:
    """An int, not a boolean (True is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _real(test: Test) -> Test:
    """A number (1 and 1.0 alike; not a boolean) that passes `test`."""
    return lambda value: _number(value) and test(value)


def _integer(test: Test) -> Test:
    """A whole number (not a boolean) that passes `test`."""
    return lambda value: is_whole(value) and test(value)


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


def _module_list(value: Any) -> bool:
    """auto, or a non-empty list of module names."""
    names = [value] if isinstance(value, str) else value
    return value == "auto" or (
        isinstance(names, Sequence) and bool(names) and all(isinstance(n, str) for n in names)
    )


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
    ("analysis.modules", _module_list, "auto or a list of module names, e.g. [layer1.0.conv1]"),
    ("report.after_sweep", _boolean, BOOLEAN),
    ("data.bad_images", *_one_of("skip", "error")),
    ("monitor_mode", *_one_of("min", "max")),
    ("split", *_one_of(*SPLITS)),
    ("export.format", *_one_of(*EXPORT_FORMATS)),
    ("inference.precision", *_one_of(*INFERENCE_PRECISIONS)),
)


def _as_typed(value: object) -> str:
    """A value as written on the command line: null, true, 'text', [1, 2]."""
    return "null" if value is None else str(value).lower() if _boolean(value) else repr(value)


def _text_kind(text: str) -> str | None:
    """What text would be if it were not text: "number" for '7', "boolean" for 'true'."""
    if text.lower() in ("true", "false"):
        return "boolean"
    try:
        float(text)
    except ValueError:
        return None
    return "number"


def as_text_hint(cfg: DictConfig, key: str, value: object) -> str:
    """For a refused value that is a number or boolean as text: where the text comes from
    (${oc.env:...} always gives text; or quotes) and how to write it as a value."""
    kind = _text_kind(value) if isinstance(value, str) else None
    if kind is None:
        return ""
    section, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, section) if section else cfg
    if not OmegaConf.is_interpolation(parent, name):
        return f" (it is the text {value!r}: write {key}={value}, without quotes)"
    written = OmegaConf.to_container(parent, resolve=False)[name]
    return (
        f" (it is the text {value!r} that {written} gives: write "
        f'{key}="${{oc.decode:{written}}}" to read it as a {kind})'
    )


def check_rules(cfg: DictConfig) -> None:
    """Each row of RULES whose key the config has."""
    for key, test, what in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is not _ABSENT and not test(value):
            hint = as_text_hint(cfg, key, value)
            raise UserError(f"{key}={_as_typed(value)} must be {what}{hint}")
