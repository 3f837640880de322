"""Evaluation images/s side by side: the seed's way (a plain float32 inference loop), the plain
loop in the package's fast-setting training numerics, the package's validation step (Lightning, the
training numerics), and the package's mode=eval scoring path (finetune.inference) in its default
float32 and with inference.precision=bf16-mixed; and how far bf16 scores are from float32."""

import copy
import tempfile
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from benchmarks.common import Settings, now
from benchmarks.loops import (
    autocast,
    build_module,
    interleaved,
    paired_ratio,
    run_lightning,
    seed_and_default,
    tensor_batches,
    to_layout,
)
from finetune.inference import Scorer, run_predict
from finetune.model import ImageClassifier

SEED = "plain loop, float32 (the seed's way)"
PLAIN_DEFAULT = "plain loop, default training numerics"
VALIDATION = "package validation step (training numerics)"
EVAL_DEFAULT = "package mode=eval (inference.precision=32-true, default)"
EVAL_BF16 = "package mode=eval, inference.precision=bf16-mixed"


def test_plain(
    module: ImageClassifier, batches: DataLoader, device: str, precision: str = "32-true"
) -> list[float]:
    """Forward passes in eval mode under inference_mode, as Lightning's test loop runs them."""
    net = module.net.to(device).eval()
    stamps = []
    with torch.inference_mode(), autocast(device, precision):
        for images, _ in batches:
            net(to_layout(module, images.to(device)))
            stamps.append(now(device))
    return stamps


class TimedScorer(Scorer):
    """The scoring module of mode=eval, with the end time of every batch."""

    def __init__(self, net: torch.nn.Module, device: str, precision: str) -> None:
        super().__init__(net, precision)
        self.device_name = device
        self.stamps: list[float] = []

    def on_predict_batch_end(self, *args: Any) -> None:
        self.stamps.append(now(self.device_name))


def compare_evaluation(settings: Settings, size: int, batch: int, device: str) -> dict[str, Any]:
    """Every evaluation path interleaved block by block; speeds over the seed's plain loop, and
    the largest difference between bf16-mixed and float32 softmax scores of the same images."""
    seed_cfg, default_cfg = seed_and_default(size, batch, device)
    precision = default_cfg.trainer.precision
    steps = settings.warmup_steps + max(1, settings.eval_images // batch)
    batches = tensor_batches(size, batch, steps)
    seed, plain, validation = (build_module(cfg) for cfg in (seed_cfg, default_cfg, default_cfg))
    # mode=eval scores a network rebuilt from best_model.pt: float32 weights, default layout
    scored = copy.deepcopy(seed.net)
    scores: dict[str, torch.Tensor] = {}

    def score(inference: str) -> list[float]:
        cfg = OmegaConf.merge(seed_cfg, {"inference": {"precision": inference}})
        scorer = TimedScorer(scored, device, inference)
        with tempfile.TemporaryDirectory(prefix="bench-eval-") as run_dir:
            outputs, _ = run_predict(cfg, run_dir, scorer, batches)
        scores[inference] = torch.cat(outputs).float()
        return scorer.stamps

    first = tensor_batches(size, batch, 1)  # first-call kernel setup, untimed
    test_plain(seed, first, device)
    test_plain(plain, first, device, precision)
    results = interleaved(
        {
            SEED: lambda: test_plain(seed, batches, device),
            PLAIN_DEFAULT: lambda: test_plain(plain, batches, device, precision),
            VALIDATION: lambda: run_lightning("test", validation, batches, default_cfg, device),
            EVAL_DEFAULT: lambda: score("32-true"),
            EVAL_BF16: lambda: score("bf16-mixed"),
        },
        settings.reps,
        settings.warmup_steps,
        batch,
    )
    deviation = (scores["bf16-mixed"] - scores["32-true"]).abs().max().item()
    return {
        "image_size": size,
        "batch": batch,
        "timed_steps": steps - settings.warmup_steps,
        "numerics": {"precision": precision, "channels_last": default_cfg.model.channels_last},
        "variants": results,
        "over_seed": {name: paired_ratio(results, name, SEED) for name in results},
        "lightning_over_plain": paired_ratio(results, VALIDATION, PLAIN_DEFAULT),
        "eval_default_over_plain": paired_ratio(results, EVAL_DEFAULT, SEED),
        "bf16_over_float32_eval": paired_ratio(results, EVAL_BF16, EVAL_DEFAULT),
        "bf16_max_abs_score_diff": round(deviation, 6),
    }
