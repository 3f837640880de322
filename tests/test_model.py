"""The LightningModule: a frozen backbone stays bit-identical (a true linear probe), and the
optimizer and scheduler are chosen by known names only."""

import lightning as L
import pytest
import torch

from finetune.data.datamodule import ImageDataModule
from finetune.errors import UserError
from finetune.model import ImageClassifier

from conftest import make_scene_folder, tiny_data_cfg

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
    trainer = L.Trainer(
        max_epochs=2,  # epoch 2 starts after a validation pass: train mode is set again
        limit_train_batches=2,
        limit_val_batches=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
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


@pytest.mark.parametrize(
    ("optimizer", "scheduler", "words"),
    [
        (SGD | {"name": "adam"}, {"name": "none"}, ["optimizer.name='adam'", "sgd", "adamw"]),
        (SGD, {"name": "linear"}, ["scheduler.name='linear'", "none", "cosine", "step"]),
    ],
)
def test_unknown_optimizer_or_scheduler_name_is_refused(optimizer, scheduler, words):
    with pytest.raises(UserError) as raised:
        classifier(optimizer=optimizer, scheduler=scheduler).configure_optimizers()
    for word in words:
        assert word in str(raised.value)


def test_known_names_build_their_optimizer_and_scheduler():
    adamw = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "betas": [0.9, 0.999]}
    built = classifier(optimizer=adamw, scheduler={"name": "step", "step_size": 2, "gamma": 0.5})
    config = built.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW)
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    # a linear probe optimises the head only
    assert (
        sum(p.numel() for g in config["optimizer"].param_groups for p in g["params"]) == 512 * 3 + 3
    )
    assert isinstance(classifier().configure_optimizers()["optimizer"], torch.optim.SGD)
