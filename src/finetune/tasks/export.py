"""mode=export: the network of `ckpt` as one ONNX or TorchScript file, to serve without this
package, and beside it `<file>.json`: everything needed to use it (class names in output order,
the input, the preprocessing step by step, the output), the checkpoint it came from and the
check of the written file. The writing and the check are finetune.exporting's; this task picks
the files, refuses to overwrite them and writes the description."""

import logging
from typing import Any

from omegaconf import DictConfig

from finetune.checkpoint import EXPORTED
from finetune.errors import UserError
from finetune.exporting import FILE_NAMES, write_exported
from finetune.inference import load_model
from finetune.io import write_json
from finetune.tasks import run_folder

log = logging.getLogger(__name__)


def export(cfg: DictConfig) -> dict[str, Any]:
    run_dir = run_folder()
    export_format = str(cfg.export.format)
    path = run_dir / FILE_NAMES[export_format]
    json_path = path.with_name(path.name + ".json")
    taken = [p.name for p in (path, json_path) if p.exists()]
    if taken:
        raise UserError(
            f"{' and '.join(taken)} already in {run_dir}: kept; export into a new run folder"
        )
    loaded = load_model(cfg)
    description = write_exported(loaded, export_format, path)
    write_json(json_path, description)
    check = description["check"]
    log.info(
        "exported %s to %s (%.1f MB, %s logits within %.2g of PyTorch); described in %s",
        loaded.path,
        path,
        path.stat().st_size / 1e6,
        EXPORTED[export_format][0],
        check["max_abs_diff_logits"],
        json_path,
    )
    return {
        "format": export_format,
        "model": str(path),
        "description": str(json_path),
        "class_names": description["class_names"],
        "check": check,
    }
