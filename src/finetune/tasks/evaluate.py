"""mode=eval: score one split with a saved model; write predictions, softmax scores, metrics,
figures and a report into the run folder; optionally check the scores against a saved file.

The steps, each in the module that owns it:
- the model and the data it is evaluated on: finetune.inference (`load_model`) and
  finetune.evaluation_data (`evaluation_split`: the checkpoint's own data and split manifest
  unless data.source=config;
  data.root, when set, says where that data lives now; always the checkpoint's transform);
- the scores: Lightning's predict loop under inference.precision (finetune.inference);
- the metrics: finetune.metrics (torchmetrics);
- the files: finetune.reports.eval_report; the reproduction check: finetune.reproduction.
"""

import logging
from typing import Any

import torch
from omegaconf import DictConfig

from finetune.evaluation_data import TRANSFORM_KEYS, evaluation_split
from finetune.inference import load_model, scoring_settings, softmax_scores
from finetune.metrics import ClassificationMetrics
from finetune.reports.eval_report import write_eval_report
from finetune.reproduction import check_reproduction, load_reference
from finetune.tasks import run_folder

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    run_dir = run_folder()
    reference = load_reference(cfg.eval.reference) if cfg.eval.reference else None
    loaded = load_model(cfg)
    data_cfg, datamodule, dataset = evaluation_split(cfg, loaded, run_dir)
    scores, seconds = softmax_scores(cfg, run_dir, loaded.net, datamodule.eval_loader(dataset))

    names = loaded.class_names
    labels = torch.tensor(dataset.labels, dtype=torch.int64)
    metrics = ClassificationMetrics(len(names))
    metrics.update(scores, labels)
    values = metrics.compute()
    settings = scoring_settings(cfg)
    results = {
        "checkpoint": str(loaded.path),
        "split": cfg.split,
        "data": {key: data_cfg[key] for key in ("kind", "root", "manifest", *TRANSFORM_KEYS)},
        "class_names": names,
        "n": len(dataset),
        "skipped_images": len(datamodule.skipped),  # of the split, unreadable (the log names them)
        "images_per_class": dict(
            zip(names, torch.bincount(labels, minlength=len(names)).tolist(), strict=True)
        ),
        "acc": float(values["acc"]),
        "acc_mean": float(values["acc_mean"]),
        "map": float(values["map"]),
        "acc_class": dict(zip(names, values["acc_class"].tolist(), strict=True)),
        "ap_class": dict(zip(names, values["ap_class"].tolist(), strict=True)),
        "eval_batch_size": data_cfg["loader"]["eval_batch_size"],
        "inference": {
            "precision": settings["precision"],
            "deterministic": settings["deterministic"],
        },
        "images_per_s": len(dataset) / seconds,
    }
    results = write_eval_report(run_dir, loaded, dataset, scores, results)
    log.info(
        "%s split: %d images, accuracy %.4f, mean class-wise accuracy %.4f, mAP %.4f; "
        "%.1f images/s; wrote %s",
        cfg.split,
        len(dataset),
        results["acc"],
        results["acc_mean"],
        results["map"],
        results["images_per_s"],
        run_dir,
    )
    if reference is not None:  # everything above is written first: a failed check loses nothing
        results["reproduction"] = check_reproduction(
            scores, reference, cfg.eval.tolerance, str(cfg.eval.reference), run_dir
        )
    return results
