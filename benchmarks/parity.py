"""Accuracy parity of the automatic numeric setting: is bf16-mixed + channels-last (what
`trainer.precision=auto` picks on a CPU with native bfloat16) as accurate as float32?

Trains two real data sets that build offline, with 3 seeds in each setting, through the CLI
exactly as a user runs it, and compares the test mean class-wise accuracy and mAP:

- the demo (scikit-learn's handwritten digits 0-5, `experiment=demo`);
- LFW faces vs. non-faces (scikit-image's bundled `lfw_subset`: 100 face and 100 non-face
  crops of real photographs, 25 x 25 gray), written once as a two-class JPEG folder.

    python benchmarks/parity.py              # about 15 minutes on 2 CPU cores
    python benchmarks/parity.py --quick      # one seed, one short epoch: checks the code

Writes benchmarks/parity.json; `make bench` puts its table into RESULTS.md.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine_info  # noqa: E402
from finetune.io import write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
SETTINGS = {
    "fp32": ["trainer.precision=32-true", "model.channels_last=false"],
    # what `auto` picks where bf16 is allowed (a GPU with bf16; a CPU with native bf16 and cpu_bf16)
    "bf16": ["trainer.precision=auto", "model.channels_last=auto", "cpu_bf16=true"],
}
SEEDS = (1, 2, 3)
LFW_SIDE = 64


def write_lfw_folder(root: Path) -> Path:
    """scikit-image's lfw_subset as face/ and not_face/ folders of 64 px JPEGs (once)."""
    import numpy as np
    from PIL import Image
    from skimage.data import lfw_subset

    if root.is_dir():
        return root
    images = lfw_subset()  # 200 x 25 x 25 floats in [0, 1]: 100 faces, then 100 non-faces
    for index, image in enumerate(images):
        folder = root / ("face" if index < 100 else "not_face")
        folder.mkdir(parents=True, exist_ok=True)
        gray = Image.fromarray((image * 255).round().astype(np.uint8), mode="L")
        gray.resize((LFW_SIDE, LFW_SIDE), Image.Resampling.BICUBIC).convert("RGB").save(
            folder / f"{index:03d}.jpg", quality=95
        )
    return root


def data_sets(folder: Path) -> dict[str, list[str]]:
    """The overrides that select each data set (both on top of experiment=demo)."""
    lfw = write_lfw_folder(folder / "lfw_subset")
    return {
        "demo digits": [],
        "LFW faces": ["data.kind=folder", f"data.root={lfw}", "optimizer.lr=0.02"],
    }


def train(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """One training run through the CLI; its test figures, numerics and wall time."""
    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "finetune",
        "experiment=demo",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"parity: a run failed ({' '.join(overrides)}):\n{run.stderr[-2000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "test_acc_mean": metrics["test"]["test/acc_mean"],
        "test_map": metrics["test"]["test/map"],
        "val_acc_mean": metrics["val"]["val/acc_mean"],
        "numerics": metrics.get("numerics"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per data set: the mean over seeds of each setting, and bf16 minus fp32 in points."""
    table = []
    for name in dict.fromkeys(row["data"] for row in rows):
        means = {}
        for setting in SETTINGS:
            runs = [r for r in rows if r["data"] == name and r["setting"] == setting]
            means[setting] = {
                key: statistics.mean(r[key] for r in runs)
                for key in ("test_acc_mean", "test_map", "seconds")
            }
        table.append(
            {
                "data": name,
                **{f"{s}_{k}": round(v, 4) for s, m in means.items() for k, v in m.items()},
                "acc_mean_diff_points": round(
                    100 * (means["bf16"]["test_acc_mean"] - means["fp32"]["test_acc_mean"]), 2
                ),
                "map_diff_points": round(
                    100 * (means["bf16"]["test_map"] - means["fp32"]["test_map"]), 2
                ),
                "speedup": round(means["fp32"]["seconds"] / means["bf16"]["seconds"], 2),
            }
        )
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="fp32 vs the automatic setting, 3 seeds each")
    parser.add_argument("--quick", action="store_true", help="one seed, one short epoch")
    parser.add_argument("--out", type=Path, default=HERE / "parity.json")
    args = parser.parse_args(argv)
    seeds = SEEDS[:1] if args.quick else SEEDS
    quick = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2"] if args.quick else []
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="parity-") as folder:
        sets = data_sets(Path(folder))
        total, done = len(sets) * len(SETTINGS) * len(seeds), 0
        for name, data in sets.items():
            for seed in seeds:
                for setting, numerics in SETTINGS.items():
                    done += 1
                    print(f"[parity {done}/{total}] {name}, seed {seed}, {setting}", flush=True)
                    run_dir = Path(folder) / f"{name}-{seed}-{setting}".replace(" ", "_")
                    result = train([*data, f"seed={seed}", *numerics, *quick], run_dir)
                    rows.append({"data": name, "seed": seed, "setting": setting, **result})
    results = {
        "machine": machine_info("cpu"),
        "quick": args.quick,
        "runs": rows,
        "comparison": compare(rows),
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    write_json(args.out, results, overwrite=True)
    print(json.dumps(results["comparison"], indent=2))
    return results


if __name__ == "__main__":
    main()
