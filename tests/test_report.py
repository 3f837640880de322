"""The whole report from one command (issue 13): `-m experiment=report` on tiny data trains two
learning rates, then evaluates the winner, checks that its scores reproduce, analyses it, and
writes report.md and report.html; mode=report on that folder redoes nothing. Every number the
report shows is read back from report.md and compared with the runs' own files.

The content checks run on a finished sweep built in this process (`report_sweep`: the two
trainings through finetune.run, then mode=report, whose three steps run as the real subprocesses
a user gets, once per session). The one `-m experiment=report` command (a sweep process, then its
three step processes) and the browser test that reads its report.html are `slow`."""

import base64
import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from finetune import run
from finetune.errors import UserError
from finetune.reports.report_inputs import STEP_RECORD

from conftest import (
    REPO,
    TINY,
    as_user_in,
    assert_one_line_error,
    cli_env,
    run_cli,
    run_in_process,
)

LRS = ("0.05", "0.01")
SECTIONS = [
    "Data and split",
    "Learning-rate comparison",
    "Class-wise test accuracy and AP",
    "Reproduction",
    "Top-10 and bottom-10 images of every class",
    "Training curves of the winner",
    "Feature statistics",
    "Against the original report",
    "Time and hardware",
]
STEPS = {"eval": "metrics.json", "reproduce": "reproduction.json", "analyze": "feature_stats.json"}
# What each training of the sweep is given besides its learning rate: one epoch, 32 px.
TRAINING = [
    "data.split.test=12",
    "data.split.val=12",
    "model.weights=none",
    "trainer.max_epochs=1",
    "train_eval_images=0",
    *TINY,
]


def analysis_settings(imagenet_root: Path, cifar_root: Path) -> list[str]:
    return [
        f"analysis.imagenet_root={imagenet_root}",
        f"analysis.cifar_root={cifar_root}",
        "analysis.num_images=6",
    ]


@pytest.fixture(scope="session")
def report_sweep(tmp_path_factory, scene_root, imagenet_root, cifar_root, torch_home):
    """A finished sweep of experiment=report built in this process: the two LRs trained through
    finetune.run into the job folders a `-m` sweep makes (<sweep>/0, <sweep>/1), then
    `mode=report sweep=<sweep>` with the tiny settings given as a user gives them (its steps get
    them passed on). Returns the sweep folder and the report call's run folder."""
    base = tmp_path_factory.mktemp("report")
    sweep, report_run = base / "sweep", base / "report-run"
    with as_user_in(base, torch_home):  # the steps inherit TORCH_HOME: analyze's pretrained
        for job, lr in enumerate(LRS):
            run_in_process(
                "experiment=report",
                "report.after_sweep=false",  # one job of the sweep, run alone: no report of its own
                f"optimizer.lr={lr}",
                f"data.root={scene_root}",
                *TRAINING,
                f"hydra.run.dir={sweep / str(job)}",
            )
        (sweep / "multirun.yaml").write_text("{}\n")  # what makes the folder one sweep
        run_in_process(
            "mode=report",
            f"sweep={sweep}",
            *analysis_settings(imagenet_root, cifar_root),
            *TINY,
            f"hydra.run.dir={report_run}",
        )
    return sweep, report_run


@pytest.fixture(scope="session")
def one_command_sweep(tmp_path_factory, scene_root, imagenet_root, cifar_root, torch_home):
    """One `-m experiment=report` sweep, its LR grid replaced by two LRs, one epoch, 32 px."""
    cwd = tmp_path_factory.mktemp("report-command")
    sweep = cwd / "sweep"
    result = run_cli(
        "-m",
        "experiment=report",
        f"optimizer.lr={','.join(LRS)}",
        f"data.root={scene_root}",
        *TRAINING,
        *analysis_settings(imagenet_root, cifar_root),
        f"hydra.sweep.dir={sweep}",
        cwd=cwd,
        torch_home=torch_home,
        timeout=900,  # two trainings and three steps, each a process: ~1 min on 2 free cores
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep, result.stdout + result.stderr


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """Every Markdown table, keyed by the text of its header row."""
    found, lines = {}, markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("| ---"):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("| "):
                    break
                rows.append([cell.strip() for cell in row.strip("| ").split(" | ")])
            found[line] = rows
    return found


def table(markdown: str, first_columns: str) -> list[list[str]]:
    (rows,) = [
        rows for header, rows in tables(markdown).items() if header.startswith(first_columns)
    ]
    return rows


def close(cell: str, value: float, digits: int) -> bool:
    return float(cell) == pytest.approx(round(value, digits), abs=10 ** -(digits + 1))


@pytest.mark.slow  # the sweep process, then its three step processes
def test_one_command_trains_the_grid_then_runs_every_step(one_command_sweep):
    sweep, output = one_command_sweep
    jobs = sorted(p.parent.name for p in sweep.glob("*/.hydra"))
    assert jobs == ["0", "1"]  # the command line's two LRs replaced the experiment's grid
    lrs = [OmegaConf.load(sweep / job / ".hydra/config.yaml").optimizer.lr for job in jobs]
    assert lrs == [float(lr) for lr in LRS]
    config = OmegaConf.load(sweep / "0/.hydra/config.yaml")
    assert (config.optimizer.momentum, config.trainer.max_epochs) == (0.9, 1)
    for step, done in STEPS.items():
        assert (sweep / "report" / step / done).is_file(), step
        assert f"/4: {step}: done in" in output
    for k, step in enumerate(["eval", "reproduce", "analyze", "report"], start=1):
        assert f"step {k}/4: {step} ..." in output
    assert (sweep / "report.md").is_file() and (sweep / "report.html").is_file()


def test_mode_report_runs_every_step_with_the_settings_it_was_given(
    report_sweep, imagenet_root, cifar_root
):
    """Each step ran as its own `python -m finetune` with the report call's settings (TINY and
    the analysis roots) and its own (mode, checkpoint, split, folder); not `sweep=`."""
    sweep, report_run = report_sweep
    given = [*analysis_settings(imagenet_root, cifar_root), *TINY]
    for step, done in STEPS.items():
        folder = sweep / "report" / step
        assert (folder / done).is_file(), step
        command = json.loads((folder / STEP_RECORD).read_text())["command"]
        assert command[: len(given)] == given, command
        assert f"ckpt={sweep}/" in " ".join(command) and "split=test" in command
        assert not any(item.startswith(("sweep=", "mode=report")) for item in command), command
        assert (folder / "finetune.log").is_file()
    analysed = OmegaConf.load(sweep / "report/analyze/.hydra/config.yaml")
    assert (analysed.analysis.num_images, analysed.data.image_size) == (6, 32)
    log = (report_run / "finetune.log").read_text()
    for k, step in enumerate(["eval", "reproduce", "analyze", "report"], start=1):
        assert f"step {k}/4: {step} ..." in log
    for step in STEPS:
        assert f"/4: {step}: done in" in log
    assert (sweep / "report.md").is_file() and (sweep / "report.html").is_file()


def test_sections_in_the_original_order_with_their_content(report_sweep):
    sweep, _ = report_sweep
    report = (sweep / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", report, flags=re.MULTILINE)
    assert headings == SECTIONS
    sections = dict(
        zip(SECTIONS, re.split(r"^## .+$", report, flags=re.MULTILINE)[1:], strict=True)
    )
    links = {name: re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text) for name, text in sections.items()}
    assert all((sweep / link).is_file() for found in links.values() for link in found)
    assert links["Learning-rate comparison"] == ["report/figures/lr_comparison.png"]
    assert len(links["Top-10 and bottom-10 images of every class"]) == 6  # one per class
    assert links["Training curves of the winner"] == ["report/figures/winner_curves.png"]
    assert len(links["Feature statistics"]) == 5  # one spectrum per module
    assert "Fine-tuned minus pretrained" in sections["Feature statistics"]
    original = sections["Against the original report"]
    assert "does not say which learning rate" in original
    assert "cifar10: the original could not analyse it; analysed here" in original
    assert (
        "torch " in sections["Time and hardware"]
        and "report/analyze" in sections["Time and hardware"]
    )


def test_every_number_equals_the_runs_own_files(report_sweep):
    sweep, _ = report_sweep
    report = (sweep / "report.md").read_text()
    winner = table(report, "| winner")[0][0].split(" (")[0].removeprefix("run ")

    with (sweep / winner / "split.csv").open() as handle:  # the split, counted independently
        manifest = list(csv.DictReader(handle))
    for name, *counts, total in table(report, "| class | train | val | test"):
        images = [row["split"] for row in manifest if name in (row["label"], "all")]
        assert [int(c) for c in counts] == [images.count(s) for s in ("train", "val", "test")]
        assert int(total) == len(images)

    lr_rows = table(report, "| rank | run |")
    assert [row[0] for row in lr_rows] == ["1", "2"] and lr_rows[0][1] == winner
    assert float(lr_rows[0][6]) >= float(lr_rows[1][6])  # ranked by val mAP, best first
    for _, job, _, lr, status, acc_mean, map_, best_epoch, *_ in lr_rows:
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert (
            status == "ok"
            and float(lr) == OmegaConf.load(sweep / job / ".hydra/config.yaml").optimizer.lr
        )
        assert close(acc_mean, metrics["val"]["val/acc_mean"], 4)
        assert (
            close(map_, metrics["val"]["val/map"], 4) and int(best_epoch) == metrics["best_epoch"]
        )

    evaluation = json.loads((sweep / "report/eval/metrics.json").read_text())
    assert evaluation["checkpoint"] == str(sweep / winner / "best_model.pt")
    rows = table(report, "| class | images | accuracy | AP")
    for name, images, acc, ap in rows[:-1]:
        assert int(images) == evaluation["images_per_class"][name]
        assert close(acc, evaluation["acc_class"][name], 4) and close(
            ap, evaluation["ap_class"][name], 4
        )
    assert close(rows[-1][2], evaluation["acc_mean"], 4) and close(
        rows[-1][3], evaluation["map"], 4
    )

    reproduction = json.loads((sweep / "report/reproduce/reproduction.json").read_text())
    (row,) = table(report, "| max abs difference")
    assert close(row[0], reproduction["max_abs_diff"], 8) and reproduction["passed"]
    assert [int(row[1]), int(row[2]), row[4]] == [reproduction["rows_differ"], 12, "passed"]

    stats = json.loads((sweep / "report/analyze/feature_stats.json").read_text())
    shown = {(r[0], r[1]): r for r in table(report, "| model | dataset | N |")}
    assert len(shown) == 6  # fine-tuned and pretrained x scenes, ImageNet, CIFAR-10
    modules = [m if isinstance(m, str) else m["name"] for m in stats["modules"]]
    for result in stats["results"]:
        row = shown[result["model"], result["dataset"]]
        assert int(row[2]) == result["num_images"]
        assert close(
            row[3 + modules.index(result["module"])], 100 * result["nonpositive_fraction"], 2
        )
    fractions = {(r["model"], r["dataset"], r["module"]): r["nonpositive_fraction"]
                 for r in stats["results"]}  # fmt: skip
    for dataset, *points in table(report, "| dataset | layer1.0.conv1"):
        for module, cell in zip(modules, points, strict=True):
            tuned = fractions["fine-tuned", dataset, module]
            assert close(cell, 100 * (tuned - fractions["pretrained", dataset, module]), 2)

    seed = OmegaConf.load(REPO / "conf/report/default.yaml").original
    measures = {row[0]: row for row in table(report, "| figure | original")}
    assert close(measures["test mAP"][1], seed.test.map, 4) and close(
        measures["test mAP"][2], evaluation["map"], 4
    )
    assert close(measures["test mean class-wise accuracy"][1], seed.test.acc_mean, 4)
    seed_rows = [
        r for r in table(report, "| model | dataset | source") if r[2].startswith("original")
    ]
    for row, entry in zip(seed_rows, seed.nonpositive, strict=True):
        assert [float(c) for c in row[3:]] == [round(100 * v, 2) for v in entry["values"].values()]


def test_html_is_one_self_contained_file(report_sweep):
    sweep, _ = report_sweep
    html = (sweep / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, flags=re.IGNORECASE)
    assert "<link" not in html and "<script" not in html and "@import" not in html
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (sweep / "report.md").read_text())
    assert len(images) == len(links) == html.count("<img")
    assert base64.b64decode(images[0]) == (sweep / links[0]).read_bytes()
    for heading in SECTIONS:
        assert f">{heading}</h2>" in html


def _files(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
    }


def test_a_second_call_redoes_nothing_and_keeps_everything(report_sweep, tmp_path):
    sweep, _ = report_sweep
    before = _files(sweep)
    results = run(["mode=report", f"sweep={sweep}", f"hydra.run.dir={tmp_path / 'again'}"])
    assert results["ran"] == [] and results["report_md"] == str(sweep / "report.md")
    assert _files(sweep) == before  # no new step folder, no new report, nothing rewritten


def test_a_step_run_again_writes_a_new_report_beside_and_says_a_mismatch(report_sweep, tmp_path):
    """A reproduction folder missing (say, interrupted) runs again; here the saved scores were
    changed, so the new report says the mismatch, the old report stays, and the call ends in
    one error line."""
    sweep = tmp_path / "sweep"
    shutil.copytree(report_sweep[0], sweep)
    shutil.rmtree(sweep / "report/reproduce")
    scores = torch.load(sweep / "report/eval/softmax_scores.pt")
    scores[3] += 0.01
    torch.save(scores, sweep / "report/eval/softmax_scores.pt")
    kept = (sweep / "report.md").read_bytes()
    command = ["mode=report", f"sweep={sweep}", f"hydra.run.dir={tmp_path / 'run'}"]
    with pytest.raises(UserError, match="do not reproduce: see .*report-2.md"):
        run(command)
    assert (sweep / "report.md").read_bytes() == kept and (sweep / "report-2.html").is_file()
    (row,) = table((sweep / "report-2.md").read_text(), "| max abs difference")
    assert close(row[0], 0.01, 4) and row[1] == "1" and row[4] == "failed"
    assert "FAILED: 1 rows differ" in (sweep / "report-2.md").read_text()


def test_swept_values_read_with_four_significant_digits(report_sweep, tmp_path):
    """An Optuna or multi-parameter sweep gives its runs 17-digit values: the report (winner
    card, LR table, sentences) shows them to 4 significant digits (the runs' files keep all)."""
    sweep = tmp_path / "sweep"
    shutil.copytree(report_sweep[0], sweep)
    swept = {"0": ("0.0012345678901234567", "0.87654321012345678"), "1": ("0.05", "0.5")}
    shown = {"0": ("0.001235", "0.8765"), "1": ("0.05", "0.5")}
    for job, (lr, momentum) in swept.items():
        overrides = sweep / job / ".hydra/overrides.yaml"
        text = re.sub(r"optimizer\.lr=\S+", f"optimizer.lr={lr}", overrides.read_text())
        overrides.write_text(text + f"- optimizer.momentum={momentum}\n")
        config = OmegaConf.load(sweep / job / ".hydra/config.yaml")
        config.optimizer.lr, config.optimizer.momentum = float(lr), float(momentum)
        OmegaConf.save(config, sweep / job / ".hydra/config.yaml")
    (sweep / "report.md").unlink()  # a report is written when there is none
    (sweep / "report.html").unlink()
    run(["mode=report", f"sweep={sweep}", f"hydra.run.dir={tmp_path / 'run'}"])

    report, html = (sweep / "report.md").read_text(), (sweep / "report.html").read_text()
    assert "12345678" not in report and "12345678" not in html
    winner = table(report, "| winner")[0][0].split(" (")[0].removeprefix("run ")
    settings = {job: f"optimizer.lr={lr} optimizer.momentum={m}" for job, (lr, m) in shown.items()}
    best = settings[winner]  # the full keys, on the card too
    assert table(report, "| winner")[0][0] == f"run {winner} ({best})"
    assert f'<div class="value">run {winner}</div><div class="detail">{best}</div>' in html
    for _, job, setting, lr_cell, *_ in table(report, "| rank | run |"):
        assert (setting, lr_cell) == (settings[job], shown[job][0])
    assert f"this sweep chose {shown[winner][0]} (it also varied optimizer.momentum: `{best}`)" in (
        report
    )


def test_runs_on_different_splits_have_no_winner_and_the_comparison_names_what_varied(
    report_sweep, tmp_path
):
    """The sweep's runs validated on one split have a winner. Made a sweep over `seed` (which
    data.split.seed follows: run 1's val rows changed), the report names no winner and says
    why, and the comparison is headed with what varied, not "Learning-rate comparison"."""
    assert (
        "every run that finished was validated on the same images"
        in (report_sweep[0] / "report.md").read_text()
    )
    sweep = tmp_path / "sweep"
    shutil.copytree(report_sweep[0], sweep)
    for job in ("0", "1"):
        overrides = sweep / job / ".hydra/overrides.yaml"
        overrides.write_text(overrides.read_text() + f"- seed={job}\n")
        config = OmegaConf.load(sweep / job / ".hydra/config.yaml")
        config.seed = int(job)
        OmegaConf.save(config, sweep / job / ".hydra/config.yaml")
    with (sweep / "1/split.csv").open() as handle:
        rows = list(csv.reader(handle))
    val = next(row for row in rows if row[2] == "val")
    train = next(row for row in rows if row[2] == "train" and row[1] == val[1])
    val[2], train[2] = "train", "val"
    with (sweep / "1/split.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    (sweep / "report.md").unlink()  # a report is written when there is none
    (sweep / "report.html").unlink()
    run(["mode=report", f"sweep={sweep}", f"hydra.run.dir={tmp_path / 'run'}"])

    report = (sweep / "report.md").read_text()
    best = table(report, "| rank 1 (no fair winner) |")[0][0].split(" (")[0]
    headings = re.findall(r"^## (.+)$", report, flags=re.MULTILINE)
    assert headings == [
        SECTIONS[0],
        "Comparison of the runs (optimizer.lr, seed)",
        *SECTIONS[2:5],
        f"Training curves of {best} (rank 1)",
        *SECTIONS[6:],
    ]
    assert "the runs were validated on different images (run 0 | run 1: the val rows" in report
    assert "data.split.seed differs (${seed} = 0, ${seed} = 1)" in report
    assert f"No winner: rank 1 is {best}" in report
    assert "Winner:" not in report and "the winner" not in report.lower()
    assert "the other runs were validated on other images" in report
    assert "same images" not in report


def test_what_is_not_a_finished_sweep_is_one_line(trained_run, tmp_path):
    failed = tmp_path / "failed"
    for job in ("0", "1"):
        (failed / job / ".hydra").mkdir(parents=True)  # jobs that never wrote metrics.json
    (failed / "multirun.yaml").write_text("{}\n")
    apart = tmp_path / "day"  # runs trained one by one, as in outputs/train/<date>/
    shutil.copytree(trained_run, apart / "10-00-00")
    nan = tmp_path / "nan"  # one run failed, one ended with NaN
    shutil.copytree(failed, nan)
    nan_metrics = {"monitor": {"name": "val/map", "mode": "max", "value": float("nan")}}
    (nan / "1" / "metrics.json").write_text(json.dumps(nan_metrics))
    optuna = tmp_path / "optuna"  # Optuna's sweeper writes no multirun.yaml; its jobs say MULTIRUN
    for job in ("0", "1"):
        (optuna / job / ".hydra").mkdir(parents=True)
        (optuna / job / ".hydra" / "hydra.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    cases = [
        ([], "mode=report needs the sweep folder"),
        ([f"sweep={tmp_path / 'nowhere'}"], "does not exist"),
        ([f"sweep={trained_run / 'best_model.pt'}"], "is a file, not a sweep folder"),
        ([f"sweep={tmp_path}"], "not a sweep folder"),
        ([f"sweep={trained_run}"], "is a single run"),
        ([f"sweep={apart}"], "holds runs but is not one sweep \\(they ran one by one"),
        ([f"sweep={optuna}"], "no run of sweep .* has a monitored value"),  # one sweep: checked on
        ([f"sweep={failed}"], "no run of sweep .* \\(of its 2 runs, 2 failed\\)"),
        ([f"sweep={nan}"], "\\(of its 2 runs, 1 failed and 1 ended with NaN\\)"),
    ]
    for k, (overrides, message) in enumerate(cases):
        with pytest.raises(UserError, match=message):
            run(["mode=report", *overrides, f"hydra.run.dir={tmp_path / 'runs' / str(k)}"])
    result = run_cli("mode=report", f"sweep={failed}", cwd=tmp_path)
    assert result.returncode == 2
    assert_one_line_error(result, "no run of sweep", "finetune.log")


def copy_of(report_sweep, tmp_path: Path, report: bool = True) -> Path:
    """The session's finished sweep copied into tmp_path (without its report.md / .html unless
    `report`: a call with no step to run writes one only then)."""
    sweep = tmp_path / "sweep"
    shutil.copytree(report_sweep[0], sweep)
    if not report:
        (sweep / "report.md").unlink()
        (sweep / "report.html").unlink()
    return sweep


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines()


def report_of(sweep: Path, folder: Path, *overrides: str) -> dict:
    return run(["mode=report", f"sweep={sweep}", *overrides, f"hydra.run.dir={folder}"])


def steps_in_this_process(monkeypatch) -> None:
    """The report's steps run through finetune.run in this process, not as `python -m finetune`
    processes (5 s of imports each): for tests of which steps run, not of how a process runs."""
    from finetune.tasks import report as report_module

    def in_process(name: str, overrides: list[str], done_file: Path) -> float:
        started = time.perf_counter()
        try:
            run(overrides)
        except UserError:
            if not done_file.is_file():  # as run_process: a step that wrote its result is done
                raise
        return time.perf_counter() - started

    monkeypatch.setattr(report_module, "_run_step", in_process)


def test_steps_made_for_an_earlier_winner_run_again(report_sweep, tmp_path, monkeypatch):
    """A report made while the sweep still ran evaluated the then-best run. Once another run is
    rank 1, each step is out of date: set aside as <step>.outdated-1 (said in one line) and run
    again on the new winner's checkpoint; the new report (beside the old one) draws its own
    figures anew. Called again, it writes nothing."""
    steps_in_this_process(monkeypatch)
    sweep = copy_of(report_sweep, tmp_path)
    old_report = (sweep / "report.md").read_bytes()
    metrics = [(sweep / job / "metrics.json").read_text() for job in ("0", "1")]
    (sweep / "0/metrics.json").write_text(metrics[1])  # run 0 is now rank 1
    (sweep / "1/metrics.json").write_text(metrics[0])
    with as_user_in(tmp_path):
        results = report_of(sweep, tmp_path / "run", "analysis.num_images=6", *TINY)
    assert results["ran"] == ["eval", "reproduce", "analyze"] and results["winner"] == "0"
    log = (tmp_path / "run/finetune.log").read_text()
    for step in STEPS:
        assert (sweep / f"report/{step}.outdated-1/{STEPS[step]}").is_file()
        assert (
            f"report/{step} is out of date (it ran on run 1's best_model.pt, and the winner is "
            f"now run 0): kept as {step}.outdated-1, running it again"
        ) in log
    evaluation = json.loads((sweep / "report/eval/metrics.json").read_text())
    assert evaluation["checkpoint"] == str(sweep / "0/best_model.pt")
    assert (sweep / "report.md").read_bytes() == old_report
    report = (sweep / "report-2.md").read_text()
    assert table(report, "| winner")[0][0].startswith("run 0 (")
    links = re.findall(r"!\[[^\]]*\]\((report/figures[^)]*)\)", report)
    assert links == ["report/figures-2/lr_comparison.png", "report/figures-2/winner_curves.png"]
    drawn = [(sweep / folder / "winner_curves.png").read_bytes() for folder in
             ("report/figures", "report/figures-2")]  # fmt: skip
    assert drawn[0] != drawn[1]  # titled with the new winner
    again = report_of(sweep, tmp_path / "again")
    assert again["ran"] == [] and again["report_md"] == str(sweep / "report-2.md")
    assert not (sweep / "report-3.md").exists() and not (sweep / "report/.lock").exists()


def test_a_run_still_running_is_said_and_a_report_follows_when_it_ends(report_sweep, tmp_path):
    """A job folder with a finetune.log but no end line and no metrics.json looks unfinished
    (still running?): one warning line, and the report lists it as failed saying so. Once its
    log has an end (here: stopped on an error), no warning; the runs shown have not changed, so
    nothing is written."""
    sweep = copy_of(report_sweep, tmp_path)
    shutil.copytree(sweep / "0/.hydra", sweep / "2/.hydra")
    log = sweep / "2/finetune.log"
    log.write_text("[2026-01-01 10:00:00,000][finetune.tasks][INFO] - mode=train: writing to 2\n")
    results = report_of(sweep, tmp_path / "run")
    assert results["ran"] == [] and results["report_md"] == str(sweep / "report-2.md")
    (warning,) = [line for line in lines(tmp_path / "run/finetune.log") if "unfinished" in line]
    assert warning.endswith(
        f"[WARNING] - sweep {sweep}: run 2 looks unfinished (a finetune.log without an end, no "
        "metrics.json): still running? The report treats it as failed until it ends"
    )
    report = (sweep / "report-2.md").read_text()
    assert (
        "Failed (no metrics.json; see their finetune.log): run 2. Run 2 looked unfinished (still "
        "running?) when this report was written: listed as failed until it ends."
    ) in report
    (row,) = [row for row in table(report, "| step | folder") if row[1] == "sweep/2"]
    assert row[2:] == ["not recorded", "cpu x1, precision not recorded (no metrics.json)"]

    with log.open("a") as handle:
        handle.write("[2026-01-01 10:00:09,000][finetune.tasks][ERROR] - stopped: a mistake\n")
    results = report_of(sweep, tmp_path / "again")
    assert results["report_md"] == str(sweep / "report-2.md")
    assert "unfinished" not in (tmp_path / "again/finetune.log").read_text()


def test_a_second_report_process_on_one_sweep_is_refused(report_sweep, tmp_path):
    """A report holds report/.lock (its pid) while it runs: a second report of the same sweep
    stops in one line naming the first; a lock whose process has ended is replaced."""
    sweep = copy_of(report_sweep, tmp_path)
    lock = sweep / "report/.lock"
    running = os.getppid()  # a live process that is not this one
    lock.write_text(json.dumps({"pid": running, "host": socket.gethostname()}))
    said = f"is running (process {running}, its lock {lock}): wait for it to end"
    with pytest.raises(UserError, match=f"another report of sweep .* {re.escape(said)}"):
        report_of(sweep, tmp_path / "run")
    assert json.loads(lock.read_text())["pid"] == running  # the other report's lock is kept
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    lock.write_text(json.dumps({"pid": ended.pid, "host": socket.gethostname()}))
    assert report_of(sweep, tmp_path / "again")["ran"] == []
    said = f"{lock} was left by a report that has ended: replaced"
    assert said in (tmp_path / "again/finetune.log").read_text()
    assert not lock.exists()


def test_the_report_lock_is_taken_without_hard_links_and_a_lock_of_its_own_pid_is_stale(
    report_sweep, tmp_path, monkeypatch
):
    """A file system without hard links (vfat, some network mounts) still gets its lock; a lock
    that names this very process was left by a killed report whose pid came round again (a
    container's pid 1): stale, not 'another report'."""
    from finetune.reports import report_steps

    sweep = copy_of(report_sweep, tmp_path)
    lock = sweep / "report/.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))

    def no_links(*_):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(report_steps.os, "link", no_links)
    held = []
    with report_steps.report_lock(sweep):
        held.append(json.loads(lock.read_text()))
    assert held == [{"pid": os.getpid(), "host": socket.gethostname()}] and not lock.exists()


STEP_CHILD = """
import os, signal, sys, time
from pathlib import Path

def end(*_):
    time.sleep(1)  # ending takes a while: its log, its files
    Path(sys.argv[1]).write_text("ended")
    sys.exit(130)

Path(sys.argv[2]).write_text(str(os.getpid()))
signal.signal(signal.SIGINT, end if sys.argv[3] == "ends" else signal.SIG_IGN)
os.kill(os.getppid(), signal.SIGINT)  # Ctrl-C reaches the report...
os.kill(os.getpid(), signal.SIGINT)  # ...and its step: one process group
time.sleep(60)
"""


@pytest.mark.parametrize("child", ["ends", "ignores"])
def test_ctrl_c_waits_for_the_step_to_end_then_terminates_it(tmp_path, monkeypatch, child):
    """Ctrl-C during a step: the report waits for the step, which got the SIGINT too, to end
    (not 0.25 s, as Popen's context does); one that does not end in STOP_WAIT_S is terminated.
    Either way it is not running when the KeyboardInterrupt goes on."""
    from finetune.reports import report_steps

    monkeypatch.setattr(report_steps, "STOP_WAIT_S", 5.0 if child == "ends" else 0.5)
    ended, pid = tmp_path / "ended", tmp_path / "pid"
    argv = [sys.executable, "-c", STEP_CHILD, str(ended), str(pid), child]
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        report_steps.run_process("eval", argv, tmp_path / "metrics.json")
    with pytest.raises(ProcessLookupError):  # ended, and reaped
        os.kill(int(pid.read_text()), 0)
    assert ended.is_file() == (child == "ends") and time.monotonic() - started < 10


def test_an_interrupted_report_says_how_to_continue(report_sweep, tmp_path, monkeypatch):
    """Ctrl-C during a step of mode=report: its interrupted line names the step and says that
    the same command continues; the sweep's own report gives the mode=report command to run
    (not the sweep's, which would train again). The lock goes with the process."""
    from finetune.tasks import report as report_module

    def interrupted(*args):
        raise KeyboardInterrupt

    sweep = copy_of(report_sweep, tmp_path)
    shutil.rmtree(sweep / "report/analyze")
    monkeypatch.setattr(report_module, "_run_step", interrupted)
    with pytest.raises(KeyboardInterrupt) as raised:
        report_of(sweep, tmp_path / "run")
    assert str(raised.value) == (
        f"the report of {sweep} stopped at step 3/4 (analyze): run the same command again to "
        "continue where it stopped (the steps that finished are kept)"
    )
    assert f"interrupted: {raised.value}" in (tmp_path / "run/finetune.log").read_text()
    assert not (sweep / "report/.lock").exists()
    config = {"report": {"original": {}}, "hydra": {
        "sweep": {"dir": str(sweep)},
        "overrides": {"task": ["optimizer.lr=0.05,0.01", "analysis.num_images=6"], "hydra": []},
        "runtime": {"config_sources": []},
    }}  # fmt: skip
    with pytest.raises(KeyboardInterrupt, match=re.escape(
        f"(analyze): run python -m finetune mode=report sweep={sweep} analysis.num_images=6 to "
        "continue where it stopped"
    )):  # fmt: skip
        report_module.report_after_sweep(OmegaConf.create(config))


def test_a_sweep_over_another_setting_does_not_claim_a_learning_rate(report_sweep, tmp_path):
    """A sweep over optimizer.momentum: the comparison is headed with it and the original's
    learning rate is not compared as a choice: the report says the sweep did not choose it."""
    sweep = copy_of(report_sweep, tmp_path, report=False)
    for job, momentum in (("0", "0.9"), ("1", "0.5")):
        overrides = sweep / job / ".hydra/overrides.yaml"
        text = re.sub(r"optimizer\.lr=\S+", f"optimizer.momentum={momentum}", overrides.read_text())
        overrides.write_text(text)
        config = OmegaConf.load(sweep / job / ".hydra/config.yaml")
        config.optimizer.lr, config.optimizer.momentum = 0.01, float(momentum)
        OmegaConf.save(config, sweep / job / ".hydra/config.yaml")
    report_of(sweep, tmp_path / "run")

    report = (sweep / "report.md").read_text()
    assert "## Comparison of the runs (optimizer.momentum)" in report
    figure = "report/figures/lr_comparison.png"  # drawn anew: its legend names the momentum
    assert (sweep / figure).read_bytes() != (report_sweep[0] / figure).read_bytes()
    winner = table(report, "| winner")[0][0]
    momentum = winner.split("=")[1].rstrip(")")
    measures = {row[0]: row for row in table(report, "| figure | original")}
    assert measures["learning rate (not swept)"][1:3] == ["not stated", "0.01"]
    assert "learning rate chosen" not in measures and "this sweep chose" not in report
    assert (
        "This sweep did not choose the learning rate: it varied optimizer.momentum (every run "
        "trained with 0.01; the original's learning rate: not stated); rank 1 by val/map: "
        f"`optimizer.momentum={momentum}`."
    ) in report


def test_a_sweep_from_scratch_is_not_called_fine_tuned(report_sweep):
    """The session's sweep trained from random weights (model.weights=none): the summary, the
    feature statistics and the comparison with the original (which fine-tuned ImageNet weights)
    say so."""
    report = (report_sweep[0] / "report.md").read_text()
    summary, features, original = (
        re.search(rf"{start}(.*?)\n## ", report, flags=re.DOTALL).group(1)
        for start in ("Sweep `", "## Feature statistics", "## Against the original report")
    )
    assert ", trained from random weights (model.weights=none), ranked by val/map" in summary
    assert (
        "for the model of the winner, trained from random weights (model.weights=none) and named "
        "`fine-tuned`, and the ImageNet-pretrained one"
    ) in features
    assert (
        "The original fine-tuned an ImageNet-pretrained network; this sweep's model was trained "
        "from random weights (model.weights=none)"
    ) in original


def test_fine_tuned_minus_pretrained_is_rounded_once(report_sweep, tmp_path):
    """12.3456 % - 12.0044 % = 0.3412 points: 0.34, not 12.35 - 12.00 = 0.35."""
    sweep = copy_of(report_sweep, tmp_path, report=False)
    stats_file = sweep / "report/analyze/feature_stats.json"
    stats = json.loads(stats_file.read_text())
    first = stats["results"][0]  # fine-tuned x the first dataset x the first module
    for result in stats["results"]:
        if (result["dataset"], result["module"]) == (first["dataset"], first["module"]):
            tuned = result["model"] == "fine-tuned"
            result["nonpositive_fraction"] = 0.123456 if tuned else 0.120044
    stats_file.write_text(json.dumps(stats))
    report_of(sweep, tmp_path / "run")
    rows = table((sweep / "report.md").read_text(), "| dataset | layer1.0.conv1")
    assert rows[0][:2] == [first["dataset"], "0.34"]


def test_small_numbers_and_legends_read_plainly(report_sweep):
    """The reproduction's differences and tolerance as 0 and 1e-06 (not 0.00000100), the winner
    card with the full swept key, and what the spectrum legends count."""
    report = (report_sweep[0] / "report.md").read_text()
    (row,) = table(report, "| max abs difference")
    assert (row[0], row[3]) == ("0", "1e-06") and "(tolerance 1e-06)" in report
    assert "0.000000" not in report
    assert re.match(r"run \d \(optimizer\.lr=0\.0\d\)", table(report, "| winner")[0][0])
    assert "legend entry ends with how many eigenvalues are drawn of the module's channels" in (
        report
    )


@pytest.mark.slow  # the report of the one-command sweep, then chromium
def test_report_html_in_a_real_headless_browser(one_command_sweep, tmp_path):
    """Debian's chromium renders report.html offline: a full-page screenshot that is not blank."""
    chromium = shutil.which("chromium") or pytest.skip("needs chromium (apt-get install chromium)")
    sweep, _ = one_command_sweep
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1280,2000", (sweep / "report.html").as_uri()],
        env=cli_env(), capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2000, 1280) and pixels.std() > 20  # text, tables and figures
    assert (pixels < 128).mean() > 0.01  # dark ink on the page (a blank page: std 0, no ink)
