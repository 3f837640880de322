"""Beyond one process, proven on one machine: two processes as two nodes (the multi-node DDP
path, gloo over 127.0.0.1) and a sweep through hydra-submitit-launcher's local executor (the
SLURM path minus the scheduler)."""

import csv
import json
import subprocess
import sys

import pytest

from conftest import TINY, cli_env, free_port, run_cli

SCENE = ["data.split.test=12", "data.split.val=13", "model.weights=none", "optimizer.lr=0.05"]


@pytest.mark.slow  # three fresh processes (two nodes that rendezvous, then an eval)
def test_two_nodes_validate_exactly_like_one_process(tmp_path, scene_root):
    """Node 0 and node 1 (one CPU process each, NODE_RANK, MASTER_ADDR=127.0.0.1) train one
    epoch together; the validation metrics they report for the selected epoch equal a
    single-process evaluation of that epoch's checkpoint on the same val images."""
    port = free_port()
    common = [
        sys.executable,
        "-m",
        "finetune",
        "mode=train",
        "trainer.accelerator=cpu",
        "trainer.strategy=ddp",
        "trainer.num_nodes=2",
        "trainer.devices=1",
        f"data.root={scene_root}",
        *SCENE,
        "trainer.max_epochs=1",
        "train_eval_images=0",
        *TINY,
    ]
    nodes = []
    for rank in (0, 1):
        env = cli_env(None, tmp_path / "cache") | {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "NODE_RANK": str(rank),
        }
        nodes.append(
            subprocess.Popen(
                [*common, f"hydra.run.dir={tmp_path / f'node{rank}'}"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, log in zip(nodes, logs, strict=True):
        assert node.returncode == 0, log[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1], logs[1][-2000:]
    node0 = tmp_path / "node0"
    trained = json.loads((node0 / "metrics.json").read_text())
    assert not (tmp_path / "node1" / "metrics.json").exists()  # rank 0 alone reports

    single = run_cli(
        "mode=eval",
        f"ckpt={trained['best_checkpoint']}",
        "split=val",
        f"hydra.run.dir={tmp_path / 'single'}",
        *TINY,
        cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    evaluated = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert evaluated["n"] == 13
    val = trained["val"]
    assert val["val/acc_mean"] == pytest.approx(evaluated["acc_mean"], abs=1e-6)
    assert val["val/map"] == pytest.approx(evaluated["map"], abs=1e-6)
    for name, ap in evaluated["ap_class"].items():
        assert val[f"val/ap/{name}"] == pytest.approx(ap, abs=1e-6), name
        assert val[f"val/acc/{name}"] == pytest.approx(evaluated["acc_class"][name], abs=1e-6)


@pytest.mark.slow  # a fresh CLI process, then submitit starts one process per job
def test_sweep_through_the_submitit_local_launcher(tmp_path, scene_root):
    """`-m hydra/launcher=local`: each job runs as a submitit job; the summary ranks both."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "hydra/launcher=local",
        "mode=train",
        f"data.root={scene_root}",
        *SCENE,
        "optimizer.lr=0.05,0.001",
        "trainer.max_epochs=1",
        "train_eval_images=0",
        f"hydra.sweep.dir={sweep_dir}",
        *TINY,
        cwd=tmp_path,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((sweep_dir / ".submitit").glob("*/*_result.pkl")), "not run by submitit"
    with (sweep_dir / "sweep_summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["run"] for row in rows) == ["0", "1"]
    values = [float(row["value"]) for row in rows]
    assert values == sorted(values, reverse=True)  # ranked by val/map, best first
    for run in ("0", "1"):
        assert (sweep_dir / run / "best_model.pt").is_file()
