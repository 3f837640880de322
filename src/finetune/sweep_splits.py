"""Whether the runs of a sweep can be ranked against each other: only when they were validated
on the same images. Read from what the runs wrote (their split.csv and .hydra/config.yaml), so
that a seed sweep (data.split.seed follows seed by default) is said, not ranked as if fair."""

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from finetune.io import TEXT

# The settings that choose a run's validation images (data.split.seed is ${seed} by default).
SPLIT_KEYS = ("data.root", "data.manifest", "data.split.seed", "data.split.val", "data.split.test")


def job_config(job: Path) -> DictConfig:
    """A run's composed config, as Hydra saved it (empty when there is none)."""
    config = job / ".hydra" / "config.yaml"
    return OmegaConf.load(config) if config.is_file() else OmegaConf.create()


def _validation_images(job: Path) -> str | None:
    """A digest of the images a run was validated on: the val rows of its split.csv, in any
    order (None without split.csv: nothing to compare)."""
    manifest = job / "split.csv"
    if not manifest.is_file():
        return None
    with manifest.open(newline="", **TEXT) as handle:
        rows = sorted(
            f"{r['path']}\t{r['label']}" for r in csv.DictReader(handle) if r["split"] == "val"
        )
    return hashlib.sha256("\n".join(rows).encode(**TEXT)).hexdigest()


def _split_settings(job: Path) -> dict[str, str]:
    """The SPLIT_KEYS of a run's config as a person reads them: `2`, or `${seed} = 2` for a key
    that follows another."""
    config, settings = job_config(job), {}
    for key in SPLIT_KEYS:
        parent, _, name = key.rpartition(".")
        node = OmegaConf.select(config, parent)
        if not isinstance(node, DictConfig) or name not in node:
            continue
        value = OmegaConf.select(node, name, throw_on_resolution_failure=False)
        if OmegaConf.is_interpolation(node, name):
            value = f"{OmegaConf.to_container(node)[name]} = {value}"
        settings[key] = str(value)
    return settings


def validation_difference(jobs: Sequence[Path]) -> str:
    """Why the values of these runs (job folders, in launch order) are not comparable: they were
    validated on different images (data.root and the val rows of split.csv); "" when they were
    validated on the same ones."""
    groups: dict[tuple[str | None, str], list[str]] = {}
    settings: list[dict[str, str]] = []
    for job in jobs:
        if (images := _validation_images(job)) is not None:
            settings.append(_split_settings(job))
            groups.setdefault((settings[-1].get("data.root"), images), []).append(job.name)
    if len(groups) < 2:
        return ""
    sets = " | ".join(("run " if len(g) == 1 else "runs ") + ", ".join(g) for g in groups.values())
    differ = [
        f"{key} differs ({', '.join(dict.fromkeys(s.get(key, 'unset') for s in settings))})"
        for key in SPLIT_KEYS
        if len({s.get(key) for s in settings}) > 1
    ]
    why = "; ".join(differ) or "their split settings are the same, but the images found differed"
    return (
        f"the runs were validated on different images ({sets}: the val rows of their split.csv "
        f"differ), as {why}: fix data.split.seed=<n> or give data.manifest=<one run's split.csv> "
        "to compare them on one split"
    )
