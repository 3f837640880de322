"""What `trainer=gpu` switches on, run wherever torch can run it: the GPU's numerics (bf16-mixed
autocast, channels-last; set explicitly here, as trainer.precision=auto picks them on a GPU with
bfloat16) and cudnn.benchmark on the CPU (trainer.accelerator=cpu), torch.compile with inductor
on the CPU (gcc), and the same on a CUDA GPU where there is one."""

import json
from pathlib import Path

import pytest
import torch

from finetune.precision import choose_numerics

from conftest import REPO, compose_config, run_in_process

# 32 px images, no workers and no progress bar.
SMALL = [
    "data.image_size=32",
    "data.resize_size=32",
    "data.loader.num_workers=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]
SCENE = ["data.split.test=12", "data.split.val=12", "model.weights=none", "train_eval_images=0"]


def train(tmp_path: Path, scene_root: Path, name: str, *overrides: str) -> Path:
    """`python -m finetune mode=train ...` in this process; returns its run folder."""
    run_dir = tmp_path / name
    run_in_process(
        "mode=train",
        f"data.root={scene_root}",
        *SCENE,
        *SMALL,
        *overrides,
        f"hydra.run.dir={run_dir}",
    )
    return run_dir


def evaluate(tmp_path: Path, ckpt: Path, name: str, *overrides: str) -> Path:
    """`python -m finetune mode=eval ckpt=CKPT ...` in this process; returns its run folder."""
    run_dir = tmp_path / name
    run_in_process("mode=eval", f"ckpt={ckpt}", *SMALL, *overrides, f"hydra.run.dir={run_dir}")
    return run_dir


def test_trainer_gpu_is_trainer_accelerator_gpu_flag_by_flag():
    """The trainer group sets trainer keys only: `trainer=gpu` is `trainer.accelerator=gpu` plus
    cuDNN autotuning, the numerics left to trainer.precision=auto / model.channels_last=auto."""
    from omegaconf import OmegaConf

    group = OmegaConf.to_container(compose_config("trainer=gpu"))
    flag = OmegaConf.to_container(
        compose_config("trainer.accelerator=gpu", "trainer.benchmark=true")
    )
    default = OmegaConf.to_container(compose_config())
    assert group == flag
    assert {key: group[key] for key in group if key != "trainer"} == {
        key: default[key] for key in default if key != "trainer"
    }
    assert (group["trainer"]["precision"], group["model"]["channels_last"]) == ("auto", "auto")


def test_gpu_numerics_on_the_cpu_train_resume_and_evaluate_reproducibly(tmp_path, scene_root):
    profile = [
        "trainer=gpu",
        "trainer.accelerator=cpu",
        "trainer.precision=bf16-mixed",
        "model.channels_last=true",
        "data.loader.batch_size=16",
    ]
    # one training and one validation batch an epoch: the numerics are checked, not the fit
    one_batch = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]
    first = train(tmp_path, scene_root, "first", *profile, *one_batch, "trainer.max_epochs=1")
    saved = torch.load(first / "best_model.pt", weights_only=True)["hyper_parameters"]
    assert saved["model"]["channels_last"] is True
    log = (first / "finetune.log").read_text()
    assert "Using bfloat16 Automatic Mixed Precision" in log, log[-2000:]

    resumed = train(
        tmp_path,
        scene_root,
        "resumed",
        *profile,
        *one_batch,
        "trainer.max_epochs=2",
        f"resume={first}",
    )
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2
    ckpt = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["hyper_parameters"]["model"]["channels_last"] is True

    # Scores are float32 and deterministic whatever the trainer profile says: the GPU profile
    # (bf16-mixed, benchmark) and the default CPU profile give the same bits.
    once = evaluate(tmp_path, resumed / "best_model.pt", "eval1", *profile)
    twice = evaluate(
        tmp_path, resumed / "best_model.pt", "eval2", f"eval.reference={once / 'softmax_scores.pt'}"
    )
    scores = torch.load(once / "softmax_scores.pt", weights_only=True)
    assert scores.dtype == torch.float32
    assert torch.equal(scores, torch.load(twice / "softmax_scores.pt", weights_only=True))
    check = json.loads((twice / "reproduction.json").read_text())
    assert check["passed"] and check["tolerance"] == 1e-6 and check["max_abs_diff"] == 0.0


@pytest.mark.slow
def test_compiled_training_exports_a_plain_network(tmp_path, scene_root):
    """model.compile=true (inductor, on the CPU here) trains one epoch; best_model.pt holds
    plain state-dict keys, loads into an uncompiled ResNet18 and scores the test split exactly
    as the compiled network did at the end of training."""
    run_dir = train(
        tmp_path,
        scene_root,
        "compiled",
        "model.compile=true",
        "trainer.max_epochs=1",
        "data.loader.batch_size=16",
        "data.loader.eval_batch_size=16",
    )
    state = torch.load(run_dir / "best_model.pt", weights_only=True)["state_dict"]
    assert not [key for key in state if "_orig_mod" in key]
    trained = json.loads((run_dir / "metrics.json").read_text())["test"]
    evaluated = json.loads(
        (evaluate(tmp_path, run_dir / "best_model.pt", "eval") / "metrics.json").read_text()
    )
    assert evaluated["n"] == 12
    assert evaluated["acc_mean"] == pytest.approx(trained["test/acc_mean"], abs=1e-6)
    assert evaluated["map"] == pytest.approx(trained["test/map"], abs=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("compile_model", ["false", "true"])
def test_gpu_profile_on_a_gpu(tmp_path, scene_root, compile_model):
    """The real thing: CUDA, bf16-mixed, channels-last, pinned memory (and compile)."""
    run_dir = train(
        tmp_path,
        scene_root,
        "gpu",
        "trainer=gpu",
        f"model.compile={compile_model}",
        "trainer.max_epochs=2",
    )
    log = (run_dir / "finetune.log").read_text()
    assert "GPU available: True" in log or "cuda" in log.lower(), log[-2000:]
    once = evaluate(tmp_path, run_dir / "best_model.pt", "eval1", "trainer=gpu")
    evaluate(
        tmp_path,
        run_dir / "best_model.pt",
        "eval2",
        "trainer=gpu",
        f"eval.reference={once / 'softmax_scores.pt'}",
    )


@pytest.mark.slow
def test_device_check_smoke(tmp_path, monkeypatch):
    """`make device-check` on the CPU, tiny settings: every section is written."""
    monkeypatch.syspath_prepend(str(REPO))  # benchmarks/ lives beside src/
    from benchmarks.device_check import main

    results = main(["--quick", "--device", "cpu", "--out", str(tmp_path / "check.json")])
    assert json.loads((tmp_path / "check.json").read_text()) == results
    assert results["gpu_tests"]["exit_code"] in (0, 5)  # 5: no GPU test collected to run
    assert [run["exit_code"] for run in results["demo"]] == [0]
    default = choose_numerics("cpu", "auto", "auto", False)  # what trainer=gpu gets on this CPU
    assert results["training"][0]["precision"] == default.precision
    assert results["training"][0]["channels_last"] is default.channels_last
    assert results["demo"][0]["numerics"] == default.as_dict()
    assert results["loader"]["images_per_s"] > 0
