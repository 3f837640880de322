"""Start-up time of the command line: `python -m finetune --cfg job` in a fresh process."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import summary

COMMAND = [sys.executable, "-m", "finetune", "--cfg", "job"]

# A child started straight from this (large) process inherits its peak RSS through vfork+exec
# (Linux keeps the larger of the two in ru_maxrss). So a small launcher starts the command and
# reports the command's own wall time and ru_maxrss, as JSON, into the file named by argv[1].
LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
process = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
out, err = process.communicate()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as handle:
    json.dump({"seconds": seconds, "ru_maxrss": peak, "returncode": process.returncode,
               "stdout": out.decode(), "stderr": err.decode()}, handle)
"""


def run_once(cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of COMMAND from `cwd`."""
    report = cwd / "launch.json"
    subprocess.run([sys.executable, "-c", LAUNCHER, str(report), *COMMAND], cwd=cwd, check=True)
    run = json.loads(report.read_text())
    if run["returncode"] != 0 or "mode:" not in run["stdout"]:
        raise RuntimeError(f"{' '.join(COMMAND[1:])} failed ({run['returncode']}): {run['stderr']}")
    kb = run["ru_maxrss"] // 1024 if sys.platform == "darwin" else run["ru_maxrss"]
    return run["seconds"], round(kb / 1024, 1)


def cli_startup(reps: int) -> dict[str, Any]:
    """One untimed run (file-system caches), then `reps` timed ones."""
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as cwd:
        run_once(Path(cwd))
        runs = [run_once(Path(cwd)) for _ in range(reps)]
    return {
        "command": "python -m finetune --cfg job",
        "seconds": summary([seconds for seconds, _ in runs], digits=3),
        "rss_peak_mb": max(rss for _, rss in runs),
        "rss_scope": "process",
    }
