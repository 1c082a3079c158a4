"""Faults a cluster really has, done for real (issue #31): a full disk under a run, a node lost mid-run and
mid-sweep, and a sweep whose Train workers are killed at random. Each loses at most the work since the last
complete checkpoint, never chooses a half-written one, and says what it lost and how long it took to recover
(printed: `pytest -s`).

    pytest -m slow tests/test_faults.py -s

A full disk is a small tmpfs the test mounts (root only; elsewhere it skips, and test_storage.py injects
ENOSPC at raygan's storage layer instead). A node is one more raylet on this machine (tests/live_cluster.py),
lost by SIGKILL to its raylet.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_module, wait_for

from raygan.checkpoint import best_checkpoint, is_complete, list_checkpoints, load_generator
from raygan.errors import first_line
from raygan.train.runlog import read_metrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

RESUMED = re.compile(r"resumed from step (\d+)")


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def steps_of(checkpoints: list[str]) -> list[int]:
    return [int(c.rsplit("_", 1)[1]) for c in checkpoints]


def trained_s_at(records: list[dict], step: int) -> float:
    return next(r["trained_s"] for r in records if r["step"] == step)


# ---------------------------------------------------------------------------------------------
# a full disk


DISK_MB = 64  # the run's checkpoints are ~6 MB: room for a few, and the test fills the rest


@pytest.fixture
def small_disk(tmp_path):
    """A DISK_MB tmpfs mounted for the test, unmounted after it."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount_point)]
    try:
        mounted = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        mounted = subprocess.CompletedProcess(command, 1, "", str(e))
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a small filesystem here ({first_line(mounted.stderr) or 'mount failed'}); "
            "test_storage.py's full-disk tests inject ENOSPC instead"
        )
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)  # a straggler holds it: detach


FULL_DISK_RUN = [  # one worker; 200 steps between checkpoints leave seconds to fill the disk after the first
    "--set",
    "scaling.num_workers=1",
    "--set",
    "train.steps=600",
    "--set",
    "train.checkpoint_every=200",
    "--set",
    "train.eval_every=200",
    "--set",
    "train.report_every=50",
    "--set",
    "train.keep_checkpoints=5",
]


def test_a_full_disk_stops_the_run_with_one_line_and_the_same_command_resumes_once_space_is_freed(small_disk):
    """`raygan train` on a small filesystem that the test fills after the first checkpoint: the next
    checkpoint cannot be written. The run stops at once (exit 1, one `error:` line naming the path), leaves
    only complete checkpoints and whole files; the same command, after space is freed, resumes from the last
    checkpoint and finishes."""
    run = small_disk / "full"
    filler = small_disk / "filler"
    command = [sys.executable, "-m", "raygan.cli", "train", "tune_configs/smoke.yaml", "--name", "full"]
    command += ["--storage", str(small_disk), *FULL_DISK_RUN, "--json"]
    own_ray = {**os.environ, "RAY_ADDRESS": "local"}
    first = subprocess.Popen(command, cwd=ROOT, env=own_ray, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        snapshot = run / "checkpoint_manager_snapshot.json"
        registered = lambda: snapshot.is_file() and "checkpoint_0000200" in snapshot.read_text()  # noqa: E731
        wait_for(registered, 300, "checkpoint 200, complete and registered", first, every=0.05)
        state_size = (run / "checkpoint_0000200" / "state.pt").stat().st_size
        spare = state_size // 2  # the run's small files still fit, the next checkpoint's state does not
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, free - spare)
        filled_at = time.monotonic()
        out, err = first.communicate(timeout=300)
        stopped_after_s = time.monotonic() - filled_at
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()

    assert first.returncode == 1, (out + err)[-4000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-4000:]
    stop = re.match(
        rf"error: {re.escape(str(small_disk))}/\S+: no space left on device \(at step (\d+)\); the run stopped, "
        "its last checkpoint checkpoint_0000200 is intact: free space and run the same command to resume$",
        errors[0],
    )
    assert stop, errors[0]
    stopped_at = int(stop.group(1))
    assert stopped_at <= 400  # the first write that met the full disk stopped it

    # nothing half-written: every checkpoint folder complete, no part-file, Ray's snapshot whole
    assert steps_of(list_checkpoints(str(run), complete_only=False)) == steps_of(list_checkpoints(str(run))) == [200]
    assert not list(run.rglob("*.tmp"))
    assert "checkpoint_0000200" in json.loads(snapshot.read_text())["latest_checkpoint_result"]["checkpoint_dir_name"]
    assert best_checkpoint(str(run)).endswith("checkpoint_0000200")
    load_generator(str(run))  # the run's best loads
    records = read_metrics(str(run))
    assert records and records[-1]["step"] >= 200
    lost_s = records[-1]["trained_s"] - trained_s_at(records, 200)

    filler.unlink()
    started = time.monotonic()
    again = run_module("raygan.cli", *command[3:], timeout=300, env=own_ray)
    rerun_s = time.monotonic() - started
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert RESUMED.findall(again.stdout + again.stderr) == ["200"]
    assert last_json(again.stdout)["step"] == 600
    assert all(is_complete(c) for c in list_checkpoints(str(run), complete_only=False))
    print(
        f"\n{errors[0]}\nfull disk: stopped {stopped_after_s:.1f} s after the disk filled, at step {stopped_at}; lost "
        f"{stopped_at - 200} steps ({lost_s:.1f} s of training) since checkpoint 200; the rerun resumed from 200 "
        f"and finished 600 in {rerun_s:.1f} s"
    )
