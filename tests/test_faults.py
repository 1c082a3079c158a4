"""Faults a cluster really has, done for real (issue #31): a full disk under a run, a node lost mid-run and
mid-sweep, and a sweep whose Train workers are killed at random. Each loses at most the work since the last
complete checkpoint, never chooses a half-written one, and says what it lost and how long it took to recover
(printed: `pytest -s`).

    pytest -m slow tests/test_faults.py -s

A full disk is a small tmpfs the test mounts (root only; elsewhere it skips, and test_storage.py injects
ENOSPC at raygan's storage layer instead). A node is one more raylet on this machine (tests/live_cluster.py),
lost by SIGKILL to its raylet.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_module, wait_for
from live_cluster import ROOT, MiB, ray_head, ray_node

from raygan.checkpoint import MANIFEST, best_checkpoint, is_complete, list_checkpoints, load_generator
from raygan.errors import first_line
from raygan.train.runlog import read_metrics
from raygan.tune.summary import RUNS, read_summary
from raygan.tune.trials import TRIAL_RESOURCES

pytestmark = pytest.mark.slow

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


# ---------------------------------------------------------------------------------------------
# a node lost mid-run and mid-sweep


TINY = {  # a run of a few hundred steps whose one Train worker needs a node that offers `trainer`
    "data": {"name": "digits", "image_size": 16},
    "model": {"g_layers": 3, "d_layers": 3, "g_width": 16, "d_width": 16, "latent_dim": 16},
    "train": {
        "batch_size": 32,
        "steps": 250,
        "eval_every": 100,
        "checkpoint_every": 50,
        "report_every": 25,
        "keep_checkpoints": 3,
        "max_failures": 1,  # Ray 2.60 charges a lost node's workers here (only a drained node is a preemption)
    },
    "eval": {"num_samples": 200},
    "scaling": {"num_workers": 1, "cpus_per_worker": 1, "resources_per_worker": {"trainer": 1}},
}
TRAINER_NODE = ("--num-cpus=1", '--resources={"trainer": 1}', f"--object-store-memory={128 * MiB}")


class Watch:
    """While a driver runs: the first moment its output says it resumed, and the first moment each run's
    metrics pass a step."""

    def __init__(self, log: Path):
        self.log, self.resumed_at, self.passed_at = log, None, {}

    def poll(self, runs: dict[str, int]) -> None:
        now = time.monotonic()
        if self.resumed_at is None and RESUMED.search(self.log.read_text(errors="replace")):
            self.resumed_at = now
        for run, step in runs.items():
            records = read_metrics(run) if run not in self.passed_at else []
            if records and records[-1]["step"] > step:
                self.passed_at[run] = now


def start_driver(command: list[str], head, log: Path) -> subprocess.Popen:
    """A raygan command as a user runs it on the cluster: RAY_ADDRESS, the cluster's token."""
    with open(log, "w") as out:
        return subprocess.Popen(
            command,
            env={**head.env, "RAY_ADDRESS": head.gcs_address},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(driver: subprocess.Popen, timeout: float, watch: Watch, runs: dict[str, int]) -> int:
    """Wait for the driver to end, watching its recovery; its exit status."""
    deadline = time.monotonic() + timeout
    try:
        while driver.poll() is None:
            assert time.monotonic() < deadline, f"the driver did not finish in {timeout:.0f} s"
            watch.poll(runs)
            time.sleep(0.25)
        watch.poll(runs)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait()
    return driver.returncode


def gone(pids: list[int]) -> bool:
    import psutil

    return not any(psutil.pid_exists(pid) for pid in pids)


def lose_node(node, runs: list[Path]) -> dict:
    """SIGKILL to the node's raylet; once its Train workers have ended too (they follow their raylet), what
    each run had: its newest complete checkpoint and the last step it reported."""
    import psutil

    workers, ran = node.train_workers(), node.ran()
    killed_at = time.monotonic()
    node.kill()
    try:
        wait_for(lambda: gone(workers), 30, "the lost node's Train workers to end with their raylet")
    except AssertionError:  # the machine is gone: nothing of it goes on writing
        print(f"\nthe lost node's workers {workers} outlived their raylet by 30 s: killed")
        for pid in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        wait_for(lambda: gone(workers), 30, "the lost node's Train workers to end")
    return {
        "killed_at": killed_at,
        "workers": workers,
        "ran": ran,
        "runs": {
            str(run): {
                "checkpoint": (steps_of(list_checkpoints(str(run))) or [0])[-1],
                "reported": read_metrics(str(run))[-1]["step"],
                "records": read_metrics(str(run)),
            }
            for run in runs
        },
    }


def test_a_run_whose_node_is_lost_resumes_from_its_last_checkpoint_on_a_replacement(tmp_path):
    """A head and a second node, the only one that offers `trainer`, so the run's worker trains there. Once
    two checkpoints are in, the node is lost (its raylet SIGKILLed); a replacement with the same resource
    joins, as an autoscaler would start one. The run resumes from its newest complete checkpoint there and
    finishes at the requested step."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(TINY))
    store, log = tmp_path / "store", tmp_path / "driver.log"
    run = store / "lost"
    command = [sys.executable, "-m", "raygan.cli", "train", str(config), "--name", "lost"]
    command += ["--storage", str(store), "--json"]
    with ray_head("--num-cpus=1", f"--object-store-memory={128 * MiB}") as head:
        with ray_node(head, *TRAINER_NODE) as node:
            driver = start_driver(command, head, log)
            try:
                mid_run = lambda: len(list_checkpoints(str(run))) >= 2 and node.train_workers()  # noqa: E731
                wait_for(mid_run, 300, "two checkpoints, the worker training on the second node", driver)
                lost = lose_node(node, [run])
            except BaseException:
                driver.kill()
                raise
        watch = Watch(log)
        at_kill = lost["runs"][str(run)]
        with ray_node(head, *TRAINER_NODE):
            code = finish(driver, 300, watch, {str(run): at_kill["reported"]})
    output = log.read_text()
    assert code == 0, output[-5000:]
    assert last_json(output)["step"] == TINY["train"]["steps"]
    resumed = [int(step) for step in RESUMED.findall(output)]
    assert resumed == [at_kill["checkpoint"]], (resumed, at_kill["checkpoint"])  # the newest complete one
    lost_steps = at_kill["reported"] - at_kill["checkpoint"]
    assert 0 <= lost_steps <= TINY["train"]["checkpoint_every"]  # at most the steps since the last checkpoint
    assert all(is_complete(c) for c in list_checkpoints(str(run), complete_only=False))
    load_generator(str(run))
    lost_s = at_kill["records"][-1]["trained_s"] - trained_s_at(at_kill["records"], at_kill["checkpoint"])
    print(
        f"\nnode lost (train): lost {lost_steps} steps ({lost_s:.1f} s of training) since checkpoint "
        f"{at_kill['checkpoint']}; resumed {watch.resumed_at - lost['killed_at']:.1f} s after the kill, back at "
        f"step {at_kill['reported']} {watch.passed_at[str(run)] - lost['killed_at']:.1f} s after it"
    )


NODE_LOSS_SWEEP = {
    **TINY,
    "train": {**TINY["train"], "steps": 200},
    "tune": {
        "num_samples": 1,
        "max_concurrent": 2,
        "scheduler": {"name": "fifo"},
        "max_failures": 1,  # a trial whose own process was on the lost node starts again from its pointer
        "search_space": {"optim.d.lr": {"grid": [2.0e-4, 1.0e-3]}},
    },
}


TRIAL_PROCESSES = ("ray::ImplicitFunc", "ray::TrainController", "ray::RayTrainWorker")  # a trial's, by name


def test_a_sweep_that_loses_a_node_finishes_every_trial_once_with_its_best_checkpoint_intact(tmp_path):
    """2 trials at once, one Train worker each: one on the head, one on a second node, which also runs a
    trial's own process (the head has memory for one; each asks for 64 MiB). Once every trial has a
    checkpoint the second node is lost, with a trial and a worker; a replacement joins. Every trial
    finishes, the summary has each once, and every trial's best checkpoint, the lost one's too, is
    complete and loads."""
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(NODE_LOSS_SWEEP))
    store, log = tmp_path / "store", tmp_path / "driver.log"
    experiment = store / "lost"
    command = [sys.executable, "-m", "raygan.tune", str(config), "--name", "lost"]
    command += ["--storage", str(store), "--json"]
    head_memory = f"--memory={TRIAL_RESOURCES['memory'] * 3 // 2}"  # one trial's own process, not two
    with ray_head(*TRAINER_NODE, head_memory) as head:  # the head trains one trial, the second node the other
        with ray_node(head, *TRAINER_NODE) as node:
            driver = start_driver(command, head, log)
            runs = lambda: sorted((experiment / RUNS).glob("*"))  # noqa: E731
            try:
                mid_sweep = lambda: (  # noqa: E731
                    len(runs()) == 2 and all(list_checkpoints(str(r)) for r in runs()) and node.train_workers()
                )
                wait_for(mid_sweep, 300, "both trials checkpointed, one training on the second node", driver)
                lost = lose_node(node, runs())
            except BaseException:
                driver.kill()
                raise
        watch = Watch(log)
        with ray_node(head, *TRAINER_NODE):
            code = finish(driver, 300, watch, {r: at["reported"] for r, at in lost["runs"].items()})
    # the node took a trial's own process (Tune's ImplicitFunc, its Train controller beside it) and a worker
    assert set(TRIAL_PROCESSES) <= set(lost["ran"]), lost["ran"]
    output = log.read_text()
    assert code == 0, output[-5000:]
    summary = last_json(output)
    rows = read_summary(str(experiment))
    assert summary["trials"] == len(rows) == 2 and len({row["trial"] for row in rows}) == 2
    assert [row["stop_reason"] for row in rows] == ["completed", "completed"], rows
    assert [row["last_step"] for row in rows] == [NODE_LOSS_SWEEP["train"]["steps"]] * 2, rows
    assert len(runs()) == 2  # no run folder twice
    for row in rows:
        assert is_complete(row["best_checkpoint"]) and Path(row["best_checkpoint"], MANIFEST).is_file()
        load_generator(row["best_checkpoint"])
    resumed = [int(step) for step in RESUMED.findall(output)]
    assert resumed, output[-5000:]
    # each trial that resumed did so from its newest complete checkpoint, losing at most the steps since it
    at_resume, unclaimed = {}, dict(lost["runs"])
    for step in resumed:
        run = next(r for r, at in unclaimed.items() if at["checkpoint"] == step)
        at_resume[run] = at_kill = unclaimed.pop(run)
        assert 0 <= at_kill["reported"] - at_kill["checkpoint"] <= NODE_LOSS_SWEEP["train"]["checkpoint_every"]
    assert all(is_complete(c) for r in runs() for c in list_checkpoints(str(r), complete_only=False))
    run, at_kill = max(at_resume.items(), key=lambda item: item[1]["reported"] - item[1]["checkpoint"])
    lost_steps = at_kill["reported"] - at_kill["checkpoint"]
    lost_s = at_kill["records"][-1]["trained_s"] - trained_s_at(at_kill["records"], at_kill["checkpoint"])
    back = watch.passed_at.get(run)
    print(
        f"\nnode lost (sweep), with {', '.join(sorted(set(TRIAL_PROCESSES) & set(lost['ran'])))}: "
        f"{len(at_resume)} trial(s) resumed; "
        f"trial {Path(run).name} lost {lost_steps} steps "
        f"({lost_s:.1f} s of training) since checkpoint {at_kill['checkpoint']}; "
        f"resumed {watch.resumed_at - lost['killed_at']:.1f} s after the kill"
        + (f", back at step {at_kill['reported']} {back - lost['killed_at']:.1f} s after it" if back else "")
    )


# ---------------------------------------------------------------------------------------------
# a chaos sweep: Train workers killed at random (benchmarks/chaos_sweep.py, small)


def test_a_sweep_whose_train_workers_are_killed_at_random_finishes_every_trial_once(tmp_path):
    """4 trials of 640 steps, 2 at a time; 2 Train workers killed (seeded), each old enough (15 s) to be past
    its first checkpoint (a worker spends its first seconds starting; 160 steps then train in 2-5 s)."""
    result = subprocess.run(
        [sys.executable, "benchmarks/chaos_sweep.py", "--trials", "4", "--steps", "640", "--kills", "2"]
        + ["--every", "8", "--min-age", "15", "--no-baseline", "--out", str(tmp_path), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    print("\n" + "\n".join(result.stdout.strip().splitlines()[:-1]))
    figures = last_json(result.stdout)["faults"]
    assert len(figures["kills"]) >= 2 and figures["resumes"] >= 1, figures  # it lived through them
    assert figures["trials"] == figures["completed"] == figures["run_folders"] == 4, figures
    assert figures["unique_trials"] == 4 and figures["best_checkpoint_loads"], figures
