"""Everything the sweep report shows, read back from the files the runs wrote (metrics.json,
split.csv, tensorboard/, .hydra/, reproduction.json, feature_stats.json): the report depends on
the runs' output files only, never on how the tasks compute them."""

import csv
import json
import os
import platform
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from finetune.io import TEXT
from finetune.reports.report_figures import lr_comparison_figure, winner_curves_figure
from finetune.sweep import FAILED, OK, split_difference, sweep_runs

SPLITS = ("train", "val", "test")
STEP_RECORD = "report_step.json"  # written into a step's run folder once the step has finished
SIGNIFICANT = 4  # digits of a swept fraction a person reads; the runs' files keep every digit
# The line a run's finetune.log ends with when the run stopped (finetune.tasks.run_task: a mistake
# or Ctrl-C; the entry point: a crash in a sweep). A finished training writes metrics.json.
ENDED = re.compile(r"\] - (stopped|interrupted|crashed):")


@dataclass
class ReportInputs:
    sweep: Path
    runs: list[dict[str, Any]]  # ranked as the sweep summary ranks them, with their settings
    unfinished: list[str]  # failed runs that look unfinished (still running?)
    swept: list[str]  # the override keys whose values differ between the runs
    split_difference: str  # why the runs' values are not comparable ("" when they are)
    winner: dict[str, Any]  # rank 1 (not a winner when split_difference says why)
    data_root: str
    split_counts: dict[str, Counter]  # class -> {split: images}
    folders: dict[str, Path]  # step -> its run folder
    evaluation: dict[str, Any]  # report/eval/metrics.json
    reproduction: dict[str, Any]  # report/reproduce/reproduction.json
    features: dict[str, Any]  # report/analyze/feature_stats.json
    steps: dict[str, dict[str, Any] | None]  # step -> its report_step.json (None: not recorded)
    figures: dict[str, Path]
    hardware: dict[str, Any]
    original: dict[str, Any]  # report.original: the seed report's published figures


def hardware() -> dict[str, Any]:
    """What this machine is: CPU model and cores, GPU, torch version."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "cpu": cpu,
        "cpu_cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "gpu": ", ".join(gpus) or "none",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _job_settings(job: Path) -> dict[str, Any]:
    """A job's composed config (.hydra/config.yaml), as plain containers."""
    config = job / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(config)) if config.is_file() else {}


def _looks_unfinished(job: Path) -> bool:
    """A log without an end line and no metrics.json: still running (or killed)."""
    log = job / "finetune.log"
    ended = not log.is_file() or ENDED.search(log.read_text(**TEXT))
    return not ended and not (job / "metrics.json").exists()


def unfinished_runs(sweep: Path, runs: list[dict[str, Any]]) -> list[str]:
    """The failed runs of `sweep` that look unfinished, not stopped by an error."""
    return [r["run"] for r in runs if r["status"] == FAILED and _looks_unfinished(sweep / r["run"])]


def trained_from(weights: Any) -> str:
    """How the sweep's models started (model.weights): what the report calls them rests on it."""
    if weights in (None, "none"):
        return "trained from random weights (model.weights=none)"
    if weights == "imagenet":
        return "fine-tuned from ImageNet weights"
    return f"fine-tuned from the weights in `{weights}`"


def _swept(runs: list[dict[str, Any]]) -> list[str]:
    """The override keys whose values differ between the runs: what the sweep compared."""
    values: dict[str, set[str]] = {}
    for run in runs:
        for item in run["overrides"].split():
            key, _, value = item.partition("=")
            values.setdefault(key, set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1]


def best_name(inputs: "ReportInputs") -> str:
    """What the report calls rank 1: the winner only when the runs' values are comparable."""
    return f"run {inputs.winner['run']} (rank 1)" if inputs.split_difference else "the winner"


def significant(value: float) -> str:
    """A number as a person reads it in the report: Optuna's 0.0012345678901234567 -> 0.001235."""
    return f"{value:.{SIGNIFICANT}g}"


def readable(value: str) -> str:
    """A swept value as given on the command line, as a person reads it: a number that is not
    whole to 4 significant digits; whole numbers and words as given."""
    try:
        int(value)
        return value
    except ValueError:
        pass
    try:
        return significant(float(value))
    except ValueError:
        return value


def _runs(sweep: Path) -> list[dict[str, Any]]:
    from finetune.reports.eval_figures import read_training_curves  # torch: not at import time

    runs = sweep_runs(sweep)
    swept = _swept(runs)
    for run in runs:
        job = sweep / run["run"]
        metrics = _json(job / "metrics.json")
        settings = _job_settings(job)
        given = dict(item.partition("=")[::2] for item in run["overrides"].split())
        setting = " ".join(f"{key}={readable(given[key])}" for key in swept if key in given)
        run |= {
            "setting": setting,  # the swept values of this run ("" when nothing was swept)
            "label": setting or run["run"],
            "name": f"run {run['run']}" + (f": {setting}" if setting else ""),  # in legends
            "lr": settings.get("optimizer", {}).get("lr"),
            "weights": settings.get("model", {}).get("weights"),
            "val_map": metrics.get("val", {}).get("val/map"),
            "best_epoch": metrics.get("best_epoch"),
            "epochs_run": metrics.get("epochs_run"),
            "wall_time_s": metrics.get("wall_time_s"),
            "trainer": settings.get("trainer", {}),
            "precision": metrics.get("numerics", {}).get("precision"),
            "curves": read_training_curves(job / "tensorboard") if run["status"] == OK else {},
        }
    return runs


def _split_counts(manifest: Path) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    with manifest.open(newline="", **TEXT) as handle:
        for row in csv.DictReader(handle):
            counts.setdefault(row["label"], Counter())[row["split"]] += 1
    return counts


def _figures(folder: Path, runs: list[dict[str, Any]], winner: dict[str, Any]) -> dict[str, Path]:
    """The report's own figures, drawn anew into `folder` for each report written: the runs
    (of a sweep that was still running) and the winner may have changed since the last one."""
    from finetune.io import save_figure

    wanted = {
        "lr_comparison": lambda: lr_comparison_figure(
            {r["name"]: r["curves"] for r in runs if r["curves"]}
        ),
        "winner_curves": lambda: winner_curves_figure(winner["curves"], winner["label"]),
    }
    paths = {}
    for name, draw in wanted.items():
        paths[name] = folder / f"{name}.png"
        save_figure(paths[name], draw(), overwrite=True)
    return paths


def read_inputs(
    sweep: Path,
    winner: dict[str, Any],
    folders: dict[str, Path],
    original: dict[str, Any],
    figures: Path,
) -> ReportInputs:
    """What the report shows; its own figures drawn into `figures`."""
    runs = _runs(sweep)
    winner = next(run for run in runs if run["run"] == winner["run"])
    job = sweep / winner["run"]
    evaluation = _json(folders["eval"] / "metrics.json")
    return ReportInputs(
        sweep=sweep,
        runs=runs,
        unfinished=unfinished_runs(sweep, runs),
        swept=_swept(runs),
        split_difference=split_difference(sweep, runs),
        winner=winner,
        data_root=evaluation.get("data", {}).get("root", ""),  # resolved, as evaluated
        split_counts=_split_counts(job / "split.csv"),
        folders=folders,
        evaluation=evaluation,
        reproduction=_json(folders["reproduce"] / "reproduction.json"),
        features=_json(folders["analyze"] / "feature_stats.json"),
        steps={name: _json(folder / STEP_RECORD) or None for name, folder in folders.items()},
        figures=_figures(figures, runs, winner),
        hardware=hardware(),
        original=original,
    )
