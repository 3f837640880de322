"""mode=train the way a user runs it: the run folder, TensorBoard tags, model selection,
ImageNet weights from the cache, the LR sweep, DDP and resuming.

The DDP command line is `slow` (Lightning starts the second process by running the command
again); what trainer=ddp means (the strategy, two ranks, each training on half of the images,
validation equal to one process) is proven in this process and stays fast."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import (
    REPO,
    TINY,
    as_user_in,
    assert_run_refuses,
    cli_env,
    compose_config,
    free_port,
    make_scene_folder,
    run_cli,
    run_in_process,
    run_main,
    tiny_data_cfg,
)

SCENE = ["data.split.test=12", "data.split.val=12", "model.weights=none", "optimizer.lr=0.05"]
DDP_ON_CPU = [
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.precision=32-true",
]


def train_in_process(run_dir: Path, *overrides: str) -> dict:
    """`python -m finetune mode=train OVERRIDES hydra.run.dir=RUN_DIR`, in this process."""
    return run_in_process("mode=train", *overrides, f"hydra.run.dir={run_dir}")


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar tag in the run's TensorBoard files, read back by TensorBoard itself."""
    values: dict[str, list[float]] = {}
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return values


def net_state(path: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if "format" in payload:
        return payload["state_dict"]
    return {
        k.removeprefix("net."): v for k, v in payload["state_dict"].items() if k.startswith("net.")
    }


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_folder_holds_everything(trained_run):
    for name in (
        "best_model.pt",
        "metrics.json",
        "split.csv",
        ".hydra/config.yaml",
        "checkpoints/last.ckpt",
    ):
        assert (trained_run / name).is_file(), name
    payload = torch.load(trained_run / "best_model.pt", weights_only=True)
    assert payload["class_names"] == ["buildings", "forest", "glacier", "mountain", "sea", "street"]
    assert payload["data"]["image_size"] == 32 and payload["arch"] == "resnet18"
    assert Path(payload["manifest"]) == (trained_run / "split.csv").resolve()
    assert payload["state_dict"]["fc.weight"].shape == (6, 512)
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics["val"]) >= {"val/acc_mean", "val/map", "val/acc/sea", "val/ap/forest"}
    assert set(metrics["test"]) >= {"test/acc_mean", "test/map", "test/acc", "test/ap/street"}
    tags = scalars(trained_run)
    for split in ("train", "val", "train_eval"):
        for name in ("loss", "acc", "acc_mean", "map", "acc/glacier", "ap/mountain"):
            assert len(tags[f"{split}/{name}"]) >= 2, f"{split}/{name}"  # one per epoch
    assert "train/lr" in tags  # the learning rate, beside the other train/ curves
    assert "hp_metric" not in tags
    # the exported figures are the ones TensorBoard saw at the best epoch
    best = metrics["best_epoch"]
    assert metrics["monitor"]["value"] == pytest.approx(tags["val/map"][best], abs=1e-6)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_eval_takes_the_newest_best_model_not_the_newest_run_folder(tmp_path):
    """A run that stopped early leaves a folder with no best_model.pt: `make eval` and `make
    analyze` pass over it; with no model at all, make says so in one line and fails."""

    def make(target: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["make", "-n", "--no-print-directory", "-f", str(REPO / "Makefile"), target],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )

    (tmp_path / "pyproject.toml").touch()
    (tmp_path / ".venv").mkdir()
    os.utime(tmp_path / "pyproject.toml", (0, 0))  # the stamp is newer: nothing to install
    (tmp_path / ".venv" / ".installed").touch()
    for target in ("eval", "analyze"):
        result = make(target)
        assert result.returncode != 0 and result.stdout == "", result.stdout
        assert (
            result.stderr.count("\n") == 1 and "no outputs/train/*/*/best_model.pt" in result.stderr
        )
    trained = tmp_path / "outputs" / "train" / "2026-11-29" / "10-00-00-000001"
    stopped = tmp_path / "outputs" / "train" / "2026-11-30" / "09-00-00-000001"  # newer
    for run in (trained, stopped):
        (run / ".hydra").mkdir(parents=True)
        (run / "finetune.log").touch()
    (trained / "best_model.pt").touch()
    for target in ("eval", "analyze"):
        command = make(target).stdout.split()
        assert f"mode={target}" in command, command
        assert f"ckpt={trained.relative_to(tmp_path)}/best_model.pt" in command, command


def test_best_epoch_is_exported_not_the_last(tmp_path, scene_root):
    """A run whose last epoch learns at 100 x the rate, so its val/loss is worse than an earlier
    epoch's on any CPU: the best epoch is exported, not the last."""
    run_dir = tmp_path / "run"
    train_in_process(
        run_dir,
        f"data.root={scene_root}",
        *SCENE,
        "optimizer.lr=0.002",
        "scheduler=step",
        "scheduler.step_size=2",
        "scheduler.gamma=100",
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        "trainer.precision=32-true",  # the logged losses and the re-measured best are then equal
        "model.channels_last=false",
        "monitor=val/loss",
        "monitor_mode=min",
        "train_eval_images=0",
        *TINY,
    )
    losses = scalars(run_dir)["val/loss"]
    assert len(losses) == 3  # one point per epoch
    lowest = min(range(3), key=lambda epoch: losses[epoch])
    assert lowest != 2, f"construction failed: the last epoch is the best ({losses})"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == lowest
    assert metrics["val"]["val/loss"] == pytest.approx(losses[lowest], rel=1e-5)
    best = net_state(run_dir / "best_model.pt")
    assert same_weights(best, net_state(run_dir / "checkpoints" / f"epoch{lowest:03d}.ckpt"))
    assert not same_weights(best, net_state(run_dir / "checkpoints" / "last.ckpt"))


def test_imagenet_weights_come_from_the_torch_cache(torch_home, monkeypatch):
    from finetune.network import build_network

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    planted = torch.load(torch_home / "hub/checkpoints/resnet18-f37072fd.pth", weights_only=True)
    net = build_network(6, "imagenet", head_seed=3)
    state = net.state_dict()
    assert torch.equal(state["layer3.0.conv1.weight"], planted["layer3.0.conv1.weight"])
    assert state["fc.weight"].shape == (6, 512)
    assert torch.equal(state["fc.weight"], build_network(6, "none", head_seed=3).fc.weight)
    frozen = build_network(6, "imagenet", freeze_backbone=True)
    trainable = [n for n, p in frozen.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]


def test_missing_imagenet_weights_is_one_line(user_folder, scene_root):
    """A first training offline, the weights not cached: one line naming the file, the URL
    tried and model.weights=none (the URL is a loopback port that refuses, so the test never
    downloads); nothing was trained."""
    url = f"http://127.0.0.1:{free_port()}/resnet18-f37072fd.pth"
    run_dir = user_folder / "run"
    refused = assert_run_refuses(
        "mode=train",
        f"data.root={scene_root}",
        f"model.weights_url={url}",
        f"hydra.run.dir={run_dir}",
        *TINY,
    )
    refused("resnet18-f37072fd.pth", url, "model.weights=none")
    assert not (run_dir / "checkpoints").exists()


def test_sweep_ranks_runs_and_copies_the_winner_and_outlives_a_failed_run(
    tmp_path, capsys, scene_root, torch_home
):
    """One `-m` sweep over two good learning rates and -1 (through the entry point's main(), in
    this process): the two runs are ranked and the winner's best_model.pt copied; the run that
    stopped with a user error did not end the sweep, is listed as failed, and the sweep exits 2
    with its error line and the sweep's own."""
    sweep_dir = tmp_path / "sweep"
    with as_user_in(tmp_path, torch_home):
        result = run_main(
            "-m",
            "optimizer.lr=0.05,0.00001,-1",
            f"data.root={scene_root}",
            "data.split.test=12",
            "data.split.val=12",
            "model.weights=imagenet",
            "trainer.max_epochs=1",
            "train_eval_images=0",
            f"hydra.sweep.dir={sweep_dir}",
            *TINY,
            cwd=tmp_path,
            capsys=capsys,
        )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0] == "error: optimizer.lr=-1 must be a number > 0"
    assert "1 of 3 runs failed (run 2)" in errors[1] and len(errors) == 2, errors
    values = {
        run: json.loads((sweep_dir / run / "metrics.json").read_text())["monitor"]["value"]
        for run in ("0", "1")
    }
    winner, other = sorted(values, key=values.get, reverse=True)
    summary = (sweep_dir / "sweep_summary.csv").read_text().splitlines()
    assert summary[0].startswith("rank,run,status,overrides,monitor,value")
    assert summary[1].startswith(f"1,{winner},ok,") and summary[2].startswith(f"2,{other},ok,")
    assert summary[3].startswith(",2,failed,") and len(summary) == 4
    assert "optimizer.lr" in (sweep_dir / "sweep_summary.md").read_text()
    assert (sweep_dir / "best_model.pt").read_bytes() == (
        sweep_dir / winner / "best_model.pt"
    ).read_bytes()
    assert not (sweep_dir / "2" / "metrics.json").exists()
    assert "optimizer.lr=-1 must be a number > 0" in (sweep_dir / "2" / "finetune.log").read_text()


def test_ddp_validation_equals_single_process(tmp_path, scene_root):
    """Two CPU processes (gloo) report exactly the single-process metrics: no padded duplicates."""
    import lightning as L

    from finetune.data.datamodule import ImageDataModule
    from finetune.model import ImageClassifier

    data = tiny_data_cfg(scene_root, split={"test": 6, "val": 13, "seed": 0}, resize_size=32)
    model_cfg = {
        "weights": "none",
        "head_seed": 0,
        "freeze_backbone": False,
        "label_smoothing": 0.0,
        "channels_last": False,
        "compile": False,
    }
    results = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_fork")):
        torch.manual_seed(0)
        model = ImageClassifier(
            [f"c{i}" for i in range(6)],
            model_cfg,
            {"name": "sgd", "lr": 0.1},
            {"name": "none"},
            data,
        )
        trainer = L.Trainer(
            accelerator="cpu",
            devices=devices,
            strategy=strategy,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
        )
        trainer.validate(model, datamodule=ImageDataModule(data, seed=0), verbose=False)
        results[devices] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert results[1].keys() == results[2].keys() and "val/ap/c5" in results[1]
    for key, value in results[1].items():
        assert results[2][key] == pytest.approx(value, abs=1e-6, nan_ok=True), key


def test_ddp_config_is_two_processes_that_each_train_on_half(tmp_path, scene_root):
    """trainer=ddp on CPU, without starting the second process: Lightning's DDP strategy over
    two processes, the second started by running the command again, Lightning's padding
    sampler off; the data module gives each rank a disjoint half of the 36 training images
    (18: 2 batches of 8, where one process takes 36 // 8 = 4)."""
    from lightning.pytorch.strategies import DDPStrategy
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
    from omegaconf import OmegaConf

    from finetune.data.datamodule import ImageDataModule
    from finetune.trainer import build_trainer

    cfg = compose_config(*DDP_ON_CPU, f"data.root={scene_root}", *SCENE, *TINY)
    trainer = build_trainer(cfg, tmp_path)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)
    assert (trainer.world_size, trainer.num_devices) == (2, 2)
    assert cfg.trainer.use_distributed_sampler is False  # the data module shards, unpadded

    datamodule = ImageDataModule(OmegaConf.to_container(cfg.data, resolve=True), cfg.seed)
    datamodule.setup("fit")
    assert len(datamodule.datasets["train"]) == 36
    shards = []
    for world, rank in ((1, 0), (2, 0), (2, 1)):  # what rank `rank` of `world` processes gets
        datamodule.trainer = SimpleNamespace(world_size=world, global_rank=rank, num_devices=world)
        loader = datamodule.train_dataloader()
        assert len(loader) == 36 // 8 // world
        shards.append({index for _, index in loader.sampler})
    alone, first, second = shards
    assert len(first) == len(second) == 18 and first.isdisjoint(second)
    assert first | second == alone == set(range(36))


@pytest.mark.slow  # two fresh processes: Lightning runs the command again for rank 1
def test_ddp_cli_run_on_cpu(tmp_path, scene_root):
    run_dir = tmp_path / "run"
    result = run_cli(
        "mode=train",
        *DDP_ON_CPU,
        f"data.root={scene_root}",
        *SCENE,
        "trainer.max_epochs=1",
        "train_eval_images=0",
        f"hydra.run.dir={run_dir}",
        *TINY,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test"]["test/acc"] <= 1
    # two processes ran: both joined the process group, and each trained on half of the 36
    # training images (18 // batch 8 = 2 steps; one process alone takes 36 // 8 = 4)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in result.stdout, result.stdout[-3000:]
    assert metrics["world_size"] == 2
    assert torch.load(run_dir / "best_model.pt", weights_only=True)["global_step"] == 2


# Resuming: one uninterrupted two-epoch run is the reference for the Ctrl-C test and the run the
# other resume tests continue. val/loss is monitored: a diverging run can only make it worse.
RESUME = [
    *SCENE,
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "train_eval_images=0",
    "monitor=val/loss",
    "monitor_mode=min",
    *TINY,
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, scene_root) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_in_process(run_dir, f"data.root={scene_root}", *RESUME)
    return run_dir


def logged_epochs(run_dir: Path) -> list[int]:
    """The epochs a run's TensorBoard has validation points for (Lightning's `epoch` tag)."""
    return sorted({int(epoch) for epoch in scalars(run_dir)["epoch"]})


def ctrl_c_after_the_first_epoch(run_dir: Path, scene_root: Path, console: Path) -> int:
    """`python -m finetune` training into `run_dir`, SIGINT to its process group (as a terminal
    sends Ctrl-C) once the first epoch's checkpoints are written; its exit status."""
    with console.open("w") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "finetune",
                "mode=train",
                f"data.root={scene_root}",
                *RESUME,
                f"hydra.run.dir={run_dir}",
            ],
            cwd=run_dir.parent,
            env=cli_env(None, run_dir.parent / "cache"),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        first = run_dir / "checkpoints" / "epoch000.ckpt"
        deadline = time.time() + 240
        while not (first.is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()):
            assert process.poll() is None and time.time() < deadline, "no checkpoint was written"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGINT)
        return process.wait(timeout=120)


def test_ctrl_c_says_how_to_resume_and_the_resumed_run_equals_an_uninterrupted_one(
    tmp_path, scene_root, uninterrupted
):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) after the first epoch's
    checkpoint: status 130 and one line, on the console and in finetune.log, naming the last
    checkpoint and the command that resumes; that command, run as printed, ends with the weights
    and metrics of a run that was never interrupted (deterministic mode, same seed), and starts
    at the saved epoch."""
    interrupted_dir = tmp_path / "interrupted"
    console = tmp_path / "console.txt"
    # The second epoch takes about a second: on a loaded machine this test may wake up only
    # after the run has finished (exit 0, metrics.json written). Then the Ctrl-C came too late
    # to test anything, and the run is made again, at most three times.
    for _ in range(3):
        shutil.rmtree(interrupted_dir, ignore_errors=True)
        returncode = ctrl_c_after_the_first_epoch(interrupted_dir, scene_root, console)
        if returncode != 0 or not (interrupted_dir / "metrics.json").is_file():
            break
    assert returncode == 130, console.read_text()[-3000:]
    assert not (interrupted_dir / "metrics.json").exists()
    last = interrupted_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0, "interrupted after its first epoch"
    said = [line for line in console.read_text().splitlines() if line.startswith("interrupted")]
    assert len(said) == 1 and "Traceback" not in console.read_text(), console.read_text()
    assert said[0] in (interrupted_dir / "finetune.log").read_text()
    checkpoint, command = re.fullmatch(
        r"interrupted: the last checkpoint is (\S+); resume with: (.+)", said[0]
    ).groups()
    assert checkpoint == "interrupted/checkpoints/last.ckpt"  # relative to where it was run
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "finetune"] and argv[-1] == "resume=interrupted", argv

    resumed_dir = tmp_path / "resumed"
    with as_user_in(tmp_path):
        got = train_in_process(resumed_dir, *argv[3:])
    assert logged_epochs(resumed_dir) == [1]  # it ran the second epoch only
    assert "[2/3] training 1 more epoch(s) of 2 on " in (resumed_dir / "finetune.log").read_text()
    assert "[2/3] training 2 epoch(s) on " in (uninterrupted / "finetune.log").read_text()
    assert logged_epochs(uninterrupted) == [0, 1]
    assert (resumed_dir / "split.csv").read_text() == (uninterrupted / "split.csv").read_text()
    assert same_weights(
        net_state(uninterrupted / "checkpoints" / "last.ckpt"),
        net_state(resumed_dir / "checkpoints" / "last.ckpt"),
    )
    expected = json.loads((uninterrupted / "metrics.json").read_text())
    assert got["val"] == expected["val"] and got["test"] == expected["test"]
    assert got["resumed_from"] == "interrupted/checkpoints/last.ckpt"


def test_ctrl_c_before_the_first_checkpoint_says_so_and_gives_ctrl_c_back(tmp_path):
    """What Lightning does on Ctrl-C (trainer/call.py: SIGINT ignored from then on, then
    sys.exit(1) inside its `except KeyboardInterrupt`) becomes a KeyboardInterrupt that says
    there is nothing to resume, and the SIGINT handler from before comes back (in a notebook,
    Ctrl-C works again); any other exit passes through."""
    from finetune.resume import ctrl_c_says_how_to_resume

    def lightning_answers_ctrl_c() -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            sys.exit(1)

    before = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(KeyboardInterrupt, match="no checkpoint to resume from: run the comm"):
            with ctrl_c_says_how_to_resume(tmp_path, resume=None):
                lightning_answers_ctrl_c()
        assert signal.getsignal(signal.SIGINT) is before
        try:  # caught as BaseException: a KeyboardInterrupt here would stop pytest itself
            with ctrl_c_says_how_to_resume(tmp_path, resume=None):
                sys.exit(1)
        except BaseException as stopped:
            assert type(stopped) is SystemExit
    finally:
        signal.signal(signal.SIGINT, before)


def test_resumed_run_keeps_the_earlier_best_when_it_gets_worse(tmp_path, scene_root, uninterrupted):
    """Resume from a .ckpt file whose learning rate was raised to 5: the two epochs it adds
    diverge, so the best epoch stays the earlier run's, and that one is exported. (optimizer.lr
    on the command line cannot do it: Lightning restores the learning rate with the state.)"""
    earlier = json.loads((uninterrupted / "metrics.json").read_text())
    best_epoch, best_loss = earlier["best_epoch"], earlier["monitor"]["value"]
    earlier_files = {p: p.read_bytes() for p in (uninterrupted / "checkpoints").iterdir()}
    hot = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)
    for group in hot["optimizer_states"][0]["param_groups"]:
        group["lr"] = 5.0
    hot_ckpt = uninterrupted / "checkpoints" / "hot.ckpt"  # beside split.csv, as a user's would be
    torch.save(hot, hot_ckpt)

    resumed_dir = tmp_path / "resumed"
    got = train_in_process(
        resumed_dir,
        f"data.root={scene_root}",
        *RESUME,
        "trainer.max_epochs=4",
        "optimizer.lr=0.5",
        f"resume={hot_ckpt}",
    )
    hot_ckpt.unlink()
    # the settings recorded are the ones used, and the ignored override is named
    last = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["hyper_parameters"]["optimizer"]["lr"] == 0.05
    assert "optimizer.lr=0.5 not used" in (resumed_dir / "finetune.log").read_text()
    assert logged_epochs(resumed_dir) == [2, 3]
    later = scalars(resumed_dir)["val/loss"]
    assert len(later) == 2 and not any(loss <= best_loss for loss in later), later  # construction
    assert got["best_epoch"] == best_epoch and got["monitor"]["value"] == best_loss
    exported = torch.load(resumed_dir / "best_model.pt", weights_only=True)
    assert exported["epoch"] == best_epoch
    earlier_best = uninterrupted / "checkpoints" / f"epoch{best_epoch:03d}.ckpt"
    assert same_weights(exported["state_dict"], net_state(earlier_best))
    # the earlier run's folder is left as it was
    assert {p: p.read_bytes() for p in (uninterrupted / "checkpoints").iterdir()} == earlier_files


def test_a_resumed_run_keeps_the_network_and_transform_of_its_checkpoint(
    tmp_path, scene_root, uninterrupted
):
    """Resume a run trained from ImageNet weights on a machine that has none cached (an offline
    node), with another arch and image size typed: nothing is downloaded (the checkpoint's
    weights replace ImageNet's), and the checkpoint's resnet18 at 32 px goes on, the typed
    values named as not used; its checkpoints record what was used."""
    imagenet_run = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)
    imagenet_run["hyper_parameters"]["model"]["weights"] = "imagenet"
    torch.save(imagenet_run, tmp_path / "last.ckpt")
    changed = ["model.arch=resnet34", "data.image_size=48", "data.resize_size=48"]
    with as_user_in(tmp_path):  # an empty TORCH_HOME: ImageNet weights would be downloaded
        train_in_process(
            tmp_path / "resumed",
            f"data.root={scene_root}",
            *[o for o in RESUME if o != "model.weights=none"],
            "model.weights=imagenet",
            "trainer.max_epochs=3",
            *changed,
            f"resume={tmp_path / 'last.ckpt'}",
        )
    log = (tmp_path / "resumed" / "finetune.log").read_text()
    assert "model.arch=resnet34 not used" in log and "data.image_size=48" in log
    assert "downloading" not in log
    recorded = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    model, data = recorded["hyper_parameters"]["model"], recorded["hyper_parameters"]["data"]
    assert model["arch"] == "resnet18" and data["image_size"] == data["resize_size"] == 32
    assert model["weights"] == "imagenet"  # what the run began from


def test_resume_from_a_file_that_cannot_be_resumed_is_one_line(tmp_path, scene_root, uninterrupted):
    from finetune.errors import UserError

    other_classes = make_scene_folder(tmp_path / "other", classes=[f"c{i}" for i in range(6)])
    last = uninterrupted / "checkpoints" / "last.ckpt"
    foreign = torch.load(last, weights_only=True)  # another project's LightningModule
    foreign["hyper_parameters"] = {"lr": 0.1}
    torch.save(foreign, tmp_path / "other_project.ckpt")
    cases = [
        (scene_root, uninterrupted / "best_model.pt", "not a Lightning training checkpoint"),
        (scene_root, tmp_path / "other_project.ckpt", "a Lightning checkpoint of another model"),
        (scene_root, uninterrupted / "split.csv", "is not a Lightning checkpoint file"),
        (scene_root, tmp_path / "nowhere.ckpt", "does not exist"),
        (other_classes, last, r"was trained on classes \['buildings'.*resume with the same data"),
    ]
    more = "trainer.max_epochs=3"  # than the 2 it trained: the resume is refused for its file
    for number, (root, path, words) in enumerate(cases):
        with pytest.raises(UserError, match=words) as raised:
            train_in_process(
                tmp_path / str(number), f"data.root={root}", *RESUME, more, f"resume={path}"
            )
        assert "\n" not in str(raised.value)
