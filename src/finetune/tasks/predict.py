"""mode=predict: class scores for new images (a file, or the images directly inside a folder).

The images come through the data layer, by the rule every folder is read with
(finetune.data.images.find_images: the images directly inside, as in a class folder; images in
sub-folders are skipped with one warning that counts them, files without an image suffix with
one that names a few; hidden files are ignored; finetune.data.sources.drop_unreadable: image
files that do not decode are skipped with one warning naming them, or refused with
data.bad_images=error),
the scores through the one inference path (finetune.inference: float32 unless
inference.precision says otherwise).
Rows follow sorted relative paths.
"""

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from finetune.data.folder import FolderReader
from finetune.data.images import describe, find_images
from finetune.data.loaders import image_loader
from finetune.data.sources import Listing, drop_unreadable
from finetune.data.transforms import eval_transform
from finetune.errors import UserError
from finetune.evaluation_data import TRANSFORM_KEYS
from finetune.inference import PREDICTIONS_CSV, load_model, scoring_settings, softmax_scores
from finetune.io import write_csv
from finetune.tasks import run_folder

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> dict[str, Any]:
    run_dir = run_folder()
    loaded = load_model(cfg)
    # absolute, not resolved: a link keeps its own name (and suffix) in predictions.csv
    given = Path(str(cfg.predict.input)).expanduser().absolute()
    root, items = find_images(given, "predict.input")
    listing = Listing(FolderReader(root), items, [-1] * len(items))
    listing = drop_unreadable(listing, cfg.data.bad_images)
    if not listing.items:
        what = "is not a readable image" if given.is_file() else "holds no readable image files"
        raise UserError(f"predict.input={given} {what}: {describe(listing.skipped)}")

    transform = eval_transform(**{key: loaded.data[key] for key in TRANSFORM_KEYS})
    loader_cfg = OmegaConf.to_container(cfg.data.loader, resolve=True)
    loader = image_loader(listing.dataset(transform), loader_cfg)
    scores, seconds = softmax_scores(cfg, run_dir, loaded.net, loader)
    predictions = scores.argmax(dim=1).tolist()
    names = loaded.class_names
    path = write_csv(
        run_dir / PREDICTIONS_CSV,
        ["file", "predicted", *(f"score_{name}" for name in names)],
        (
            [str(root / item), names[pred], *(f"{s:.6f}" for s in row)]
            for item, pred, row in zip(listing.items, predictions, scores.tolist(), strict=True)
        ),
    )
    precision = scoring_settings(cfg)["precision"]
    log.info(
        "predicted %d image(s) (%.1f images/s, inference.precision=%s); wrote %s",
        len(listing.items),
        len(listing.items) / seconds,
        precision,
        path,
    )
    return {
        "n": len(listing.items),
        "skipped": sorted(listing.skipped),
        "predictions_csv": str(path),
        "inference_precision": precision,
    }
