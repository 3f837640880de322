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
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

from finetune.checkpoint import LoadedModel, load_checkpoint
from finetune.data.datamodule import ImageDataModule
from finetune.data.datasets import ImageDataset
from finetune.data.splits import SPLITS
from finetune.errors import UserError
from finetune.io import save_torch, write_csv, write_json, write_text
from finetune.metrics import ClassificationMetrics
from finetune.reports import eval_figures as figs
from finetune.reports.figures import FigureSink
from finetune.reports.markdown import markdown_table
from finetune.trainer import build_trainer

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.pt"
SCORES = "softmax_scores.pt"
PREDICTIONS_CSV = "predictions.csv"
METRICS = "metrics.json"
REPORT = "report.md"
REPRODUCTION = "reproduction.json"
RANKINGS = "rankings.json"
TOP_K = 10
DATA_SOURCE_KEYS = {"data", "data.kind", "data.root", "data.manifest"}
TRANSFORM_KEYS = ("image_size", "resize_size", "mean", "std")


# -- the model and how it scores -----------------------------------------------------------
def require_checkpoint(cfg: DictConfig) -> LoadedModel:
    """The model named by `ckpt=`, rebuilt from the checkpoint's own metadata."""
    if not cfg.ckpt:
        raise UserError(f"ckpt is not set: add ckpt=path/to/best_model.pt (mode={cfg.mode})")
    loaded = load_checkpoint(cfg.ckpt)
    log.info(
        "loaded %s: %d classes (%s), %d px",
        loaded.path,
        len(loaded.class_names),
        ", ".join(loaded.class_names),
        loaded.data["image_size"],
    )
    return loaded


class Scorer(L.LightningModule):
    """A loaded network as a LightningModule whose predict step returns softmax scores."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).float().softmax(dim=1)


def scoring_settings(cfg: DictConfig) -> dict[str, Any]:
    """The trainer flags scoring runs under, whatever the training profile says.

    `inference.precision=32-true` (the default): float32 with deterministic kernels and no
    cuDNN autotuning, so scores reproduce under any trainer profile (bf16 and benchmark on GPU).
    `bf16-mixed` (opt-in): autocast, autotuning as `trainer.benchmark` says, not deterministic.
    Always one device, and every batch (no limit_predict_batches, no fast_dev_run): every row
    must end up in this process, in order.
    """
    precision = str(cfg.inference.precision)
    reproducible = precision == "32-true"
    return {
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": precision,
        "deterministic": reproducible,
        "benchmark": False if reproducible else cfg.trainer.benchmark,
        "limit_predict_batches": None,
        "fast_dev_run": False,
    }


@contextmanager
def _process_flags_restored(full_float32: bool) -> Iterator[None]:
    """Scoring changes process-wide torch flags (Lightning sets deterministic algorithms and
    cudnn.benchmark; float32 also turns off TF32, which cuDNN uses for float32 convolutions by
    default on recent GPUs): the caller's flags come back afterwards."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
    )
    if full_float32:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        deterministic, warn_only, benchmark, conv_tf32, matmul_tf32 = saved
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.allow_tf32 = conv_tf32
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32


def softmax_scores(
    cfg: DictConfig, run_dir: Path, net: nn.Module, loader: DataLoader
) -> tuple[torch.Tensor, float]:
    """N x C float32 softmax scores in loader order (Lightning's predict loop, no logger, the
    flags of `scoring_settings`), and the seconds it took."""
    trainer_cfg = cfg.trainer
    if trainer_cfg.devices != 1 or trainer_cfg.num_nodes != 1:
        log.info("scoring on one device (trainer.devices=%s ignored)", trainer_cfg.devices)
    settings = scoring_settings(cfg)
    if settings["precision"] != trainer_cfg.precision:
        log.info(
            "scoring with inference.precision=%s (trainer.precision=%s is for training)",
            settings["precision"],
            trainer_cfg.precision,
        )
    single = OmegaConf.merge(cfg, {"trainer": settings})
    with _process_flags_restored(full_float32=settings["precision"] == "32-true"):
        trainer = build_trainer(single, run_dir)
        started = time.perf_counter()
        batches = trainer.predict(Scorer(net), dataloaders=loader)
        seconds = time.perf_counter() - started
    return torch.cat(batches).float(), seconds


# -- which data --------------------------------------------------------------------------
def override_keys(overrides: Sequence[str]) -> set[str]:
    """The config keys and groups that command-line overrides set, add or delete."""
    return {
        override.key_or_group
        for override in OverridesParser.create().parse_overrides(list(overrides))
    }


def names_data(keys: set[str]) -> bool:
    """True when the command line points at data of its own (see the module docstring)."""
    return bool(keys & DATA_SOURCE_KEYS)


def eval_data_config(cfg: DictConfig, loaded: LoadedModel, keys: set[str]) -> dict[str, Any]:
    """The data config to evaluate on: the command line's or the checkpoint's data, always
    with the checkpoint's evaluation transform."""
    named = names_data(keys)
    data = OmegaConf.to_container(cfg.data, resolve=True, throw_on_missing=named)
    ignored = sorted(keys & {f"data.{key}" for key in TRANSFORM_KEYS})
    if ignored:
        log.warning(
            "ignoring %s from the command line: the model is evaluated with the transform it "
            "was trained with (%d px)",
            ", ".join(ignored),
            loaded.data["image_size"],
        )
    data.update({key: loaded.data[key] for key in TRANSFORM_KEYS})
    moved = keys & DATA_SOURCE_KEYS == {"data.root"}  # the same data, in another folder
    if named and not moved:
        if not data["manifest"]:
            log.info(
                "data named on the command line: split=%s of a fresh split of %s (add "
                "data.manifest=%s to evaluate the checkpoint's own split)",
                cfg.split,
                data["root"],
                loaded.manifest or "<split.csv>",
            )
        return data
    data.update(kind=loaded.data["kind"], root=data["root"] if moved else loaded.data["root"])
    data["manifest"] = None if loaded.manifest is None else str(loaded.manifest)
    if loaded.manifest is None:
        log.warning(
            "%s has no split manifest (split.csv not found where it was written nor beside the "
            "checkpoint): split=%s is taken from a fresh split of %s (data.split, seed=%s), the "
            "training split only if those and the data are unchanged; data.root=... and "
            "data.manifest=... on the command line choose other data",
            loaded.path,
            cfg.split,
            data["root"],
            cfg.seed,
        )
    return data


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
    loaded = require_checkpoint(cfg)
    data_cfg = eval_data_config(cfg, loaded, override_keys(HydraConfig.get().overrides.task))
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
