"""What mode=eval writes into its run folder, from the scores it computed: predictions.pt,
softmax_scores.pt, predictions.csv, rankings.json, the figures (PNG + TensorBoard: ranked images
per class, confusion matrix, PR curves, training curves), metrics.json and report.md."""

import logging
import math
from pathlib import Path
from typing import Any

import torch

from finetune.checkpoint import LoadedModel
from finetune.data.datasets import ImageDataset
from finetune.inference import PREDICTIONS_CSV
from finetune.io import save_torch, write_csv, write_json, write_text
from finetune.loggers import resumed_run, run_folder_of
from finetune.reports import eval_figures as figs
from finetune.reports.figures import FigureSink
from finetune.reports.markdown import markdown_table

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.pt"
SCORES = "softmax_scores.pt"
METRICS = "metrics.json"
REPORT = "report.md"
RANKINGS = "rankings.json"
TOP_K = 10


def _training_runs(loaded: LoadedModel) -> list[Path]:
    """The run folders of the checkpoint's training, the first first: the run that wrote it (as
    best_model.pt records its best epoch, <run>/checkpoints/*.ckpt: a copy elsewhere, such as a
    sweep's winner, finds it too) and the runs it resumed, back to the first or to a gone one."""
    beside = run_folder_of(loaded.path)
    recorded = loaded.metrics.get("best_checkpoint")
    candidates = [run_folder_of(Path(recorded)), beside] if recorded else [beside]
    # the recorded folder first; the one the file sits in when the run folder was moved
    found = [run for run in candidates if any((run / "tensorboard").rglob("events.out.tfevents.*"))]
    runs = found[:1] or candidates[:1]
    earlier = resumed_run(runs[0], loaded.metrics or None)
    while earlier is not None and earlier not in runs:
        runs.append(earlier)
        earlier = resumed_run(earlier, None) if earlier.is_dir() else None
    return runs[::-1]


def training_curves(loaded: LoadedModel) -> tuple[figs.Curves, str]:
    """The curves of the checkpoint's training, joined across the runs it resumed (a later run's
    epochs replace an earlier one's from its first on), and the figure's title: the epochs shown,
    and whether earlier ones are missing (their run gone, or without TensorBoard logs)."""
    joined: figs.Curves = {}
    start, shown, missing = math.inf, 0, None
    for run in reversed(_training_runs(loaded)):
        curves = figs.read_training_curves(run / "tensorboard") if run.is_dir() else {}
        if not curves:
            missing = missing or (run if joined else None)
            continue
        for tag, (epochs, values) in curves.items():
            kept = [i for i, epoch in enumerate(epochs) if epoch < start]
            later = joined.get(tag, ([], []))
            joined[tag] = (
                [epochs[i] for i in kept] + later[0],
                [values[i] for i in kept] + later[1],
            )
        start, shown = min([start, *(min(epochs) for epochs, _ in curves.values())]), shown + 1
    if not joined:
        return {}, ""
    first, last = start, max(max(epochs) for epochs, _ in joined.values())
    title = f"{figs.TRAINING_TITLE}: epoch{f's {first:g}-' if last > first else ' '}{last:g}"
    if shown > 1:
        title += f", over {shown} runs (each resumed the one before)"
    if missing is not None:
        why = "has no TensorBoard logs" if missing.is_dir() else "is gone"
        log.info(
            "the training curves start at epoch %g: %s, which it resumed, %s", first, missing, why
        )
        title += f" (not the earlier ones: the run it resumed {why})"
    return joined, title


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
    ap: list[float],
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
        predictions = scores.argmax(dim=1).numpy()
        figure, matrix = figs.confusion_figure(labels, predictions, names)
        sink.write("confusion_matrix", f"eval/{split}/confusion_matrix", figure)
        figure = figs.pr_curves_figure(labels, scores.numpy(), names, ap)
        sink.write("pr_curves", f"eval/{split}/pr_curves", figure)
        curves, title = training_curves(loaded)
        if curves:
            figure = figs.training_curves_figure(curves, title)
            sink.write("training_curves", "eval/training_curves", figure)
        else:
            log.info(  # logger=csv or mlflow runs have their curves elsewhere
                "no TensorBoard logs in %s, the training run of %s (the figure reads "
                "logger=tensorboard's): no training-curve figure",
                _training_runs(loaded)[-1] / "tensorboard",
                loaded.path,
            )
    finally:
        sink.close()
    return sink.paths, matrix.tolist()


def report_markdown(results: dict[str, Any], figures: list[Path], run_dir: Path) -> str:
    """report.md: what was evaluated, the headline numbers, the class-wise table, the figures."""
    data, counts = results["data"], results["images_per_class"]
    rows = [
        [name, counts[name], results["acc_class"][name], results["ap_class"][name]]
        for name in results["class_names"]
    ]
    rows.append(["**mean (class-wise)**", results["n"], results["acc_mean"], results["map"]])
    lines = [
        f"# Evaluation: split `{results['split']}`",
        "",
        f"- checkpoint: `{results['checkpoint']}`",
        f"- data: `{data['root']}` ({data['kind']}), manifest "
        f"`{data['manifest'] or 'none: fresh split'}`",
        f"- images: {results['n']}"
        + (
            f" ({results['skipped_images']} unreadable image(s) of the split skipped, listed in "
            "skipped_images.txt)"
            if results["skipped_images"]
            else ""
        )
        + f"; overall accuracy **{results['acc']:.4f}**, mean class-wise "
        f"accuracy **{results['acc_mean']:.4f}**, mAP **{results['map']:.4f}**",
        f"- transform: resize {data['resize_size']}, center crop "
        f"{data['image_size']} px; {results['images_per_s']:.1f} images/s",
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
    return "\n".join(lines) + "\n"


def write_eval_report(
    run_dir: Path,
    loaded: LoadedModel,
    dataset: ImageDataset,
    scores: torch.Tensor,
    results: dict[str, Any],
) -> dict[str, Any]:
    """Every output of an evaluation; `results` (split, metrics, data, ...) gains the confusion
    matrix and becomes metrics.json."""
    names, split = loaded.class_names, results["split"]
    predictions = scores.argmax(dim=1)
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
        {"split": split, "k": TOP_K, "classes": rankings(dataset, scores, names, *ranked)},
    )
    ap = [results["ap_class"][name] for name in names]
    figures, matrix = write_figures(run_dir, loaded, dataset, scores, ap, split, ranked)
    results = results | {"confusion_matrix": matrix}
    write_json(run_dir / METRICS, results)
    write_text(run_dir / REPORT, report_markdown(results, figures, run_dir))
    return results
