"""Live Ray clusters on this machine, each started by the test with `ray start --head`:

- `ray job submit` to a head with token authentication, as cluster/README.md submits a sweep.
- Ray's autoscaler (v2, with its fake multi-node provider: a "node" is one more raylet on this machine)
  adding worker nodes for a sweep whose workers need a custom resource, then removing them once idle.

    pytest -m cluster tests/test_cluster_live.py

Every head runs on free ports with a short private temp dir and its own token, and is stopped by
killing exactly its own processes: never `ray stop`, which stops every Ray instance on the machine
(the pytest session's own, another test run's). Nothing here calls `ray.init`, so the `ray_session`
fixture may be live in the same process.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray  # noqa: F401  first: it puts the psutil it vendors on sys.path (nothing here calls ray.init)

# isort: split
import psutil
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # this environment's `ray`, and the `python` a job runs
MiB = 1024**2


# ---------------------------------------------------------------------------------------------
# a head node of our own


@dataclass
class Head:
    gcs_address: str  # ip:port, what RAY_ADDRESS and the autoscaler's nodes use
    dashboard: str  # http://127.0.0.1:port, what `ray job ...` talks to
    env: dict  # the environment of every client: its token and PATH
    temp_dir: Path
    process: subprocess.Popen  # `ray start --head --block`: every Ray process descends from it

    def ray(self, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """The `ray` CLI as a client of this cluster, run from the repository root."""
        return subprocess.run(
            [str(BIN / "ray"), *args], env=env or self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
        )

    def raylets(self) -> int:
        """Live raylets of this cluster: one per node, the head's included (how Ray itself finds nodes)."""
        flag = f"--gcs-address={self.gcs_address}"
        return sum(
            1
            for proc in psutil.process_iter(["cmdline"])
            if (cmdline := proc.info["cmdline"]) and Path(cmdline[0]).name == "raylet" and flag in cmdline
        )

    def log_tail(self, chars: int = 3000) -> str:
        return (self.temp_dir / "ray_start.log").read_text(errors="replace")[-chars:]


def free_ports(count: int) -> list[int]:
    """Distinct ports that are free right now (held open together so that they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def client_env(token_file: Path) -> dict:
    """Ray 2.60's token authentication, with this cluster's own token instead of ~/.ray/auth_token."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # `python` in a job's entrypoint is this environment's
        RAY_AUTH_MODE="token",  # servers demand the token, clients send it
        RAY_AUTH_TOKEN_PATH=str(token_file),  # read before ~/.ray/auth_token (RAY_AUTH_TOKEN goes first)
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


@contextmanager
def ray_head(*options: str, fake_node_types: dict | None = None) -> Iterator[Head]:
    """`ray start --head --block` with `options`, and with Ray's autoscaler over `fake_node_types` if
    given; stops all of its processes on the way out."""
    from ray._private.services import get_node_ip_address

    temp_dir = Path(tempfile.mkdtemp(prefix="rgj-", dir="/tmp"))  # short: Unix sockets live under it (107 chars)
    token_file = temp_dir / "auth_token"
    token_file.write_text(secrets.token_hex(32))  # what `ray get-auth-token --generate` writes
    env = client_env(token_file)
    gcs, dashboard, client, agent = free_ports(4)
    gcs_address = f"{get_node_ip_address()}:{gcs}"
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        f"--temp-dir={temp_dir}",
        f"--node-ip-address={gcs_address.split(':')[0]}",
        f"--port={gcs}",
        f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        "--min-worker-port=0",
        "--max-worker-port=0",  # 0: any free port
        "--include-dashboard=true",
        "--disable-usage-stats",
        *options,
    ]
    head_env = dict(env)
    if fake_node_types is not None:
        config = temp_dir / "autoscaling.yaml"
        config.write_text(yaml.safe_dump(fake_cluster_config(gcs_address, fake_node_types)))
        command.append(f"--autoscaling-config={config}")
        head_env.update(fake_cluster_env())
    with open(temp_dir / "ray_start.log", "w") as log:
        process = subprocess.Popen(
            command, env=head_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    head = Head(gcs_address, f"http://127.0.0.1:{dashboard}", env, temp_dir, process)
    failed = True
    try:
        deadline = time.monotonic() + 180
        while not (temp_dir / "ray_current_cluster").exists():  # written once the head is up
            assert process.poll() is None, f"ray start exited {process.returncode}:\n{head.log_tail()}"
            assert time.monotonic() < deadline, f"the head did not come up in 180 s:\n{head.log_tail()}"
            time.sleep(1)
        yield head
        failed = False
    finally:
        stop_cluster(process, temp_dir)
        if failed:
            print(f"Ray's logs are kept in {temp_dir}/session_latest/logs")
        else:
            shutil.rmtree(temp_dir, ignore_errors=True)


def stop_cluster(process: subprocess.Popen, temp_dir: Path) -> None:
    """Terminate `ray start --block` and every process below it (GCS, raylets, workers, the autoscaler's
    nodes, job drivers), then any straggler whose command line names the temp dir; kill what lingers."""

    def processes() -> list:
        found = []
        try:
            root = psutil.Process(process.pid)
            found = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        for proc in psutil.process_iter(["cmdline"]):
            if proc not in found and any(str(temp_dir) in arg for arg in proc.info["cmdline"] or []):
                found.append(proc)
        return found

    for _ in range(3):  # a dying raylet may still start a worker: look again
        procs = processes()
        if not procs:
            break
        for proc in procs:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=20)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


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
# the autoscaler adds and removes nodes for a sweep (cluster/README.md, "From scaling to nodes")


def fake_cluster_config(gcs_address: str, node_types: dict) -> dict:
    """A launcher config for Ray's fake multi-node provider, as ray.cluster_utils.AutoscalingCluster
    writes it. The head offers no CPU, like cluster/aws.yaml's.

    The Ray 2.60 wheel lacks fake_multi_node/example.yaml, the defaults that provider type
    `fake_multinode` loads (and AutoscalingCluster's template), so the same provider class is named
    through type `external`. AutoscalingCluster itself is not used: its start() runs `ray stop --force`."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    return {
        "cluster_name": "raygan-fake",
        "max_workers": sum(t["max_workers"] for t in node_types.values()),
        "provider": {
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "gcs_address": gcs_address,  # the nodes join this head (default: port 6379)
            "head_node_id": FAKE_HEAD_NODE_ID,
            "launch_multiple": True,  # autoscaler v2 launches several nodes in one request
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            **node_types,
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MINUTES,
        # what `ray up` does over SSH: nothing on one machine
        **{
            key: []
            for key in (
                "initialization_commands",
                "setup_commands",
                "head_setup_commands",
                "worker_setup_commands",
                "head_start_ray_commands",
                "worker_start_ray_commands",
                "cluster_synced_files",
                "rsync_exclude",
                "rsync_filter",
            )
        },
        **{key: {} for key in ("auth", "docker", "file_mounts")},
        "file_mounts_sync_continuously": False,
    }


def fake_cluster_env() -> dict:
    """What AutoscalingCluster(autoscaler_v2=True) sets for `ray start --head`."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    return {
        "RAY_FAKE_CLUSTER": "1",  # allows the fake provider
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # decide every second (default 5)
        "RAY_enable_autoscaler_v2": "1",  # as `ray up` and the KubeRay manifests run it
        "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
        "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
    }


IDLE_TIMEOUT_MINUTES = 0.1  # idle worker nodes go after 6 s (cluster/aws.yaml: 10 minutes)
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
