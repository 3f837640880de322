"""The `logger` config group: TensorBoard by default, CSV and MLflow on demand, several at once;
every logger receives the same metrics (read back with each tool's own reader); the learning rate
is a train/ curve, and each run has an entry in TensorBoard's HParams tab."""

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
    assert {"train/loss_step", "train/loss", "val/map", "val/acc/forest", "train/lr"} <= set(board)
    board = {tag: points for tag, points in board.items() if not tag.startswith("best/")}  # HParams
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
    said = f"no TensorBoard logs in {train_dir / 'tensorboard'}, the training run of "
    assert said in (eval_dir / "finetune.log").read_text()
    figures = {path.name for path in eval_dir.rglob("*.png")}
    assert "confusion_matrix.png" in figures and "training_curves.png" not in figures


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "tags"),
    [
        ({"name": "sgd", "lr": 0.1}, {"name": "none"}, ["train/lr"]),
        (
            {"name": "adamw", "lr": 0.1, "betas": [0.9, 0.999], "backbone_lr_mult": 0.1},
            {"name": "cosine"},
            ["train/lr/backbone", "train/lr/head"],
        ),
    ],
    ids=["no-scheduler", "two-groups"],
)
def test_the_learning_rate_is_logged_among_the_train_curves(tmp_path, optimizer, scheduler, tags):
    """Lightning's learning-rate monitor names a rate lr-<optimizer class> (lr-SGD/head with
    param groups), outside every group of cards: it is train/lr, also without a scheduler."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import TensorBoardLogger
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader, TensorDataset

    from finetune.model import ImageClassifier

    network = OmegaConf.to_container(compose_config("model.weights=none").model, resolve=True)
    model = ImageClassifier(["a", "b"], network, optimizer, scheduler, {})
    trainer = L.Trainer(
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="", version=""),
        callbacks=[LearningRateMonitor(logging_interval="epoch")],
        max_epochs=1,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    images = TensorDataset(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    trainer.fit(model, DataLoader(images, batch_size=2))
    assert sorted(tag for tag in tensorboard_series(tmp_path) if "lr" in tag) == tags


def test_a_run_has_an_hparams_entry_with_its_settings_and_final_figures(tmp_path):
    """One job of `-m optimizer=adamw optimizer.lr=1e-2,1e-3`: its HParams session holds the
    overridden keys and the main training keys as the run used them (a resumed run's settings
    win over the command line's) and the val and test figures of the selected epoch; read back
    through TensorBoard's own event reader and HParams plugin data."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf
    from tensorboard.plugins.hparams import metadata

    from finetune.loggers import log_hparams_session, training_loggers
    from finetune.reports.eval_figures import read_training_curves

    overrides = ["optimizer=adamw", "optimizer.lr=1e-2", "trainer.enable_progress_bar=false"]
    composed = compose_config(*overrides, "hydra.run.dir=x", hydra_node=True)
    cfg = OmegaConf.masked_copy(composed, [key for key in composed if key != "hydra"])
    settings = {group: OmegaConf.to_container(cfg[group]) for group in ("model", "data")}
    settings["optimizer"] = OmegaConf.to_container(cfg.optimizer) | {"lr": 0.002}  # resumed
    settings["scheduler"] = {"name": "cosine", "eta_min": 0.0}
    results = {
        "val": {"val/map": 0.75, "val/acc_mean": 0.5, "val/ap/forest": 0.25},
        "test": {"test/map": 0.625, "test/acc_mean": 0.375},
    }
    saved, HydraConfig.instance().cfg = HydraConfig.instance().cfg, None
    try:
        HydraConfig.instance().set_config(composed)
        loggers = training_loggers(cfg, tmp_path)
        log_hparams_session(loggers, cfg, settings, results)
    finally:
        HydraConfig.instance().cfg = saved

    folder = tmp_path / "tensorboard"
    events = EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    session = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG]
    )
    hparams = {
        key: value.number_value if value.HasField("number_value") else value.string_value
        for key, value in session.hparams.items()
    }
    assert hparams == {
        "model.arch": "resnet18",
        "model.weights": "imagenet",
        "optimizer": "adamw",
        "optimizer.name": "adamw",
        "optimizer.lr": pytest.approx(0.002),
        "optimizer.weight_decay": pytest.approx(0.05),
        "scheduler.name": "cosine",
        "data.loader.batch_size": 32,
        "trainer.max_epochs": 10,
        "trainer.enable_progress_bar": "false",  # not 0: torch's summary makes a bool a number
        "seed": 42,
    }
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    final = ["best/val/map", "best/val/acc_mean", "best/test/map", "best/test/acc_mean"]
    assert [info.name.tag for info in experiment.metric_infos] == final
    series = tensorboard_series(folder)
    assert {tag: list(points.values()) for tag, points in series.items()} == {
        "best/val/map": [0.75],
        "best/val/acc_mean": [0.5],
        "best/test/map": [0.625],
        "best/test/acc_mean": [0.375],
    }
    assert read_training_curves(folder) == {}  # no epoch of the fit: not a training curve


def test_the_run_a_stopped_run_resumed_is_read_as_hydra_reads_its_command_line(tmp_path):
    """A run stopped with Ctrl-C has no metrics.json: the run it resumed comes from its
    resume= override, quoted where the path needs it (a space), as the resume hint writes it."""
    from finetune.loggers import resumed_run

    first = tmp_path / "my runs" / "first"
    first.mkdir(parents=True)
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- resume='{first}'\n- optimizer.lr=0.1\n")
    assert resumed_run(run, None) == first
