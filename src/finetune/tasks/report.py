"""mode=report (and the end of `-m experiment=report`): the whole report of a sweep folder.

The winner is rank 1 of the sweep's ranking (finetune.sweep.sweep_runs, the summary's own). The
steps it needs run as `python -m finetune` subprocesses, each into a fixed folder of the sweep
(report/eval, report/reproduce, report/analyze), so a second call finds them done and redoes
nothing. Subprocesses, not the in-process API: run() resets Hydra's global state and the logging
of the process, which belong to the running report (or sweep) job; a subprocess also leaves the
step its own finetune.log and frees its memory when it ends.

report.md / report.html are never overwritten: a call that ran a step writes the next free
report-<k>.md / .html beside the earlier ones; a call that found every step done and a report
there writes nothing.
"""

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from finetune.errors import UserError
from finetune.io import write_json, write_text
from finetune.overrides import path_override
from finetune.reports.report_document import to_html, to_markdown
from finetune.reports.report_inputs import STEP_RECORD, hardware, read_inputs
from finetune.reports.report_sections import build_document
from finetune.resume import user_config_arguments
from finetune.sweep import DONE, FAILED, OK, sweep_runs

log = logging.getLogger(__name__)

FOLDER = "report"  # the sweep's sub-folder that holds the steps' run folders
# step -> (the file it writes last, what it runs); {reference}: eval.reference=<eval's scores>
STEPS = {
    "eval": ("metrics.json", ["mode=eval"]),
    "reproduce": ("reproduction.json", ["mode=eval", "{reference}"]),
    "analyze": ("feature_stats.json", ["mode=analyze"]),
}
TOTAL = (len(STEPS) + 1, len(STEPS) + 1)  # "step k/N": the steps, then the report itself
# (not "[k/N]": a step's own log, passed through, counts its work that way)
# Keys the report sets for each step itself: the same keys given to mode=report are not passed on.
OWN_KEYS = {"mode", "sweep", "ckpt", "split", "eval.reference", "hydra.run.dir"}


def report(cfg: DictConfig) -> dict[str, Any]:
    """The task of mode=report: the steps get the other settings of this command line."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    return build_report(Path(str(cfg.sweep)), _passed_on(hydra), cfg.report.original)


def report_after_sweep(config: DictConfig) -> dict[str, Any]:
    """From SweepSummary: the sweep's own settings, less what it swept, go to every step."""
    passed = _passed_on(config.hydra)
    return build_report(Path(config.hydra.sweep.dir), passed, config.report.original)


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


def _winner(sweep: Path) -> dict[str, Any]:
    runs = sweep_runs(sweep)  # a sweep folder with job folders (finetune.validate)
    if runs[0]["status"] != OK and any(run["status"] == DONE for run in runs):
        raise UserError(
            f"sweep={sweep} is not a sweep of trainings (its runs have no monitored value to "
            "rank): give the folder of a -m training sweep"
        )
    if runs[0]["status"] != OK:
        failed = sum(run["status"] == FAILED for run in runs)
        raise UserError(
            f"no run of sweep {sweep} has a monitored value ({failed} of {len(runs)} failed, "
            "the others ended with NaN): see each run's finetune.log; nothing to report"
        )
    return runs[0]


def build_report(sweep: Path, passed_on: list[str], original: Any) -> dict[str, Any]:
    """Run what is missing, then write the report; return where everything is."""
    started = time.perf_counter()
    sweep = sweep.expanduser().resolve()
    winner = _winner(sweep)
    folders = {name: sweep / FOLDER / name for name in STEPS}
    ran = _run_missing_steps(sweep / winner["run"] / "best_model.pt", folders, passed_on)
    md, html = sweep / "report.md", sweep / "report.html"
    if not ran and md.is_file():
        log.info(
            "step %d/%d: report: all steps were done, %s is there: nothing written", *TOTAL, md
        )
        return {"report_md": str(md), "report_html": str(html), "ran": ran}
    log.info("step %d/%d: report ...", *TOTAL)
    writing = time.perf_counter()
    inputs = read_inputs(sweep, winner, folders, OmegaConf.to_container(original, resolve=True))
    document = build_document(inputs)
    k = 1
    while md.exists() or html.exists():  # never over an earlier report
        k += 1
        md, html = sweep / f"report-{k}.md", sweep / f"report-{k}.html"
    write_text(md, to_markdown(document, sweep))
    write_text(html, to_html(document))
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


def _run_missing_steps(ckpt: Path, folders: dict[str, Path], passed_on: list[str]) -> list[str]:
    """Each step whose result file is not in its folder runs; return the names of those run."""
    if not ckpt.is_file():
        raise UserError(f"the sweep's winner has no best_model.pt ({ckpt}): nothing to evaluate")
    ran = []
    for number, (name, (done_file, own)) in enumerate(STEPS.items(), start=1):
        folder = folders[name]
        if (folder / done_file).is_file():
            log.info("step %d/%d: %s: done earlier (%s), kept", number, TOTAL[1], name, folder)
            continue
        _set_aside(folder)
        log.info("step %d/%d: %s ...", number, TOTAL[1], name)
        reference = path_override("eval.reference", folders["eval"] / "softmax_scores.pt")
        own = [item.format(reference=reference) for item in own]
        paths = [path_override("ckpt", ckpt), path_override("hydra.run.dir", folder)]
        command = [*passed_on, *own, "split=test", *paths]
        wall = _run_step(name, command, folder / done_file)
        record = {"step": name, "command": command, "wall_s": wall} | hardware()
        write_json(folder / STEP_RECORD, record)
        log.info("step %d/%d: %s: done in %.1f s (%s)", number, TOTAL[1], name, wall, folder)
        ran.append(name)
    return ran


def _set_aside(folder: Path) -> None:
    """A step folder left unfinished (killed, failed) is kept under a new name, not reused."""
    if not folder.exists():
        return
    k = 1
    while (aside := folder.with_name(f"{folder.name}.unfinished-{k}")).exists():
        k += 1
    folder.rename(aside)
    log.warning("%s holds an unfinished step: kept as %s, running it again", folder, aside.name)


def _run_step(name: str, overrides: list[str], done_file: Path) -> float:
    """`python -m finetune OVERRIDES`, its output passed through; its `error:` line becomes
    this run's one error line. A reproduction that does not match is a result (the step wrote
    reproduction.json and exits 2): the report shows it."""
    started = time.perf_counter()
    errors = []
    with subprocess.Popen(
        [sys.executable, "-m", "finetune", *overrides], stderr=subprocess.PIPE, text=True
    ) as process:
        for line in process.stderr:
            if line.startswith("error: "):
                errors.append(line.removeprefix("error: ").strip())
            else:
                sys.stderr.write(line)
    if process.returncode != 0 and not done_file.is_file():
        reason = errors[-1] if errors else f"exit status {process.returncode}"
        log_file = done_file.parent / "finetune.log"
        where = f"its log: {log_file}" if log_file.is_file() else "it stopped before writing a log"
        raise UserError(f"step {name} failed: {reason} ({where})")
    return time.perf_counter() - started
