"""One writer per run: the lease in a run's folder refuses a second command and gives way to a dead one."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from raygan import run_lock, storage
from raygan.errors import UserError
from raygan.run_lock import LOCK, RunLock, process_start


def lock_of(folder) -> dict:
    return json.loads((folder / LOCK).read_text())


def write_holder(folder, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"token": "theirs", "command": "raygan train", "host": socket.gethostname(), "since": time.time()}
    (folder / LOCK).write_text(json.dumps({**holder, **fields}))


def test_a_second_command_is_refused_naming_the_holder_and_can_start_once_it_is_released(tmp_path):
    run = tmp_path / "run"
    with RunLock(str(run), "--name", "raygan train"):
        assert lock_of(run)["pid"] == os.getpid()
        with pytest.raises(UserError) as refused:
            RunLock(str(run), "--name", "raygan tune").acquire()
        message = str(refused.value)
        assert message.startswith(f"--name: {run} is being written by raygan train (pid {os.getpid()} on ")
        assert socket.gethostname() in message and "\n" not in message
    assert not (run / LOCK).exists()  # released
    assert not tmp_path.joinpath(
        "run"
    ).exists()  # the folders it made, left empty, are gone: a refused command writes nothing
    with RunLock(str(run), "--name", "raygan train"):
        (run / "metrics.jsonl").write_text("{}")
    assert (run / "metrics.jsonl").exists()  # a run's own files stay


def test_a_holder_that_died_does_not_keep_the_run(tmp_path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_holder(tmp_path / "run", pid=int(ended.stdout))  # SIGKILLed or not, its process is gone
    with RunLock(str(tmp_path / "run"), "--name", "raygan train") as lock:
        assert lock_of(tmp_path / "run")["token"] == lock.token


def test_a_living_holder_on_this_host_keeps_it_and_a_reused_pid_does_not(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_holder(tmp_path / "run", pid=holder.pid, process_start=process_start(holder.pid))
        with pytest.raises(UserError, match=f"pid {holder.pid} on"):
            RunLock(str(tmp_path / "run"), "--name", "raygan train").acquire()
        write_holder(tmp_path / "run", pid=holder.pid, process_start="1")  # that pid, but a later process
        RunLock(str(tmp_path / "run"), "--name", "raygan train").acquire()
    finally:
        holder.kill()
        holder.wait()


def test_another_hosts_lock_lasts_as_long_as_its_heartbeat(tmp_path):
    write_holder(tmp_path / "run", host="elsewhere", pid=1)
    with pytest.raises(UserError, match="on elsewhere"):
        RunLock(str(tmp_path / "run"), "--name", "raygan train").acquire()
    stale = time.time() - run_lock.LEASE_S - 1
    os.utime(tmp_path / "run" / LOCK, (stale, stale))  # no heartbeat for a whole lease
    RunLock(str(tmp_path / "run"), "--name", "raygan train").acquire()


def test_of_two_commands_that_start_together_only_the_later_writer_holds(tmp_path, monkeypatch):
    """Both found no lock; the second writes while the first settles: the first refuses."""
    run = tmp_path / "run"
    first, second = RunLock(str(run), "--name", "raygan train"), RunLock(str(run), "--name", "raygan tune")
    monkeypatch.setattr(run_lock.time, "sleep", lambda s: second._write(time.time()))
    with pytest.raises(UserError, match="being written by raygan tune"):
        first.acquire()
    assert lock_of(run)["token"] == second.token


def test_the_holder_keeps_its_heartbeat_and_a_cut_lock_is_nobodys(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "HEARTBEAT_S", 0.05)
    run = tmp_path / "run"
    with RunLock(str(run), "--name", "raygan train"):
        first = lock_of(run)["heartbeat"]
        time.sleep(0.5)
        assert lock_of(run)["heartbeat"] > first
    run.mkdir()
    (run / LOCK).write_text('{"token": "cut sh')  # a lock file cut short by a full disk
    RunLock(str(run), "--name", "raygan train").acquire()


def test_the_lock_works_the_same_in_s3(s3):
    bucket = s3.bucket("locks")
    run = f"s3://{bucket}/runs/r1"
    with RunLock(run, "--name", "raygan train"):
        assert f"runs/r1/{LOCK}" in s3.keys(bucket)
        with pytest.raises(UserError, match=f"--name: {run} is being written by raygan train"):
            RunLock(run, "--name", "raygan train").acquire()
    assert not storage.is_file(f"{run}/{LOCK}")


@pytest.mark.slow  # two CLI starts: ~15 s
def test_raygan_train_refuses_a_run_another_command_writes_before_ray_starts(tmp_path):
    from conftest import run_module

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        write_holder(tmp_path / "smoke", pid=holder.pid, process_start=process_start(holder.pid))
        before = sorted(p.name for p in tmp_path.rglob("*"))
        for command in ("train", "tune"):
            done = run_module(
                "raygan.cli", command, "tune_configs/smoke.yaml", "--name", "smoke", "--storage", str(tmp_path)
            )
            assert done.returncode == 2, done.stderr[-2000:]
            (line,) = done.stderr.strip().splitlines()
            assert line.startswith(
                f"error: --name: {tmp_path / 'smoke'} is being written by raygan train (pid {holder.pid}"
            )
            assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    finally:
        holder.kill()
        holder.wait()


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a driver and every process below it (its own local Ray), as an OOM killer or a lost node would."""
    import importlib

    import ray  # noqa: F401  puts the psutil it vendors on sys.path

    psutil = importlib.import_module("psutil")
    below = psutil.Process(process.pid).children(recursive=True)
    for p in [psutil.Process(process.pid), *below]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()
    psutil.wait_procs(below, timeout=30)


@pytest.mark.slow  # a real run, killed and resumed: ~90 s
def test_two_trains_on_one_run_the_second_refused_and_a_killed_holder_resumed_from_its_last_checkpoint(tmp_path):
    """`raygan train` twice on one run: the second is exit 2 naming the first, which is then SIGKILLed with
    its whole Ray; the next `raygan train` takes the run over and resumes from the last complete
    checkpoint, losing only the steps after it, and ends at the requested step."""
    from test_s3 import wait_for

    from raygan.checkpoint import list_checkpoints

    steps = 250  # the holder is killed after its second checkpoint (50) and a refused command (seconds)
    run = tmp_path / "contested"
    command = [sys.executable, "-m", "raygan.cli", "train", "tune_configs/smoke.yaml", "--name", "contested"]
    command += ["--storage", str(tmp_path), "--set", f"train.steps={steps}", "--set", "train.checkpoint_every=25"]
    command += ["--set", "train.eval_every=200", "--set", "train.keep_checkpoints=30", "--set", "scaling.num_workers=1"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(list_checkpoints(run)) >= 2, 300, "two checkpoints", first)
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith(f"error: --name: {run} is being written by raygan train (pid {first.pid} on ")
    finally:
        kill_tree(first)
    last = int(list_checkpoints(run)[-1].rsplit("_", 1)[1])
    assert last < steps and lock_of(run)["pid"] == first.pid  # the dead holder's lock is still there
    third = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert json.loads(third.stdout.strip().splitlines()[-1])["step"] == steps
    resumed = int(re.search(r"resumed from step (\d+)", third.stdout + third.stderr).group(1))
    # Ray registers a checkpoint just after its upload: a kill in between resumes from the one before
    assert resumed in (last, last - 25), (resumed, last)
    assert not (run / LOCK).exists()
