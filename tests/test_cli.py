"""The command line as Hydra users expect it: --help, --cfg job, overrides, one-line errors,
and the configs found from an editable and from a normal (non-editable) install."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, assert_one_line_error, cli_env, run_cli


def test_cfg_job_prints_the_composed_config_quickly(tmp_path):
    started = time.perf_counter()
    result = run_cli("--cfg", "job", "data=cifar10", "optimizer.lr=0.01", cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert "kind: cifar10" in result.stdout and "lr: 0.01" in result.stdout
    assert "mode: train" in result.stdout
    assert elapsed < 10, f"--cfg job took {elapsed:.1f}s: heavy imports before composition?"
    assert not (tmp_path / "outputs").exists()  # printing the config writes nothing


def test_help_names_the_app_and_its_groups(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "finetune is powered by Hydra" in result.stdout
    for group in ("data: cifar10, demo, scenes", "trainer: cpu, ddp, gpu", "optimizer: adamw, sgd"):
        assert group in result.stdout


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["data=scnes"], ["unknown data=scnes", "scenes"]),
        (["-m", "optimizer=sgd,adam"], ["unknown optimizer=adam", "adamw"]),
        (["mode=bogus"], ["unknown mode", "train, eval"]),
        (["mode=train"], ["data.root is not set", "experiment=demo"]),
        (["mode=train", "data.root=/no/such/folder"], ["/no/such/folder", "does not exist"]),
        (["experiment=demo", "data.loader.batch_size=-4"], ["batch_size", ">= 1"]),
        (["experiment=demo", "optimizer.lr=-0.1"], ["optimizer.lr", "> 0"]),
        (["experiment=demo", "optimizer.lr=fast"], ["optimizer.lr", "> 0"]),
        (["experiment=demo", "data.split.test=2.5"], ["data.split.test"]),
        (
            ["experiment=demo", "monitor=val/mAP"],
            ["monitor='val/mAP'", "val/<loss|acc|acc_mean|map>"],
        ),
    ],
)
def test_user_mistakes_end_in_one_line(tmp_path, overrides, words):
    assert_one_line_error(run_cli(*overrides, cwd=tmp_path), *words)


def test_gpu_requested_without_gpu(tmp_path):
    result = run_cli("experiment=demo", "trainer.accelerator=gpu", cwd=tmp_path)
    assert_one_line_error(result, "trainer.accelerator=gpu", "trainer=cpu")


def test_non_editable_install_finds_its_configs(tmp_path):
    """`pip install .` (no editable link to the checkout), run from another folder."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (target / "finetune" / "conf" / "config.yaml").is_file()
    assert (target / "finetune" / "conf" / "data" / "scenes.yaml").is_file()
    env = cli_env() | {"PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import finetune; print(finetune.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(target))
    result = subprocess.run(
        [sys.executable, "-m", "finetune", "--cfg", "job", "data=demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "kind: demo" in result.stdout
    assert (
        f"file://{target}/finetune/conf"
        in subprocess.run(
            [sys.executable, "-m", "finetune", "--info", "searchpath"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )


def test_console_script_of_the_editable_install(tmp_path):
    script = Path(sys.executable).parent / "finetune"
    result = subprocess.run(
        [str(script), "--cfg", "job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "kind: folder" in result.stdout
