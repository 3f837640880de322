"""What a run changes in its process, given back as the caller had it: `run()` is called from a
notebook, a script or a @hydra.main job that goes on afterwards.

- logging: every logger's handlers (and their filters), level, filters, `propagate` and
  `disabled` (the run's job logging replaces the root's handlers and may disable existing
  loggers; the console set-up takes Lightning's own handler away and adds filters to the root's
  handlers; loggers made during the run, Lightning's if the run imported it, stay as the run
  left them). The run's handlers (its console and finetune.log) are
  closed, so that the notebook's later lines do not go on into that log file. Hydra's logging
  set-up closes every open handler: a caller's file opened with mode "w" would never reopen
  (Python will not empty it again), so it goes on in mode "a", after its earlier lines, and a
  MemoryHandler gets back the target that closing took from it;
- the warning filters the console set-up adds;
- Hydra's global state: a notebook's own `initialize(...)`, or the @hydra.main job that calls
  run(), keeps its config loader, HydraConfig, job name and version_base;
- torch's determinism flag, which a run with trainer.deterministic=true sets for the process
  (later GPU code in the notebook would otherwise fail on nondeterministic ops);
- the environment variables Lightning sets (LIGHTNING_VARIABLES), which would steer the
  notebook's own later training (torch's own, set when it is imported, stay).

The global random generators stay seeded by the run (`seed`), as Lightning leaves them.
"""

import logging
import logging.handlers
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobRuntime
from hydra.version import VersionBase

# What Lightning's seeding and deterministic mode put in the environment of the process.
LIGHTNING_VARIABLES = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG")


@contextmanager
def caller_state_kept() -> Iterator[None]:
    """Run the body with a clean Hydra; give back everything listed in the module docstring."""
    with ExitStack() as stack:
        stack.enter_context(_logging_kept())
        stack.enter_context(warnings.catch_warnings())
        stack.enter_context(_hydra_kept())
        stack.enter_context(_process_kept())
        yield


@contextmanager
def _logging_kept() -> Iterator[None]:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    kept = {
        logger: (
            list(logger.handlers),
            logger.level,
            list(logger.filters),
            logger.propagate,
            logger.disabled,
        )
        for logger in loggers
        if isinstance(logger, logging.Logger)
    }
    handlers_kept = {handler for handlers, *_ in kept.values() for handler in handlers}
    handler_filters = {handler: list(handler.filters) for handler in handlers_kept}
    targets = {  # closing a MemoryHandler drops its target
        handler: handler.target
        for handler in handlers_kept
        if isinstance(handler, logging.handlers.MemoryHandler)
    }
    try:
        yield
    finally:
        for logger, (handlers, level, filters, propagate, disabled) in kept.items():
            for handler in logger.handlers:
                if handler not in handlers_kept:  # the run's own (its console, finetune.log)
                    handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.filters[:] = filters
            logger.propagate = propagate
            logger.disabled = disabled
        for handler in handlers_kept:
            handler.filters[:] = handler_filters[handler]  # the console set-up adds its own
            if isinstance(handler, logging.FileHandler) and handler.mode == "w":
                handler.mode = "a"  # reopened at its next line, after what it holds
        for handler, target in targets.items():
            handler.setTarget(target)


@contextmanager
def _hydra_kept() -> Iterator[None]:
    hydra, hydra_config = GlobalHydra.instance().hydra, HydraConfig.instance().cfg
    job_name = JobRuntime.instance().conf.get("name")
    version_base = VersionBase.instance().version_base
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if hydra is not None:
            GlobalHydra.instance().initialize(hydra)
        HydraConfig.instance().cfg = hydra_config
        JobRuntime.instance().set("name", job_name)
        VersionBase.instance().version_base = version_base


@contextmanager
def _process_kept() -> Iterator[None]:
    environment = {name: os.environ.get(name) for name in LIGHTNING_VARIABLES}
    torch = sys.modules.get("torch")  # not imported yet: torch's own defaults
    determinism = (
        (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        if torch is not None
        else (False, False)
    )
    try:
        yield
    finally:
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch = sys.modules.get("torch")  # imported by the run if it got that far
        if torch is not None:
            torch.use_deterministic_algorithms(determinism[0], warn_only=determinism[1])
