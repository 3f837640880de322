"""mode=train: fit, select the best epoch on the validation metric, test it, export it.

The numeric setting (trainer.precision, model.channels_last: `auto` by default) is resolved once
here, before the model and the Trainer are built (finetune.precision). The selected epoch is
measured again with the arithmetic of evaluation (inference.precision, float32 by default), so
that metrics.json's figures are the ones a later mode=eval of best_model.pt gives.
"""

import logging
import time
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
from finetune.inference import process_flags_restored, scoring_settings
from finetune.io import write_json
from finetune.loggers import training_loggers
from finetune.model import ImageClassifier
from finetune.precision import resolve_numerics
from finetune.resume import (
    RESUMED_KEYS,
    check_resumed_classes,
    ctrl_c_says_how_to_resume,
    resume_checkpoint,
    resumed_settings,
)
from finetune.tasks import run_folder
from finetune.trainer import build_trainer

log = logging.getLogger(__name__)

BEST_MODEL = "best_model.pt"
METRICS = "metrics.json"


def _monitored(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if key.startswith(prefix)}


@rank_zero_only
def _phase(step: int, message: str) -> None:
    """One console line per phase of the run (rank 0 only: every DDP rank runs the same)."""
    log.info("[%d/3] %s", step, message)


def judge_config(cfg: DictConfig) -> DictConfig:
    """The training config with the arithmetic of evaluation (finetune.inference): the figures
    of the selected epoch are then those a later mode=eval of best_model.pt reports."""
    scoring = scoring_settings(cfg)
    keys = ("precision", "deterministic", "benchmark")
    return OmegaConf.merge(cfg, {"trainer": {key: scoring[key] for key in keys}})


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
        settings = {group: resumed[group] for group in RESUMED_KEYS}
        data_cfg = settings["data"]
        earlier = resume.parent.parent / MANIFEST
        if not data_cfg["manifest"] and earlier.is_file():
            data_cfg["manifest"] = str(earlier)
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
    loggers = training_loggers(cfg, run_dir)
    callbacks = training_callbacks(cfg, run_dir, logged=bool(loggers))
    trainer = build_trainer(cfg, run_dir, callbacks.all, loggers)
    epochs = cfg.trainer.max_epochs
    if epochs is None or epochs < 0:  # -1: no epoch limit
        length = "until trainer.max_steps or trainer.max_time"
    elif resume:
        length = f"{max(epochs - epochs_done, 0)} more epoch(s) of {epochs}"
    else:
        length = f"{epochs} epoch(s)"
    _phase(
        2,
        f"training {length} on {sizes['train']:,} images, validating on {sizes['val']:,} after "
        "each" + (f" (resuming {resume})" if resume else ""),
    )

    try:
        with ctrl_c_says_how_to_resume(run_dir, resume):
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
    # The selected epoch, measured again: full val (and test) figures of exactly these weights,
    # in the arithmetic of evaluation. A trainer without logger, so that the TensorBoard curves
    # keep one point per epoch.
    judged = judge_config(cfg)
    full_float32 = judged.trainer.precision == "32-true"
    with ctrl_c_says_how_to_resume(run_dir, resume), process_flags_restored(full_float32):
        judge = build_trainer(judged, run_dir, callbacks=callbacks.progress, logger=False)
        judge.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)
        val = _monitored(judge.callback_metrics, "val/") | _monitored(
            judge.callback_metrics, "train_eval/"
        )
        test: dict[str, float] = {}
        if len(datamodule.datasets["test"]):
            judge.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
            test = _monitored(judge.callback_metrics, "test/")
    results = {
        "monitor": {
            "name": cfg.monitor,
            "mode": cfg.monitor_mode,
            "value": float(checkpoint.best_model_score),
        },
        "best_checkpoint": str(best),
        "best_epoch": best_epoch,
        "epochs_run": trainer.current_epoch,
        "stopped_early": any(
            getattr(callback, "stopped_epoch", 0) > 0
            for callback in trainer.early_stopping_callbacks
        ),
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
