"""Small data in the real formats, a stand-in for the ImageNet weights, and a CLI runner."""

import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Under pytest-xdist (`make test`: one worker per core) each worker, and every process it starts,
# computes with one thread: two workers with two torch threads each would fight over two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
SCENE_CLASSES = ["buildings", "forest", "glacier", "mountain", "sea", "street"]
# Tiny images and crops keep every CLI test to seconds on two CPU cores.
TINY = [
    "data.image_size=32",
    "data.resize_size=32",
    "data.loader.num_workers=0",
    "data.loader.batch_size=8",
    "data.loader.eval_batch_size=16",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def tiny_data_cfg(root: Path, **changes) -> dict:
    """The data config (as the DataModule receives it) for tiny tests: 32 px, no workers."""
    cfg = {
        "kind": "folder",
        "root": str(root),
        "manifest": None,
        "split": {"test": 12, "val": 6, "seed": 7},
        "bad_images": "skip",
        "image_size": 32,
        "resize_size": 36,
        "train_crop_scale": [0.5, 1.0],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "loader": {
            "batch_size": 4,
            "eval_batch_size": 8,
            "num_workers": 0,
            "pin_memory": False,
            "persistent_workers": False,
            "prefetch_factor": 2,
        },
    }
    return cfg | changes


def class_colour_image(label: int, rng: np.random.Generator, side: int = 40) -> Image.Image:
    """A noisy image whose mean colour depends on the class: learnable in a few steps."""
    base = np.array([(label * 40) % 256, (255 - label * 40) % 256, (label * 90) % 256])
    pixels = np.clip(base + rng.normal(0, 30, size=(side, side, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def make_scene_folder(root: Path, per_class: int = 10, classes=SCENE_CLASSES, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            class_colour_image(label, rng).save(folder / f"img_{i:03d}.jpg", quality=90)
    return root


def write_cifar_batches(root: Path, per_batch: int = 12, seed: int = 0) -> dict[str, tuple]:
    """The official layout: data_batch_1..5, test_batch, batches.meta (bytes keys, N x 3072)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(i % 10) for i in range(per_batch)]
        with (root / name).open("wb") as handle:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [f"{i}.png".encode() for i in range(per_batch)],
                },
                handle,
            )
        written[name] = (data, labels)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    with (root / "batches.meta").open("wb") as handle:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, handle)
    return written


def make_imagenet_folder(root: Path, count: int = 6, seed: int = 0) -> Path:
    """ILSVRC-style names; one grayscale and one CMYK JPEG, as in the real validation set."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = class_colour_image(i % 6, rng, side=48)
        if i == 0:
            image = image.convert("L")
        elif i == 1:
            image = image.convert("CMYK")
        image.save(root / f"ILSVRC2012_val_{i + 1:08d}.JPEG", quality=90)
    return root


@pytest.fixture(scope="session")
def scene_root(tmp_path_factory) -> Path:
    return make_scene_folder(tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py"
    write_cifar_batches(root)
    return root


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory) -> Path:
    return make_imagenet_folder(tmp_path_factory.mktemp("imagenet_val"))


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory) -> Path:
    """A temp TORCH_HOME holding a random ResNet18 state dict under the real cache file name."""
    import torch
    from torchvision.models import resnet18

    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(resnet18(weights=None).state_dict(), checkpoints / "resnet18-f37072fd.pth")
    return home


def cli_env(torch_home: Path | None = None, cache: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["TORCH_HOME"] = str(torch_home) if torch_home else "/nonexistent-torch-home"
    if cache:
        env["FINETUNE_CACHE"] = str(cache)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def free_port() -> int:
    """A loopback port nothing listens on (taken from the OS, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_cli(
    *overrides: str, cwd: Path, torch_home: Path | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python -m finetune OVERRIDES` the way a user runs it, from `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "finetune", *overrides],
        cwd=cwd,
        env=cli_env(torch_home, cwd / "cache"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_main(*argv: str, cwd: Path, capsys: pytest.CaptureFixture) -> subprocess.CompletedProcess:
    """`python -m finetune ARGV` through the entry point's own main(), in this process: the same
    checks, messages and exit status as the command line, without a fresh interpreter (the
    subprocess tests of test_cli, test_console, test_train and test_report keep that)."""
    import gc

    from finetune.__main__ import main
    from finetune.caller_state import caller_state_kept

    saved_argv, saved_cwd = sys.argv, Path.cwd()
    sys.argv = ["finetune", *argv]
    os.chdir(cwd)
    try:
        with caller_state_kept():  # what the process's exit would end: logging, Hydra, ...
            main()
        returncode = 0
    except SystemExit as stopped:
        returncode = stopped.code if isinstance(stopped.code, int) else 1
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        gc.unfreeze()  # main() freezes the collector for the interpreter's exit
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(list(argv), returncode, captured.out, captured.err)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Non-zero exit, no traceback, and one `error:` line that names the problem."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


def compose_config(*overrides: str, hydra_node: bool = False):
    """The config `python -m finetune OVERRIDES` composes (Hydra's compose API over the package's
    conf/), nothing run; `hydra_node` keeps the hydra.* settings. Hydra is left uninitialised."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from finetune.api import config_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=hydra_node)
    finally:
        GlobalHydra.instance().clear()


def run_in_process(*overrides: str) -> dict:
    """`python -m finetune OVERRIDES` in this process through `finetune.run` (no 5 s of imports
    per run)."""
    from finetune import run

    return run(list(overrides))


def assert_run_refuses(*overrides: str) -> Callable[..., str]:
    """`run(OVERRIDES)` raises one UserError line; returns a checker of the words it names."""
    from finetune.errors import UserError

    with pytest.raises(UserError) as raised:
        run_in_process(*overrides)
    message = str(raised.value)
    assert "\n" not in message and message, message

    def names(*words: str) -> str:
        for word in words:
            assert word.lower() in message.lower(), message
        return message

    return names


@contextmanager
def as_user_in(folder: Path, torch_home: Path | None = None) -> Iterator[Path]:
    """In-process runs see what run_cli gives a subprocess: `folder` as the working folder,
    TORCH_HOME (no ImageNet weights unless `torch_home`), a fresh FINETUNE_CACHE; all restored."""
    env = cli_env(torch_home, folder / "cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for name in ("TORCH_HOME", "FINETUNE_CACHE"):
            patch.setenv(name, env[name])
        patch.delenv("HYDRA_FULL_ERROR", raising=False)
        yield folder


@pytest.fixture
def user_folder(tmp_path) -> Iterator[Path]:
    """tmp_path, as a user's folder (as_user_in) for the test."""
    with as_user_in(tmp_path):
        yield tmp_path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, scene_root) -> Path:
    """One short training run on the tiny scene folder, shared by eval/analyze tests."""
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    run_in_process(
        "mode=train",
        f"data.root={scene_root}",
        "data.split.test=12",
        "data.split.val=12",
        "model.weights=none",
        "trainer.max_epochs=2",
        "optimizer.lr=0.002",
        "train_eval_images=8",
        f"hydra.run.dir={run_dir}",
        *TINY,
    )
    return run_dir


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where torch sees a CUDA GPU; the rest of the suite runs anywhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def quiet_trainer(**settings):
    """A CPU lightning.Trainer for a direct fit in a test: no logger, checkpoints, progress bar or
    model summary; `settings` (max_epochs, limit_*_batches, callbacks, ...) go to Lightning."""
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **settings,
    )
