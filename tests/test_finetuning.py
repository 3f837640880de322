"""The fine-tuning schedule: staged unfreezing (which parameters train in each stage, BatchNorm
frozen with them, resuming across the stages), the backbone's learning rate (the step it takes
and the logged lr tags), early stopping, and one-line answers to bad values."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch import Callback
from torch import nn

from finetune.callbacks import StagedUnfreezing
from finetune.data.datamodule import ImageDataModule
from finetune.errors import UserError
from finetune.model import ImageClassifier
from finetune.optim import build_optimizer, build_scheduler, join_param_group
from test_train import SCENE, net_state, same_weights, scalars, train_in_process

from conftest import TINY, assert_run_refuses, make_scene_folder, quiet_trainer, tiny_data_cfg

# One short epoch per run: one training batch, one validation batch.
QUICK = [
    *[override for override in SCENE if not override.startswith("optimizer.")],
    "train_eval_images=0",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    *TINY,
]
MODEL = {
    "arch": "resnet18",
    "weights": "none",
    "freeze_backbone": False,
    "unfreeze_at_epoch": 1,
    "head_seed": 0,
    "label_smoothing": 0.0,
    "channels_last": False,
    "compile": False,
}
# plain SGD: one step moves each parameter by exactly -lr x its gradient
SGD = {
    "name": "sgd",
    "lr": 0.05,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "nesterov": False,
    "backbone_lr_mult": 0.1,
}


class FirstStepOfEachEpoch(Callback):
    """What the first training step of each epoch did: the parameters that required gradients,
    the param groups, the BatchNorm layers in training mode, and each parameter's change next
    to its gradient."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        net = module.net
        self.epochs.append(
            {
                "trainable": {n for n, p in net.named_parameters() if p.requires_grad},
                "groups": [(g.get("name"), g["lr"]) for g in trainer.optimizers[0].param_groups],
                "bn_training": [m.training for m in net.modules() if isinstance(m, nn.BatchNorm2d)],
                "before": {n: p.detach().clone() for n, p in net.named_parameters()},
                "buffers": {n: b.clone() for n, b in net.named_buffers()},
            }
        )

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        grads = {n: p.grad.clone() for n, p in module.net.named_parameters() if p.grad is not None}
        self.epochs[-1]["grads"] = grads

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        record = self.epochs[-1]
        record["after"] = {n: p.detach().clone() for n, p in module.net.named_parameters()}
        record["buffers_after"] = {n: b.clone() for n, b in module.net.named_buffers()}


def test_head_trains_alone_then_the_backbone_joins_at_its_own_rate(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=8, classes=["a", "b", "c"])
    data = ImageDataModule(
        tiny_data_cfg(root, split={"test": 3, "val": 3, "seed": 0}), seed=0, train_eval_images=0
    )
    model = ImageClassifier(["a", "b", "c"], MODEL, SGD, {"name": "none"}, {})
    recorder = FirstStepOfEachEpoch()
    trainer = quiet_trainer(
        max_epochs=2,
        limit_train_batches=1,
        limit_val_batches=1,
        callbacks=[StagedUnfreezing(MODEL["unfreeze_at_epoch"]), recorder],
    )
    trainer.fit(model, datamodule=data)
    head, backbone = {"fc.weight", "fc.bias"}, {"conv1.weight", "bn1.weight", "layer4.1.bn2.bias"}
    names = set(recorder.epochs[0]["before"])
    frozen, joined = recorder.epochs

    # epoch 0: the head alone, its BatchNorm layers in eval mode (running statistics kept)
    assert frozen["trainable"] == head
    assert frozen["groups"] == [("head", 0.05)]
    assert not any(frozen["bn_training"])
    assert {n for n in names if not torch.equal(frozen["after"][n], frozen["before"][n])} == head
    assert all(torch.equal(frozen["buffers_after"][n], b) for n, b in frozen["buffers"].items())

    # epoch 1: everything, the backbone at lr x 0.1; each parameter moved by -lr x its gradient
    assert joined["trainable"] == names
    assert joined["groups"] == [("head", 0.05), ("backbone", pytest.approx(0.005))]
    assert all(joined["bn_training"])
    assert not torch.equal(
        joined["buffers_after"]["bn1.running_mean"], joined["buffers"]["bn1.running_mean"]
    )
    one_ulp = torch.finfo(torch.float32).eps  # the optimizer's kernel rounds its own way
    for name, lr in [*[(n, 0.05) for n in head], *[(n, 0.005) for n in backbone]]:
        expected = joined["before"][name] - lr * joined["grads"][name]
        assert joined["grads"][name].abs().sum() > 0, name
        torch.testing.assert_close(joined["after"][name], expected, rtol=one_ulp, atol=1e-7)


def test_staged_unfreezing_refuses_several_processes():
    """DDP would not sync the gradients of a backbone unfrozen after it wrapped the model."""
    model = ImageClassifier(["a", "b", "c"], MODEL, SGD, {"name": "none"}, {})
    single = L.Trainer(accelerator="cpu", devices=1, logger=False)
    StagedUnfreezing(1).setup(single, model, "fit")
    assert model.backbone_frozen()
    ddp = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)  # not launched
    with pytest.raises(UserError, match=r"needs a single process \(this run has 2\)"):
        StagedUnfreezing(1).setup(ddp, model, "fit")


@pytest.mark.parametrize(
    "settings", [{"name": "cosine", "eta_min": 0.0}, {"name": "step", "step_size": 2, "gamma": 0.5}]
)
def test_a_joined_param_group_follows_the_schedule_at_its_multiple(settings):
    """Joined after one epoch, stepped past the end of the cosine period (where torch reads the
    groups' base learning rates): always a tenth of the head's rate."""
    head = nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"name": "head", "params": [head]}], SGD)
    scheduler = build_scheduler(optimizer, settings, 2)
    scheduler.step()
    join_param_group(optimizer, [scheduler], "backbone", [nn.Parameter(torch.zeros(1))], 0.1)
    for _ in range(5):
        head_lr, backbone_lr = (group["lr"] for group in optimizer.param_groups)
        assert backbone_lr == pytest.approx(0.1 * head_lr, rel=1e-9, abs=1e-12)
        scheduler.step()


@pytest.mark.parametrize(
    ("overrides", "head", "backbone"),
    [
        # one param group each from the start, the backbone at a tenth of the head's rate
        (["trainer.max_epochs=1"], [0.05], [0.005]),
        # staged, with a cosine schedule over 3 epochs: the backbone's rate follows it from
        # epoch 1, a tenth of the head's
        (
            ["trainer.max_epochs=3", "model.unfreeze_at_epoch=1", "scheduler=cosine"],
            [0.05, 0.0375, 0.0125],
            [0.00375, 0.00125],
        ),
    ],
    ids=["multiplier", "staged-cosine"],
)
def test_both_learning_rates_are_logged_and_used(tmp_path, scene_root, overrides, head, backbone):
    run_dir = tmp_path / "run"
    train_in_process(
        run_dir,
        f"data.root={scene_root}",
        *QUICK,
        "optimizer.lr=0.05",
        "optimizer.backbone_lr_mult=0.1",
        *overrides,
    )
    tags = scalars(run_dir)
    assert sorted(tag for tag in tags if tag.startswith("train/lr/")) == [
        "train/lr/backbone",
        "train/lr/head",
    ]
    assert tags["train/lr/head"] == pytest.approx(head, rel=1e-6)
    assert tags["train/lr/backbone"] == pytest.approx(backbone, rel=1e-6)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    groups = last["optimizer_states"][0]["param_groups"]
    assert [group["name"] for group in groups] == ["head", "backbone"]
    assert [len(group["params"]) for group in groups] == [2, 60]  # fc; the rest of ResNet18


def test_run_stops_early_when_the_monitored_metric_stops_improving(tmp_path, scene_root):
    """A linear probe at lr 1e-12 cannot change val/loss: patience 1 stops after epoch 1."""
    run_dir = tmp_path / "run"
    results = train_in_process(
        run_dir,
        f"data.root={scene_root}",
        *QUICK,
        "model.freeze_backbone=true",
        "optimizer.lr=1e-12",
        "monitor=val/loss",
        "monitor_mode=min",
        "early_stopping.patience=1",
        "trainer.max_epochs=4",
    )
    assert results["epochs_run"] == 2 and results["stopped_early"] is True
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["epochs_run"] == 2 and saved["stopped_early"] is True
    losses = scalars(run_dir)["val/loss"]
    assert len(losses) == 2 and losses[0] == losses[1]


# Resuming across the stages: a three-epoch staged run, uninterrupted, against the same run
# stopped after the head-only stage (epoch 0), resumed for one epoch (the backbone joins),
# stopped again and resumed to the end.
STAGED = [
    *QUICK,
    "trainer.deterministic=true",
    "model.unfreeze_at_epoch=1",
    "optimizer.lr=0.05",
    "optimizer.backbone_lr_mult=0.1",
    "scheduler=step",
    "scheduler.step_size=1",
    "scheduler.gamma=0.5",
]


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory, scene_root) -> Path:
    run_dir = tmp_path_factory.mktemp("staged") / "run"
    train_in_process(run_dir, f"data.root={scene_root}", *STAGED, "trainer.max_epochs=3")
    return run_dir


def test_resumed_staged_run_equals_the_uninterrupted_one(tmp_path, scene_root, staged_run):
    """Stopped in the head-only stage and resumed into the one where the backbone joins, then
    stopped after the backbone joined and resumed: one epoch a run, each resuming the last.
    The end equals the uninterrupted run's weights, and each epoch logs its learning rates."""
    data = f"data.root={scene_root}"
    head_only, joined, finished = (tmp_path / name for name in ("head-only", "joined", "end"))
    train_in_process(head_only, data, *STAGED, "trainer.max_epochs=1")
    train_in_process(joined, data, *STAGED, "trainer.max_epochs=2", f"resume={head_only}")
    train_in_process(finished, data, *STAGED, "trainer.max_epochs=3", f"resume={joined}")
    assert same_weights(
        net_state(staged_run / "checkpoints" / "last.ckpt"),
        net_state(finished / "checkpoints" / "last.ckpt"),
    )
    expected = scalars(staged_run)  # the backbone's rate is logged from epoch 1 on
    for epoch, resumed in [(1, joined), (2, finished)]:
        got = scalars(resumed)
        assert got["train/lr/head"] == [expected["train/lr/head"][epoch]]
        assert got["train/lr/backbone"] == [expected["train/lr/backbone"][epoch - 1]]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["model.unfreeze_at_epoch=0"], ["model.unfreeze_at_epoch=0", "null", ">= 1"]),
        (["model.unfreeze_at_epoch=two"], ["model.unfreeze_at_epoch='two'", "whole number"]),
        (["optimizer.backbone_lr_mult=0"], ["optimizer.backbone_lr_mult=0", "> 0"]),
        (["early_stopping.patience=-1"], ["early_stopping.patience=-1", "null (off)"]),
        (
            ["model.freeze_backbone=true", "model.unfreeze_at_epoch=2"],
            ["model.freeze_backbone=true", "model.unfreeze_at_epoch=2", "only one"],
        ),
        (
            ["model.freeze_backbone=true", "optimizer.backbone_lr_mult=0.1"],
            ["optimizer.backbone_lr_mult=0.1", "model.freeze_backbone=true", "leave it at 1"],
        ),
        (["optimizer.name=adam"], ["optimizer.name='adam'", "optimizer=<one of sgd, adamw>"]),
        (["scheduler.name=linear"], ["scheduler.name='linear'", "none, cosine, step"]),
    ],
)
def test_bad_values_are_one_line(tmp_path, scene_root, overrides, words):
    with pytest.raises(UserError) as raised:
        train_in_process(tmp_path / "run", f"data.root={scene_root}", *QUICK, *overrides)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message
    assert not (tmp_path / "run").exists()  # refused before Hydra makes the run folder


def test_bad_value_through_the_run_api_is_one_line(tmp_path, scene_root):
    """The check also guards `finetune.run` (the command line, in-process), not only the task."""
    assert_run_refuses(
        f"data.root={scene_root}",
        *QUICK,
        "trainer.max_epochs=1",
        "model.freeze_backbone=true",
        "model.unfreeze_at_epoch=2",
        f"hydra.run.dir={tmp_path / 'run'}",
    )("model.unfreeze_at_epoch=2", "only one")
