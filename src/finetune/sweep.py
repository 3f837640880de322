"""Hydra callback: when a sweep (-m) ends, rank its runs, list the failed ones, copy the
winner's best_model.pt to the sweep root, and build the sweep's report when the config says so
(`report.after_sweep`, set by experiment=report). Runs validated on different images (a sweep
over `seed`, which data.split.seed follows) are ranked but have no winner: their values are not
comparable. After Ctrl-C, which Hydra ends without that callback, the entry point calls
summarize_interrupted_sweep. `sweep_runs` is the one ranking of a sweep folder: mode=report uses
it too."""

import json
import logging
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from finetune.errors import UserError
from finetune.io import atomic_write, write_csv, write_text
from finetune.sweep_splits import job_config, validation_difference

log = logging.getLogger(__name__)

# values of the `status` column: ranked (ok, nan), finished with nothing to rank (done), failed
OK, NAN, DONE, FAILED = "ok", "nan", "done", "failed"
# The file each mode writes last: a job of a sweep that holds it has finished (a training's
# metrics.json also holds the value the sweep ranks by). mode=report writes into its `sweep=`
# folder, so a report job's own folder shows nothing: it counts as finished.
FINISHED = {
    "train": "metrics.json",
    "eval": "metrics.json",
    "analyze": "feature_stats.json",
    "predict": "predictions.csv",
    "export": "model.*.json",
}
COLUMNS = ["rank", "run", "status", "overrides", "monitor", "value", "val_acc_mean", "test_map"]


def _job_order(folder: Path) -> tuple[bool, int, str]:
    """Job folders in launch order: 0, 1, ..., 10 (not 0, 1, 10, 2)."""
    return (
        not folder.name.isdigit(),
        int(folder.name) if folder.name.isdigit() else 0,
        folder.name,
    )


def _overrides(job: Path) -> str:
    overrides_file = job / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return ""
    lines = overrides_file.read_text().splitlines()
    return " ".join(line.removeprefix("- ").strip() for line in lines if line.strip())


def _mode(job: Path) -> str:
    return str(job_config(job).get("mode", "train"))


def _read_run(job: Path) -> dict[str, Any]:
    """One job folder: a training's monitored value; another mode's run is `done` when it wrote
    its last file; `failed` when it did not (the run crashed, was killed or stopped with an
    error before the end)."""
    run = {"run": job.name, "overrides": _overrides(job), "status": FAILED}
    mode = _mode(job)
    unranked = {"monitor": "", "mode": "", "value": "", "val_acc_mean": "", "test_map": ""}
    if mode != "train":
        finished = mode not in FINISHED or any(job.glob(FINISHED[mode]))
        return run | unranked | {"status": DONE if finished else FAILED}
    try:
        metrics = json.loads((job / "metrics.json").read_text())
        monitor = metrics["monitor"]
        value = float(monitor["value"])
    except (OSError, ValueError, KeyError, TypeError):
        return run | unranked
    return run | {
        "status": NAN if math.isnan(value) else OK,
        "monitor": monitor["name"],
        "mode": monitor["mode"],
        "value": value,
        "val_acc_mean": metrics.get("val", {}).get("val/acc_mean", math.nan),
        "test_map": metrics.get("test", {}).get("test/map", math.nan),
    }


def rank_runs(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best first by the monitored value (in its mode); runs whose value is NaN after them, then
    the failed runs (not ranked). Ties and NaNs keep the job order."""
    finished = [run for run in runs if run["status"] == OK]
    maximize = bool(finished) and finished[0]["mode"] == "max"
    finished.sort(key=lambda run: -run["value"] if maximize else run["value"])
    ranked = finished + [run for run in runs if run["status"] == NAN]
    for rank, run in enumerate(ranked, start=1):
        run["rank"] = rank
    unranked = [run | {"rank": ""} for run in runs if run["status"] in (DONE, FAILED)]
    return ranked + sorted(unranked, key=lambda run: run["status"] == FAILED)


def job_folders(root: Path) -> list[Path]:
    """The sweep's job folders (those holding a .hydra/), in launch order."""
    return sorted((p.parent for p in Path(root).glob("*/.hydra") if p.is_dir()), key=_job_order)


def sweep_runs(root: Path) -> list[dict[str, Any]]:
    """Every job of the sweep in `root`, ranked (see rank_runs)."""
    return rank_runs([_read_run(job) for job in job_folders(root)])


def split_difference(root: Path, runs: list[dict[str, Any]]) -> str:
    """Why the ranked runs of the sweep in `root` cannot be compared ("" when they can):
    finetune.sweep_splits, over their job folders in launch order."""
    ranked = sorted((root / run["run"] for run in runs if run["status"] == OK), key=_job_order)
    return validation_difference(ranked)


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _copy_winner(source: Path, target: Path) -> str:
    """Copy the winner's best_model.pt (atomic, never over an existing file); say what was done."""
    if not source.is_file():
        return f"it has no best_model.pt ({source} is missing): nothing was copied."
    try:
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    except UserError:
        return f"{target} already exists and is kept: the winner's model is {source}."
    return f"its best_model.pt is copied to {target}."


def _write_kept(write: Any, path: Path, *args: Any) -> None:
    """Write a summary file unless one is already there (an earlier sweep into the same folder)."""
    try:
        write(path, *args)
    except UserError as error:
        log.warning("%s", error)


def named_runs(names: list[str]) -> str:
    """`run 2` or `runs 2, 5`: runs named in a sentence."""
    return ("run " if len(names) == 1 else "runs ") + ", ".join(names)


def _shared_and_swept(overrides: list[str]) -> tuple[str, list[str]]:
    """The overrides every run has, and each run's others (what the sweep varied)."""
    lists = [line.split(" ") if line else [] for line in overrides]
    common = set.intersection(*(set(items) for items in lists)) if len(lists) > 1 else set()
    shared = " ".join(item for item in lists[0] if item in common) if lists else ""
    return shared, [" ".join(item for item in items if item not in common) for items in lists]


def write_summary(root: Path, runs: list[dict[str, Any]], note: str = "") -> None:
    """sweep_summary.csv / .md of the ranked `runs` at `root`, and the winner's best_model.pt
    copied there: rank 1, when every ranked run was validated on the same images. `note` ends
    the .md."""
    rows = [[run[column] for column in COLUMNS] for run in runs]
    _write_kept(write_csv, root / "sweep_summary.csv", COLUMNS, rows)
    failed = [run["run"] for run in runs if run["status"] == FAILED]
    best = runs[0] if runs[0]["status"] == OK else None
    difference = split_difference(root, runs) if best else ""
    title = f"{len(runs)} runs" + (f", ranked by {best['monitor']}, {best['mode']}" if best else "")
    shared, swept = _shared_and_swept([run["overrides"] for run in runs])
    named = f"run {runs[0]['run']}" + (f" ({swept[0]})" if swept[0] else "")  # what it varied
    if best and difference:
        verdict = (
            f"No winner: {named} has the best {best['monitor']}, {best['value']:.4f}, but the "
            f"values are not a fair comparison: {difference}. Nothing was copied."
        )
    elif best:
        copied = _copy_winner(root / best["run"] / "best_model.pt", root / "best_model.pt")
        verdict = f"Winner: {named}, {best['monitor']} = {best['value']:.4f}; {copied}"
    elif all(run["status"] == DONE for run in runs):
        verdict = "Nothing to rank: only training runs have a monitored value."
    else:
        verdict = "No winner: no run finished with a monitored value; nothing was copied."
    shown = [row[:3] + [what] + row[4:] for row, what in zip(rows, swept, strict=True)]
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in shown]
    lines = [f"# Sweep summary ({title})", "", *table, "", verdict]
    if shared:
        lines.append(f"Every run: {shared} (sweep_summary.csv has each run's full overrides).")
    if failed:
        lines.append(f"Failed (no metrics.json; see their finetune.log): {named_runs(failed)}.")
    _write_kept(write_text, root / "sweep_summary.md", "\n".join([*lines, note]).strip() + "\n")
    (log.warning if difference else log.info)("sweep %s: %s", root, verdict)


class SweepSummary(Callback):
    """Writes sweep_summary.csv / .md at the sweep root and copies the winner's best_model.pt;
    the sweep it is running is kept for summarize_interrupted_sweep."""

    running: Path | None = None  # the sweep folder of this process, from start to end

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummary.running = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummary.running = None
        root = Path(config.hydra.sweep.dir)
        runs = sweep_runs(root)
        if not runs:
            log.warning("sweep %s: no job folder found, nothing to rank", root)
            return
        write_summary(root, runs)
        failed = [run["run"] for run in runs if run["status"] == FAILED]
        problem = ""
        ranked = runs[0]["status"] == OK
        if ranked and OmegaConf.select(config, "report.after_sweep", default=False):
            from finetune.tasks.report import report_after_sweep  # torch: only when asked

            try:
                report_after_sweep(config)
            except UserError as error:
                problem = f"the report stopped: {error}"
            except KeyboardInterrupt as interrupt:  # it says how to go on; main() exits 130
                print(f"interrupted: {interrupt}", file=sys.stderr)
                raise
        if failed:
            problems = [f"{len(failed)} of {len(runs)} runs failed ({named_runs(failed)}): see "
                        f"{root / 'sweep_summary.md'}", problem]  # fmt: skip
            problem = "; ".join(filter(None, problems))
        if problem:
            print(f"error: sweep {root}: {problem}", file=sys.stderr)
            sys.exit(2)


def summarize_interrupted_sweep() -> None:
    """After Ctrl-C: the summary of the runs of the running sweep (if any) that had started,
    the unfinished ones as failed; no report (Hydra never calls on_multirun_end then)."""
    root, SweepSummary.running = SweepSummary.running, None
    runs = sweep_runs(root) if root else []
    if not runs:
        return
    note = (
        "Interrupted (Ctrl-C): the runs listed are those that had started; "
        "a run that had not finished is listed as failed."
    )
    write_summary(root, runs, note)
    summary = root / "sweep_summary.md"
    print(
        f"interrupted: the sweep's runs that had started are summarized in {summary}",
        file=sys.stderr,
    )
