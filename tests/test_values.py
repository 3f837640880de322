"""Values Hydra cannot check by type (finetune.validate): each mistake is one UserError line,
said before any work starts; the values next to each mistake still pass.

The refusals run through `finetune.run` (the command line, in-process), as a user meets them;
nothing trains: a run that got past the check would fail its test, not train for long."""

import re
from pathlib import Path

import pytest

import finetune
from finetune.config_keys import TRAINER_KEYS_READ, required_keys
from finetune.errors import UserError
from finetune.optim import build_optimizer, build_scheduler
from finetune.tasks import check_config
from finetune.validate import validate_config
from finetune.value_rules import RULES

from conftest import TINY, assert_run_refuses, compose_config

# A value that got past the check would train one short epoch (and fail its test), not ten.
QUICK = [
    "data.split.test=12",
    "data.split.val=12",
    "model.weights=none",
    "trainer.max_epochs=1",
    "train_eval_images=0",
    *TINY,
]


def refused_before_any_work(tmp_path, scene_root, overrides: list[str], words: list[str]) -> None:
    """assert_run_refuses with the tiny data, naming `words`; no run folder was made."""
    run_dir = tmp_path / "run"
    refused = assert_run_refuses(
        f"data.root={scene_root}", *QUICK, *overrides, f"hydra.run.dir={run_dir}"
    )
    refused(*words)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["optimizer.momentum=-1"], ["optimizer.momentum=-1", "[0, 1)"]),
        (["optimizer.momentum=abc"], ["optimizer.momentum='abc'", "a number"]),
        (["optimizer.weight_decay=-1"], ["optimizer.weight_decay=-1", ">= 0"]),
        (["optimizer=adamw", "optimizer.weight_decay=-0.1"], ["optimizer.weight_decay=-0.1"]),
        (["optimizer=adamw", "optimizer.betas=[0.9,1.5]"], ["optimizer.betas=[0.9, 1.5]"]),
        (
            ["optimizer.nesterov=true", "optimizer.momentum=0"],
            ["optimizer.nesterov=true", "optimizer.momentum=0", "> 0"],
        ),
        (
            ["data.train_crop_scale=[0.9,0.1]"],
            ["data.train_crop_scale=[0.9, 0.1]", "0 < min <= max <= 1"],
        ),
        (["data.train_crop_scale=[0,1]"], ["data.train_crop_scale=[0, 1]"]),
        (["data.train_crop_scale=[0.5]"], ["data.train_crop_scale=[0.5]"]),
        (["data.std=[0,0,0]"], ["data.std=[0, 0, 0]", "three numbers in (0, 1]"]),
        (["data.mean=[0.5]"], ["data.mean=[0.5]", "three numbers", "RGB"]),
        (["data.mean=[124,116,104]"], ["data.mean=[124, 116, 104]", "0-1 scale"]),
        (["data.loader.batch_size=1"], ["data.loader.batch_size=1", ">= 2"]),
        (["seed=-5"], ["seed=-5", f"[0, {2**32 - 1}]"]),
        (["seed=abc"], ["seed='abc'", "whole number"]),
        (["data.split.seed=-1"], ["data.split.seed=-1", "whole number"]),
        (["model.head_seed=4294967296"], ["model.head_seed=4294967296"]),
        (["trainer.accumulate_grad_batches=0"], ["trainer.accumulate_grad_batches=0", ">= 1"]),
        (["trainer.max_epochs=0"], ["trainer.max_epochs=0", ">= 1", "-1"]),
        (["trainer.max_epochs=abc"], ["trainer.max_epochs='abc'", "whole number"]),
        (["trainer.max_epochs=true"], ["trainer.max_epochs=true"]),
        (["trainer.max_steps=0"], ["trainer.max_steps=0", "-1 (no limit)"]),
        (["trainer.gradient_clip_val=-1"], ["trainer.gradient_clip_val=-1", "null or"]),
        (["trainer.benchmark=maybe"], ["trainer.benchmark='maybe'", "null, true or false"]),
        (["data.resize_size=abc"], ["data.resize_size='abc'", "whole number"]),
        (["data.resize_size=0"], ["data.resize_size=0", ">= data.image_size=32"]),
        (
            ["data.resize_size=16"],
            ["data.resize_size=16", "data.image_size=32", "black", "data.resize_size=36"],
        ),
        (["model.compile=maybe"], ["model.compile='maybe'", "true or false"]),
        (["model.compile=1"], ["model.compile=1", "true or false"]),
        (["model.freeze_backbone=yes"], ["model.freeze_backbone='yes'", "true or false"]),
        (["scheduler=step", "scheduler.step_size=0"], ["scheduler.step_size=0", ">= 1"]),
        (
            ["scheduler=cosine", "trainer.max_epochs=-1", "trainer.max_steps=1"],
            ["scheduler=cosine", "trainer.max_epochs=-1", "scheduler=step"],
        ),
        (["train_eval_images=-1"], ["train_eval_images=-1", ">= 0"]),
        (["data.loader.prefetch_factor=0"], ["data.loader.prefetch_factor=0"]),
        (["report.after_sweep=yes"], ["report.after_sweep='yes'", "true or false"]),
        (["data.bad_images=ignore"], ["data.bad_images='ignore'", "skip or error"]),
        (["model.weights=imagnet"], ["model.weights=imagnet", "imagenet", "none", "path"]),
    ],
)
def test_bad_values_are_one_line_before_any_work(tmp_path, scene_root, overrides, words):
    """One UserError line naming the value and what to type, before Hydra makes the run folder
    (nothing is written, no image is read)."""
    refused_before_any_work(tmp_path, scene_root, overrides, words)


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer.lr=1", "optimizer.momentum=0", "optimizer.weight_decay=0"],  # 1 as 1.0
        ["optimizer.lr=1.0", "optimizer.momentum=0.0", "optimizer.weight_decay=0.0"],
        ["optimizer=adamw", "optimizer.betas=[0,0.999]"],  # no momentum key: not checked
        ["optimizer.nesterov=true", "optimizer.momentum=0.9"],
        ["data.train_crop_scale=[1,1]", "data.mean=[0,0,1]", "data.std=[1,1,1]"],
        ["data.image_size=32", "data.resize_size=32"],
        ["seed=0", "data.split.seed=4294967295", "model.head_seed=7"],
        ["trainer.max_epochs=-1", "+trainer.max_time=00:00:05:00"],
        ["trainer.max_epochs=1", "trainer.max_steps=-1", "trainer.accumulate_grad_batches=4"],
        ["trainer.gradient_clip_val=0", "trainer.benchmark=true", "trainer.deterministic=warn"],
        ["trainer.gradient_clip_val=0.5", "~trainer.max_steps"],  # a removed key: not checked
        ["model.compile=true", "model.unfreeze_at_epoch=5", "trainer.max_epochs=1"],
        ["scheduler=cosine", "trainer.max_epochs=3"],
        ["data=cifar10"],
        ["experiment=demo"],
    ],
)
def test_the_values_beside_each_mistake_pass(tmp_path, overrides):
    """The limits themselves, ints where a number is meant, and keys a group does not have.
    (unfreeze_at_epoch >= max_epochs is allowed: a head-only run resumed with more epochs
    trains the backbone, README "Staged unfreezing".)"""
    validate_config(compose_config(f"data.root={tmp_path}", *overrides))


# One bad value for each row of finetune.value_rules.RULES (with the group that has the key).
EACH_RULE = {
    "seed": ["seed=-1"],
    "data.split.seed": ["data.split.seed=4294967296"],
    "model.head_seed": ["model.head_seed=x"],
    "data.loader.batch_size": ["data.loader.batch_size=0"],
    "data.loader.eval_batch_size": ["data.loader.eval_batch_size=0"],
    "data.loader.num_workers": ["data.loader.num_workers=-1"],
    "data.loader.pin_memory": ["data.loader.pin_memory=maybe"],
    "data.loader.persistent_workers": ["data.loader.persistent_workers=2"],
    "data.loader.prefetch_factor": ["data.loader.prefetch_factor=0"],
    "data.image_size": ["data.image_size=8"],
    "data.train_crop_scale": ["data.train_crop_scale=[0.5,1.5]"],
    "data.mean": ["data.mean=[0.5,0.5,0.5,0.5]"],
    "data.std": ["data.std=[0.2,0.2,-0.2]"],
    "data.split.test": ["data.split.test=2.5"],
    "data.split.val": ["data.split.val=-1"],
    "optimizer.lr": ["optimizer.lr=0"],
    "optimizer.weight_decay": ["optimizer.weight_decay=-1e-4"],
    "optimizer.momentum": ["optimizer.momentum=1"],
    "optimizer.nesterov": ["optimizer.nesterov=yes"],
    "optimizer.betas": ["optimizer=adamw", "optimizer.betas=[0.9]"],
    "optimizer.backbone_lr_mult": ["optimizer.backbone_lr_mult=0"],
    "scheduler.step_size": ["scheduler=step", "scheduler.step_size=1.5"],
    "scheduler.gamma": ["scheduler=step", "scheduler.gamma=0"],
    "scheduler.eta_min": ["scheduler=cosine", "scheduler.eta_min=-1"],
    "model.label_smoothing": ["model.label_smoothing=1"],
    "model.unfreeze_at_epoch": ["model.unfreeze_at_epoch=0"],
    "model.freeze_backbone": ["model.freeze_backbone=no"],
    "model.compile": ["model.compile=maybe"],
    "model.channels_last": ["model.channels_last=yes"],
    "early_stopping.patience": ["early_stopping.patience=-1"],
    "train_eval_images": ["train_eval_images=-1"],
    "cpu_bf16": ["cpu_bf16=auto"],
    "trainer.max_epochs": ["trainer.max_epochs=0"],
    "trainer.max_steps": ["trainer.max_steps=0"],
    "trainer.min_epochs": ["trainer.min_epochs=-1"],
    "trainer.accumulate_grad_batches": ["trainer.accumulate_grad_batches=0"],
    "trainer.gradient_clip_val": ["trainer.gradient_clip_val=-1"],
    "trainer.check_val_every_n_epoch": ["trainer.check_val_every_n_epoch=0"],
    "trainer.log_every_n_steps": ["trainer.log_every_n_steps=0"],
    "trainer.deterministic": ["trainer.deterministic=maybe"],
    "trainer.benchmark": ["trainer.benchmark=maybe"],
    "trainer.enable_progress_bar": ["trainer.enable_progress_bar=no"],
    "trainer.enable_model_summary": ["trainer.enable_model_summary=no"],
    "eval.tolerance": ["eval.tolerance=-1"],
    "analysis.num_images": ["analysis.num_images=1"],
    "analysis.top_k": ["analysis.top_k=0"],
    "analysis.batch_size": ["analysis.batch_size=0"],
    "analysis.modules": ["analysis.modules=[]"],
    "report.after_sweep": ["report.after_sweep=yes"],
    "data.bad_images": ["data.bad_images=ignore"],
    "monitor_mode": ["monitor_mode=maximize"],
    "split": ["split=tset"],
    "export.format": ["export.format=onxx"],
    "inference.precision": ["inference.precision=bf16"],
}


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["mode=eval", "split=tset"], ["split='tset'", "train or val or test"]),
        (["mode=analyze", "analysis.modules=7"], ["analysis.modules=7", "auto or a list"]),
        (["mode=predict"], ["predict.input is not set", "predict.input=<image"]),
        (["mode=predict", "predict.input=/no/such/images"], ["predict.input=/no/such/images"]),
        (["data.root=.", "resume=/no/such/run"], ["resume=/no/such/run does not exist"]),
    ],
)
def test_a_modes_own_mistakes_are_one_line_before_any_work(tmp_path, overrides, words):
    """Said before Hydra makes a run folder and before torch is imported, like training's."""
    ckpt = tmp_path / "best_model.pt"
    ckpt.write_bytes(b"")  # only its existence is checked before the run
    run_dir = tmp_path / "run"
    assert_run_refuses(f"ckpt={ckpt}", *overrides, f"hydra.run.dir={run_dir}")(*words)
    assert not run_dir.exists()


def test_every_rule_has_a_bad_value_below():
    assert list(EACH_RULE) == [key for key, _, _ in RULES]


@pytest.mark.parametrize(("key", "overrides"), EACH_RULE.items(), ids=list(EACH_RULE))
def test_each_rule_refuses_its_bad_value(tmp_path, key, overrides):
    """The line is the rule's own (not a later check tripping over the value)."""
    with pytest.raises(UserError) as raised:
        validate_config(compose_config(f"data.root={tmp_path}", *overrides))
    assert str(raised.value).startswith(f"{key}="), raised.value


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("trainer.max_epochs=true", "trainer.max_epochs=true must be"),
        ("model.compile=maybe", "model.compile='maybe' must be true or false"),
        ("data.std=[0.2,0.2]", "data.std=[0.2, 0.2] must be three numbers"),
    ],
)
def test_the_value_is_shown_as_typed(tmp_path, override, line):
    with pytest.raises(UserError) as raised:
        validate_config(compose_config(f"data.root={tmp_path}", override))
    assert str(raised.value).startswith(line)  # true, not Python's True


@pytest.mark.parametrize(
    ("data", "hint"),
    [("scenes", "data.root=/path/to/class/folders"), ("cifar10", "cifar-10-batches-py")],
)
def test_a_missing_data_root_names_what_the_data_kind_needs(data, hint):
    with pytest.raises(UserError, match=hint):
        validate_config(compose_config(f"data={data}"))


def test_a_missing_weights_file_names_the_accepted_values(tmp_path):
    """The loader's own message too (for a file removed after the check)."""
    from finetune.weights import pretrained_state_dict

    with pytest.raises(UserError) as raised:
        pretrained_state_dict(str(tmp_path / "imagnet"), None, "resnet18")
    for word in ("does not exist", "imagenet", "none", "path"):
        assert word in str(raised.value)


@pytest.mark.parametrize("name", ["cifar-10-python.tar.gz", "SCENES.ZIP"])
def test_an_archive_given_as_data_root_says_to_unpack_it(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x1f\x8b")
    with pytest.raises(UserError, match="is an archive: unpack it"):
        validate_config(compose_config("data=cifar10", f"data.root={tmp_path / name}"))


@pytest.mark.parametrize(
    ("override", "words"),
    [
        (
            "data.root=${oc.env:MYDATA}/data",
            ["data.root=${oc.env:MYDATA}/data cannot be resolved: environment variable MYDATA"],
        ),
        ("model.head_seed=${sed}", ["model.head_seed=${sed} cannot be resolved", "no key sed"]),
        ("eval.reference=${oc.evn:HOME}", ["eval.reference=${oc.evn:HOME}", "no resolver oc.evn"]),
    ],
)
def test_an_interpolation_that_cannot_resolve_is_one_line(
    tmp_path, scene_root, monkeypatch, override, words
):
    """Any key (eval.reference: one no rule reads), named with its value as written and why."""
    monkeypatch.delenv("MYDATA", raising=False)
    refused_before_any_work(tmp_path, scene_root, [override], words)


def test_the_runs_own_check_resolves_every_key_but_what_hydra_sets_later(tmp_path, monkeypatch):
    """check_config on the config a run gets (no hydra node) says the same line; ${hydra:...}
    resolves only once Hydra starts the run, and a data.root left unset keeps its own line."""
    monkeypatch.delenv("MYDATA", raising=False)
    with pytest.raises(UserError, match=r"environment variable MYDATA is not set"):
        check_config(compose_config("data.root=${oc.env:MYDATA}/data"))
    started_later = "logger.tensorboard.save_dir=${hydra:runtime.output_dir}/tb"
    check_config(compose_config(f"data.root={tmp_path}", started_later, hydra_node=True))
    with pytest.raises(UserError, match=r"^data.root is not set: add data.root="):
        check_config(compose_config(hydra_node=True))


@pytest.mark.parametrize(
    ("override", "words"),
    [
        (
            "~optimizer.backbone_lr_mult",
            [
                "optimizer.backbone_lr_mult is missing: every optimizer option sets it",
                "conf/optimizer/sgd.yaml: backbone_lr_mult: 1.0",
            ],
        ),
        ("~data.loader.batch_size", ["data.loader.batch_size is missing", "conf/data/scenes"]),
        ("~monitor", ["monitor is missing", "config.yaml", "monitor: val/map"]),
        ("~optimizer", ["optimizer is missing", "adamw, sgd"]),
    ],
)
def test_a_key_the_code_reads_cannot_be_removed(tmp_path, scene_root, override, words):
    run_dir = tmp_path / "run"
    refused = assert_run_refuses(
        f"data.root={scene_root}", *QUICK, override, f"hydra.run.dir={run_dir}"
    )
    refused(*words)
    assert not run_dir.exists()


def test_an_own_option_must_set_what_every_option_of_its_group_sets(tmp_path):
    """An optimizer file of one's own (--config-dir) with only name, lr and betas; momentum,
    which only sgd sets, is not asked for under name: adamw."""
    cfg = compose_config(f"data.root={tmp_path}")
    adamw = {"name": "adamw", "lr": 0.01, "weight_decay": 0.0, "betas": [0.9, 0.99]}
    cfg.optimizer = adamw
    with pytest.raises(UserError, match=r"^optimizer.backbone_lr_mult is missing"):
        check_config(cfg)
    cfg.optimizer = adamw | {"backbone_lr_mult": 1.0}
    check_config(cfg)


@pytest.mark.parametrize(
    ("override", "words"),
    [
        (
            "data.split.seed=${oc.env:SPLITSEED,7}",
            [
                "data.split.seed='7' must be a whole number",
                "the text '7' that ${oc.env:SPLITSEED,7} gives",
                'data.split.seed="${oc.decode:${oc.env:SPLITSEED,7}}" to read it as a number',
            ],
        ),
        ("seed='7'", ["seed='7' must be", "write seed=7, without quotes"]),
        ("model.compile=${oc.env:COMPILE,true}", ["${oc.decode:", "read it as a boolean"]),
        ("data.resize_size=${oc.env:RESIZE,36}", ["data.resize_size='36'", "${oc.decode:"]),
    ],
)
def test_a_number_given_as_text_says_how_to_give_a_number(
    tmp_path, scene_root, monkeypatch, override, words
):
    """${oc.env:...} always gives text: the line says so and how to decode it."""
    for name in ("SPLITSEED", "COMPILE", "RESIZE"):
        monkeypatch.delenv(name, raising=False)
    refused_before_any_work(tmp_path, scene_root, [override], words)


def test_the_fix_the_line_gives_passes(tmp_path, monkeypatch):
    """The override the line gives, as it gives it, reads the number."""
    monkeypatch.setenv("SPLITSEED", "11")
    with pytest.raises(UserError) as raised:
        validate_config(compose_config(f"data.root={tmp_path}", "seed=${oc.env:SPLITSEED,7}"))
    fix = re.search(r"write (\S+) to read it as a number", str(raised.value)).group(1)
    cfg = compose_config(f"data.root={tmp_path}", fix)
    validate_config(cfg)
    assert cfg.seed == 11


def user_config(folder, files: dict[str, str]) -> str:
    """Config files of one's own ({"optimizer/mine.yaml": text}) in `folder`: the override that
    adds it to Hydra's search path, as --config-dir does."""
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return f"hydra.searchpath=[file://{folder}]"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("~trainer.precision", ["conf/trainer/cpu.yaml: precision: auto"]),
        ("~trainer.max_epochs", ["conf/trainer/cpu.yaml: max_epochs: 10"]),
        ("~trainer.deterministic", ["conf/trainer/cpu.yaml: deterministic: false"]),
        ("~trainer.accelerator", ["conf/trainer/cpu.yaml: accelerator: cpu"]),
    ],
)
def test_a_trainer_key_the_package_reads_cannot_be_removed(tmp_path, scene_root, override, words):
    key = override.removeprefix("~")
    line = f"{key} is missing: every trainer option sets it"
    refused_before_any_work(tmp_path, scene_root, [override], [line, *words])


def test_a_trainer_key_only_lightning_reads_may_be_removed(tmp_path):
    removed = ["~trainer.max_steps", "~trainer.log_every_n_steps", "~trainer.strategy"]
    check_config(compose_config(f"data.root={tmp_path}", *removed))


def test_every_trainer_key_the_code_reads_is_required():
    """Each cfg.trainer.<key> that src/ reads (not Lightning's Trainer: self.trainer) is in
    TRAINER_KEYS_READ, which check_keys requires."""
    pattern = r"\b(?!self\b|pl_module\b)\w+\.trainer\.(\w+)\b(?!\()|\btrainer_cfg\.(\w+)\b(?!\()"
    source = Path(finetune.__file__).parent
    read = {
        "".join(found)
        for path in source.rglob("*.py")
        for found in re.findall(pattern, path.read_text())
    }
    assert "precision" in read and read <= set(TRAINER_KEYS_READ), read
    required = {key for key in required_keys() if key[0] == "trainer"}
    assert required == {("trainer",)} | {("trainer", key) for key in TRAINER_KEYS_READ}


def test_an_own_trainer_option_must_set_the_keys_the_package_reads(tmp_path, scene_root):
    """--config-dir DIR trainer=mine, with only accelerator and devices in DIR/trainer/mine.yaml;
    no trainer.* override (a key the option lacks is refused as unknown before)."""
    search = user_config(tmp_path / "conf", {"trainer/mine.yaml": "accelerator: cpu\ndevices: 1\n"})
    run_dir = tmp_path / "run"
    refused = assert_run_refuses(
        f"data.root={scene_root}", "trainer=mine", search, f"hydra.run.dir={run_dir}"
    )
    refused("trainer.num_nodes is missing: every trainer option sets it", "num_nodes: 1")
    assert not run_dir.exists()


OWN = "lr: 0.01\nweight_decay: 0.0\nbackbone_lr_mult: 1.0\n"  # what every optimizer sets


@pytest.mark.parametrize(
    ("file", "text", "words"),
    [
        (
            "optimizer/mine.yaml",
            f"name: adamw\n{OWN}",
            ["optimizer.betas is missing: optimizer.name=adamw needs it", "optimizer/adamw.yaml"],
        ),
        (
            "optimizer/mine.yaml",
            f"name: sgd\n{OWN}nesterov: false\n",
            ["optimizer.momentum is missing", "conf/optimizer/sgd.yaml: momentum: 0.9"],
        ),
        (
            "scheduler/mine.yaml",
            "name: step\n",
            ["scheduler.step_size is missing: scheduler.name=step needs it", "step_size: 5"],
        ),
    ],
    ids=["adamw-betas", "sgd-momentum", "step-step_size"],
)
def test_an_own_option_must_set_what_the_packages_option_of_its_name_sets(
    tmp_path, scene_root, file, text, words
):
    group = file.split("/")[0]
    search = user_config(tmp_path / "conf", {file: text})
    refused_before_any_work(tmp_path, scene_root, [f"{group}=mine", search], words)


def one_parameter():
    import torch

    return [{"params": [torch.nn.Parameter(torch.zeros(1))]}]


SGD_OPTION = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False}


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (
            lambda: build_optimizer(one_parameter(), SGD_OPTION | {"momentun": 0.9}),
            ["optimizer.momentun (did you mean optimizer.momentum?)", "torch's SGD", "name=sgd"],
        ),
        (
            lambda: build_optimizer(
                one_parameter(), SGD_OPTION | {"name": "adamw", "betas": [0.9, 0.99]}
            ),
            ["optimizer.momentum, optimizer.nesterov:", "torch's AdamW", "choose optimizer=adamw"],
        ),
        (
            lambda: build_scheduler(
                build_optimizer(one_parameter(), SGD_OPTION),
                {"name": "step", "step_size": 2, "gamma": 0.5, "eta_min": 0.0},
                3,
            ),
            ["scheduler.eta_min", "torch's StepLR (scheduler.name=step)"],
        ),
        (
            lambda: build_scheduler(
                build_optimizer(one_parameter(), SGD_OPTION), {"name": "cosine", "T_max": 5}, 3
            ),
            ["scheduler.T_max", "CosineAnnealingLR", "takes eta_min, last_epoch"],
        ),
    ],
    ids=["sgd-typo", "adamw-momentum", "step-eta_min", "cosine-T_max"],
)
def test_a_key_the_torch_class_does_not_take_is_one_line(build, words):
    """Where the model builds the optimizer and scheduler (torch's class says what it takes)."""
    with pytest.raises(UserError) as raised:
        build()
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_keys_the_torch_class_takes_may_be_added():
    """eps and amsgrad, which conf/optimizer/adamw.yaml does not set, reach AdamW."""
    adamw = {"name": "adamw", "lr": 0.01, "weight_decay": 0.0, "betas": [0.9, 0.99]}
    built = build_optimizer(one_parameter(), adamw | {"eps": 1e-7, "amsgrad": True})
    assert built.param_groups[0]["eps"] == 1e-7 and built.param_groups[0]["amsgrad"] is True


def test_an_experiment_that_switches_optimizer_by_name_is_one_line(tmp_path, scene_root):
    """optimizer.name: adamw over the default sgd keeps sgd's momentum: one line from the run
    (where the optimizer is built) rather than torch's TypeError."""
    switch = "# @package _global_\noptimizer:\n  name: adamw\n  betas: [0.9, 0.99]\n"
    search = user_config(tmp_path / "conf", {"experiment/switch.yaml": switch})
    refused = assert_run_refuses(
        f"data.root={scene_root}",
        *QUICK,
        "experiment=switch",
        search,
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    refused("optimizer.momentum, optimizer.nesterov", "AdamW", "choose optimizer=adamw")


def test_an_optimizer_argument_added_on_the_command_line_reaches_torch(tmp_path):
    """+optimizer.<argument> is passed on like +trainer.<flag>: an argument AdamW takes reaches
    it; a typo added that way is one line naming the closest argument when it is built."""
    from omegaconf import OmegaConf

    from finetune.api import config_dir
    from finetune.choices import check_command_line

    added = [f"data.root={tmp_path}", "optimizer=adamw", "+optimizer.amsgrad=true"]
    settings = OmegaConf.to_container(check_command_line(added, config_dir()).optimizer)
    assert build_optimizer(one_parameter(), settings).param_groups[0]["amsgrad"] is True
    typo = check_command_line([f"data.root={tmp_path}", "+optimizer.lrr=0.1"], config_dir())
    with pytest.raises(UserError, match=r"optimizer\.lrr \(did you mean optimizer\.lr\?\)"):
        build_optimizer(one_parameter(), OmegaConf.to_container(typo.optimizer))


@pytest.mark.parametrize("override", ["data.split=null", "data.loader=null"])
def test_a_section_set_to_null_is_one_line(tmp_path, scene_root, override):
    """null in place of a section the code reads leaves out every key in it: one line naming
    the section, before any work (it was a TypeError once the data was read)."""
    section = override.split("=")[0]
    refused_before_any_work(tmp_path, scene_root, [override], [f"{section} is null, but"])
