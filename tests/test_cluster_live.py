"""Live Ray clusters on this machine, each started by the test with `ray start --head`
(tests/live_cluster.py):

- `ray job submit` to a head with token authentication, as cluster/README.md submits a sweep.
- Ray's autoscaler (v2, with its fake multi-node provider: a "node" is one more raylet on this machine)
  adding worker nodes for a sweep whose workers need a custom resource, then removing them once idle.

    pytest -m cluster tests/test_cluster_live.py
"""

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from live_cluster import ROOT, MiB, ray_head

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


# ---------------------------------------------------------------------------------------------
# ray job submit (cluster/README.md, step 3)


SHORT_SWEEP = ["--set", "train.steps=50", "--set", "train.eval_every=25", "--set", "train.checkpoint_every=25"]


def test_ray_job_submit_runs_a_sweep_on_a_token_authenticated_head(tmp_path):
    """The smoke sweep, 50 steps (2 trials x 2 DDP workers) as a job on a `ray start` head: the working dir
    uploaded, the contract's JSON last."""
    with ray_head("--num-cpus=4", f"--object-store-memory={256 * MiB}") as head:
        impostor = {**head.env, "RAY_AUTH_TOKEN": "0" * 64}  # RAY_AUTH_TOKEN goes before RAY_AUTH_TOKEN_PATH
        refused = head.ray("job", "list", "--address", head.dashboard, env=impostor)
        assert refused.returncode != 0 and "Authentication failed" in refused.stderr, refused.stderr[-2000:]

        job_id = f"raygan-{secrets.token_hex(4)}"
        excludes = [".git", ".venv", ".pytest_cache", "*.egg-info", "runs/", "out/", "build/"]
        try:
            submit = head.ray(
                "job",
                "submit",
                "--address",
                head.dashboard,
                "--submission-id",
                job_id,
                "--working-dir",
                ".",
                "--runtime-env-json",
                json.dumps({"excludes": excludes}),
                "--",
                "python",
                "-m",
                "raygan.tune",
                "tune_configs/smoke.yaml",
                "--storage",
                str(tmp_path),
                "--name",
                "job",
                "--json",
                *SHORT_SWEEP,
                timeout=600,  # blocks, streaming the job's logs, until it ends; exit 1 if it failed
            )
        except subprocess.TimeoutExpired:
            head.ray("job", "stop", "--address", head.dashboard, job_id)
            raise
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-5000:]

        status = head.ray("job", "status", "--address", head.dashboard, job_id)
        assert f"Job '{job_id}' succeeded" in status.stdout + status.stderr, status.stdout + status.stderr
        logs = head.ray("job", "logs", "--address", head.dashboard, job_id)
        assert logs.returncode == 0, logs.stderr[-3000:]

    json_lines = [line for line in logs.stdout.splitlines() if line.startswith("{")]
    assert json_lines, logs.stdout[-3000:]
    summary = json.loads(json_lines[-1])  # `--json`: the last line of the driver's stdout
    assert set(summary) == {"experiment", "trials", "best_config", "best_fid", "best_checkpoint"}
    assert Path(summary["experiment"]).resolve() == (tmp_path / "job").resolve()
    assert summary["trials"] == 2 and summary["best_fid"] > 0
    assert Path(summary["best_checkpoint"], "generator.pt").is_file()


# ---------------------------------------------------------------------------------------------

TRAINER_NODES = {  # up to 2 one-CPU nodes, the only ones that offer the custom resource `trainer`
    "trainer_node": {
        "resources": {"CPU": 1, "trainer": 1, "object_store_memory": 128 * MiB},
        "node_config": {},
        "min_workers": 0,
        "max_workers": 2,
    },
}
SWEEP = {  # 2 tiny trials at once, each one Train worker that needs a `trainer`
    "data": {"image_size": 16},
    "model": {"g_layers": 3, "d_layers": 3, "g_width": 16, "d_width": 16, "latent_dim": 16},
    "train": {"batch_size": 32, "steps": 40, "eval_every": 20, "checkpoint_every": 20, "report_every": 20},
    "eval": {"num_samples": 200},
    "scaling": {"num_workers": 1, "cpus_per_worker": 1, "resources_per_worker": {"trainer": 1}},
    "tune": {
        "num_samples": 1,
        "max_concurrent": 2,
        "scheduler": {"name": "fifo"},
        "search_space": {"optim.d.lr": {"grid": [2.0e-4, 1.0e-3]}},
    },
}


def test_autoscaler_adds_nodes_for_a_sweep_and_removes_them_when_idle(tmp_path):
    """The head cannot hold a trial's worker (no CPU, no `trainer`): the autoscaler must add a node per
    running trial, at most 2, and remove them once the sweep is over and they have idled."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    stdout_path, stderr_path = tmp_path / "driver.out", tmp_path / "driver.err"

    with ray_head("--num-cpus=0", f"--object-store-memory={128 * MiB}", fake_node_types=TRAINER_NODES) as head:
        assert head.raylets() == 1  # min_workers 0: the head alone
        # How a user runs a sweep on a running cluster: RAY_ADDRESS, then raygan's own run_sweep.
        command = [
            sys.executable,
            "-m",
            "raygan.tune",
            str(sweep),
            "--storage",
            str(tmp_path),
            "--name",
            "scale",
            "--json",
        ]
        with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
            driver = subprocess.Popen(
                command, env={**head.env, "RAY_ADDRESS": head.gcs_address}, cwd=ROOT, stdout=stdout, stderr=stderr
            )
        peak_workers, deadline = 0, time.monotonic() + 600
        try:
            while driver.poll() is None:  # while the sweep runs, count the nodes the autoscaler adds
                assert time.monotonic() < deadline, "the sweep did not finish in 10 minutes"
                assert head.process.poll() is None, f"the head stopped:\n{head.log_tail()}"
                peak_workers = max(peak_workers, head.raylets() - 1)
                time.sleep(1)
        finally:
            if driver.poll() is None:
                driver.kill()
            driver.wait()
        assert driver.returncode == 0, stderr_path.read_text()[-5000:]

        idle_since, workers_left = time.monotonic(), head.raylets() - 1
        while workers_left and time.monotonic() - idle_since < 180:
            time.sleep(2)
            workers_left = head.raylets() - 1

    assert 1 <= peak_workers <= 2, peak_workers  # 2 when both trials overlap; max_workers caps it
    assert workers_left == 0, f"{workers_left} idle worker node(s) still up after 180 s"
    summary = json.loads(stdout_path.read_text().strip().splitlines()[-1])  # `--json`: the last stdout line
    assert summary["trials"] == 2 and Path(summary["best_checkpoint"], "generator.pt").is_file()
    rows = json.loads((tmp_path / "scale" / "summary.json").read_text())
    assert [row["stop_reason"] for row in rows] == ["completed", "completed"], rows
    assert all(isinstance(row["best_fid"], float) for row in rows), rows
