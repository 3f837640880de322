"""The steps of the sweep report (the winner's best_model.pt evaluated on the test split,
evaluated again against those scores, analysed; each a `python -m finetune` subprocess into a
fixed folder of the sweep, report/<step>): which are done, how a step's process is run and
stopped, and the lock that keeps two report processes of one sweep (the sweep's own and one by
hand) from running them at once.

A step is done when its folder holds the file it writes last and its record (report_step.json,
written once the step has ended) says it ran on the current winner's checkpoint, after the steps
it reads. A step left unfinished (killed, failed), or made for another winner (a report of a
sweep that was still running), is kept under a new name and runs again."""

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune.errors import UserError
from finetune.overrides import parse_override
from finetune.reports.report_inputs import STEP_RECORD

log = logging.getLogger(__name__)

FOLDER = "report"  # the sweep's sub-folder that holds the steps' run folders
# step -> (the file it writes last, what it runs); {reference}: eval.reference=<eval's scores>
STEPS = {
    "eval": ("metrics.json", ["mode=eval"]),
    "reproduce": ("reproduction.json", ["mode=eval", "{reference}"]),
    "analyze": ("feature_stats.json", ["mode=analyze"]),
}
READS = {"reproduce": "eval"}  # step -> the step whose output it compares against
TOTAL = (len(STEPS) + 1, len(STEPS) + 1)  # "step k/N": the steps, then the report itself
# (not "[k/N]": a step's own log, passed through, counts its work that way)
LOCK = ".lock"  # in report/: {"pid", "host"} of the report process running there
STOP_WAIT_S = 10.0  # after Ctrl-C: how long a step may take to end before it is terminated
KILL_WAIT_S = 5.0  # after terminate: how long before it is killed


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _holder(lock: Path) -> str:
    """Who holds `lock`: "" when nobody does any more (no lock, or its process has ended)."""
    held = _read_json(lock)
    pid, host = held.get("pid"), held.get("host")
    if not isinstance(pid, int):
        return ""  # unreadable: not a lock this package wrote
    if pid == os.getpid() and host == socket.gethostname():  # a killed report's, pid reused
        return ""
    if host != socket.gethostname():  # a shared folder: that process cannot be checked here
        return f"process {pid} on {host}"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:  # another user's process
        pass
    return f"process {pid}"


def _place(written: str, lock: Path) -> None:
    """`written` under the name `lock`, FileExistsError if that is taken: a hard link (the lock
    appears whole), or where the file system has none (vfat, some network and FUSE mounts) a
    copy into a file created exclusively."""
    try:
        os.link(written, lock)
    except FileExistsError:
        raise
    except OSError:
        with open(lock, "x") as handle:
            handle.write(Path(written).read_text())


@contextmanager
def report_lock(sweep: Path) -> Iterator[None]:
    """Held while a report of `sweep` runs its steps and writes. The lock file appears whole
    (written beside it, then linked: the link fails if the name is taken); one whose process
    has ended is stale and replaced."""
    lock = sweep / FOLDER / LOCK
    lock.parent.mkdir(parents=True, exist_ok=True)
    mine = {"pid": os.getpid(), "host": socket.gethostname()}
    fd, name = tempfile.mkstemp(prefix=f"{LOCK}.", dir=lock.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(mine, handle)
        while True:
            try:
                _place(name, lock)
                break
            except FileExistsError:
                holder = _holder(lock)
                if holder:
                    raise UserError(
                        f"another report of sweep {sweep} is running ({holder}, its lock "
                        f"{lock}): wait for it to end (if no such process runs, remove {lock})"
                    ) from None
                log.warning("%s was left by a report that has ended: replaced", lock)
                lock.unlink(missing_ok=True)
    finally:
        os.unlink(name)
    try:
        yield
    finally:
        if _read_json(lock) == mine:
            lock.unlink()


def _checkpoint_run(record: dict[str, Any]) -> str:
    """The sweep run whose best_model.pt a step ran on (its job folder's name): what the
    record's `ckpt=` says, which stays true when the sweep folder is moved."""
    given = [item for item in record.get("command", []) if item.startswith("ckpt=")]
    return Path(str(parse_override(given[-1]).value())).parent.name if given else "?"


def _outdated(name: str, record: dict[str, Any], winner: str, ran: list[str]) -> str:
    """Why the finished step `name` (its `record`) is not the current winner's ("" if it is)."""
    used = _checkpoint_run(record)
    if used != winner:
        return f"it ran on run {used}'s best_model.pt, and the winner is now run {winner}"
    if READS.get(name) in ran:
        return f"it compared against the {READS[name]} step's scores, and that step ran again"
    return ""


def _set_aside(folder: Path, why: str) -> None:
    """A step folder that is not reused is kept under a new name: `<step>.outdated-k` when `why`
    says why it is out of date, `<step>.unfinished-k` when it did not finish (killed, failed)."""
    kind = "outdated" if why else "unfinished"
    k = 1
    while (aside := folder.with_name(f"{folder.name}.{kind}-{k}")).exists():
        k += 1
    folder.rename(aside)
    said = f"is out of date ({why})" if why else "holds an unfinished step"
    log.warning("%s %s: kept as %s, running it again", folder, said, aside.name)


def reusable(name: str, folder: Path, winner: str, ran: list[str]) -> bool:
    """Whether `folder` holds step `name` finished for run `winner`'s best_model.pt, after the
    steps in `ran` (run by this call); a folder that does not is set aside for the step to run
    again (said in one line)."""
    record = _read_json(folder / STEP_RECORD)
    finished = (folder / STEPS[name][0]).is_file() and bool(record)
    why = _outdated(name, record, winner, ran) if finished else ""
    if finished and not why:
        return True
    if folder.exists():
        _set_aside(folder, why)
    return False


def _stop(process: subprocess.Popen) -> None:
    """After Ctrl-C: the step got the SIGINT too (one process group) and ends on its own, its
    log saying so (its last lines are passed on, less its own `error:` / `interrupted:` line:
    this run says its own); if it has not after STOP_WAIT_S (or at a second Ctrl-C) it is
    terminated. Never left running after this process has exited."""
    try:
        rest = process.communicate(timeout=STOP_WAIT_S)[1].splitlines(keepends=True)
        sys.stderr.writelines(x for x in rest if not x.startswith(("error: ", "interrupted: ")))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.terminate()
        try:
            process.communicate(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def run_process(name: str, argv: list[str], done_file: Path) -> float:
    """Run `argv` (a step's `python -m finetune ...`), its output passed through; its `error:`
    line becomes this run's one error line. A reproduction that does not match is a result (the
    step wrote reproduction.json and exits 2): the report shows it. Returns its wall time."""
    started = time.perf_counter()
    errors: list[str] = []
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stderr:
            if line.startswith("error: "):
                errors.append(line.removeprefix("error: ").strip())
            else:
                sys.stderr.write(line)
        process.wait()
    except KeyboardInterrupt:
        _stop(process)
        raise
    finally:
        process.stderr.close()
    if process.returncode != 0 and not done_file.is_file():
        reason = errors[-1] if errors else f"exit status {process.returncode}"
        log_file = done_file.parent / "finetune.log"
        where = f"its log: {log_file}" if log_file.is_file() else "it stopped before writing a log"
        raise UserError(f"step {name} failed: {reason} ({where})")
    return time.perf_counter() - started
