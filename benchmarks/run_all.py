"""`make bench`: the seed's way (a plain float32 loop) and the package's fast numerics side
by side, training and evaluation; Lightning vs a plain loop at the same numerics; the data
loader apart and during training; the CLI start-up. Writes results.json and RESULTS.md (with
the accuracy-parity table of parity.json, when `make parity` has written it) and prints it.

    python benchmarks/run_all.py            # the full run (minutes on 2 CPU cores)
    python benchmarks/run_all.py --quick    # tiny settings: checks the benchmark code works
    python benchmarks/run_all.py --threads 1   # torch intra-op threads (default: one per core)
"""

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from itertools import product
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.cli_startup import cli_startup  # noqa: E402
from benchmarks.common import FULL, QUICK, machine_info, pick_device, quiet_lightning  # noqa: E402
from benchmarks.evaluation import compare_evaluation  # noqa: E402
from benchmarks.loader import (  # noqa: E402
    default_workers,
    loader_share_in_training,
    measure_loaders,
    per_image_costs,
    write_scene_jpegs,
)
from benchmarks.report import answers, markdown  # noqa: E402
from benchmarks.training import compare_training, lightning_overhead  # noqa: E402
from finetune.io import write_json, write_text  # noqa: E402
from finetune.precision import choose_numerics  # noqa: E402

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure the data loader, training, evaluation and the CLI start-up; "
        "write results.json and RESULTS.md."
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the results files")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    started = time.perf_counter()

    def step(what: str) -> None:
        print(f"[bench {time.perf_counter() - started:6.1f}s] {what}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {"settings": asdict(settings), "machine": machine_info(device)}
    accelerator = "gpu" if device == "cuda" else "cpu"
    results["numerics"] = choose_numerics(accelerator, "auto", "auto", True).as_dict()
    configs = list(product(settings.sizes, settings.batches))
    results["training"] = []
    for size, batch in configs:
        step(f"training {size}px batch {batch}: seed's way, plain fast, package fast")
        results["training"].append(compare_training(settings, size, batch, device))
    results["evaluation"] = []
    for size, batch in configs:
        step(f"evaluation {size}px batch {batch}")
        results["evaluation"].append(compare_evaluation(settings, size, batch, device))
    step("Lightning's per-step overhead, piece by piece")
    results["lightning_overhead"] = lightning_overhead(settings, device)
    share_images = (settings.share_warmup + settings.share_steps) * max(settings.batches)
    with tempfile.TemporaryDirectory(prefix="bench-scenes-") as folder:
        root = write_scene_jpegs(Path(folder), 2 * max(settings.loader_images, share_images))
        auto = default_workers(root, settings.loader_images)
        workers = sorted({*settings.workers, auto})
        step(f"data loader apart, workers {workers} (auto = {auto})")
        results["loader"] = {
            "default_workers": auto,
            "rows": measure_loaders(settings, root, workers),
            "per_image": per_image_costs(settings, root),
        }
        decode_share = {
            row["image_size"]: row["decode_share_train"] for row in results["loader"]["per_image"]
        }
        results["loader_share"] = []
        if device == "cpu":  # the loader's share of the cores the model also trains on
            for size, batch in configs:
                step(f"the loader during training, {size}px batch {batch}: JPEGs vs decoded")
                results["loader_share"].append(
                    loader_share_in_training(settings, root, size, batch, decode_share[size])
                )
    step("python -m finetune --cfg job")
    results["cli"] = cli_startup(settings.cli_reps)
    results["answers"] = answers(results)
    results["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_time_s"] = round(time.perf_counter() - started, 1)
    parity_file = HERE / "parity.json"
    parity = json.loads(parity_file.read_text()) if parity_file.is_file() else None
    report = markdown(results, parity)
    write_json(args.out / "results.json", results, overwrite=True)
    write_text(args.out / "RESULTS.md", report, overwrite=True)
    print(report)
    step(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
    return results


if __name__ == "__main__":
    main()
