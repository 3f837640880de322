"""mode=predict: class scores for new images (a file, or a folder searched recursively).

Scores are float32 unless inference.precision says otherwise (finetune.inference).
Hidden files and files without an image suffix are ignored silently; image files that do not
decode are skipped with one warning naming them. Rows follow sorted relative paths.
"""

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from finetune.data.datamodule import loader_settings
from finetune.data.datasets import ImageDataset
from finetune.data.folder import FolderReader
from finetune.data.images import IMAGE_SUFFIXES, describe, is_image_name, split_readable
from finetune.data.transforms import eval_transform
from finetune.errors import UserError
from finetune.inference import TRANSFORM_KEYS, load_model, scoring_settings, softmax_scores
from finetune.io import write_csv
from finetune.tasks.evaluate import PREDICTIONS_CSV

log = logging.getLogger(__name__)


def input_images(path: Path) -> tuple[Path, list[str]]:
    """A root folder and the image files under it (relative POSIX paths, sorted)."""
    if path.is_file():
        if not is_image_name(path):
            raise UserError(
                f"predict.input={path} is not an image file "
                f"(suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        return path.parent, [path.name]
    if not path.is_dir():
        raise UserError(
            f"predict.input={path} does not exist: pass an image file or a folder of images"
        )
    items = sorted(
        file.relative_to(path).as_posix()
        for file in path.rglob("*")
        if file.is_file()
        and is_image_name(file)
        and not any(part.startswith(".") for part in file.relative_to(path).parts)
    )
    return path, items


def predict(cfg: DictConfig) -> dict[str, Any]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if not cfg.predict.input:
        raise UserError("input is not set: add predict.input=<image file or folder of images>")
    loaded = load_model(cfg)
    root, items = input_images(Path(str(cfg.predict.input)).expanduser().resolve())
    keep, bad = split_readable(root, items)
    if bad:
        log.warning("skipping %d file(s) that do not decode as images: %s", len(bad), describe(bad))
        items = [items[i] for i in keep]
    if not items:
        raise UserError(f"predict.input={cfg.predict.input} holds no readable image files")

    transform = eval_transform(**{key: loaded.data[key] for key in TRANSFORM_KEYS})
    dataset = ImageDataset(FolderReader(root), items, [-1] * len(items), transform)
    loader_cfg = OmegaConf.to_container(cfg.data.loader, resolve=True)
    loader = DataLoader(
        dataset, batch_size=loader_cfg["eval_batch_size"], **loader_settings(loader_cfg)
    )
    scores, seconds = softmax_scores(cfg, run_dir, loaded.net, loader)
    predictions = scores.argmax(dim=1).tolist()
    names = loaded.class_names
    path = write_csv(
        run_dir / PREDICTIONS_CSV,
        ["file", "predicted", *(f"score_{name}" for name in names)],
        (
            [str(root / item), names[pred], *(f"{s:.6f}" for s in row)]
            for item, pred, row in zip(items, predictions, scores.tolist(), strict=True)
        ),
    )
    precision = scoring_settings(cfg)["precision"]
    log.info(
        "predicted %d image(s) (%.1f images/s, inference.precision=%s); wrote %s",
        len(items),
        len(items) / seconds,
        precision,
        path,
    )
    return {
        "n": len(items),
        "skipped": sorted(bad),
        "predictions_csv": str(path),
        "inference_precision": precision,
    }
