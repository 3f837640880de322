"""The experiment loggers of a training run: one Lightning logger per entry of the `logger`
config group (`logger=tensorboard`, `logger=[tensorboard,csv,mlflow]`), built by Hydra's
`instantiate` from its `_target_` and keys. Lightning sends every logger the same metrics.

The one argument of each logger that places it in the run (TensorBoard's and CSV's save_dir,
MLflow's run name) is null in the config and filled in here with the run folder, so that the
logger configs hold for any run folder, also where no Hydra job runs (training_loggers takes
the folder); a value set in the config (e.g. save_dir=${hydra:runtime.output_dir}/tb) is kept.

Once the selected epoch is measured, each TensorBoard logger also gets the run's HParams entry
(log_hparams_session): the runs of a sweep then compare side by side in TensorBoard's HParams tab.
mode=eval finds the logs of a checkpoint's earlier epochs in the runs it resumed (resumed_run).
"""

import importlib.util
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from finetune.errors import UserError
from finetune.io import user_path
from finetune.overrides import parse_override


def _folder(run_dir: Path) -> str:
    return os.fspath(run_dir)


# The argument, per logger class, that a null in the config leaves to the run folder.
RUN_FOLDER_ARGUMENT: dict[str, tuple[str, Callable[[Path], str]]] = {
    "lightning.pytorch.loggers.TensorBoardLogger": ("save_dir", _folder),
    "lightning.pytorch.loggers.CSVLogger": ("save_dir", _folder),
    "lightning.pytorch.loggers.MLFlowLogger": ("run_name", user_path),
}
# Loggers that pass the keys they do not know on to a writer they make at the first log (the
# TensorBoard SummaryWriter): the writer is made here, so that a wrong key is one line now.
WRITER_MADE_AT_FIRST_LOG = ("lightning.pytorch.loggers.TensorBoardLogger",)
# The optional package a logger class needs, and the extra of this project that installs it.
OPTIONAL_PACKAGE = {"lightning.pytorch.loggers.MLFlowLogger": ("mlflow", "mlflow")}


def _require_package(name: str, target: str) -> None:
    module, extra = OPTIONAL_PACKAGE.get(target, (None, None))
    if module and importlib.util.find_spec(module) is None:
        raise UserError(
            f"logger={name} needs the {module} package: pip install -e '.[{extra}]' "
            f"(or pip install 'finetune[{extra}]'), or choose another logger"
        )


def training_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    """The Lightning loggers chosen by `cfg.logger` (none for `logger=[]`), writing to `run_dir`."""
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        target = node.get("_target_")
        if not target:
            raise UserError(f"logger.{name} has no _target_: choose logger=tensorboard|csv|mlflow")
        _require_package(name, target)
        filled = {}
        if target in RUN_FOLDER_ARGUMENT:
            argument, value_for = RUN_FOLDER_ARGUMENT[target]
            if node.get(argument) is None:
                filled[argument] = value_for(run_dir)
        try:
            logger = instantiate(node, **filled)
            if target in WRITER_MADE_AT_FIRST_LOG:
                logger.experiment  # noqa: B018 (made now: its TypeError is the user's key)
        except (InstantiationException, TypeError) as error:
            reason = " ".join(str(error.__cause__ or error).split())[:300]
            raise UserError(f"logger.{name} rejected by {target}: {reason}") from None
        loggers.append(logger)
    return loggers


# The hyper-parameters of every run's HParams entry, beside the keys its command line set.
MAIN_KEYS = (
    "model.arch",
    "model.weights",
    "optimizer.name",
    "optimizer.lr",
    "optimizer.weight_decay",
    "scheduler.name",
    "data.loader.batch_size",
    "trainer.max_epochs",
    "seed",
)
# The figures of the selected epoch in the HParams entry, as scalars best/<metric>: their own
# tags, so that the per-epoch curves val/map, ... keep one point per epoch.
FINAL_METRICS = ("val/map", "val/acc_mean", "test/map", "test/acc_mean")
SETTINGS_GROUPS = ("model", "optimizer", "scheduler", "data")
TRAINING_METRICS = "metrics.json"  # mode=train's results, beside its best_model.pt


def _value(tree: Any, key: str) -> Any:
    """The value at the dotted `key` of nested dicts; None where there is none."""
    for part in key.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def run_hparams(cfg: DictConfig, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The run's hyper-parameters by config key: MAIN_KEYS and every key the command line set
    (a config group by its option, optimizer=adamw), valued as the run used them. `settings`: the
    model's hyperparameters, which win over `cfg` (a resumed run trains with its checkpoint's)."""
    used = OmegaConf.to_container(cfg, resolve=True)
    used.update({group: settings[group] for group in SETTINGS_GROUPS if group in settings})
    hparams = {key: _value(used, key) for key in MAIN_KEYS}
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    for override in map(parse_override, overrides):
        key = override.key_or_group
        if override.is_delete() or key.split(".")[0].split("/")[0] == "hydra":
            continue
        value = _value(used, override.package or key)  # +optimizer@foo=adamw: at foo
        named = f"{key}@{override.package}" if override.package else key
        hparams[named] = override.value() if value is None or isinstance(value, Mapping) else value
    return {key: _shown(value) for key, value in hparams.items()}


def _shown(value: Any) -> Any:
    """A bool or null as the config writes it: torch's hparams summary makes a bool 0 or 1."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else value


def log_hparams_session(
    loggers: list[Any], cfg: DictConfig, settings: Mapping[str, Any], results: Mapping[str, Any]
) -> None:
    """Write the run's HParams entry to each TensorBoard logger: its hyper-parameters
    (run_hparams) and the val and test figures of its selected epoch (`results` of mode=train),
    as best/val/map, ... The fit closed the logger's event file: this writes one more, holding no
    train/ curve (mode=eval's training-curve figure leaves it out)."""
    from lightning.pytorch.loggers import TensorBoardLogger  # Lightning: not on the check path

    measured = {**results.get("val", {}), **results.get("test", {})}
    metrics = {f"best/{key}": float(measured[key]) for key in FINAL_METRICS if key in measured}
    hparams = run_hparams(cfg, settings)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams, metrics)
            logger.finalize("success")  # flushed and closed, as after the fit


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint sits in: <run>/checkpoints/x.ckpt, or <run>/best_model.pt."""
    return checkpoint.parent.parent if checkpoint.suffix == ".ckpt" else checkpoint.parent


def resumed_run(run_dir: Path, metrics: dict[str, Any] | None) -> Path | None:
    """The run folder that the training in `run_dir` resumed: its `resumed_from` (from `metrics`,
    else its metrics.json), else the resume= of its command line (.hydra/overrides.yaml: a run
    stopped with Ctrl-C has no metrics). A relative path is taken from where that run started."""
    hydra = run_dir / ".hydra"
    try:
        if metrics is None and (run_dir / TRAINING_METRICS).is_file():
            metrics = json.loads((run_dir / TRAINING_METRICS).read_text())
        if metrics is not None:
            resume = metrics.get("resumed_from")
        else:
            recorded = hydra / "overrides.yaml"
            overrides = OmegaConf.load(recorded) if recorded.is_file() else []
            given = [parse_override(str(item)) for item in overrides]  # quotes as Hydra reads
            resume = next((str(o.value()) for o in given if o.key_or_group == "resume"), None)
        if resume in (None, "", "null"):
            return None
        path = Path(resume).expanduser()
        if not path.is_absolute() and (hydra / "hydra.yaml").is_file():
            path = Path(OmegaConf.load(hydra / "hydra.yaml").hydra.runtime.cwd) / path
    except (OSError, ValueError, AttributeError, UserError):  # records edited or cut short
        return None
    return run_folder_of(path) if path.suffix == ".ckpt" else path
