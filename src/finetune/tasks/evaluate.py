"""mode=eval: score one split with a saved model; write predictions, softmax scores, metrics,
figures and a report into the run folder; optionally check the scores against a saved file.

Which data is evaluated:
- By default the checkpoint's own data (kind, root) and the split manifest (split.csv) of the
  run that trained it, so `split=test` is exactly the test set held out during training.
- `data.root=` alone says the same data lives in another folder (another machine): the
  checkpoint's data kind and manifest are used with that root.
- The command line *names other data* when it overrides the `data` group or `data.kind` or
  `data.manifest` (read from Hydra's override list, so defaults and experiment
  files do not count). The data is then the command line's: its manifest if `data.manifest=`
  is given, else a fresh split made by `data.split` and `seed` (CIFAR-10's test split is always
  test_batch).
- Either way the evaluation transform (image_size, resize_size, mean, std) is the checkpoint's.
"""

import logging
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from finetune.checkpoint import LoadedModel
from finetune.data.datamodule import ImageDataModule
from finetune.data.datasets import ImageDataset
from finetune.data.splits import SPLITS
from finetune.errors import UserError
from finetune.inference import (
    TRANSFORM_KEYS,
    evaluation_data,
    load_model,
    scoring_settings,
    softmax_scores,
)
from finetune.io import save_torch, write_csv, write_json, write_text
from finetune.metrics import ClassificationMetrics
from finetune.reports import eval_figures as figs
from finetune.reports.figures import FigureSink
from finetune.reports.markdown import markdown_table

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.pt"
SCORES = "softmax_scores.pt"
PREDICTIONS_CSV = "predictions.csv"
METRICS = "metrics.json"
REPORT = "report.md"
REPRODUCTION = "reproduction.json"
RANKINGS = "rankings.json"
TOP_K = 10


def check_classes(loaded: LoadedModel, data_classes: list[str], root: Any) -> None:
    """Refuse data with another class count; warn when only the names differ."""
    if len(data_classes) != len(loaded.class_names):
        raise UserError(
            f"ckpt={loaded.path} predicts {len(loaded.class_names)} classes but the data at "
            f"{root} has {len(data_classes)}: evaluate a model on data with its own classes"
        )
    if list(data_classes) != list(loaded.class_names):
        log.warning(
            "class names differ (model: %s; data: %s): labels are matched by position",
            ", ".join(loaded.class_names),
            ", ".join(data_classes),
        )


# -- reproduction ------------------------------------------------------------------------
def load_reference(reference: str | Path) -> torch.Tensor:
    """Saved N x C softmax scores, loaded weights_only; anything else raises UserError."""
    path = Path(reference).expanduser()
    if not path.is_file():
        raise UserError(f"eval.reference={reference} does not exist: pass a saved {SCORES}")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever fails to load safely is refused
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise UserError(f"eval.reference={path} is not a saved tensor ({first_line})") from None
    if not isinstance(saved, torch.Tensor) or saved.ndim != 2:
        shape = tuple(saved.shape) if isinstance(saved, torch.Tensor) else type(saved).__name__
        raise UserError(f"eval.reference={path} holds {shape}, expected N x C softmax scores")
    return saved


def compare_with_reference(
    scores: torch.Tensor, saved: torch.Tensor, tolerance: float, name: str = "reference"
) -> dict[str, Any]:
    """Max |difference| and the number of rows differing by more than `tolerance` between the
    fresh scores and the saved ones; a saved tensor of another shape raises UserError."""
    rows, classes = scores.shape
    if saved.shape[1] != classes:
        raise UserError(
            f"eval.reference={name} has scores for {saved.shape[1]} classes, "
            f"the model has {classes}"
        )
    if saved.shape[0] != rows:
        raise UserError(
            f"eval.reference={name} has {saved.shape[0]} rows but {rows} images were evaluated: "
            "is it from the same checkpoint and split?"
        )
    difference = (scores.double() - saved.double()).abs()
    differ = int((~(difference <= tolerance)).any(dim=1).sum())  # NaN counts as a difference
    result = {
        "reference": name,
        "tolerance": tolerance,
        "max_abs_diff": float(difference.max()),
        "rows": rows,
        "rows_differ": differ,
        "passed": differ == 0,
    }
    log.info(
        "reproduction: max |difference| %.3g; %d of %d rows differ by more than %g from %s",
        result["max_abs_diff"],
        differ,
        rows,
        tolerance,
        name,
    )
    return result


# -- outputs -----------------------------------------------------------------------------
def _training_logs(loaded: LoadedModel) -> Path | None:
    """The tensorboard/ folder of the run that wrote the checkpoint (.pt or checkpoints/*.ckpt)."""
    for run in (loaded.path.parent, loaded.path.parent.parent):
        folder = run / "tensorboard"
        if any(folder.glob("events.out.tfevents.*")):
            return folder
    return None


def rankings(
    dataset: ImageDataset,
    scores: torch.Tensor,
    class_names: list[str],
    top: torch.Tensor,
    bottom: torch.Tensor,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{class: {"top": [...], "bottom": [...]}}: the images of the ranked grids, each with its
    index in the split, path, true label and score for that class (rankings.json)."""

    def entries(indices: torch.Tensor, c: int) -> list[dict[str, Any]]:
        return [
            {
                "index": index,
                "path": dataset.items[index],
                "label": class_names[dataset.labels[index]],
                "score": float(scores[index, c]),
            }
            for index in indices.tolist()
        ]

    return {
        name: {"top": entries(top[c], c), "bottom": entries(bottom[c], c)}
        for c, name in enumerate(class_names)
    }


def write_figures(
    run_dir: Path,
    loaded: LoadedModel,
    dataset: ImageDataset,
    scores: torch.Tensor,
    predictions: torch.Tensor,
    values: dict[str, torch.Tensor],
    split: str,
    ranked: tuple[torch.Tensor, torch.Tensor],
) -> tuple[list[Path], list[list[int]]]:
    """Ranked images per class (`ranked`: top and bottom indices from rank_by_class), confusion
    matrix, PR curves, training curves; and the matrix."""
    names, data = loaded.class_names, loaded.data
    labels = torch.tensor(dataset.labels).numpy()
    sink = FigureSink(run_dir)
    try:
        top, bottom = ranked
        for c, name in enumerate(names):
            figure = figs.ranked_images_figure(
                dataset, top[c], bottom[c], scores[:, c], c, names, data["mean"], data["std"]
            )
            sink.write(
                f"ranked_{c:02d}_{figs.safe_name(name)}", f"eval/{split}/ranked/{name}", figure
            )
        figure, matrix = figs.confusion_figure(labels, predictions.numpy(), names)
        sink.write("confusion_matrix", f"eval/{split}/confusion_matrix", figure)
        ap = values["ap_class"].tolist()
        sink.write(
            "pr_curves",
            f"eval/{split}/pr_curves",
            figs.pr_curves_figure(labels, scores.numpy(), names, ap),
        )
        logs = _training_logs(loaded)
        curves = figs.read_training_curves(logs) if logs else {}
        if curves:
            sink.write(
                "training_curves", "eval/training_curves", figs.training_curves_figure(curves)
            )
        else:
            log.info("no training logs beside %s: no training-curve figure", loaded.path)
    finally:
        sink.close()
    return sink.paths, matrix.tolist()


def _report(results: dict[str, Any], figures: list[Path], run_dir: Path) -> str:
    counts = results["images_per_class"]
    rows = [
        [name, counts[name], results["acc_class"][name], results["ap_class"][name]]
        for name in results["class_names"]
    ]
    rows.append(["**mean (class-wise)**", results["n"], results["acc_mean"], results["map"]])
    lines = [
        f"# Evaluation: split `{results['split']}`",
        "",
        f"- checkpoint: `{results['checkpoint']}`",
        f"- data: `{results['data']['root']}` ({results['data']['kind']}), manifest "
        f"`{results['data']['manifest'] or 'none: fresh split'}`",
        f"- images: {results['n']}; overall accuracy **{results['acc']:.4f}**, mean class-wise "
        f"accuracy **{results['acc_mean']:.4f}**, mAP **{results['map']:.4f}**",
        f"- transform: resize {results['data']['resize_size']}, center crop "
        f"{results['data']['image_size']} px; {results['images_per_s']:.1f} images/s",
        f"- scores computed with `inference.precision={results['inference']['precision']}`"
        + (" (deterministic kernels)" if results["inference"]["deterministic"] else ""),
        "",
        "Class-wise accuracy is the recall of each class; AP is one-vs-rest average precision "
        "of the softmax scores.",
        "",
        markdown_table(["class", "images", "accuracy", "AP"], rows),
        "Figures: "
        + ", ".join(f"[{p.stem}]({p.relative_to(run_dir).as_posix()})" for p in figures)
        + f"; the ranked images as data: [{RANKINGS}]({RANKINGS})",
        "",
    ]
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.split not in SPLITS:
        raise UserError(f"split={cfg.split!r} is unknown: use one of {', '.join(SPLITS)}")
    reference = load_reference(cfg.eval.reference) if cfg.eval.reference else None
    loaded = load_model(cfg)
    data_cfg = evaluation_data(cfg, loaded)
    datamodule = ImageDataModule(data_cfg, cfg.seed, run_dir, only=cfg.split)
    check_classes(loaded, datamodule.class_names, datamodule.root)
    datamodule.setup()
    dataset = datamodule.datasets[cfg.split]
    if not len(dataset):
        raise UserError(f"split={cfg.split} of {datamodule.root} is empty: choose another split")

    settings = scoring_settings(cfg)
    scores, seconds = softmax_scores(cfg, run_dir, loaded.net, datamodule.eval_loader(dataset))
    labels = torch.tensor(dataset.labels, dtype=torch.int64)
    predictions = scores.argmax(dim=1)
    metrics = ClassificationMetrics(len(loaded.class_names))
    metrics.update(scores, labels)
    values = metrics.compute()

    names = loaded.class_names
    save_torch(run_dir / PREDICTIONS, predictions)
    save_torch(run_dir / SCORES, scores)
    write_csv(
        run_dir / PREDICTIONS_CSV,
        ["path", "label", "predicted", *(f"score_{name}" for name in names)],
        (
            [item, names[label], names[pred], *(f"{s:.6f}" for s in row)]
            for item, label, pred, row in zip(
                dataset.items, dataset.labels, predictions.tolist(), scores.tolist(), strict=True
            )
        ),
    )
    ranked = figs.rank_by_class(scores, TOP_K)
    write_json(
        run_dir / RANKINGS,
        {"split": cfg.split, "k": TOP_K, "classes": rankings(dataset, scores, names, *ranked)},
    )
    figures, matrix = write_figures(
        run_dir, loaded, dataset, scores, predictions, values, cfg.split, ranked
    )
    results = {
        "checkpoint": str(loaded.path),
        "split": cfg.split,
        "data": {key: data_cfg[key] for key in ("kind", "root", "manifest", *TRANSFORM_KEYS)},
        "class_names": names,
        "n": len(dataset),
        "images_per_class": dict(
            zip(names, torch.bincount(labels, minlength=len(names)).tolist(), strict=True)
        ),
        "acc": float(values["acc"]),
        "acc_mean": float(values["acc_mean"]),
        "map": float(values["map"]),
        "acc_class": dict(zip(names, values["acc_class"].tolist(), strict=True)),
        "ap_class": dict(zip(names, values["ap_class"].tolist(), strict=True)),
        "confusion_matrix": matrix,
        "eval_batch_size": data_cfg["loader"]["eval_batch_size"],
        "inference": {
            "precision": settings["precision"],
            "deterministic": settings["deterministic"],
        },
        "images_per_s": len(dataset) / seconds,
    }
    write_json(run_dir / METRICS, results)
    write_text(run_dir / REPORT, _report(results, figures, run_dir))
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
        check = compare_with_reference(
            scores, reference, cfg.eval.tolerance, str(cfg.eval.reference)
        )
        write_json(run_dir / REPRODUCTION, check)
        results["reproduction"] = check
        if not check["passed"]:
            raise UserError(
                f"reproduction failed: {check['rows_differ']} of {check['rows']} rows of "
                f"softmax scores differ from {check['reference']} by more than "
                f"eval.tolerance={cfg.eval.tolerance} "
                f"(max |difference| {check['max_abs_diff']:.3g})"
            )
    return results
