"""The Python API, for notebooks and scripts: `run(overrides)` is `python -m finetune OVERRIDES`.

The same checks (one-line errors), the same config (composed once, by Hydra's config loader over
the same conf/, as the command line composes it), the same run folder (`hydra.run.dir`, or the
one `hydra.run.dir=` names, with its .hydra/ files and finetune.log), and the same task; its
results come back as a dict with `run_dir` added.
A user mistake raises UserError carrying the line the command line prints after `error:`.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from hydra._internal.callbacks import Callbacks
from hydra.core.utils import run_job
from hydra.types import HydraContext
from omegaconf import DictConfig

from finetune.caller_state import caller_state_kept
from finetune.choices import check_command_line
from finetune.composition import config_loader, search_path
from finetune.errors import UserError
from finetune.tasks import check_config, run_task


def config_dir() -> Path:
    """The configs ship inside the package (finetune/conf); a source checkout has them at conf/."""
    packaged = Path(__file__).resolve().parent / "conf"
    repo = Path(__file__).resolve().parents[2] / "conf"
    return packaged if (packaged / "config.yaml").is_file() else repo


def check_before_running(argv: Sequence[str]) -> DictConfig | None:
    """What is said before Hydra makes a run folder, in one UserError line: the command line
    (finetune.choices) and the mode, values and ckpt of the run it makes (of a sweep, its first
    run). Returns that run's config, hydra node included (None for --cfg, --help and the
    like): run() runs it as composed here, the command line has Hydra compose it again."""
    composed = check_command_line(argv, config_dir())
    if composed is not None:
        check_config(composed)
    return composed


def run(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose the config for `overrides`, run its task in a fresh run folder, return its
    results (`run_dir` included).

    >>> from finetune import run
    >>> results = run(["experiment=demo", "trainer.max_epochs=1"])
    >>> results["run_dir"], results["val"]["val/acc_mean"]
    """
    # run("mode=eval ckpt=x") would compose letter by letter, run({"mode": "eval"}) its keys
    if overrides is None or isinstance(overrides, str | Mapping):
        raise TypeError(
            "overrides must be a list of strings, e.g. ['mode=eval', 'ckpt=...'], not "
            f"{type(overrides).__name__}"
        )
    overrides = list(overrides)
    other = next((item for item in overrides if not isinstance(item, str)), None)
    if other is not None:  # a Path alone is no override: ckpt=... says which key it is for
        raise TypeError(
            f"overrides must be strings such as 'ckpt=path/to/best_model.pt', not "
            f"{type(other).__name__} {other!r}"
        )
    flags = [item for item in overrides if item.startswith("-")]
    if flags:  # Hydra would parse "-m" as an override and fail in its own words
        raise UserError(
            f"run() takes overrides, not flags ({' '.join(flags)}): sweeps and flags are for the "
            f"command line, as in python -m finetune {' '.join(overrides)}"
        )
    with caller_state_kept():
        # hydra.mode=RUN: what Hydra's command line adds to a run's overrides (its hydra.yaml)
        cfg = cast(DictConfig, check_before_running([*overrides, "hydra.mode=RUN"]))
        callbacks = Callbacks(cfg)  # a user's hydra.callbacks, called as Hydra's run calls them
        context = HydraContext(config_loader(search_path(config_dir())), callbacks)
        callbacks.on_run_start(config=cfg, config_name="config")
        job = run_job(
            task_function=_task_or_user_error,
            config=cfg,
            job_dir_key="hydra.run.dir",
            job_subdir_key=None,
            hydra_context=context,
        )
        callbacks.on_run_end(config=cfg, config_name="config", job_return=job)
    results = job.return_value  # a bug in the task re-raises here, as under the CLI
    if isinstance(results, UserError):
        raise results
    return {"run_dir": str(job.hydra_cfg.hydra.runtime.output_dir), **(results or {})}


def _task_or_user_error(cfg: Any) -> dict[str, Any] | UserError:
    """The task's results, or the user's mistake it stopped at: returned, not raised, so that
    Hydra does not print its "Error executing job" banner over the one-line message."""
    try:
        return run_task(cfg)
    except UserError as error:
        return error
