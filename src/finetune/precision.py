"""The fastest correct numeric setting for the processor at hand, chosen once at the start of
training: bf16-mixed autocast + channels-last where the device computes bfloat16 natively and
bf16 keeps float32's accuracy, float32 elsewhere.

- A CUDA GPU with bf16 support: bf16-mixed + channels-last.
- A CPU with AMX or AVX512-BF16: float32 unless `cpu_bf16=true`. bf16 trains 2.1x faster there,
  but in `make parity` (3 seeds, 2 data sets) it missed float32's mean class-wise accuracy by
  more than the one point a default may cost, so it is the opt-in.

`trainer.precision=auto` and `model.channels_last=auto` ask for that choice; any explicit value
(`trainer.precision=bf16-mixed`, `model.channels_last=false`) always wins.

torch and Lightning are imported where the choice is made, not with this module: the config
check reads `AUTO` and, for a precision other than auto, Lightning's list, and a mistyped value
answers before those imports.
"""

import logging
from dataclasses import dataclass
from typing import Any, get_args

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

AUTO = "auto"
FAST = "bf16-mixed"
PLAIN = "32-true"


@dataclass(frozen=True)
class Numerics:
    """What training runs in, and why: recorded in the log, metrics.json and best_model.pt."""

    precision: str
    channels_last: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "reason": self.reason,
        }


def trainer_precisions() -> tuple[str, ...]:
    """`auto` and every trainer.precision Lightning accepts, from Lightning's own list."""
    from lightning.fabric.connector import _PRECISION_INPUT

    accepted = (str(value) for literal in get_args(_PRECISION_INPUT) for value in get_args(literal))
    return (AUTO, *dict.fromkeys(accepted))


def cpu_bf16() -> str | None:
    """The CPU feature that computes bfloat16 natively (AMX, AVX512-BF16), or None."""
    import torch

    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512-BF16"
    return None


def _device_kind(accelerator: str) -> str:
    """cuda, cpu or other, as Lightning will resolve trainer.accelerator."""
    import torch

    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == AUTO:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu" if accelerator == "cpu" else "other"


def _native_bf16(device: str) -> tuple[bool, str]:
    """Whether `device` computes bfloat16 natively, and the reason in words."""
    import torch

    if device == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA GPU is visible"
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported():
            return True, f"the GPU ({name}) supports bfloat16"
        return False, f"the GPU ({name}) has no bfloat16 support"
    if device == "cpu":
        feature = cpu_bf16()
        if feature:
            return True, f"this CPU computes bfloat16 natively ({feature})"
        return False, "this CPU has no native bfloat16 (neither AMX nor AVX512-BF16)"
    return False, "the accelerator is neither a CPU nor a CUDA GPU"


def _sixteen_bit(precision: str) -> bool:
    """Whether `precision` computes in 16 bits (bf16-mixed, 16-true, transformer-engine, ...)."""
    return not precision.startswith(("32", "64"))


def choose_numerics(
    accelerator: str, precision: Any, channels_last: Any, cpu_bf16_allowed: bool
) -> Numerics:
    """Resolve `auto` in trainer.precision and model.channels_last for `accelerator`.

    On a CPU with native bf16, `auto` means bf16 only when `cpu_bf16_allowed` (config key
    `cpu_bf16`, false by default): bf16 training there is 2.1x faster but missed float32's
    accuracy by more than the one point the default must keep (`make parity`). Channels-last
    has a rule of its own: it pays off where a 16-bit precision runs on a device that computes
    bfloat16 natively, so `auto` follows the precision the run trains in, chosen or set."""
    precision = str(precision)
    explicit_precision = precision != AUTO
    explicit_layout = channels_last != AUTO
    if explicit_precision and explicit_layout:
        return Numerics(precision, bool(channels_last), "as set in the config")
    device = _device_kind(str(accelerator))
    native, why = _native_bf16(device)
    if explicit_precision:  # set by the user: cpu_bf16 has no say, the precision has
        chosen_precision = precision
        if not _sixteen_bit(precision):
            native = False
            why = f"it pays off for 16-bit precisions only, and this run trains in {precision}"
    else:
        if device == "cpu" and native and not cpu_bf16_allowed:
            native = False
            why += (
                ", but bf16 training on a CPU is opt-in (cpu_bf16=true): it missed float32's "
                "accuracy in `make parity`"
            )
        chosen_precision = FAST if native else PLAIN
    chosen_layout = bool(channels_last) if explicit_layout else native
    parts = []
    if not explicit_precision:
        parts.append(f"precision {chosen_precision}")
    if not explicit_layout:
        parts.append(f"channels-last {'on' if chosen_layout else 'off'}")
    return Numerics(chosen_precision, chosen_layout, f"{' and '.join(parts)}: {why}")


def resolve_numerics(cfg: DictConfig) -> tuple[DictConfig, Numerics]:
    """`cfg` with trainer.precision and model.channels_last as plain values (no `auto`), and the
    choice with its reason; said in one log line."""
    numerics = choose_numerics(
        cfg.trainer.accelerator, cfg.trainer.precision, cfg.model.channels_last, cfg.cpu_bf16
    )
    log.info(
        "numerics: trainer.precision=%s, model.channels_last=%s (%s)",
        numerics.precision,
        str(numerics.channels_last).lower(),
        numerics.reason,
    )
    resolved = OmegaConf.merge(
        cfg,
        {
            "trainer": {"precision": numerics.precision},
            "model": {"channels_last": numerics.channels_last},
        },
    )
    return resolved, numerics
