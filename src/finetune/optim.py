"""The optimizers and learning-rate schedules, each defined once by name (the options of the
optimizer and scheduler config groups): the model builds from these registries and the config
check refuses any other name, so no name falls through to a default.

Each builder imports torch when it is called, not this module: the config check reads the
registries' names without the 2 s import of torch, so a mistyped name or value answers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from finetune.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

ParamGroups = list[dict[str, Any]]


def _sgd(groups: ParamGroups, settings: dict[str, Any]) -> Optimizer:
    from torch.optim import SGD

    return SGD(groups, **settings)


def _adamw(groups: ParamGroups, settings: dict[str, Any]) -> Optimizer:
    from torch.optim import AdamW

    return AdamW(groups, **settings | {"betas": tuple(settings["betas"])})  # a list in YAML


def _constant(optimizer: Optimizer, settings: dict[str, Any], epochs: int) -> None:
    return None


def _cosine(optimizer: Optimizer, settings: dict[str, Any], epochs: int) -> LRScheduler:
    from torch.optim.lr_scheduler import CosineAnnealingLR

    return CosineAnnealingLR(optimizer, epochs, **settings)


def _step(optimizer: Optimizer, settings: dict[str, Any], epochs: int) -> LRScheduler:
    from torch.optim.lr_scheduler import StepLR

    return StepLR(optimizer, **settings)


# (param groups, the optimizer group's settings less name and backbone_lr_mult) -> optimizer
OPTIMIZERS: dict[str, Callable[[ParamGroups, dict[str, Any]], Optimizer]] = {
    "sgd": _sgd,
    "adamw": _adamw,
}
# (optimizer, the scheduler group's settings less name, trainer.max_epochs) -> scheduler,
# stepped once per epoch; None: a constant learning rate
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
    name = known_name("optimizer", settings.pop("name"), OPTIMIZERS)
    settings.pop("backbone_lr_mult", None)  # applied to the groups by the model
    return OPTIMIZERS[name](groups, settings)


def build_scheduler(
    optimizer: Optimizer, settings: dict[str, Any], max_epochs: int
) -> LRScheduler | None:
    """The per-epoch schedule that cfg.scheduler names (None: a constant learning rate)."""
    settings = dict(settings)
    name = known_name("scheduler", settings.pop("name"), SCHEDULERS)
    return SCHEDULERS[name](optimizer, settings, max_epochs)


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
