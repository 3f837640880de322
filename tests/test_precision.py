"""The automatic numeric setting: bf16-mixed + channels-last on a GPU with bf16, and on a CPU with
native bf16 only with cpu_bf16=true (it missed the parity rule there); float32 elsewhere;
explicit settings win. Capabilities are simulated, so every case runs on any machine."""

import json

import pytest
import torch

from finetune.errors import UserError
from finetune.precision import choose_numerics, cpu_bf16
from test_train import SCENE, train_in_process

from conftest import TINY, compose_config


@pytest.fixture
def cpu(monkeypatch):
    """Set what the CPU can do: cpu("AMX"), cpu("AVX512-BF16") or cpu(None)."""

    def set_features(feature: str | None) -> None:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: feature == "AMX")
        monkeypatch.setattr(
            torch.cpu, "_is_avx512_bf16_supported", lambda: feature == "AVX512-BF16"
        )

    return set_features


@pytest.fixture
def gpu(monkeypatch):
    """Set the visible GPU: gpu(None) for none, gpu(True/False) for one with/without bf16."""

    def set_gpu(bf16: bool | None) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: bf16 is not None)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bool(bf16))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Simulated GPU")

    return set_gpu


@pytest.mark.parametrize(
    ("feature", "precision", "channels_last"),
    [("AMX", "bf16-mixed", True), ("AVX512-BF16", "bf16-mixed", True), (None, "32-true", False)],
)
def test_cpu_choice_follows_native_bf16_when_allowed(cpu, gpu, feature, precision, channels_last):
    cpu(feature)
    gpu(None)
    for accelerator in ("cpu", "auto"):
        chosen = choose_numerics(accelerator, "auto", "auto", True)
        assert (chosen.precision, chosen.channels_last) == (precision, channels_last)
        assert (feature or "no native bfloat16") in chosen.reason


@pytest.mark.parametrize("feature", ["AMX", "AVX512-BF16", None])
def test_cpu_default_is_float32_and_says_why(cpu, gpu, feature):
    """cpu_bf16=false (the default): float32 on every CPU; a bf16-capable one is told it is the
    opt-in, and why."""
    cpu(feature)
    gpu(None)
    chosen = choose_numerics("cpu", "auto", "auto", False)
    assert (chosen.precision, chosen.channels_last) == ("32-true", False)
    assert ("opt-in (cpu_bf16=true)" in chosen.reason) == (feature is not None)


@pytest.mark.parametrize(
    ("bf16", "precision", "channels_last"), [(True, "bf16-mixed", True), (False, "32-true", False)]
)
def test_gpu_choice_follows_bf16_support(cpu, gpu, bf16, precision, channels_last):
    cpu(None)  # the CPU does not matter when training on the GPU
    gpu(bf16)
    for accelerator in ("gpu", "cuda", "auto"):
        for cpu_bf16_allowed in (False, True):  # a CPU-only setting
            chosen = choose_numerics(accelerator, "auto", "auto", cpu_bf16_allowed)
            assert (chosen.precision, chosen.channels_last) == (precision, channels_last)
    assert "Simulated GPU" in choose_numerics("gpu", "auto", "auto", False).reason


def test_explicit_settings_win(cpu, gpu):
    cpu("AMX")
    gpu(True)
    chosen = choose_numerics("gpu", "auto", False, False)
    assert (chosen.precision, chosen.channels_last) == ("bf16-mixed", False)
    chosen = choose_numerics("cpu", "16-mixed", True, False)
    assert (chosen.precision, chosen.channels_last, chosen.reason) == (
        "16-mixed",
        True,
        "as set in the config",
    )
    cpu(None)
    assert choose_numerics("cpu", "bf16-mixed", "auto", True).channels_last is False


def test_channels_last_follows_the_precision_the_user_set(cpu, gpu):
    """A trainer.precision set by the user is their opt-in: cpu_bf16 (which only decides what
    `auto` means) has no say in channels-last, whose own rule is said instead: on for a 16-bit
    precision on a device with native bfloat16, off for float32 and float64."""
    cpu("AMX")
    gpu(None)
    chosen = choose_numerics("cpu", "bf16-mixed", "auto", False)
    assert (chosen.precision, chosen.channels_last) == ("bf16-mixed", True)
    assert chosen.reason == "channels-last on: this CPU computes bfloat16 natively (AMX)"
    for precision in ("32-true", "64-true"):
        chosen = choose_numerics("cpu", precision, "auto", True)
        assert (chosen.precision, chosen.channels_last) == (precision, False)
        assert chosen.reason == (
            f"channels-last off: it pays off for 16-bit precisions only, and this run trains in "
            f"{precision}"
        )


def test_this_machine_is_described_truthfully():
    """No simulation: the answer matches what torch reports about this CPU."""
    capabilities = torch.cpu.get_capabilities()
    native = capabilities.get("amx_tile") or capabilities.get("avx512_bf16")
    assert bool(cpu_bf16()) == bool(native)
    assert choose_numerics("cpu", "auto", "auto", True).precision == (
        "bf16-mixed" if native else "32-true"
    )
    assert choose_numerics("cpu", "auto", "auto", False).precision == "32-true"


# -- the choice wired into mode=train ----------------------------------------------------------
def _compose(*overrides: str):
    return compose_config("mode=eval", "data.root=unused", *overrides)


def test_defaults_are_auto_and_bad_values_are_one_line():
    from finetune.validate import validate_config

    cfg = _compose()
    assert (cfg.trainer.precision, cfg.model.channels_last, cfg.cpu_bf16) == ("auto", "auto", False)
    validate_config(cfg)
    for override, words in [
        ("trainer.precision=bf17", "trainer.precision='bf17': use auto, "),
        ("model.channels_last=maybe", "model.channels_last='maybe' must be true, false or auto"),
    ]:
        with pytest.raises(UserError) as error:
            validate_config(_compose(override))
        assert words in str(error.value) and "\n" not in str(error.value)
    validate_config(_compose("trainer.precision=16-mixed", "model.channels_last=false"))


# One training and one validation batch an epoch: these runs check the numerics, not the fit
# (the test split is scored in full).
TRAIN = [
    *SCENE,
    *TINY,
    "trainer.max_epochs=1",
    "train_eval_images=0",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
]


def test_bf16_run_records_its_numerics_resumes_and_evaluates_as_trained(
    tmp_path, scene_root, cpu, gpu
):
    """On a (simulated) CPU with native bf16, cpu_bf16=true trains in bf16-mixed + channels-last,
    says so once, records it; the run resumes in bf16; and its test figures (judged in float32)
    are exactly what a later mode=eval of best_model.pt reports."""
    cpu("AVX512-BF16")
    gpu(None)
    data = f"data.root={scene_root}"
    allowed = "cpu_bf16=true"
    first = train_in_process(tmp_path / "first", data, allowed, *TRAIN)
    log_lines = (tmp_path / "first" / "finetune.log").read_text().splitlines()
    said = [line.split(" - ", 1)[1] for line in log_lines if " - numerics: " in line]
    assert said == [
        "numerics: trainer.precision=bf16-mixed, model.channels_last=true (precision bf16-mixed "
        "and channels-last on: this CPU computes bfloat16 natively (AVX512-BF16))"
    ]
    numerics = {
        "precision": "bf16-mixed",
        "channels_last": True,
        "reason": said[0].split(" (", 1)[1][:-1],
    }
    assert first["numerics"] == numerics
    assert first["inference"] == {"precision": "32-true", "deterministic": True}
    saved = json.loads((tmp_path / "first" / "metrics.json").read_text())
    best = torch.load(tmp_path / "first" / "best_model.pt", weights_only=True)
    assert saved["numerics"] == best["metrics"]["numerics"] == numerics
    assert best["hyper_parameters"]["model"]["channels_last"] is True  # a plain bool, not auto

    resumed = train_in_process(
        tmp_path / "resumed",
        data,
        allowed,
        *TRAIN,
        "trainer.max_epochs=2",
        f"resume={tmp_path / 'first'}",
    )
    assert resumed["epochs_run"] == 2 and resumed["numerics"] == numerics

    evaluated = train_in_process(
        tmp_path / "eval", "mode=eval", f"ckpt={tmp_path / 'resumed' / 'best_model.pt'}", *TINY
    )
    for key in ("acc_mean", "map"):
        assert evaluated[key] == pytest.approx(resumed["test"][f"test/{key}"], abs=1e-6)


def test_explicit_settings_win_in_a_run(tmp_path, scene_root, cpu, gpu):
    cpu("AMX")
    gpu(None)
    results = train_in_process(
        tmp_path,
        f"data.root={scene_root}",
        *TRAIN,
        "trainer.precision=32-true",
        "model.channels_last=false",
    )
    assert results["numerics"] == {
        "precision": "32-true",
        "channels_last": False,
        "reason": "as set in the config",
    }
    hparams = torch.load(tmp_path / "best_model.pt", weights_only=True)["hyper_parameters"]
    assert hparams["model"]["channels_last"] is False


# Both "-true" plugins convert the module (HalfPrecision, DoublePrecision); the double one is
# the slow one here, and the fix does not depend on the dtype.
@pytest.mark.parametrize(
    "precision", ["bf16-true", pytest.param("64-true", marks=pytest.mark.slow)]
)
def test_a_true_precision_trains_is_judged_and_evaluated(tmp_path, scene_root, precision):
    """bf16-true and 64-true (Lightning's HalfPrecision and DoublePrecision: they convert the
    module's weights to their dtype) train, the best epoch is measured again in float32, and a
    later mode=eval of best_model.pt reports exactly those test figures."""
    trained = train_in_process(
        tmp_path / "run", f"data.root={scene_root}", *TRAIN, f"trainer.precision={precision}"
    )
    assert trained["numerics"]["precision"] == precision
    assert trained["inference"]["precision"] == "32-true"
    evaluated = train_in_process(
        tmp_path / "eval", "mode=eval", f"ckpt={tmp_path / 'run' / 'best_model.pt'}", *TINY
    )
    for key in ("acc_mean", "map"):
        assert evaluated[key] == pytest.approx(trained["test"][f"test/{key}"], abs=1e-6)
