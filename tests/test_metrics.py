"""torchmetrics-based split metrics against scikit-learn, the independent oracle."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, recall_score

from finetune.metrics import ClassificationMetrics, flatten


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_equal_scikit_learn(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(203, 6, generator=generator) * 2
    target = torch.randint(0, 6, (203,), generator=generator)
    logits[target == 2, 2] += 2.0  # one class easier than the rest
    metrics = ClassificationMetrics(6)
    for chunk in torch.split(torch.arange(203), 17):  # streamed in uneven batches
        metrics.update(logits[chunk], target[chunk], torch.tensor(float(chunk[0])))
    values = metrics.compute()

    scores = logits.softmax(dim=1).numpy()
    y, predicted = target.numpy(), scores.argmax(1)
    recall = recall_score(y, predicted, average=None, labels=range(6))
    ap = np.array([average_precision_score(y == c, scores[:, c]) for c in range(6)])
    assert np.allclose(values["acc_class"].numpy(), recall, atol=1e-6)
    assert np.allclose(values["ap_class"].numpy(), ap, atol=1e-6)
    assert values["acc"].item() == pytest.approx(accuracy_score(y, predicted), abs=1e-6)
    assert values["acc_mean"].item() == pytest.approx(recall.mean(), abs=1e-6)
    assert values["map"].item() == pytest.approx(ap.mean(), abs=1e-6)
    assert "loss" in values


def test_absent_class_is_nan_and_left_out_of_the_means():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 1.0], [0.0, 0.0, 3.0]])
    target = torch.tensor([0, 1, 0, 1])  # class 2 never occurs
    metrics = ClassificationMetrics(3)
    metrics.update(logits, target)
    values = metrics.compute()
    assert torch.isnan(values["acc_class"][2]) and torch.isnan(values["ap_class"][2])
    assert values["acc_mean"].item() == pytest.approx((1.0 + 0.5) / 2)
    flat = flatten(values, ["a", "b", "c"], "val")
    assert flat["val/acc/a"] == 1.0 and flat["val/acc/b"] == 0.5 and "loss" not in values
