"""The sweep summary (a Hydra callback at the end of -m), on sweep folders built by hand: failed
runs are listed as failed, NaN ranks last, and the summary claims only the copy it made. Then
whole sweeps through main() with a fast stand-in for training: a run that crashes, and Ctrl-C."""

import csv
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from finetune import run
from finetune.errors import UserError
from finetune.sweep import SweepSummary

from conftest import run_main


def job(root: Path, name: str, value: float | None, mode: str = "max", model: bytes = b"") -> Path:
    """A job folder as a sweep leaves it; value None = the run failed (no metrics.json)."""
    folder = root / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- optimizer.lr=0.{name}\n")
    if value is not None:
        metrics = {
            "monitor": {"name": "val/map", "mode": mode, "value": value},
            "val": {"val/acc_mean": 0.5},
            "test": {"test/map": 0.25},
        }
        (folder / "metrics.json").write_text(json.dumps(metrics, allow_nan=True))
    if model:
        (folder / "best_model.pt").write_bytes(model)
    return folder


def summarize(root: Path) -> None:
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(root)}}}))


def read_summary(root: Path) -> tuple[list[dict], str]:
    with (root / "sweep_summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return rows, (root / "sweep_summary.md").read_text()


@pytest.mark.parametrize(("mode", "order"), [("max", ["3", "10", "0"]), ("min", ["0", "10", "3"])])
def test_ranked_by_mode_nan_last_failed_listed(tmp_path, capsys, mode, order):
    values = {"0": 0.25, "1": math.nan, "2": None, "3": 0.75, "4": math.nan, "10": 0.5}
    for name, value in values.items():
        job(tmp_path, name, value, mode, model=f"model {name}".encode())
    (tmp_path / ".submitit").mkdir()  # a launcher's folder, not a job
    (tmp_path / "multirun.yaml").write_text("{}")
    with pytest.raises(SystemExit) as exited:
        summarize(tmp_path)
    assert exited.value.code == 2
    rows, report = read_summary(tmp_path)
    assert [row["run"] for row in rows] == [*order, "1", "4", "2"]
    assert [row["rank"] for row in rows] == ["1", "2", "3", "4", "5", ""]
    assert [row["status"] for row in rows] == ["ok"] * 3 + ["nan", "nan", "failed"]
    assert rows[0]["overrides"] == f"optimizer.lr=0.{order[0]}"
    assert float(rows[0]["value"]) == values[order[0]] and math.isnan(float(rows[3]["value"]))
    assert rows[5]["value"] == "" and rows[5]["monitor"] == ""
    assert (tmp_path / "best_model.pt").read_bytes() == f"model {order[0]}".encode()
    assert f"Winner: run {order[0]} (optimizer.lr=0.{order[0]})" in report
    assert f"copied to {tmp_path / 'best_model.pt'}" in report
    assert "| 5 | 4 | nan |" in report and "|  | 2 | failed |" in report
    assert "Failed (no metrics.json; see their finetune.log): run 2." in report
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "1 of 6 runs failed (run 2)" in errors[0]


def test_the_markdown_table_shows_what_the_sweep_varied(tmp_path, capsys):
    """sweep_summary.md: the overrides every run shares once below the table, each row only
    what differs; sweep_summary.csv keeps each run's full overrides."""
    for name, value in (("0", 0.25), ("1", 0.75)):
        folder = job(tmp_path, name, value)
        (folder / ".hydra" / "overrides.yaml").write_text(
            f"- data.root=/data/scenes\n- optimizer.lr=0.{name}\n- trainer.max_epochs=3\n"
        )
    summarize(tmp_path)
    rows, report = read_summary(tmp_path)
    assert rows[0]["overrides"] == "data.root=/data/scenes optimizer.lr=0.1 trainer.max_epochs=3"
    assert "| 1 | 1 | ok | optimizer.lr=0.1 | val/map |" in report
    assert "| 2 | 0 | ok | optimizer.lr=0.0 | val/map |" in report
    assert "Every run: data.root=/data/scenes trainer.max_epochs=3 (sweep_summary.csv" in report
    assert "Winner: run 1 (optimizer.lr=0.1), val/map = 0.7500" in report  # what it varied only


def test_winner_without_best_model_is_said_not_copied(tmp_path):
    job(tmp_path, "0", 0.9)
    job(tmp_path, "1", 0.1, model=b"loser")
    summarize(tmp_path)
    rows, report = read_summary(tmp_path)
    assert rows[0]["run"] == "0" and rows[0]["status"] == "ok"
    assert not (tmp_path / "best_model.pt").exists()
    assert "nothing was copied" in report and "is copied" not in report


def test_existing_best_model_in_the_sweep_root_is_kept(tmp_path):
    job(tmp_path, "0", 0.9, model=b"winner")
    (tmp_path / "best_model.pt").write_bytes(b"earlier")
    summarize(tmp_path)
    rows, report = read_summary(tmp_path)
    assert (tmp_path / "best_model.pt").read_bytes() == b"earlier"
    assert "already exists and is kept" in report and "is copied" not in report
    assert not list(tmp_path.glob(".best_model.pt.*"))  # no temporary file left behind


def test_no_finished_run_means_no_winner(tmp_path):
    job(tmp_path, "0", None)
    job(tmp_path, "1", math.nan, model=b"nan model")
    with pytest.raises(SystemExit):
        summarize(tmp_path)
    rows, report = read_summary(tmp_path)
    assert [(row["run"], row["status"], row["rank"]) for row in rows] == [
        ("1", "nan", "1"),
        ("0", "failed", ""),
    ]
    assert "No winner" in report and not (tmp_path / "best_model.pt").exists()


@pytest.mark.parametrize(
    ("mode", "last_file"),
    [
        ("eval", "metrics.json"),
        ("analyze", "feature_stats.json"),
        ("predict", "predictions.csv"),
        ("export", "model.onnx.json"),
    ],
)
def test_a_sweep_of_another_mode_lists_its_runs_done_or_failed(tmp_path, capsys, mode, last_file):
    """`-m mode=eval ckpt=a,b`: a run that wrote its mode's last file is done (nothing to rank,
    no winner, exit 0); one that did not is failed, and only then does the sweep exit 2."""
    for name in ("0", "1"):
        folder = job(tmp_path, name, None)
        (folder / ".hydra" / "config.yaml").write_text(f"mode: {mode}\n")
        (folder / last_file).write_text("{}")
    (tmp_path / "multirun.yaml").write_text("{}")
    summarize(tmp_path)  # no SystemExit: every run is done
    rows, report = read_summary(tmp_path)
    assert [(row["run"], row["status"], row["rank"]) for row in rows] == [
        ("0", "done", ""),
        ("1", "done", ""),
    ]
    assert "Nothing to rank" in report and not (tmp_path / "best_model.pt").exists()
    assert not capsys.readouterr().err
    with pytest.raises(UserError, match="is not a sweep of trainings"):
        run(
            [
                "mode=report",
                f"sweep={tmp_path}",
                f"hydra.run.dir={tmp_path.parent / (tmp_path.name + '-report')}",
            ]
        )

    (tmp_path / "1" / last_file).unlink()
    for summary in tmp_path.glob("sweep_summary.*"):
        summary.unlink()
    with pytest.raises(SystemExit):
        summarize(tmp_path)
    rows, _ = read_summary(tmp_path)
    assert [row["status"] for row in rows] == ["done", "failed"]
    assert "1 of 2 runs failed (run 1)" in capsys.readouterr().err


def test_report_after_the_sweep_when_the_config_asks_and_its_error_joins_the_line(tmp_path, capsys):
    """experiment=report sets report.after_sweep: the report is attempted after the summary;
    a report that cannot be made is said in the sweep's one error line."""
    job(tmp_path, "0", 0.9)  # the winner, but its best_model.pt is missing
    job(tmp_path, "1", None)
    hydra = {  # what Hydra records of the command line: its overrides and config sources
        "sweep": {"dir": str(tmp_path)},
        "overrides": {"task": ["optimizer.lr=1,2"], "hydra": []},
        "runtime": {"config_sources": []},
    }
    config = {"hydra": hydra, "report": {"after_sweep": True, "original": {}}}
    with pytest.raises(SystemExit) as exited:
        SweepSummary().on_multirun_end(OmegaConf.create(config))
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "1 of 2 runs failed (run 1)" in errors[0]
    assert "the report stopped: the sweep's winner has no best_model.pt" in errors[0]
    assert (tmp_path / "sweep_summary.md").is_file() and not (tmp_path / "report").exists()


def test_ctrl_c_in_the_report_after_the_sweep_is_said_in_one_line(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the sweep's own report runs: its interrupted line (which says how to go on)
    is printed, and the interrupt goes on to main(), which exits 130."""
    import finetune.tasks.report

    def interrupted(config):
        raise KeyboardInterrupt("the report of the sweep stopped at step 1/4 (eval): run ...")

    monkeypatch.setattr(finetune.tasks.report, "report_after_sweep", interrupted)
    job(tmp_path, "0", 0.9, model=b"winner")
    config = {"hydra": {"sweep": {"dir": str(tmp_path)}}, "report": {"after_sweep": True}}
    with pytest.raises(KeyboardInterrupt):
        SweepSummary().on_multirun_end(OmegaConf.create(config))
    assert capsys.readouterr().err == (
        "interrupted: the report of the sweep stopped at step 1/4 (eval): run ...\n"
    )


def seed_job(root: Path, name: str, value: float, seed: int, val: list[str], split_seed: str):
    """A finished training of `-m seed=...` as it leaves its folder: its config as Hydra saved it
    (data.split.seed = split_seed, `${seed}` by default) and split.csv, `val` its val images."""
    folder = job(root, name, value, model=f"model {name}".encode())
    (folder / ".hydra" / "overrides.yaml").write_text(f"- data.root=/data/scenes\n- seed={seed}\n")
    split = {"test": 2, "val": 2, "seed": split_seed}
    config = {"mode": "train", "seed": seed, "data": {"root": "/data/scenes", "split": split}}
    OmegaConf.save(OmegaConf.create(config), folder / ".hydra" / "config.yaml")
    images = [f"sea/{k}.jpg" for k in range(6)]
    rows = [[image, "sea", "val" if image in val else "train"] for image in images]
    with (folder / "split.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], *rows])
    return folder


def test_runs_validated_on_different_images_are_listed_without_a_winner(
    tmp_path, caplog, monkeypatch
):
    """`-m seed=1,2 data.split.seed=7`: one split (split.csv compared, not the seeds), a winner.
    `-m seed=1,2,3`: data.split.seed follows seed, so the runs' val rows differ (run 2's are run
    0's in another order): the values are listed, but no winner is named or copied, and the
    summary says which runs differ and why. The report is still built (it says the same)."""
    import finetune.tasks.report

    fixed, follows = tmp_path / "fixed", tmp_path / "follows"
    for name, value, seed in (("0", 0.3303, 1), ("1", 0.5466, 2)):
        seed_job(fixed, name, value, seed, ["sea/4.jpg", "sea/5.jpg"], "7")
    summarize(fixed)
    assert "Winner: run 1 (seed=2), val/map" in read_summary(fixed)[1]
    assert (fixed / "best_model.pt").read_bytes() == b"model 1"

    reports = []
    monkeypatch.setattr(finetune.tasks.report, "report_after_sweep", reports.append)
    seed_job(follows, "0", 0.3303, 1, ["sea/0.jpg", "sea/1.jpg"], "${seed}")
    seed_job(follows, "1", 0.5466, 2, ["sea/2.jpg", "sea/3.jpg"], "${seed}")
    folder = seed_job(follows, "2", 0.25, 3, ["sea/0.jpg", "sea/1.jpg"], "${seed}")
    rows = (folder / "split.csv").read_text().splitlines()
    (folder / "split.csv").write_text("\n".join([rows[0], *reversed(rows[1:])]) + "\n")
    config = {"hydra": {"sweep": {"dir": str(follows)}}, "report": {"after_sweep": True}}
    with caplog.at_level("INFO"):
        SweepSummary().on_multirun_end(OmegaConf.create(config))  # no SystemExit: a result
    rows, summary = read_summary(follows)
    assert [(row["run"], row["rank"], row["value"]) for row in rows] == [
        ("1", "1", "0.5466"),
        ("0", "2", "0.3303"),
        ("2", "3", "0.25"),
    ]
    assert "| 1 | 1 | ok | seed=2 | val/map | 0.5466 |" in summary
    verdict = (
        "No winner: run 1 (seed=2) has the best val/map, 0.5466, but the "
        "values are not a fair comparison: the runs were validated on different images (runs 0, "
        "2 | run 1: the val rows of their split.csv differ), as data.split.seed differs "
        "(${seed} = 1, ${seed} = 2, ${seed} = 3): fix data.split.seed=<n> or give "
        "data.manifest=<one run's split.csv> to compare them on one split. Nothing was copied."
    )
    assert verdict in summary and "Winner" not in summary
    assert verdict in caplog.text
    assert not (follows / "best_model.pt").exists()
    assert len(reports) == 1


def fake_train(crash: dict[float, BaseException]):
    """A stand-in for mode=train, fast: it writes what a finished run leaves (metrics.json and
    best_model.pt, its monitored value = its learning rate), or raises crash[lr]."""
    from finetune.tasks import run_folder

    def train(cfg) -> dict:
        lr = cfg.optimizer.lr
        if lr in crash:
            raise crash[lr]
        metrics = {"monitor": {"name": "val/map", "mode": "max", "value": lr}}
        (run_folder() / "metrics.json").write_text(json.dumps(metrics))
        (run_folder() / "best_model.pt").write_bytes(f"model {lr}".encode())
        return metrics

    return train


def sweep_with(monkeypatch, capsys, folder: Path, root: Path, crash: dict[float, BaseException]):
    """`python -m finetune -m optimizer.lr=0.3,0.2,0.1 ...` through main() in this process, each
    run's training replaced by fake_train(crash)."""
    import finetune.tasks

    monkeypatch.setattr(finetune.tasks, "_task", lambda mode: fake_train(crash))
    overrides = [f"data.root={root}", "optimizer.lr=0.3,0.2,0.1", "hydra.sweep.dir=sweep"]
    return run_main("-m", *overrides, cwd=folder, capsys=capsys)


def test_a_crashing_run_is_a_failed_run_and_the_sweep_still_ends_with_its_summary(
    tmp_path, monkeypatch, capsys, scene_root
):
    """A bug in one run (not a user error) is said in one line naming its log, which holds the
    traceback; the other runs go on, the summary lists it as failed, the winner is copied, the
    sweep exits 2. (Hydra's sweepers re-raise it after the last run: no summary, status 1.)"""
    crash = {0.2: RuntimeError("tensor sizes do not match\n  at layer 4")}
    result = sweep_with(monkeypatch, capsys, tmp_path, scene_root, crash)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0] == (
        "error: run 1 crashed: RuntimeError: tensor sizes do not match at layer 4 "
        "(traceback in sweep/1/finetune.log)"
    )
    assert "1 of 3 runs failed (run 1)" in errors[1] and len(errors) == 2, errors
    log = (tmp_path / "sweep" / "1" / "finetune.log").read_text()
    assert "Traceback (most recent call last)" in log and "in train\n" in log
    assert "RuntimeError: tensor sizes do not match" in log
    rows, report = read_summary(tmp_path / "sweep")
    assert [(row["run"], row["status"]) for row in rows] == [
        ("0", "ok"),
        ("2", "ok"),
        ("1", "failed"),
    ]
    assert (tmp_path / "sweep" / "best_model.pt").read_bytes() == b"model 0.3"
    assert "Failed (no metrics.json; see their finetune.log): run 1." in report


def test_a_crash_without_a_log_file_prints_its_traceback(tmp_path, monkeypatch, capsys, scene_root):
    """hydra/job_logging=disabled writes no finetune.log: the crash's traceback goes to the
    console, and its line says so instead of naming a file that is not there."""
    import finetune.tasks

    crash = {0.2: RuntimeError("tensor sizes do not match")}
    monkeypatch.setattr(finetune.tasks, "_task", lambda mode: fake_train(crash))
    overrides = [f"data.root={scene_root}", "optimizer.lr=0.3,0.2", "hydra.sweep.dir=sweep"]
    result = run_main("-m", *overrides, "hydra/job_logging=disabled", cwd=tmp_path, capsys=capsys)
    assert result.returncode == 2, result.stderr
    assert not (tmp_path / "sweep" / "1" / "finetune.log").exists()
    assert "Traceback (most recent call last)" in result.stderr
    assert "error: run 1 crashed: RuntimeError: tensor sizes do not match (traceback above)" in (
        result.stderr
    )


def test_ctrl_c_in_a_sweep_summarizes_the_runs_that_had_started_and_exits_130(
    tmp_path, monkeypatch, capsys, scene_root
):
    """Ctrl-C during run 1 stops the sweep (run 2 never starts); the summary of runs 0 and 1 is
    written anyway (Hydra skips on_multirun_end), saying it was interrupted."""
    result = sweep_with(monkeypatch, capsys, tmp_path, scene_root, {0.2: KeyboardInterrupt()})
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-2] == "interrupted: mode=train stopped before it finished"
    assert lines[-1] == (
        "interrupted: the sweep's runs that had started are summarized in sweep/sweep_summary.md"
    )
    assert not (tmp_path / "sweep" / "2").exists()
    rows, report = read_summary(tmp_path / "sweep")
    assert [(row["run"], row["status"]) for row in rows] == [("0", "ok"), ("1", "failed")]
    assert (tmp_path / "sweep" / "best_model.pt").read_bytes() == b"model 0.3"
    assert report.rstrip().endswith("a run that had not finished is listed as failed.")
    assert "interrupted: mode=train" in (tmp_path / "sweep" / "1" / "finetune.log").read_text()
