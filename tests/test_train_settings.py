"""mode=train's refusals come before the work they would waste: trainer settings Lightning
rejects before the data is read (and before split.csv and an empty TensorBoard run are written),
a resume= checkpoint that is not there or cut short before the run folder is made, a resumed run
with no epoch or time left before the data; and metrics.json says why a training stopped.

Nothing here trains except the last test (two runs of a few batches): the checkpoints resumed
from are written by torch.save with only what the refusals read."""

import json
import warnings
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from finetune.errors import UserError
from finetune.resume import RESUMED_KEYS
from test_train import SCENE, train_in_process

from conftest import SCENE_CLASSES, TINY, assert_run_refuses, compose_config

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a CUDA GPU here")
NO_XLA = pytest.mark.skipif(bool(find_spec("torch_xla")), reason="torch_xla is installed here")


def refused_in(run_dir: Path, scene_root: Path, *overrides: str):
    """`run(mode=train ...)` into `run_dir` raises one UserError line; returns its checker."""
    return assert_run_refuses(
        f"data.root={scene_root}", *SCENE, *TINY, *overrides, f"hydra.run.dir={run_dir}"
    )


@pytest.mark.parametrize(
    ("override", "words"),
    [
        pytest.param(
            "trainer.accelerator=tpu",
            ["rejected by Lightning", "torch_xla", "not installed"],
            marks=NO_XLA,
        ),
        ("trainer.precision=transformer-engine", ["transformer_engine", "not installed"]),
        ("trainer.devices=0", ["rejected by Lightning", "devices=0"]),
        ("trainer.strategy=fsdp", ["rejected by Lightning", "fsdp"]),
        pytest.param("trainer=gpu", ["no GPU is usable here"], marks=NO_CUDA),
    ],
    ids=["tpu", "transformer-engine", "no-devices", "fsdp", "no-cuda"],
)
def test_trainer_settings_lightning_rejects_are_said_before_the_data(
    user_folder, scene_root, override, words
):
    """One line (an optional package Lightning needs, such as torch_xla, included), said before
    the images are decode-checked: no split.csv and no TensorBoard events file (an empty run in
    TensorBoard) are left behind."""
    run_dir = user_folder / "run"
    refused_in(run_dir, scene_root, override)(*words)
    assert not (run_dir / "split.csv").exists()
    assert not (run_dir / "tensorboard").exists()
    assert "decode" not in (run_dir / "finetune.log").read_text()


@NO_CUDA
def test_no_gpu_for_ddp_names_ddp_over_cpu_processes(tmp_path):
    from finetune.trainer import build_trainer

    cfg = compose_config("trainer=ddp", "trainer.precision=32-true")
    with pytest.raises(UserError) as raised:
        build_trainer(cfg, tmp_path)
    message = str(raised.value)
    assert "use trainer=cpu" in message
    assert "trainer=ddp trainer.accelerator=cpu: DDP over CPU processes" in message


def test_a_checkpoint_that_cannot_be_resumed_is_said_before_the_run_folder(user_folder, scene_root):
    """A run folder without checkpoints is named as such (its run stopped before its first epoch
    ended), a file cut short as cut short; where last.ckpt is missing or damaged, the run's
    intact best-epoch checkpoint is named as the way on. Nothing is made (no run folder)."""
    stopped = user_folder / "stopped"
    (stopped / ".hydra").mkdir(parents=True)
    whole = user_folder / "whole.ckpt"
    torch.save({"epoch": 1}, whole)
    cut = user_folder / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    damaged, lost = user_folder / "damaged", user_folder / "lost"
    for run in (damaged, lost):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "epoch001.ckpt").write_bytes(whole.read_bytes())
    (damaged / "checkpoints" / "last.ckpt").write_bytes(cut.read_bytes())
    sharded = user_folder / "sharded"  # folders named .ckpt (DeepSpeed's): not this package's
    for name in ("last.ckpt", "epoch001.ckpt"):
        (sharded / "checkpoints" / name).mkdir(parents=True)
    intact = "the best epoch's checkpoint beside it is intact: resume={}/checkpoints/epoch001.ckpt"
    cases = [
        (stopped, ["resume=stopped holds no checkpoint", "stopped before its first epoch ended"]),
        (cut, ["resume=cut.ckpt is not a Lightning checkpoint file: it is cut short"]),
        (damaged, ["damaged/checkpoints/last.ckpt", "cut short", intact.format("damaged")]),
        (lost, ["resume=lost has no checkpoints/last.ckpt", intact.format("lost")]),
        (sharded, ["resume=sharded holds no checkpoint"]),
    ]
    for number, (resume, words) in enumerate(cases):
        run_dir = user_folder / f"run{number}"
        given = resume.relative_to(user_folder)
        refused_in(run_dir, scene_root, f"resume={given}")(*words)
        assert not run_dir.exists()


def _resumable(path: Path, scene_root: Path, epoch: int, callbacks: dict) -> Path:
    """A Lightning training checkpoint of this project's run as far as a resume reads it before
    Lightning does: its epoch, settings, classes and callback states."""
    cfg = compose_config(f"data.root={scene_root}", *SCENE, *TINY)
    hparams = {group: OmegaConf.to_container(cfg[group], resolve=True) for group in RESUMED_KEYS}
    torch.save(
        {
            "epoch": epoch,
            "global_step": 6 * (epoch + 1),  # six batches an epoch
            "optimizer_states": [],
            "loops": {},
            "callbacks": callbacks,
            "hyper_parameters": {**hparams, "class_names": SCENE_CLASSES},
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    ("overrides", "epoch", "callbacks", "words"),
    [
        (
            ["trainer.max_epochs=2"],
            1,
            {},
            ["has trained 2 epoch(s)", "trainer.max_epochs=2 counts from the start", "than 2"],
        ),
        (
            ["trainer.max_epochs=5", "+trainer.max_time=00:00:01:00"],
            0,
            {"Timer": {"time_elapsed": {"train": 90.0}}},
            ["has trained for 0:01:30", "trainer.max_time limits the whole training"],
        ),
        (
            ["trainer.max_epochs=5", "trainer.max_steps=12"],
            1,
            {},
            ["has trained 12 step(s)", "trainer.max_steps=12 counts from the start"],
        ),
    ],
    ids=["no-epoch-left", "no-time-left", "no-step-left"],
)
def test_a_resumed_run_with_nothing_left_to_train_is_refused(
    user_folder, scene_root, overrides, epoch, callbacks, words
):
    """trainer.max_epochs and trainer.max_time count the whole training, resumes included: a
    resumed run that would train nothing (then export the earlier best as new) is refused
    before the data is read."""
    last = _resumable(user_folder / "last.ckpt", scene_root, epoch, callbacks)
    run_dir = user_folder / "run"
    refused_in(run_dir, scene_root, *overrides, f"resume={last}")(*words)
    assert not (run_dir / "split.csv").exists()


def test_metrics_say_why_training_stopped_and_a_resume_without_its_time_limit_is_quiet(
    tmp_path, scene_root
):
    """max_steps stops within the second epoch: metrics.json says so (stopped_by, and that the
    last epoch was partial). That run had a time limit (a Timer, whose state its checkpoint
    keeps); resumed without one, Lightning's request for the Timer callback is not passed on."""
    two_batches = [
        *SCENE,
        *TINY,
        "train_eval_images=0",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
    ]
    data = f"data.root={scene_root}"
    first = train_in_process(
        tmp_path / "first",
        data,
        *two_batches,
        "trainer.max_epochs=3",
        "trainer.max_steps=3",
        "+trainer.max_time=01:00:00:00",
    )
    assert (first["stopped_by"], first["last_epoch_partial"]) == ("max_steps", True)
    assert first["stopped_early"] is False
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        resumed = train_in_process(
            tmp_path / "resumed",
            data,
            *two_batches,
            "trainer.max_epochs=3",
            f"resume={tmp_path / 'first'}",
        )
    assert not [w for w in seen if "Timer" in str(w.message)], [str(w.message) for w in seen]
    assert (resumed["stopped_by"], resumed["last_epoch_partial"]) == ("max_epochs", False)
    saved = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert saved["stopped_by"] == "max_epochs" and saved["epochs_run"] == 3


def test_early_stopping_at_the_first_epoch_is_said_as_early_stopping(tmp_path, scene_root):
    """A loss that is not finite stops the fit at epoch 0, where Lightning's stopped_epoch is 0:
    metrics.json still says early stopping ended it."""
    results = train_in_process(
        tmp_path / "run",
        f"data.root={scene_root}",
        *SCENE,
        *TINY,
        "train_eval_images=0",
        "trainer.limit_train_batches=2",
        "trainer.max_epochs=3",
        "optimizer.lr=1e30",  # the loss is NaN after the first step
        "monitor=val/loss",
        "monitor_mode=min",
        "early_stopping.patience=2",
    )
    assert (results["stopped_by"], results["stopped_early"]) == ("early_stopping", True)
    assert results["epochs_run"] == 1  # Lightning counts the epoch it stopped in
