"""Peak memory and run time of `mode=analyze` for a few image counts, one fresh process each.

    python benchmarks/analysis_memory.py                      # N = 50 and 400, 224 px demo data
    python benchmarks/analysis_memory.py --sizes 32 96 160    # quick: about 4 minutes on 2 cores
    python benchmarks/analysis_memory.py --ckpt run/best_model.pt --sizes 50 400 1000

The analysis keeps running sums per module (finetune.features.FeatureStats), so its peak RSS
should not grow with N: the loader and the feature maps of one batch are the same for every N.
The table sets the growth against what keeping every feature map (as the original script did)
would have cost.

Each N runs twice: with glibc's default allocator settings, and with a fixed mmap threshold
(MALLOC_MMAP_THRESHOLD_). By default glibc raises that threshold as large blocks are freed, so
later batch-sized tensors come from the heap, which can fragment: the peak may then drift up by
chance the more batches run. With the threshold fixed every batch tensor goes back to the
system when freed, and the peak shows what the analysis itself holds; --max-growth-mib is
checked on it. With more than two sizes the spread (largest minus smallest peak) tells drift by
chance from growth: a peak that grows with N rises at every size.

Without --ckpt a 224 px checkpoint is first trained on the demo data for two steps (the weights
do not matter here, the image size does).
"""

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COMMON = ["data.loader.num_workers=0", "trainer.enable_progress_bar=false"]
ALLOCATORS = {"glibc default": {}, "fixed mmap threshold": {"MALLOC_MMAP_THRESHOLD_": "131072"}}


def run_measured(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run `command`; its exit status, wall time and peak RSS (MiB) from wait4's rusage."""
    started = time.perf_counter()
    with open(cwd / "output.log", "ab") as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    peak_kib = usage.ru_maxrss // (1024 if sys.platform == "darwin" else 1)  # bytes on macOS
    return {
        "returncode": process.returncode,
        "wall_s": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


def finetune(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "finetune", *overrides]


def train_checkpoint(work: Path, env: dict[str, str]) -> Path:
    """A 224 px checkpoint of the demo data, trained for two steps (about a minute on a CPU)."""
    run_dir = work / "train"
    result = run_measured(
        finetune(
            "experiment=demo",
            "data.image_size=224",
            "data.resize_size=256",
            "data.split.test=0.5",
            "data.split.val=0.02",
            "train_eval_images=0",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            f"hydra.run.dir={run_dir}",
            *COMMON,
        ),
        work,
        env,
    )
    if result["returncode"]:
        raise SystemExit(f"training the benchmark checkpoint failed: see {work / 'output.log'}")
    return run_dir / "best_model.pt"


def kept_maps_mib(stats: dict[str, Any]) -> float:
    """Memory the feature maps of all N images would take if kept (float32), all pairs."""
    elements = sum(r["num_images"] * math.prod(r["shape"]) for r in stats["results"])
    return round(4 * elements / 2**20, 1)


def measure(
    ckpt: Path, sizes: list[int], batch_size: int, work: Path, env: dict[str, str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (allocator, extra_env), size in itertools.product(ALLOCATORS.items(), sizes):
        run_dir = work / f"analyze_{len(rows)}"
        result = run_measured(
            finetune(
                "mode=analyze",
                f"ckpt={ckpt}",
                f"analysis.num_images={size}",
                f"analysis.batch_size={batch_size}",
                f"hydra.run.dir={run_dir}",
                *COMMON,
            ),
            work,
            env | extra_env,
        )
        if result["returncode"]:
            raise SystemExit(f"mode=analyze failed for N={size}: see {work / 'output.log'}")
        stats = json.loads((run_dir / "feature_stats.json").read_text())
        rows.append(
            {
                "allocator": allocator,
                "num_images": size,
                "images_analysed": stats["results"][0]["num_images"],
                "pairs": sorted({f"{r['model']} x {r['dataset']}" for r in stats["results"]}),
                "image_size": stats["image_size"],
                "analysis_s": stats["wall_time_s"],
                "kept_maps_mib": kept_maps_mib(stats),
                **result,
            }
        )
        print(
            f"{allocator}, N={size}: {result['peak_rss_mib']} MiB peak RSS, {result['wall_s']} s",
            flush=True,
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| allocator | N | peak RSS (MiB) | process wall (s) | analysis (s) | maps if kept (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['allocator']} | {r['images_analysed']} | {r['peak_rss_mib']} | {r['wall_s']} "
        f"| {r['analysis_s']} | {r['kept_maps_mib']} |"
        for r in rows
    ]
    return "\n".join(lines)


def by_allocator(rows: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
    """`key` of every N, in the order of --sizes, per allocator setting."""
    runs: dict[str, list[float]] = {}
    for row in rows:
        runs.setdefault(row["allocator"], []).append(row[key])
    return runs


def growth(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """`key` at the last N minus at the first N, per allocator setting."""
    return {name: round(v[-1] - v[0], 1) for name, v in by_allocator(rows, key).items()}


def spread(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Largest minus smallest `key` over all N, per allocator setting."""
    return {name: round(max(v) - min(v), 1) for name, v in by_allocator(rows, key).items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, help="best_model.pt to analyse (default: train one)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 400])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/finetune-analysis-memory"),
        help="folder for the runs (a fresh sub-folder per call)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "analysis_memory.json")
    parser.add_argument(
        "--max-growth-mib",
        type=float,
        default=64.0,
        help="exit 1 if the peak RSS (fixed mmap threshold) grows more from first to last N",
    )
    args = parser.parse_args(argv)

    work = args.work / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    env = dict(os.environ)
    env.setdefault("FINETUNE_CACHE", str(args.work / "cache"))  # where the demo data is written
    ckpt = args.ckpt.resolve() if args.ckpt else train_checkpoint(work, env)
    rows = measure(ckpt, args.sizes, args.batch_size, work, env)
    rss_growth = growth(rows, "peak_rss_mib")
    rss_spread = spread(rows, "peak_rss_mib")
    kept_growth = growth(rows, "kept_maps_mib")["glibc default"]
    results = {
        "checkpoint": str(ckpt),
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "runs": rows,
        "peak_rss_growth_mib": rss_growth,
        "peak_rss_spread_mib": rss_spread,
        "kept_maps_growth_mib": kept_growth,
    }
    print()
    print(table(rows))
    print(
        f"\npeak RSS growth from N={args.sizes[0]} to N={args.sizes[-1]}: "
        + ", ".join(f"{name} {value:+} MiB" for name, value in rss_growth.items())
        + f" (keeping every feature map would add {kept_growth} MiB); spread over all N: "
        + ", ".join(f"{name} {value} MiB" for name, value in rss_spread.items())
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    checked = rss_growth["fixed mmap threshold"]
    if checked > args.max_growth_mib:
        raise SystemExit(f"peak RSS grew by {checked} MiB > --max-growth-mib {args.max_growth_mib}")
    return results


if __name__ == "__main__":
    main()
