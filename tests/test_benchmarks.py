"""The benchmark code: a quick run end to end, and the pieces its figures rest on."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    """The benchmarks package (it lives beside src/, not inside the installed package)."""
    monkeypatch.syspath_prepend(str(REPO))
    return lambda name: importlib.import_module(f"benchmarks.{name}")


def test_quick_run_writes_results_and_report(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--threads", "1", "--out", tmp_path],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    report = (tmp_path / "RESULTS.md").read_text()
    assert report.strip() in result.stdout  # the printed table is the report
    assert "img/s per worker" in report

    settings = results["settings"]
    # data.loader.num_workers=auto, computed independently: the usable CPUs less the main one
    auto = max(1, len(os.sched_getaffinity(0)) - 1)
    loader = results["loader"]
    assert loader["default_workers"] == auto
    measured = {(r["image_size"], r["batch"], r["transform"], r["workers"]) for r in loader["rows"]}
    workers = sorted({*settings["workers"], auto})
    assert len(loader["rows"]) == len(measured)
    assert measured == {
        (size, batch, transform, count)
        for size in settings["sizes"]
        for batch in settings["batches"]
        for transform in ("train", "eval")
        for count in workers
    }
    for row in loader["rows"]:
        assert row["images_per_s"]["median"] > 0
        assert len(row["images_per_s"]["values"]) == settings["reps"]
        assert row["rss_peak_mb"] >= row["rss_start_mb"] > 0
        assert (row["worker_rss_peak_mb"] is None) == (row["workers"] == 0)
        assert (row["images_per_s_per_worker"] is None) == (row["workers"] == 0)
        if row["workers"]:
            per_worker = [v / row["workers"] for v in row["images_per_s"]["values"]]
            assert row["images_per_s_per_worker"]["values"] == pytest.approx(per_worker, abs=1e-3)
    for part in ("training", "evaluation"):
        assert len(results[part]) == len(settings["sizes"]) * len(settings["batches"])
        for row in results[part]:
            plain, lightning = row["plain"]["images_per_s"], row["lightning"]["images_per_s"]
            assert plain["median"] > 0 and lightning["median"] > 0
            paired = np.median(np.divide(lightning["values"], plain["values"]))
            assert row["ratio"] == pytest.approx(paired, abs=1e-3)
    variants = results["lightning_overhead"]["variants"]
    assert [v["variant"] for v in variants][:2] == ["plain loop", "Lightning, loss only"]
    assert all(v["ms_per_step"] > 0 for v in variants)
    assert all(len(v["images_per_s"]["values"]) == settings["overhead_reps"] for v in variants)
    cli = results["cli"]
    # the command's own peak, not this process's (which a vfork+exec child inherits)
    assert 0 < cli["seconds"]["median"] and 5 < cli["rss_peak_mb"] < 500
    assert results["machine"]["torch_threads"] == 1
    for heading in ("## Answers", "## Training", "## Evaluation", "## Data loader", "start-up"):
        assert heading in report
    assert "Lightning / plain loop" in report and "Decoded-image cache" in report


@pytest.fixture
def one_thread():
    """One torch thread: a 2-thread step on 2 cores busy with other work crawls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_plain_loop_does_the_same_training_as_lightning(bench, one_thread):
    """The two sides of the comparison do the same work: the same weights after the same steps."""
    common, loops, training = bench("common"), bench("loops"), bench("training")
    cfg = common.compose_cfg(common.run_overrides(32, 4, "cpu"))
    plain, lightning = loops.build_module(cfg), loops.build_module(cfg)
    lightning.load_state_dict(plain.state_dict())
    before = {name: value.clone() for name, value in plain.state_dict().items()}
    batches = loops.tensor_batches(32, 4, steps=3)

    assert len(training.fit_plain(plain, batches, "cpu")) == 3
    assert len(loops.run_lightning("fit", lightning, batches, cfg, "cpu")) == 3

    trained, reference = plain.state_dict(), lightning.state_dict()
    assert not torch.equal(trained["net.fc.weight"], before["net.fc.weight"])
    assert not torch.equal(trained["net.conv1.weight"], before["net.conv1.weight"])
    assert trained.keys() == reference.keys()
    for name in trained:
        torch.testing.assert_close(trained[name], reference[name], msg=name)


def test_block_rate_times_whole_steps_after_the_warmup(bench):
    loops = bench("loops")
    # step ends at 1, 2, 4, 7 s; one warm-up step: 3 steps of 2 images in 7 - 1 = 6 s
    assert loops.block_rate([1.0, 2.0, 4.0, 7.0], warmup=1, batch=2) == pytest.approx(1.0)
    assert loops.block_rate([1.0, 2.0, 4.0, 7.0], warmup=2, batch=2) == pytest.approx(4 / 5)
    with pytest.raises(ValueError):
        loops.block_rate([1.0], warmup=1, batch=2)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_peak_memory_belongs_to_its_block(bench):
    common = bench("common")
    with common.PeakMemory() as big:
        block = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MB, every page touched
        del block
    with common.PeakMemory() as small:
        pass
    assert big.scope == small.scope == "block"
    assert big.rss_mb - big.start_mb >= 190
    assert small.rss_mb - small.start_mb < 50  # the high-water mark was reset


def test_scene_jpegs_are_like_the_real_ones(bench, tmp_path):
    root = bench("loader").write_scene_jpegs(tmp_path, count=12)
    files = sorted(root.glob("*/*.jpg"))
    assert len(files) == 12 and len({f.parent.name for f in files}) == 6
    for file in files:
        with Image.open(file) as image:
            assert image.format == "JPEG" and image.size == (150, 150) and image.mode == "RGB"
        assert 4_000 < file.stat().st_size < 30_000


def _results(loader_rate: float, model_rate: float, decode_ms: float, share: float) -> dict:
    """The figures answers() reads: one config, 150 px batch 16, 2 default workers."""
    speed = {"median": model_rate}
    rows = [
        {"image_size": 150, "batch": 16, "transform": transform, "workers": workers,
         "images_per_s": {"median": loader_rate if (transform, workers) == ("train", 2) else 1.0}}
        for transform in ("train", "eval")
        for workers in (0, 2)
    ]  # fmt: skip
    return {
        "loader": {
            "default_workers": 2,
            "rows": rows,
            "per_image": [{"image_size": 150, "decode_ms": decode_ms, "decode_share_train": share}],
        },
        "training": [
            {
                "image_size": 150,
                "batch": 16,
                "ratio": 0.97,
                "lightning": {"images_per_s": speed},
                "plain": {"images_per_s": speed},
            }
        ],  # fmt: skip
        "lightning_overhead": {"package_overhead_ms": 400.0},
    }


def test_answers_follow_from_the_figures(bench):
    report = bench("report")
    fed = report.answers(_results(loader_rate=300.0, model_rate=10.0, decode_ms=2.0, share=0.4))
    assert fed["loader_over_model"]["worst"] == 30.0 and fed["loader_over_model"]["met"]
    lightning = fed["lightning_over_plain"]
    assert lightning["met"]
    # a 1600 ms step (16 images at 10 images/s) plus 400 ms of overhead: 1600 / 2000
    assert lightning["worst_expected"] == pytest.approx(0.8) and not lightning["expected_met"]
    # the loader keeps ahead: a cache saves at most the decode time, 2 ms x 10 images/s = 2%
    assert fed["decode_cache"]["best_case_saving"] == pytest.approx(0.02)
    assert not fed["decode_cache"]["justified"]

    starved = report.answers(_results(loader_rate=5.0, model_rate=10.0, decode_ms=2.0, share=0.4))
    assert starved["loader_over_model"]["worst"] == 0.5 and not starved["loader_over_model"]["met"]
    # the loader is the limit: at most the decode share of its time, 40%
    assert starved["decode_cache"]["best_case_saving"] == pytest.approx(0.4)
    assert starved["decode_cache"]["justified"]
