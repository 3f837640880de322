"""The reproduction check of mode=eval: fresh softmax scores against saved ones
(`eval.reference`), row by row within `eval.tolerance`; the verdict goes to reproduction.json.

The saved file is loaded before any work (a bad file costs nothing), the comparison is made
after every other output is written (a failed check loses nothing)."""

import logging
from pathlib import Path
from typing import Any

import torch

from finetune.errors import UserError
from finetune.io import write_json
from finetune.safe_load import weights_only_load

log = logging.getLogger(__name__)

REPRODUCTION = "reproduction.json"


def load_reference(reference: str | Path) -> torch.Tensor:
    """Saved N x C softmax scores, loaded weights_only; anything else raises UserError."""
    path = Path(reference).expanduser()
    if not path.is_file():
        raise UserError(
            f"eval.reference={reference} does not exist: pass a saved softmax_scores.pt"
        )
    saved = weights_only_load(path, f"eval.reference={path} is not a saved tensor")
    if not isinstance(saved, torch.Tensor) or saved.ndim != 2:
        shape = tuple(saved.shape) if isinstance(saved, torch.Tensor) else type(saved).__name__
        raise UserError(f"eval.reference={path} holds {shape}, expected N x C softmax scores")
    return saved


def compare_with_reference(
    scores: torch.Tensor, saved: torch.Tensor, tolerance: float, name: str = "reference"
) -> dict[str, Any]:
    """Max |difference| and the number of rows differing by more than `tolerance` between the
    fresh scores and the saved ones; a saved tensor of another shape raises UserError."""
    rows, classes = scores.shape
    if saved.shape[1] != classes:
        raise UserError(
            f"eval.reference={name} has scores for {saved.shape[1]} classes, "
            f"the model has {classes}"
        )
    if saved.shape[0] != rows:
        raise UserError(
            f"eval.reference={name} has {saved.shape[0]} rows but {rows} images were evaluated: "
            "is it from the same checkpoint and split?"
        )
    difference = (scores.double() - saved.double()).abs()
    differ = int((~(difference <= tolerance)).any(dim=1).sum())  # NaN counts as a difference
    result = {
        "reference": name,
        "tolerance": tolerance,
        "max_abs_diff": float(difference.max()),
        "rows": rows,
        "rows_differ": differ,
        "passed": differ == 0,
    }
    log.info(
        "reproduction: max |difference| %.3g; %d of %d rows differ by more than %g from %s",
        result["max_abs_diff"],
        differ,
        rows,
        tolerance,
        name,
    )
    return result


def check_reproduction(
    scores: torch.Tensor, saved: torch.Tensor, tolerance: float, name: str, run_dir: Path
) -> dict[str, Any]:
    """compare_with_reference, written to reproduction.json; a mismatch is a UserError after
    the file is written."""
    check = compare_with_reference(scores, saved, tolerance, name)
    write_json(run_dir / REPRODUCTION, check)
    if not check["passed"]:
        raise UserError(
            f"reproduction failed: {check['rows_differ']} of {check['rows']} rows of softmax "
            f"scores differ from {name} by more than eval.tolerance={tolerance} "
            f"(max |difference| {check['max_abs_diff']:.3g})"
        )
    return check
