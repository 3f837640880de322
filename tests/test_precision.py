"""The automatic numeric setting: bf16-mixed + channels-last where the device computes bfloat16
natively, float32 elsewhere; explicit settings win. Capabilities are simulated, so every case
runs on any machine."""

import pytest
import torch

from finetune.precision import choose_numerics, cpu_bf16


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
def test_cpu_choice_follows_native_bf16(cpu, gpu, feature, precision, channels_last):
    cpu(feature)
    gpu(None)
    for accelerator in ("cpu", "auto"):
        chosen = choose_numerics(accelerator, "auto", "auto")
        assert (chosen.precision, chosen.channels_last) == (precision, channels_last)
        assert (feature or "no native bfloat16") in chosen.reason


@pytest.mark.parametrize(
    ("bf16", "precision", "channels_last"), [(True, "bf16-mixed", True), (False, "32-true", False)]
)
def test_gpu_choice_follows_bf16_support(cpu, gpu, bf16, precision, channels_last):
    cpu(None)  # the CPU does not matter when training on the GPU
    gpu(bf16)
    for accelerator in ("gpu", "cuda", "auto"):
        chosen = choose_numerics(accelerator, "auto", "auto")
        assert (chosen.precision, chosen.channels_last) == (precision, channels_last)
    assert "Simulated GPU" in choose_numerics("gpu", "auto", "auto").reason


def test_explicit_settings_win(cpu, gpu):
    cpu("AMX")
    gpu(True)
    chosen = choose_numerics("cpu", "32-true", "auto")
    assert (chosen.precision, chosen.channels_last) == ("32-true", True)
    chosen = choose_numerics("gpu", "auto", False)
    assert (chosen.precision, chosen.channels_last) == ("bf16-mixed", False)
    chosen = choose_numerics("cpu", "16-mixed", True)
    assert (chosen.precision, chosen.channels_last, chosen.reason) == (
        "16-mixed",
        True,
        "as set in the config",
    )
    cpu(None)
    assert choose_numerics("cpu", "bf16-mixed", "auto").channels_last is False


def test_this_machine_is_described_truthfully():
    """No simulation: the answer matches what torch reports about this CPU."""
    capabilities = torch.cpu.get_capabilities()
    native = capabilities.get("amx_tile") or capabilities.get("avx512_bf16")
    assert bool(cpu_bf16()) == bool(native)
    assert choose_numerics("cpu", "auto", "auto").precision == (
        "bf16-mixed" if native else "32-true"
    )
