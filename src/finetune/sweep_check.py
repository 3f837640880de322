"""The jobs of a sweep (-m), checked before Hydra's basic sweeper starts them.

Hydra's basic sweeper runs the cartesian product of the swept values, each job in
`hydra.sweep.dir/hydra.sweep.subdir`. It cannot enumerate interval(), a search space for
Optuna, and says so in a 15-line traceback. A subdir that does not tell two jobs apart (as
`${optimizer.name}` when only the learning rate is swept) lets the second job rewrite the first's
`.hydra/` and stop on its files, after which the sweep summary ranks the first job's model under
the second job's overrides. Both are refused here in one line, and so is a subdir that does not
resolve (a traceback when the first job starts). Sweeps of another sweeper (Optuna) choose their
jobs as they go: they are left to it, except that no sweeper may sweep only keys that resume=
takes from its checkpoint (every job would train the same run). Only hydra and omegaconf are
imported.
"""

import os
from collections.abc import Mapping, Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from hydra.core.utils import setup_globals
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from finetune.composition import compose_as_cli
from finetune.errors import UserError
from finetune.overrides import parse_override
from finetune.resume import ignored_when_resuming

BASIC_SWEEPER = f"{BasicSweeper.__module__}.{BasicSweeper.__name__}"  # hydra.sweeper._target_
# hydra.sweep.subdir in conf/config.yaml (and Hydra's default): a folder per job by construction,
# so the jobs need not be composed to tell their folders apart.
JOB_NUMBER = "${hydra.job.num}"


def check_sweep(
    overrides: Sequence[Override],
    first_job_cfg: DictConfig,
    search: ConfigSearchPath,
    config_name: str,
) -> None:
    """Raise a one-line UserError for a sweep that cannot run as asked: one that sweeps only
    keys resume= takes from its checkpoint (any sweeper), and for Hydra's basic sweeper a swept
    interval(), or two jobs given one folder. `overrides` is the command line, parsed;
    `first_job_cfg` the config (hydra node included) of the sweep's first job; `search` where
    configs are found (finetune.composition.search_path)."""
    params = OmegaConf.select(first_job_cfg, "hydra.sweeper.params") or {}
    _refuse_sweeps_resuming_ignores(params, overrides, first_job_cfg)
    if OmegaConf.select(first_job_cfg, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return
    swept = [parse_override(f"{key}={value}") for key, value in params.items()]  # its own first
    swept += [override for override in overrides if not override.is_hydra_override()]
    for override in swept:
        _refuse_interval(override)
    subdir = OmegaConf.to_container(first_job_cfg.hydra.sweep, resolve=False)["subdir"]
    if subdir != JOB_NUMBER:
        lines = [override.input_line for override in swept]
        hydra_lines = [o.input_line for o in overrides if o.is_hydra_override()]
        _refuse_shared_folders(lines, hydra_lines, first_job_cfg, search, config_name, subdir)


def _refuse_sweeps_resuming_ignores(
    params: DictConfig, overrides: Sequence[Override], first_job_cfg: DictConfig
) -> None:
    """A resumed run takes its optimizer, scheduler, network and transform from the checkpoint
    (finetune.resume.RESUMED_KEYS): a sweep of those keys alone with resume= would train the
    same run once per job, then rank the copies by values none of them used. `params` are the
    sweeper's own (experiment=report's grid, Optuna's search space), `overrides` the command
    line's."""
    if first_job_cfg.get("mode") != "train" or not first_job_cfg.get("resume"):
        return
    swept = [key for key, value in params.items() if _swept(key, value)]
    swept += [o.key_or_group for o in overrides if o.is_sweep_override()]
    if swept and all(map(ignored_when_resuming, swept)):
        raise UserError(
            f"a sweep of {', '.join(dict.fromkeys(swept))} with resume={first_job_cfg.resume}: "
            "a resumed run takes these from its checkpoint, so every job would train the same "
            "run; sweep without resume= (from the start), or sweep what a resumed run reads "
            "(trainer.max_epochs, seed, ...)"
        )


def _swept(key: str, value: object) -> bool:
    """Whether a sweeper's param is a sweep: a list, range or interval in Hydra's grammar, or a
    search space of the sweeper's own (a mapping)."""
    if isinstance(value, Mapping):
        return True
    return parse_override(f"{key}={value}").is_sweep_override()


def _refuse_interval(override: Override) -> None:
    """interval(a,b) is a range to sample from (by Optuna), not values the basic sweeper lists."""
    if override.value_type == ValueType.INTERVAL_SWEEP:
        raise UserError(
            f"{override.input_line}: interval() is a search space for -m hparams_search=optuna; "
            "Hydra's basic sweeper takes values to run: a list "
            f"({override.get_key_element()}=0.01,0.001), range(start,stop,step) or choice(a,b)"
        )


def _refuse_shared_folders(
    lines: list[str],
    hydra_lines: list[str],
    first_job_cfg: DictConfig,
    search: ConfigSearchPath,
    config_name: str,
    subdir: object,
) -> None:
    """Compose every job as Hydra's basic launcher will (its index as hydra.job.num, Hydra's
    hydra.job.override_dirname of its overrides, the first job's ${now:} values) and refuse two
    jobs whose folders are one."""
    setup_globals()  # the ${now:} and ${hydra:} resolvers, as Hydra registers them
    OmegaConf.select(first_job_cfg, "hydra.sweep.dir")  # caches ${now:}, as the sweeper does
    parser = OverridesParser.create(config_loader=ConfigLoaderImpl(search))  # for glob()
    jobs = BasicSweeper.split_arguments(parser.parse_overrides(lines), max_batch_size=None)[0]
    if len(jobs) < 2:
        return
    hydra_config = HydraConfig.instance()
    saved, seen = hydra_config.cfg, {}
    for num, job in enumerate(jobs):
        try:
            cfg = compose_as_cli(search, config_name, hydra_lines + job)
        except (HydraException, OmegaConfBaseException, ValueError):
            return  # Hydra says it when it composes every job, before the first one runs
        OmegaConf.copy_cache(from_config=first_job_cfg, to_config=cfg)
        with open_dict(cfg):
            cfg.hydra.job.id = num
            cfg.hydra.job.num = num
        hydra_config.set_config(cfg)  # ${hydra:...} reads the job's own, as in Hydra
        try:
            folder = os.path.join(_resolved(cfg, "dir", num), _resolved(cfg, "subdir", num))
        finally:
            hydra_config.cfg = saved
        where = os.path.abspath(folder)
        if where in seen:
            raise UserError(_shared(jobs, seen[where], num, folder, subdir))
        seen[where] = num


def _resolved(cfg: DictConfig, name: str, num: int) -> str:
    """hydra.sweep.<name> of job `num`; one that does not resolve is said in one line (Hydra
    says it in a traceback when the job starts)."""
    try:
        return str(cfg.hydra.sweep[name])
    except OmegaConfBaseException as error:
        value = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)[name]
        reason = str(error).splitlines()[0]
        message = f"hydra.sweep.{name}={value} does not resolve for job {num}: {reason}"
        raise UserError(message) from None


def _shared(jobs: list[list[str]], first: int, second: int, folder: str, subdir: object) -> str:
    """Jobs `first` and `second` of the sweep would run in one `folder`: say which, and the fix."""

    def differs(job: int, other: int) -> str:
        """What job `job` sets that `other` does not (all it sets, where the two are alike)."""
        return " ".join([line for line in jobs[job] if line not in jobs[other]] or jobs[job])

    return (
        f"hydra.sweep.subdir={subdir} gives jobs {first} ({differs(first, second)}) and {second} "
        f"({differs(second, first)}) one folder, {folder}: the second would "
        f"overwrite the first; add {JOB_NUMBER} to it, as in "
        f"'hydra.sweep.subdir={JOB_NUMBER}_{subdir}'"
    )
