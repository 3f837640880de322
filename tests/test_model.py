"""The LightningModule: a frozen backbone stays bit-identical (a true linear probe), and the
optimizer and scheduler registries hold exactly the options of their config groups, refusing
any other name."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, StepLR

from finetune.data.datamodule import ImageDataModule
from finetune.errors import UserError
from finetune.model import ImageClassifier
from finetune.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler

from conftest import make_scene_folder, quiet_trainer, tiny_data_cfg

MODEL = {
    "arch": "resnet18",
    "weights": "none",
    "freeze_backbone": True,
    "head_seed": 0,
    "label_smoothing": 0.0,
    "channels_last": False,
    "compile": False,
}
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "nesterov": False}


def classifier(model=MODEL, optimizer=SGD, scheduler=None) -> ImageClassifier:
    return ImageClassifier(
        class_names=["a", "b", "c"],
        model=model,
        optimizer=optimizer,
        scheduler=scheduler or {"name": "none"},
        data={},
    )


def test_frozen_backbone_is_bit_identical_after_training_and_the_head_learns(tmp_path):
    root = make_scene_folder(tmp_path / "data", per_class=8, classes=["a", "b", "c"])
    data = ImageDataModule(
        tiny_data_cfg(root, split={"test": 3, "val": 3, "seed": 0}), seed=0, train_eval_images=3
    )
    model = classifier()
    before = {key: value.clone() for key, value in model.net.state_dict().items()}
    trainer = quiet_trainer(
        max_epochs=2,  # epoch 2 starts after a validation pass: train mode is set again
        limit_train_batches=2,
        limit_val_batches=1,
    )
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 4
    after = model.net.state_dict()
    backbone = [key for key in before if not key.startswith("fc.")]
    assert any("running_mean" in key for key in backbone)
    assert any("num_batches_tracked" in key for key in backbone)
    for key in backbone:
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    assert not torch.equal(after["fc.bias"], before["fc.bias"])


def test_train_mode_of_a_linear_probe_leaves_the_backbone_in_eval_mode():
    probe = classifier().train()
    assert probe.training and probe.net.fc.training
    assert not any(m.training for name, m in probe.net.named_modules() if name != "fc" and name)
    probe.eval()
    assert not any(m.training for m in probe.modules())
    finetune = classifier(MODEL | {"freeze_backbone": False}).train()
    assert all(m.training for m in finetune.modules())


def options(group: str) -> dict[str, dict]:
    """The options of a config group, each file's settings by name."""
    folder = Path(__file__).resolve().parents[1] / "conf" / group
    return {
        path.stem: OmegaConf.to_container(OmegaConf.load(path)) for path in folder.glob("*.yaml")
    }


def test_every_option_of_the_config_groups_is_in_its_registry_and_builds():
    optimizers, schedulers = options("optimizer"), options("scheduler")
    assert optimizers.keys() == OPTIMIZERS.keys() and schedulers.keys() == SCHEDULERS.keys()
    built = {}
    for name, settings in optimizers.items():
        assert settings["name"] == name
        built[name] = build_optimizer([{"params": [nn.Parameter(torch.zeros(2))]}], settings)
    assert type(built["sgd"]) is torch.optim.SGD and type(built["adamw"]) is torch.optim.AdamW
    assert built["adamw"].param_groups[0]["betas"] == (0.9, 0.999)
    kinds = {name: build_scheduler(built["sgd"], s, 3) for name, s in schedulers.items()}
    assert kinds["none"] is None
    assert type(kinds["cosine"]) is CosineAnnealingLR and kinds["cosine"].T_max == 3
    assert type(kinds["step"]) is StepLR


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (
            lambda: build_optimizer([], SGD | {"name": "adam"}),
            ["optimizer.name='adam'", "sgd, adamw"],
        ),
        (
            lambda: build_scheduler(
                torch.optim.SGD([nn.Parameter(torch.zeros(1))], 0.1), {"name": "linear"}, 3
            ),
            ["scheduler.name='linear'", "none, cosine, step"],
        ),
    ],
    ids=["optimizer", "scheduler"],
)
def test_unknown_optimizer_or_scheduler_name_is_refused(build, words):
    with pytest.raises(UserError) as raised:
        build()
    assert "\n" not in str(raised.value)
    for word in words:
        assert word in str(raised.value)


def test_a_linear_probe_optimises_the_head_only():
    (group,) = classifier().param_groups()
    assert sum(p.numel() for p in group["params"]) == 512 * 3 + 3
