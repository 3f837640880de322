"""`make device-check`: what only a GPU can prove, in one command and under 8 minutes, written
to one JSON file (benchmarks/device_check.json):

1. the GPU-marked tests (`pytest -m gpu`);
2. the demo trained with `trainer=gpu`, without and with `model.compile=true` (wall time,
   accuracy reached);
3. training images/s of the real `trainer=gpu` setup (the automatic numerics: bf16-mixed and
   channels-last on a GPU with bfloat16; batch 64, 224 px; without and with torch.compile) on
   pre-made tensors, with peak GPU memory, beside the data loader's images/s at the default
   workers (150 px JPEGs, random crop to 224 px, pinned memory): does the loader keep the GPU
   fed?

    python benchmarks/device_check.py                        # on the GPU host
    python benchmarks/device_check.py --quick --device cpu   # a smoke test of this script
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    REPO,
    PeakMemory,
    compose_cfg,
    machine_info,
    pick_device,
    quiet_lightning,
)
from benchmarks.loader import epoch_rates, scene_datamodule, write_scene_jpegs  # noqa: E402
from benchmarks.loops import block_rate, build_module, run_lightning, tensor_batches  # noqa: E402
from finetune.io import write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
FULL = {"size": 224, "batch": 64, "steps": 30, "warmup": 5, "loader_images": 512, "demo": []}
# The smoke test: tiny images, a few steps, one short demo epoch.
QUICK = {
    "size": 32,
    "batch": 8,
    "steps": 4,
    "warmup": 2,
    "loader_images": 32,
    "demo": ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "data.loader.batch_size=8"],
}


def gpu_tests() -> dict[str, Any]:
    """`pytest -m gpu` in a subprocess: its counts and its closing line."""
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    last = (run.stdout.strip().splitlines() or [""])[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", last)}
    return {
        "exit_code": run.returncode,
        "summary": last,
        **counts,
        "seconds": round(time.perf_counter() - started, 1),
    }


def train_demo(device: str, compile_model: bool, extra: list[str], folder: Path) -> dict[str, Any]:
    """`python -m finetune experiment=demo trainer=gpu [model.compile=true]` as a user runs it."""
    run_dir = folder / f"demo-compile-{compile_model}"
    command = [
        sys.executable,
        "-m",
        "finetune",
        "experiment=demo",
        "trainer=gpu",
        f"model.compile={str(compile_model).lower()}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    if device == "cpu":
        command.append("trainer.accelerator=cpu")
    started = time.perf_counter()
    run = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    result: dict[str, Any] = {
        "compile": compile_model,
        "exit_code": run.returncode,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if run.returncode != 0:
        result["stderr_tail"] = run.stderr[-2000:]
        return result
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return result | {
        "epochs_run": metrics["epochs_run"],
        "numerics": metrics["numerics"],
        "val_acc_mean": metrics["val"].get("val/acc_mean"),
        "test_acc_mean": metrics["test"].get("test/acc_mean"),
        "test_map": metrics["test"].get("test/map"),
    }


def gpu_profile_training(device: str, plan: dict[str, Any], compile_model: bool) -> dict[str, Any]:
    """Images/s of the package's module under the trainer=gpu profile, on pre-made tensors."""
    overrides = [
        "data.root=unused",
        "trainer=gpu",
        "model.weights=none",
        f"model.compile={str(compile_model).lower()}",
        f"data.image_size={plan['size']}",
        f"data.loader.batch_size={plan['batch']}",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "+trainer.enable_checkpointing=false",
    ]
    if device == "cpu":
        overrides.append("trainer.accelerator=cpu")
    cfg = compose_cfg(overrides)
    batch = cfg.data.loader.batch_size
    batches = tensor_batches(plan["size"], batch, plan["warmup"] + plan["steps"])
    started = time.perf_counter()
    with PeakMemory() as memory:
        stamps = run_lightning("fit", build_module(cfg), batches, cfg, device)
    return {
        "compile": compile_model,
        "precision": cfg.trainer.precision,
        "channels_last": cfg.model.channels_last,
        "image_size": plan["size"],
        "batch": batch,
        "timed_steps": plan["steps"],
        "images_per_s": round(block_rate(stamps, plan["warmup"], batch), 1),
        "seconds_with_warmup": round(time.perf_counter() - started, 1),
        **memory.as_dict(),
    }


def loader_rate(plan: dict[str, Any]) -> dict[str, Any]:
    """The training loader at the default workers (data.loader.num_workers=auto)."""
    size = plan["size"]
    batch = plan["batch"]
    with tempfile.TemporaryDirectory(prefix="device-check-") as folder:
        root = write_scene_jpegs(Path(folder), 2 * plan["loader_images"])
        datamodule = scene_datamodule(root, plan["loader_images"], size, batch)
        loader = datamodule.train_dataloader()
        rates = epoch_rates(loader, 3)[1:]  # the first epoch starts the workers
        workers, pinned = loader.num_workers, loader.pin_memory
        del loader
    return {
        "image_size": size,
        "batch": batch,
        "workers": workers,
        "pin_memory": pinned,
        "images_per_s": round(max(rates), 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, default=HERE / "device_check.json")
    parser.add_argument("--skip-tests", action="store_true", help="leave out pytest -m gpu")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    if device != "cuda" and not args.quick:
        raise SystemExit("device-check: no CUDA GPU here (use --quick --device cpu to smoke-test)")
    plan = QUICK if args.quick else FULL
    compiles = (False,) if args.quick else (False, True)  # inductor on a CPU takes minutes
    quiet_lightning()
    started = time.perf_counter()
    steps = len(compiles) + (2 if args.skip_tests else 3)
    done = 0

    def step(what: str) -> None:
        nonlocal done
        done += 1
        elapsed = time.perf_counter() - started
        print(f"[device-check {done}/{steps}, {elapsed:5.0f}s] {what}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {"machine": machine_info(device), "quick": args.quick}
    if not args.skip_tests:
        step("pytest -m gpu")
        results["gpu_tests"] = gpu_tests()
    with tempfile.TemporaryDirectory(prefix="device-check-demo-") as folder:
        results["demo"] = []
        for compile_model in compiles:
            step(f"demo, trainer=gpu, model.compile={compile_model}")
            results["demo"].append(train_demo(device, compile_model, plan["demo"], Path(folder)))
    step("trainer=gpu training images/s on pre-made tensors")
    results["training"] = [gpu_profile_training(device, plan, c) for c in compiles]
    step("the training loader at the default workers")
    results["loader"] = loader_rate(plan)
    fastest = max(row["images_per_s"] for row in results["training"])
    results["loader_over_training"] = round(results["loader"]["images_per_s"] / fastest, 2)
    results["wall_time_s"] = round(time.perf_counter() - started, 1)
    if torch.cuda.is_available():
        results["cuda_peak_mb_overall"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    write_json(args.out, results, overwrite=True)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
