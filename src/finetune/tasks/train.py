"""mode=train: fit, select the best epoch on the validation metric, test it, export it.

The numeric setting (trainer.precision, model.channels_last: `auto` by default) is resolved once
here, before the model and the Trainer are built (finetune.precision). The Trainer is built
before the data is read, so that settings Lightning refuses are said first. The selected epoch is
measured again with the arithmetic of evaluation (finetune.selected_epoch: inference.precision,
float32 by default), so that metrics.json's figures are the ones a later mode=eval of
best_model.pt gives.
"""

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from finetune.callbacks import training_callbacks
from finetune.checkpoint import export_best_model
from finetune.data.datamodule import MANIFEST, ImageDataModule, data_root
from finetune.errors import UserError, WeightsUnavailable
from finetune.io import write_json
from finetune.loggers import log_hparams_session, training_loggers
from finetune.model import ImageClassifier
from finetune.precision import resolve_numerics
from finetune.resume import (
    RESUMED_KEYS,
    check_resumed_classes,
    ctrl_c_says_how_to_resume,
    refuse_nothing_to_train,
    refuse_spent_time_limit,
    resume_checkpoint,
    resumed_settings,
)
from finetune.selected_epoch import how_the_fit_ended, measure_again
from finetune.tasks import run_folder
from finetune.trainer import build_trainer, time_limit

log = logging.getLogger(__name__)

BEST_MODEL = "best_model.pt"
METRICS = "metrics.json"
# Lightning's warning on resuming a run that had trainer.max_time without one
_NO_TIMER = (
    r"Be aware that when using `ckpt_path`, .* Please add the following callbacks: \['Timer'\]"
)


@rank_zero_only
def _phase(step: int, message: str) -> None:
    """One console line per phase of the run (rank 0 only: every DDP rank runs the same)."""
    log.info("[%d/3] %s", step, message)


def train(cfg: DictConfig) -> dict[str, Any]:
    run_dir = run_folder()
    started = time.perf_counter()
    cfg, numerics = resolve_numerics(cfg)
    L.seed_everything(cfg.seed, workers=True)
    resume = resume_checkpoint(cfg.resume)
    settings = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in RESUMED_KEYS}
    data_cfg = settings["data"]
    data_cfg["root"] = str(data_root(data_cfg))  # kept in the checkpoints: valid from anywhere
    epochs_done = 0
    if resume:
        resumed = resumed_settings(resume, settings)
        epochs_done = resumed["epochs_done"]
        refuse_nothing_to_train(resume, resumed, cfg.trainer)
        settings = {group: resumed[group] for group in RESUMED_KEYS}
        data_cfg = settings["data"]
        earlier = resume.parent.parent / MANIFEST
        if not data_cfg["manifest"] and earlier.is_file():
            data_cfg["manifest"] = str(earlier)
    # The Trainer first: what Lightning refuses (an accelerator that is not there, a strategy
    # or precision it cannot run) is said before the data is read (minutes of decoding on a
    # large set) and before split.csv and the loggers' files (an empty TensorBoard run) exist.
    callbacks = training_callbacks(cfg, run_dir, logged=bool(cfg.get("logger")))
    trainer = build_trainer(cfg, run_dir, callbacks.all)
    if resume:
        refuse_spent_time_limit(resume, resumed, time_limit(trainer))
    datamodule = ImageDataModule(data_cfg, cfg.seed, run_dir, cfg.train_eval_images)
    if resume:
        check_resumed_classes(resume, resumed, datamodule.class_names)
    try:  # resumed: the checkpoint's weights replace ImageNet's, which are not needed
        model = ImageClassifier(datamodule.class_names, pretrained=not resume, **settings)
    except WeightsUnavailable as missing:  # a training can also start without them
        raise UserError(f"{missing}; or train from scratch with model.weights=none") from None
    _phase(1, f"data: reading and splitting {datamodule.root}")
    datamodule.setup("fit")  # the decode check and the split now; fit reuses them
    sizes = {name: len(dataset) for name, dataset in datamodule.datasets.items()}
    trainer.loggers = training_loggers(cfg, run_dir)  # one per `logger` entry (see `logged`)
    epochs = cfg.trainer.max_epochs
    if epochs is None or epochs < 0:  # -1: no epoch limit
        length = "until trainer.max_steps or trainer.max_time"
    elif resume:
        length = f"{epochs - epochs_done} more epoch(s) of {epochs}"
    else:
        length = f"{epochs} epoch(s)"
    _phase(
        2,
        f"training {length} on {sizes['train']:,} images, validating on {sizes['val']:,} after "
        "each" + (f" (resuming {resume})" if resume else ""),
    )

    try:
        with ctrl_c_says_how_to_resume(run_dir, resume), warnings.catch_warnings():
            # resumed without trainer.max_time, the earlier run's Timer state has no limit to
            # count against (Lightning asks for the callback all the same)
            warnings.filterwarnings("ignore", _NO_TIMER, UserWarning)
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    except MisconfigurationException as error:  # e.g. a class name in monitor= that is not there
        raise UserError(f"Lightning stopped the run: {str(error).splitlines()[0][:300]}") from None
    checkpoint = callbacks.best
    best = checkpoint.best_model_path
    if not best:
        raise UserError(
            f"no checkpoint was selected: is trainer.max_epochs >= 1 and is monitor={cfg.monitor}"
            " logged every epoch?"
        )
    best_epoch = int(Path(best).stem.removeprefix("epoch"))
    _phase(
        3,
        f"measuring the best epoch ({best_epoch}) again on val"
        + (f" and testing it on {sizes['test']:,} images" if sizes["test"] else ""),
    )
    val, test, judged = measure_again(
        cfg, model, datamodule, best, callbacks.progress, run_dir, resume
    )
    results = {
        "monitor": {
            "name": cfg.monitor,
            "mode": cfg.monitor_mode,
            "value": float(checkpoint.best_model_score),
        },
        "best_checkpoint": str(best),
        "best_epoch": best_epoch,
        **how_the_fit_ended(trainer),
        "resumed_from": None if resume is None else str(resume),
        "world_size": trainer.world_size,
        "skipped_images": len(datamodule.skipped),
        "numerics": numerics.as_dict(),
        # the arithmetic of the val and test figures above (as in mode=eval's metrics.json)
        "inference": {
            "precision": judged.trainer.precision,
            "deterministic": judged.trainer.deterministic,
        },
        "val": val,
        "test": test,
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    if trainer.is_global_zero:
        log_hparams_session(trainer.loggers, cfg, settings, results)
        export_best_model(best, run_dir / BEST_MODEL, results, datamodule.manifest_path)
        write_json(run_dir / METRICS, results)
        log.info(
            "best %s=%.4f (epoch %s); val acc_mean=%.4f; wrote %s",
            cfg.monitor,
            results["monitor"]["value"],
            results["best_epoch"],
            val.get("val/acc_mean", float("nan")),
            run_dir / BEST_MODEL,
        )
    return results
