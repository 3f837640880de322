"""The answers the benchmark exists for, and the Markdown report of all its figures."""

from typing import Any

SPEEDUP_TARGET = 2.3  # the package's fast setting over the seed's plain float32 loop, training
SPEEDUP_AT = (224, 16)  # ... at this image size and batch
LIGHTNING_TARGET = 0.95  # Lightning's images/s over a plain loop's at the same numerics
CACHE_WORTH = 0.05  # a decoded-image cache must save this share of training time
SEED = "plain loop, float32 (the seed's way)"


def answers(results: dict[str, Any]) -> dict[str, Any]:
    """The default's speed-up over the seed's way; Lightning vs a plain loop at the same
    numerics; the bf16 inference option; the loader's share of the CPU during training and
    whether a decoded-image cache saves enough training time to be worth building."""
    training, evaluation = results["training"], results["evaluation"]
    config = lambda row: {"image_size": row["image_size"], "batch": row["batch"]}  # noqa: E731
    speedups = [{**config(r), "ratio": r["default_over_seed"]} for r in training]
    at_target = [s["ratio"] for s in speedups if (s["image_size"], s["batch"]) == SPEEDUP_AT]
    lightning = [
        {**config(r), "stage": "training", "ratio": r["lightning_over_plain"]} for r in training
    ] + [
        {**config(r), "stage": stage, "ratio": r[key]}
        for r in evaluation
        for stage, key in (
            ("validation", "lightning_over_plain"),
            ("mode=eval", "eval_default_over_plain"),
        )
    ]
    worst = min(item["ratio"] for item in lightning)
    shares = results["loader_share"]  # CPU only: on a GPU host the model does not share cores
    best_saving = max((row["cache_saving_measured"] for row in shares), default=0.0)
    return {
        "default_over_seed": {
            "target": SPEEDUP_TARGET,
            "at": list(SPEEDUP_AT),
            "value": at_target[0] if at_target else None,
            "met": bool(at_target) and at_target[0] >= SPEEDUP_TARGET,
            "configs": speedups,
        },
        "lightning_over_plain": {
            "target": LIGHTNING_TARGET,
            "worst": worst,
            "met": worst >= LIGHTNING_TARGET,
            "configs": lightning,
        },
        "bf16_inference": [
            {
                **config(r),
                "speedup": r["bf16_over_float32_eval"],
                "max_abs_score_diff": r["bf16_max_abs_score_diff"],
            }
            for r in evaluation
        ],
        "decode_cache": {
            "threshold": CACHE_WORTH,
            "best_saving": best_saving,
            "justified": best_saving >= CACHE_WORTH,
            "configs": [
                {
                    **config(r),
                    "loader_share": r["loader_share"],
                    "saving": r["cache_saving_measured"],
                }
                for r in shares
            ],
        },
    }


def _rate(cell: dict[str, Any], digits: int = 1) -> str:
    return f"{cell['median']:.{digits}f} ({cell['min']:.{digits}f}–{cell['max']:.{digits}f})"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def _rss(cell: dict[str, Any]) -> str:
    """Peak RSS of a block and how far it rose above the RSS at the block's start."""
    if cell["rss_start_mb"] is None:
        return _mb(cell["rss_peak_mb"])
    return f"{cell['rss_peak_mb']:.0f} (+{cell['rss_peak_mb'] - cell['rss_start_mb']:.0f})"


def _configs(items: list[dict[str, Any]], key: str, fmt: str, unit: str = "") -> str:
    return ", ".join(f"{c['image_size']}px b{c['batch']}: {c[key]:{fmt}}{unit}" for c in items)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _overhead(overhead: dict[str, Any], training: list[dict[str, Any]]) -> list[str]:
    """Each variant's ms per step, and what it adds as a share of a real step."""
    plain_ms = {
        (row["image_size"], row["batch"]): 1000
        * row["batch"]
        / row["variants"]["package fast setting (Lightning)"]["images_per_s"]["median"]
        for row in training
    }
    header = ["variant", "ms/step", "added ms"]
    header += [f"added, % of a {size}px b{batch} step" for size, batch in plain_ms]
    rows = []
    for variant in overhead["variants"]:
        added = variant["added_ms"]
        shares = ["–" if added is None else f"{100 * added / ms:.2f}" for ms in plain_ms.values()]
        rows.append(
            [
                variant["variant"],
                f"{variant['ms_per_step']:.2f}",
                "–" if added is None else f"{added:+.2f}",
                *shares,
            ]
        )
    epoch = overhead["epoch_end_metrics_ms"]
    return _table(header, rows) + [
        "",
        f"Training metrics over one scene epoch ({epoch['images']} images, batch 64): "
        f"all per-step updates {epoch['updates_total_ms']} ms, epoch-end compute "
        f"{epoch['compute_ms']} ms. TensorBoard writes every "
        f"{overhead['log_every_n_steps']} steps (trainer.log_every_n_steps).",
    ]


def _per_worker(cell: dict[str, Any] | None) -> str:
    return "–" if cell is None else _rate(cell)


def _train_per_worker(rows: list[dict[str, Any]]) -> str:
    """The training pipeline's images/s per worker at the most workers measured, per config."""
    most = max(row["workers"] for row in rows)
    if most == 0:
        return "Only the main process loaded (workers 0): no per-worker figures."
    figures = [
        f"{row['image_size']}px b{row['batch']}: {row['images_per_s_per_worker']['median']:.0f}"
        for row in rows
        if row["transform"] == "train" and row["workers"] == most
    ]
    return (
        f"Training pipeline, images/s per worker at {most} worker{'s' * (most > 1)}: "
        f"{', '.join(figures)}. "
        "A model that trains R images/s needs about R / that many workers, each on a free core "
        "like these (the main process, which feeds the model, needs its own)."
    )


def _variants_table(rows: list[dict[str, Any]], ratio_key: str | None) -> list[str]:
    """One line per configuration: each variant's images/s and its speed over the seed's way."""
    names = list(rows[0]["variants"])
    header = ["size", "batch", "fast numerics", *[f"{name}, img/s" for name in names]]
    lines = []
    for row in rows:
        over = row["over_seed"] if ratio_key is None else None
        cells = []
        for name in names:
            cell = _rate(row["variants"][name]["images_per_s"])
            if name != SEED and over is not None:
                cell += f" ({over[name]:.2f}x)"
            cells.append(cell)
        numerics = row["numerics"]
        layout = ", channels-last" if numerics["channels_last"] else ""
        lines.append([row["image_size"], row["batch"], f"{numerics['precision']}{layout}", *cells])
    return _table(header, lines)


def _training_table(rows: list[dict[str, Any]]) -> list[str]:
    names = list(rows[0]["variants"])
    header = [
        "size",
        "batch",
        "fast numerics",
        *[f"{name}, img/s" for name in names],
        "package fast setting / seed",
        "Lightning / plain, same numerics",
        *[f"{name}, RSS MB" for name in names],
    ]
    lines = []
    for row in rows:
        numerics = row["numerics"]
        layout = ", channels-last" if numerics["channels_last"] else ""
        lines.append(
            [
                row["image_size"],
                row["batch"],
                f"{numerics['precision']}{layout}",
                *[_rate(row["variants"][name]["images_per_s"]) for name in names],
                f"**{row['default_over_seed']:.2f}x**",
                f"{row['lightning_over_plain']:.3f}",
                *[_rss(row["variants"][name]) for name in names],
            ]
        )
    return _table(header, lines)


def _share_table(rows: list[dict[str, Any]]) -> list[str]:
    header = [
        "size",
        "batch",
        "workers",
        "img/s from JPEGs",
        "img/s from decoded images",
        "loader share of CPU time",
        "cores: loader / main",
        "cache saving, measured",
        "cache saving, estimated",
    ]
    return _table(
        header,
        [
            [
                row["image_size"],
                row["batch"],
                row["workers"],
                _rate(row["images_per_s"]),
                _rate(row["images_per_s_decoded"]),
                f"{100 * row['loader_share']:.0f}%",
                f"{row['loader_cores']:.2f} / {row['main_cores']:.2f}",
                f"{100 * row['cache_saving_measured']:.1f}%",
                f"{100 * row['cache_saving_estimated']:.1f}%",
            ]
            for row in rows
        ],
    )


def _parity(parity: dict[str, Any] | None) -> list[str]:
    if parity is None:
        return [
            "Not measured yet: `python benchmarks/parity.py` (`make parity`) writes parity.json."
        ]
    seeds = sorted({run["seed"] for run in parity["runs"]})
    return [
        f"`python benchmarks/parity.py` (`make parity`; {len(seeds)} seeds per setting, "
        f"{parity['wall_time_s'] / 60:.0f} min; raw runs in parity.json). Test split, mean over "
        "seeds; diff = bf16 - fp32 in points.",
        "",
        *_table(
            [
                "data",
                "fp32 acc_mean",
                "bf16 acc_mean",
                "diff (points)",
                "fp32 mAP",
                "bf16 mAP",
                "diff (points)",
                "run time fp32 / bf16",
            ],
            [
                [
                    row["data"],
                    f"{row['fp32_test_acc_mean']:.4f}",
                    f"{row['bf16_test_acc_mean']:.4f}",
                    f"{row['acc_mean_diff_points']:+.2f}",
                    f"{row['fp32_test_map']:.4f}",
                    f"{row['bf16_test_map']:.4f}",
                    f"{row['map_diff_points']:+.2f}",
                    f"{row['speedup']:.2f}x",
                ]
                for row in parity["comparison"]
            ],
        ),
    ]


def markdown(results: dict[str, Any], parity: dict[str, Any] | None = None) -> str:
    machine, settings, answer = results["machine"], results["settings"], results["answers"]
    loader = results["loader"]
    speed, lightning = answer["default_over_seed"], answer["lightning_over_plain"]
    cache = answer["decode_cache"]
    lines = [
        "# Benchmarks",
        "",
        "Regenerated by `make bench` (`python benchmarks/run_all.py`); raw figures in "
        "`results.json`. Each figure: median (min–max) of "
        f"{settings['reps']} timed blocks after warm-up steps; the variants of a table row "
        "alternate block by block, so load from other processes hits all alike, and ratios are "
        "medians of back-to-back pairs. Timed images per block: "
        f"{settings['train_images']} (training), {settings['eval_images']} (evaluation). "
        "Evaluation resizes to 256 then crops 224 (the package default), or uses other sizes as "
        "they are (150 px images at 150). RSS MB: the block's peak (its rise over the RSS at the "
        "block's start).",
        "",
        "## Machine",
        "",
        *_table(["key", "value"], [[key, value] for key, value in machine.items()]),
        f"| wall time of this run (s) | {results['wall_time_s']} |",
        "",
        "The fast setting measured here (trainer.precision=auto with cpu_bf16=true; on a CPU the "
        "default is float32, see the parity section): "
        f"`{results['numerics']['precision']}`, channels-last "
        f"{'on' if results['numerics']['channels_last'] else 'off'} "
        f"({results['numerics']['reason']}).",
        "",
        "## Answers",
        "",
        f"- Training, the package's fast setting / the seed's plain float32 loop at "
        f"{speed['at'][0]} px batch {speed['at'][1]} (target ≥ {speed['target']}x): "
        + (
            "not measured (other sizes)"
            if speed["value"] is None
            else f"{speed['value']:.2f}x — {'met' if speed['met'] else 'NOT met'}"
        )
        + f" ({_configs(speed['configs'], 'ratio', '.2f', 'x')}).",
        f"- Lightning / a plain loop at the same numerics (target ≥ {lightning['target']}): "
        f"worst {lightning['worst']:.3f} — {'met' if lightning['met'] else 'NOT met'} ("
        + ", ".join(
            f"{c['stage']} {c['image_size']}px b{c['batch']}: {c['ratio']:.3f}"
            for c in lightning["configs"]
        )
        + ").",
        "- `inference.precision=bf16-mixed` (opt-in) over mode=eval's default float32 scoring: "
        + ", ".join(
            f"{c['image_size']}px b{c['batch']}: {c['speedup']:.2f}x, max |softmax diff| "
            f"{c['max_abs_score_diff']:.2g}"
            for c in answer["bf16_inference"]
        )
        + ".",
        "- Loader during training (default workers): "
        + ", ".join(
            f"{c['image_size']}px b{c['batch']}: {100 * c['loader_share']:.0f}% of the CPU time"
            for c in cache["configs"]
        )
        + f". A decoded-image cache would save at most {100 * cache['best_saving']:.1f}% of "
        f"training time (threshold {100 * cache['threshold']:.0f}%) — "
        + ("worth building." if cache["justified"] else "not worth building."),
        "",
        "## Training: the seed's way vs the package's fast setting (images/s)",
        "",
        "Pre-made tensors (no data loading). The seed's way: a plain PyTorch loop in float32 "
        "with the default memory layout. Plain loop, fast numerics: the same loop with the "
        "default's autocast and memory layout. Package fast setting: the LightningModule in "
        "lightning.Trainer with trainer.precision=auto, model.channels_last=auto.",
        "",
        *_training_table(results["training"]),
        "",
        "## Evaluation (images/s, and speed over the seed's way)",
        "",
        "Plain loops: forward in eval mode under inference_mode. Validation step: trainer.test of "
        "the package module (forward + torchmetrics) in the training numerics (what validation "
        "during training costs). mode=eval: the scoring path of eval/predict/analyze "
        "(finetune.inference: a float32 network rebuilt from best_model.pt, Lightning's predict "
        "loop). bf16 max |softmax diff|: the largest difference between the bf16-mixed and "
        "float32 scores of the same images, same network (random weights).",
        "",
        *_variants_table(results["evaluation"], None),
        "",
        *_table(
            ["size", "batch", "bf16 / float32 mode=eval", "bf16 max |softmax diff|"],
            [
                [
                    r["image_size"],
                    r["batch"],
                    f"{r['bf16_over_float32_eval']:.2f}x",
                    f"{r['bf16_max_abs_score_diff']:.2g}",
                ]
                for r in results["evaluation"]
            ],
        ),
        "",
        "## What Lightning and the package add to a training step",
        "",
        f"At {results['lightning_overhead']['image_size']} px, batch "
        f"{results['lightning_overhead']['batch']}, float32, backbone frozen "
        "(model.freeze_backbone=true): the network's work is small and the per-step overhead, "
        "which does not depend on it, shows. Each row adds one piece to the row above; each "
        f"figure is the fastest of {results['lightning_overhead']['reps']} blocks (other "
        "processes only ever add time). The last columns set the added time against a step of "
        "the package's fast setting at the sizes above.",
        "",
        *_overhead(results["lightning_overhead"], results["training"]),
        "",
        "## The loader during training",
        "",
        "The package's fast-setting training (fast numerics, data.loader.num_workers=auto) fed "
        "from 150x150 JPEGs through ImageDataModule, "
        f"{settings['share_steps']} timed steps after {settings['share_warmup']} warm-up steps, "
        f"median of {settings['share_reps']} runs. CPU time from /proc/<pid>/stat: loader "
        "share = the workers' CPU seconds / (workers' + main process's). Cores: CPU seconds per "
        "wall second. Cache saving, measured: 1 - (time from JPEGs with the decode replaced by "
        "a lookup of the decoded image) / (time from JPEGs), the two runs alternating; "
        "estimated: loader share x the decode share of a train item (table below).",
        "",
        *_share_table(results["loader_share"]),
        "",
        "## Data loader measured apart (150x150 JPEGs through ImageDataModule)",
        "",
        "train = decode + RandomResizedCrop + flip + normalize (EpochSeededSampler); eval = "
        "decode + resize + center crop + normalize. The first epoch (worker start) is the "
        f"warm-up; {settings['loader_images']} images an epoch. Worker RSS counts pages shared "
        "with the main process.",
        "",
        *_table(
            [
                "size",
                "batch",
                "transform",
                "workers",
                "img/s",
                "img/s per worker",
                "main RSS MB",
                "worker RSS MB",
            ],
            [
                [
                    row["image_size"],
                    row["batch"],
                    row["transform"],
                    row["workers"],
                    _rate(row["images_per_s"]),
                    _per_worker(row["images_per_s_per_worker"]),
                    _rss(row),
                    _mb(row["worker_rss_peak_mb"]),
                ]
                for row in loader["rows"]
            ],
        ),
        "",
        _train_per_worker(loader["rows"]),
        "",
        "Per image, one thread (as in a worker), milliseconds:",
        "",
        *_table(
            ["size", "JPEG decode", "train item", "eval item", "decode share of a train item"],
            [
                [
                    row["image_size"],
                    row["decode_ms"],
                    row["train_item_ms"],
                    row["eval_item_ms"],
                    f"{100 * row['decode_share_train']:.0f}%",
                ]
                for row in loader["per_image"]
            ],
        ),
        "",
        "## Accuracy parity: float32 vs the automatic setting",
        "",
        *_parity(parity),
        "",
        "## Command-line start-up",
        "",
        *_table(
            ["command", "seconds", "peak RSS MB"],
            [
                [
                    f"`{results['cli']['command']}`",
                    _rate(results["cli"]["seconds"], 2),
                    _mb(results["cli"]["rss_peak_mb"]),
                ]
            ],
        ),
        "",
    ]
    return "\n".join(lines)
