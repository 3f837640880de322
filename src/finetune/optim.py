"""The optimizers and learning-rate schedules, each defined once by name (the options of the
optimizer and scheduler config groups): the model builds from these registries and the config
check refuses any other name, so no name falls through to a default.

Each builder imports torch when it is called, not this module: the config check reads the
registries' names without the 2 s import of torch, so a mistyped name or value answers at once.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from finetune.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

ParamGroups = list[dict[str, Any]]


def _keywords(target: type, settings: dict[str, Any], group: str, given: tuple[str, ...]) -> dict:
    """The settings of `group` less its name, as keyword arguments of the torch class `target`
    (an option of one's own may set any: eps or amsgrad for AdamW). A key `target` does not take,
    a typo or momentum left from sgd under name: adamw, is one line rather than torch's TypeError.
    `given`: the arguments the builder passes itself."""
    settings = dict(settings)
    name = settings.pop("name")
    parameters = inspect.signature(target).parameters.values()
    taken = [
        parameter.name
        for parameter in parameters
        if parameter.name not in given
        and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    ]
    unknown = [key for key in settings if key not in taken]
    if unknown:
        said = []
        for key in unknown:
            close = difflib.get_close_matches(key, taken, n=1)
            said.append(
                f"{group}.{key}" + (f" (did you mean {group}.{close[0]}?)" if close else "")
            )
        cls, them = target.__name__, "it" if len(unknown) == 1 else "them"
        raise UserError(
            f"{', '.join(said)}: torch's {cls} ({group}.name={name}) takes no such argument; "
            f"remove {them} from the {group} config, or choose {group}={name} in place of "
            f"setting {group}.name ({cls} takes {', '.join(taken)})"
        )
    return settings


def _sgd(groups: ParamGroups, settings: dict[str, Any]) -> Optimizer:
    from torch.optim import SGD

    return SGD(groups, **_keywords(SGD, settings, "optimizer", given=("params",)))


def _adamw(groups: ParamGroups, settings: dict[str, Any]) -> Optimizer:
    from torch.optim import AdamW

    keywords = _keywords(AdamW, settings, "optimizer", given=("params",))
    return AdamW(groups, **keywords | {"betas": tuple(keywords["betas"])})  # a list in YAML


def _constant(optimizer: Optimizer, settings: dict[str, Any], epochs: int) -> None:
    return None


def _cosine(optimizer: Optimizer, settings: dict[str, Any], epochs: int) -> LRScheduler:
    from torch.optim.lr_scheduler import CosineAnnealingLR

    keywords = _keywords(CosineAnnealingLR, settings, "scheduler", given=("optimizer", "T_max"))
    return CosineAnnealingLR(optimizer, epochs, **keywords)


def _step(optimizer: Optimizer, settings: dict[str, Any], epochs: int) -> LRScheduler:
    from torch.optim.lr_scheduler import StepLR

    return StepLR(optimizer, **_keywords(StepLR, settings, "scheduler", given=("optimizer",)))


# (param groups, the optimizer group's settings less backbone_lr_mult) -> optimizer
OPTIMIZERS: dict[str, Callable[[ParamGroups, dict[str, Any]], Optimizer]] = {
    "sgd": _sgd,
    "adamw": _adamw,
}
# (optimizer, the scheduler group's settings, trainer.max_epochs) -> scheduler, stepped once per
# epoch; None: a constant learning rate
SCHEDULERS: dict[str, Callable[[Optimizer, dict[str, Any], int], LRScheduler | None]] = {
    "none": _constant,
    "cosine": _cosine,
    "step": _step,
}


def known_name(group: str, name: object, registry: Mapping[str, object]) -> str:
    """`name` if `registry` has it, else one line naming the options of the config group."""
    if not isinstance(name, str) or name not in registry:
        options = ", ".join(registry)
        raise UserError(f"{group}.name={name!r} is unknown: use {group}=<one of {options}>")
    return name


def build_optimizer(groups: ParamGroups, settings: dict[str, Any]) -> Optimizer:
    """The optimizer that cfg.optimizer names, over `groups` (a group's own lr wins)."""
    settings = dict(settings)
    name = known_name("optimizer", settings["name"], OPTIMIZERS)
    settings.pop("backbone_lr_mult", None)  # applied to the groups by the model
    return OPTIMIZERS[name](groups, settings)


def build_scheduler(
    optimizer: Optimizer, settings: dict[str, Any], max_epochs: int
) -> LRScheduler | None:
    """The per-epoch schedule that cfg.scheduler names (None: a constant learning rate)."""
    name = known_name("scheduler", settings["name"], SCHEDULERS)
    return SCHEDULERS[name](optimizer, dict(settings), max_epochs)


def constant_schedule(optimizer: Optimizer) -> LRScheduler:
    """A schedule that keeps each param group's learning rate (ConstantLR at factor 1 reads the
    groups' rates, also of a group that joins later): scheduler=none still has a schedule, which
    names the logged learning rate like every other (Lightning names a lone optimizer's
    lr-<class>)."""
    from torch.optim.lr_scheduler import ConstantLR

    return ConstantLR(optimizer, factor=1.0, total_iters=0)


def join_param_group(
    optimizer: Optimizer,
    schedulers: list[LRScheduler],
    name: str,
    params: list[torch.nn.Parameter],
    lr_mult: float,
) -> None:
    """Add a param group mid-training whose learning rate is `lr_mult` times the first group's,
    now and along the schedule: torch's schedulers keep one base learning rate per group, taken
    when they were built, so each of `schedulers` gets the new group's."""
    first = optimizer.param_groups[0]
    optimizer.add_param_group({"name": name, "params": params, "lr": first["lr"] * lr_mult})
    for scheduler in schedulers:
        scheduler.base_lrs.append(scheduler.base_lrs[0] * lr_mult)
