"""mode=report (and the end of `-m experiment=report`): the whole report of a sweep folder.

The winner is rank 1 of the sweep's ranking (finetune.sweep.sweep_runs, the summary's own). The
steps it needs run as `python -m finetune` subprocesses (finetune.reports.report_steps), each into
a fixed folder of the sweep (report/eval, report/reproduce, report/analyze), so a second call
finds them done and redoes nothing; a step made for another winner (a report of a sweep that was
still running) runs again. Subprocesses, not the in-process API: run() resets Hydra's global state
and the logging of the process, which belong to the running report (or sweep) job; a subprocess
also leaves the step its own finetune.log and frees its memory when it ends.

report.md / report.html are never overwritten: a call that ran a step, or that found the runs
changed since the last report, writes the next free report-<k>.md / .html beside the earlier
ones (its own figures drawn anew into report/figures-<k>); a call that found every step done and
the last report showing the same runs writes nothing.
"""

import json
import logging
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from finetune.errors import UserError
from finetune.io import write_json, write_text
from finetune.overrides import path_override
from finetune.reports.report_document import to_html, to_markdown
from finetune.reports.report_inputs import STEP_RECORD, hardware, read_inputs, unfinished_runs
from finetune.reports.report_sections import build_document
from finetune.reports.report_steps import (
    FOLDER,
    STEPS,
    TOTAL,
    report_lock,
    reusable,
    run_process,
)
from finetune.resume import user_config_arguments
from finetune.sweep import DONE, FAILED, NAN, OK, named_runs, sweep_runs

log = logging.getLogger(__name__)

WRITTEN = "written.json"  # in report/: the last report written and the runs it showed
# Keys the report sets for each step itself: the same keys given to mode=report are not passed on.
OWN_KEYS = {"mode", "sweep", "ckpt", "split", "eval.reference", "hydra.run.dir"}


def report(cfg: DictConfig) -> dict[str, Any]:
    """The task of mode=report: the steps get the other settings of this command line."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    with _continued_by("run the same command again"):
        return build_report(Path(str(cfg.sweep)), _passed_on(hydra), cfg.report.original)


def report_after_sweep(config: DictConfig) -> dict[str, Any]:
    """From SweepSummary: the sweep's own settings, less what it swept, go to every step."""
    passed, sweep = _passed_on(config.hydra), Path(config.hydra.sweep.dir)
    command = ["python", "-m", "finetune", "mode=report", path_override("sweep", sweep), *passed]
    with _continued_by(f"run {shlex.join(command)}"):  # not the sweep's: it would train again
        return build_report(sweep, passed, config.report.original)


@contextmanager
def _continued_by(again: str) -> Iterator[None]:
    """Ctrl-C: the KeyboardInterrupt (which says where the report stopped) says what goes on
    from there."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        raise KeyboardInterrupt(
            f"{str(interrupt) or 'the report stopped'}: {again} to continue where it stopped (the "
            "steps that finished are kept)"
        ) from None


def _passed_on(hydra: DictConfig | None) -> list[str]:
    """What every step's command line takes from this one (`hydra`: Hydra's record of it, None
    where there is none): the user's config folder (--config-dir, hydra.searchpath), without
    which an experiment of the user's own would be unknown to the steps, then the overrides
    less the swept ones and the keys each step sets itself."""
    if hydra is None:
        return []
    parsed = OverridesParser.create().parse_overrides(list(hydra.overrides.task))
    kept = [
        o.input_line
        for o in parsed
        if not o.is_sweep_override() and o.key_or_group.lstrip("+~") not in OWN_KEYS
    ]
    return [*user_config_arguments(hydra), *kept]


def _winner(sweep: Path, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank 1 of `runs` (the sweep's, ranked; finetune.validate saw job folders there), with
    the best_model.pt the steps evaluate."""
    if runs[0]["status"] != OK and any(run["status"] == DONE for run in runs):
        raise UserError(
            f"sweep={sweep} is not a sweep of trainings (its runs have no monitored value to "
            "rank): give the folder of a -m training sweep"
        )
    if runs[0]["status"] != OK:
        counts = {status: sum(run["status"] == status for run in runs) for status in (FAILED, NAN)}
        said = [f"{counts[FAILED]} failed", f"{counts[NAN]} ended with NaN"]
        said = " and ".join(text for text in said if not text.startswith("0 "))
        raise UserError(
            f"no run of sweep {sweep} has a monitored value (of its {len(runs)} runs, {said}): "
            "see each run's finetune.log; nothing to report"
        )
    ckpt = sweep / runs[0]["run"] / "best_model.pt"
    if not ckpt.is_file():
        raise UserError(f"the sweep's winner has no best_model.pt ({ckpt}): nothing to evaluate")
    return runs[0]


def build_report(sweep: Path, passed_on: list[str], original: Any) -> dict[str, Any]:
    """Run what is missing, then write the report; return where everything is. Ctrl-C: a
    KeyboardInterrupt that says where it stopped."""
    started = time.perf_counter()
    sweep = sweep.expanduser().resolve()
    runs = sweep_runs(sweep)
    unfinished = unfinished_runs(sweep, runs)
    if unfinished:
        one = len(unfinished) == 1
        log.warning(
            "sweep %s: %s %s unfinished (a finetune.log without an end, no metrics.json): "
            "still running? The report treats %s as failed until %s",
            sweep,
            named_runs(unfinished),
            "looks" if one else "look",
            "it" if one else "them",
            "it ends" if one else "they end",
        )
    winner = _winner(sweep, runs)
    folders = {name: sweep / FOLDER / name for name in STEPS}
    try:
        with report_lock(sweep):
            ran = _run_missing_steps(sweep / winner["run"] / "best_model.pt", folders, passed_on)
            return _write(sweep, runs, winner, folders, ran, original, started)
    except KeyboardInterrupt as interrupt:
        where = f" at {interrupt}" if str(interrupt) else ""
        raise KeyboardInterrupt(f"the report of {sweep} stopped{where}") from None


def _run_missing_steps(ckpt: Path, folders: dict[str, Path], passed_on: list[str]) -> list[str]:
    """Each step not done for the winner's `ckpt` (finetune.reports.report_steps.reusable) runs;
    return the names of those run. Ctrl-C: a KeyboardInterrupt that names the step."""
    ran: list[str] = []
    for number, (name, (done_file, own)) in enumerate(STEPS.items(), start=1):
        folder = folders[name]
        if reusable(name, folder, ckpt.parent.name, ran):
            log.info("step %d/%d: %s: done earlier (%s), kept", number, TOTAL[1], name, folder)
            continue
        log.info("step %d/%d: %s ...", number, TOTAL[1], name)
        reference = path_override("eval.reference", folders["eval"] / "softmax_scores.pt")
        own = [item.format(reference=reference) for item in own]
        paths = [path_override("ckpt", ckpt), path_override("hydra.run.dir", folder)]
        command = [*passed_on, *own, "split=test", *paths]
        try:
            wall = _run_step(name, command, folder / done_file)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"step {number}/{TOTAL[1]} ({name})") from None
        record = {"step": name, "command": command, "wall_s": wall} | hardware()
        write_json(folder / STEP_RECORD, record)
        log.info("step %d/%d: %s: done in %.1f s (%s)", number, TOTAL[1], name, wall, folder)
        ran.append(name)
    return ran


def _run_step(name: str, overrides: list[str], done_file: Path) -> float:
    """`python -m finetune OVERRIDES` (finetune.reports.report_steps.run_process)."""
    return run_process(name, [sys.executable, "-m", "finetune", *overrides], done_file)


def _shown(runs: list[dict[str, Any]]) -> list[list[str]]:
    """What a report says of the runs that can change while a sweep runs: status and value."""
    return [[run["run"], run["status"], str(run["value"])] for run in runs]


def _write(
    sweep: Path,
    runs: list[dict[str, Any]],
    winner: dict[str, Any],
    folders: dict[str, Path],
    ran: list[str],
    original: Any,
    started: float,
) -> dict[str, Any]:
    """report-<k>.md / .html, unless no step ran and the last report shows these runs."""
    record = sweep / FOLDER / WRITTEN
    last = json.loads(record.read_text()) if record.is_file() else {}
    md = sweep / last.get("report", "report.md")
    if not ran and last.get("runs") == _shown(runs) and md.is_file():
        log.info(
            "step %d/%d: report: all steps were done and %s shows these runs: nothing written",
            *TOTAL,
            md,
        )
        return {"report_md": str(md), "report_html": str(md.with_suffix(".html")), "ran": ran}
    log.info("step %d/%d: report ...", *TOTAL)
    writing = time.perf_counter()
    md, html, k = sweep / "report.md", sweep / "report.html", 1
    while md.exists() or html.exists():  # never over an earlier report
        k += 1
        md, html = sweep / f"report-{k}.md", sweep / f"report-{k}.html"
    figures = sweep / FOLDER / ("figures" if k == 1 else f"figures-{k}")
    original = OmegaConf.to_container(original, resolve=True)
    inputs = read_inputs(sweep, winner, folders, original, figures)
    document = build_document(inputs)
    write_text(md, to_markdown(document, sweep))
    write_text(html, to_html(document))
    write_json(record, {"report": md.name, "runs": _shown(inputs.runs)}, overwrite=True)
    done = time.perf_counter()
    log.info(
        "step %d/%d: report: done in %.1f s (all steps %.1f s): %s and %s",
        *TOTAL,
        done - writing,
        done - started,
        md,
        html.name,
    )
    if inputs.reproduction and not inputs.reproduction["passed"]:
        raise UserError(f"the winner's scores do not reproduce: see {md}, section Reproduction")
    return {"report_md": str(md), "report_html": str(html), "ran": ran, "winner": winner["run"]}
