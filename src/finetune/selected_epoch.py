"""The selected epoch of a fit, measured again, and how the fit ended: the figures of
mode=train's metrics.json.

The selected (best) epoch is measured again on the full val (and test) split with the arithmetic
of evaluation (finetune.inference: float32 by default), by a Trainer without logger, so that
metrics.json's figures are those a later mode=eval of best_model.pt gives and the TensorBoard
curves keep one point per epoch.
"""

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from omegaconf import DictConfig, OmegaConf

from finetune.inference import process_flags_restored, scoring_settings
from finetune.resume import ctrl_c_says_how_to_resume
from finetune.trainer import build_trainer, time_limit


def judge_config(cfg: DictConfig) -> DictConfig:
    """The training config with the arithmetic of evaluation (finetune.inference): the figures
    of the selected epoch are then those a later mode=eval of best_model.pt reports."""
    scoring = scoring_settings(cfg)
    keys = ("precision", "deterministic", "benchmark")
    return OmegaConf.merge(cfg, {"trainer": {key: scoring[key] for key in keys}})


def _prefixed(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if key.startswith(prefix)}


def measure_again(
    cfg: DictConfig,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    best: str,
    progress: list[Callback],
    run_dir: Path,
    resume: Path | None,
) -> tuple[dict[str, float], dict[str, float], DictConfig]:
    """The val (with train_eval) and test figures of checkpoint `best`, and the config whose
    arithmetic measured them. Ctrl-C says how to resume, as during the fit."""
    judged = judge_config(cfg)
    # A "-true" precision converted the module itself (weights and metric states) to its dtype
    # when training began (Lightning's HalfPrecision and DoublePrecision.convert_module); the
    # judge's precision, float32 or bf16-mixed autocast, converts nothing and computes on
    # float32 weights. Back to float32 then; the checkpoint's weights are loaded into them.
    model.to(torch.float32)
    full_float32 = judged.trainer.precision == "32-true"
    with ctrl_c_says_how_to_resume(run_dir, resume), process_flags_restored(full_float32):
        judge = build_trainer(judged, run_dir, callbacks=progress, logger=False)
        judge.validate(model, datamodule=datamodule, ckpt_path=best, verbose=False)
        metrics = judge.callback_metrics
        val = _prefixed(metrics, "val/") | _prefixed(metrics, "train_eval/")
        test: dict[str, float] = {}
        if len(datamodule.datasets["test"]):
            judge.test(model, datamodule=datamodule, ckpt_path=best, verbose=False)
            test = _prefixed(judge.callback_metrics, "test/")
    return val, test, judged


def how_the_fit_ended(trainer: L.Trainer) -> dict[str, Any]:
    """The epochs run and which of Lightning's limits ended the fit (early_stopping, max_time,
    max_steps or max_epochs); max_time and max_steps stop within an epoch, whose figures are
    then of part of it (last_epoch_partial)."""
    timer = time_limit(trainer)
    remaining = None if timer is None else timer.time_remaining()  # Timer: trainer.max_time
    if any(  # stopped_epoch is 0 for a stop at epoch 0: the reason tells
        callback.stopping_reason != EarlyStoppingReason.NOT_STOPPED
        for callback in trainer.early_stopping_callbacks
    ):
        stopped_by = "early_stopping"
    elif remaining is not None and remaining <= 0:
        stopped_by = "max_time"
    elif 0 <= trainer.max_steps <= trainer.global_step:
        stopped_by = "max_steps"
    else:
        stopped_by = "max_epochs"
    done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    return {
        "epochs_run": trainer.current_epoch,  # the last one counted, even if cut short
        "stopped_early": stopped_by == "early_stopping",
        "stopped_by": stopped_by,
        "last_epoch_partial": done < trainer.num_training_batches,
    }
