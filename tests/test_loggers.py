"""The `logger` config group: TensorBoard by default, CSV and MLflow on demand, several at once;
every logger receives the same metrics (read back with each tool's own reader)."""

import csv
import json
import math
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from test_train import train_in_process

from conftest import TINY, compose_config, run_in_process

TRAIN = [
    "data.split.test=6",
    "data.split.val=12",
    "model.weights=none",
    "optimizer.lr=0.05",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",  # one train/loss_step point an epoch
    "trainer.log_every_n_steps=2",
    "train_eval_images=8",
    *TINY,
]

Series = dict[str, dict[int, float]]  # tag -> {step: value}


def tensorboard_series(folder: Path) -> Series:
    series: Series = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                series.setdefault(tag, {})[event.step] = event.value
    return series


def csv_series(path: Path) -> Series:
    series: Series = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            for tag, value in row.items():
                if tag != "step" and value != "":
                    series.setdefault(tag, {})[int(row["step"])] = float(value)
    return series


def mlflow_series(tracking_uri: str, run_name: str) -> Series:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("finetune")
    (run,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'"
    )
    return {
        tag: {m.step: m.value for m in client.get_metric_history(run.info.run_id, tag)}
        for tag in run.data.metrics
    }


def test_default_logger_is_tensorboard_in_the_run_folder(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from finetune.loggers import training_loggers

    (logger,) = training_loggers(compose_config(), tmp_path)
    assert isinstance(logger, TensorBoardLogger)
    assert Path(logger.log_dir) == tmp_path / "tensorboard"  # where mode=eval reads the curves
    assert training_loggers(compose_config("logger=[]"), tmp_path) == []


def test_every_logger_receives_the_same_metrics(tmp_path, monkeypatch, scene_root):
    monkeypatch.chdir(tmp_path)  # outputs/mlflow.db is relative to the working directory
    run_dir = tmp_path / "outputs" / "train" / "run"
    results = train_in_process(
        run_dir, f"data.root={scene_root}", "logger=[tensorboard,csv,mlflow]", *TRAIN
    )

    board = tensorboard_series(run_dir / "tensorboard")
    table = csv_series(run_dir / "csv" / "metrics.csv")
    tracked = mlflow_series(f"sqlite:///{tmp_path}/outputs/mlflow.db", "outputs/train/run")
    assert {"train/loss_step", "train/loss", "val/map", "val/acc/forest", "lr-SGD"} <= set(board)
    assert set(table) == set(board) == set(tracked)
    for tag, points in board.items():
        assert table[tag].keys() == points.keys() == tracked[tag].keys(), tag
        for step, value in points.items():  # TensorBoard keeps float32, the others float64
            assert math.isclose(table[tag][step], value, rel_tol=1e-6, abs_tol=1e-7), tag
            assert math.isclose(tracked[tag][step], value, rel_tol=1e-6, abs_tol=1e-7), tag
    # the selected epoch's score, as train reports it, is the best val/map each logger holds
    assert results["monitor"]["value"] == pytest.approx(max(tracked["val/map"].values()))
    assert len(tracked["val/map"]) == 2


def test_missing_mlflow_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    from finetune.errors import UserError
    from finetune.loggers import training_loggers

    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` sees when absent
    with pytest.raises(UserError) as error:
        training_loggers(compose_config("logger=[tensorboard,mlflow]"), tmp_path)
    assert "\n" not in str(error.value)
    assert "logger=mlflow needs the mlflow package: pip install -e '.[mlflow]'" in str(error.value)


@pytest.mark.parametrize(
    ("logger", "override", "message"),
    [
        (
            "csv",
            "+logger.csv.flush_every=3",
            r"logger\.csv rejected by .*CSVLogger: .*'flush_every'",
        ),
        ("csv", "+logger.wandb.project=x", r"logger\.wandb has no _target_: choose logger="),
        # TensorBoardLogger passes unknown keys on to the SummaryWriter it makes at the first log
        ("tensorboard", "+logger.tensorboard.bogus=1", r"TensorBoardLogger: .*'bogus'"),
    ],
)
def test_a_logger_config_lightning_cannot_take_is_one_line(tmp_path, logger, override, message):
    from finetune.errors import UserError
    from finetune.loggers import training_loggers

    with pytest.raises(UserError, match=message) as error:
        training_loggers(compose_config(f"logger={logger}", override), tmp_path)
    assert "\n" not in str(error.value)


def test_no_logger_trains_and_its_eval_says_there_are_no_training_logs(tmp_path, scene_root):
    """`logger=[]`: no learning-rate monitor (Lightning refuses one without a logger), no
    tensorboard/ folder; the run still selects, tests and exports its best epoch, and an eval of
    its model says it found no training curves."""
    train_dir, eval_dir = tmp_path / "train", tmp_path / "eval"
    results = train_in_process(train_dir, f"data.root={scene_root}", "logger=[]", *TRAIN)
    metrics = json.loads((train_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == results["best_epoch"] and metrics["test"]["test/map"] >= 0
    assert (train_dir / "best_model.pt").is_file() and not (train_dir / "tensorboard").exists()

    run_in_process(
        "mode=eval", f"ckpt={train_dir / 'best_model.pt'}", f"hydra.run.dir={eval_dir}", *TINY
    )
    assert "no TensorBoard logs beside" in (eval_dir / "finetune.log").read_text()
    figures = {path.name for path in eval_dir.rglob("*.png")}
    assert "confusion_matrix.png" in figures and "training_curves.png" not in figures
