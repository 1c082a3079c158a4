"""Ray clusters of our own on this machine, for the tests that need a real one: a head started with
`ray start --head --block` (optionally with Ray's autoscaler over its fake multi-node provider), and more
nodes joined to it with `ray start --address` (a "node" is one more raylet on this machine), each of which a
test can lose by killing its raylet.

    with ray_head("--num-cpus=1") as head, ray_node(head, "--num-cpus=1", '--resources={"trainer": 1}') as node:
        ... RAY_ADDRESS=head.gcs_address ...
        node.kill()   # SIGKILL to its raylet: the node is lost, as a spot instance is

Every head and node runs on free ports with a short private temp dir and the head's own token, and is stopped
by killing exactly its own processes: never `ray stop`, which stops every Ray instance on the machine (the
pytest session's own, another test run's). Nothing here calls `ray.init`, so the `ray_session` fixture may
be live in the same process.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ray  # noqa: F401  first: it puts the psutil it vendors on sys.path (nothing here calls ray.init)

# isort: split
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # this environment's `ray`, and the `python` a job runs
MiB = 1024**2


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
# more nodes, and losing one


@dataclass
class Node:
    temp_dir: Path
    process: subprocess.Popen  # `ray start --address ... --block`: the node's processes descend from it

    def raylet(self) -> psutil.Process | None:
        """This node's raylet (its command line names the node's own temp dir), if it runs."""
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if cmdline and Path(cmdline[0]).name == "raylet" and any(str(self.temp_dir) in a for a in cmdline):
                return proc
        return None

    def ran(self) -> list[str]:
        """What runs on this node: the names of the processes its raylet started (`ray::RayTrainWorker`, ...)."""
        raylet = self.raylet()
        names = set()
        for proc in raylet.children(recursive=True) if raylet is not None else []:
            try:
                names.add(proc.cmdline()[0].split(".")[0].split()[0])
            except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
                continue
        return sorted(names)

    def train_workers(self) -> list[int]:
        """PIDs of the Ray Train workers this node runs (its raylet starts them)."""
        return ray_train_workers(self.raylet())

    def kill(self) -> int:
        """SIGKILL to the raylet, by its PID: the node is lost with everything it ran. Returns the PID."""
        raylet = self.raylet()
        assert raylet is not None, "the node's raylet is not running"
        os.kill(raylet.pid, signal.SIGKILL)
        return raylet.pid


def ray_train_workers(parent: "psutil.Process | int | None") -> list[int]:
    """PIDs of the live Ray Train workers below a process (a raylet, or a driver that started its own Ray);
    Ray names them by actor class. Only those: another test may be training beside it."""
    if parent is None:
        return []
    try:
        below = (parent if isinstance(parent, psutil.Process) else psutil.Process(parent)).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    workers = []
    for process in below:
        try:
            if " ".join(process.cmdline()).startswith("ray::RayTrainWorker"):
                workers.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # ended (or a zombie) since the walk
            continue
    return sorted(workers)


@contextmanager
def ray_node(head: Head, *options: str) -> Iterator[Node]:
    """`ray start --address=HEAD --block` with `options` (its CPUs, custom resources); once its raylet runs,
    the node is yours; on the way out every process of it is stopped, as for the head."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rgn-", dir="/tmp"))
    command = [
        str(BIN / "ray"),
        "start",
        f"--address={head.gcs_address}",
        "--block",
        f"--temp-dir={temp_dir}",
        f"--node-ip-address={head.gcs_address.rsplit(':', 1)[0]}",
        "--dashboard-agent-listen-port=0",  # every node on this machine needs ports of its own
        "--min-worker-port=0",
        "--max-worker-port=0",
        *options,
    ]
    with open(temp_dir / "ray_start.log", "w") as log:
        process = subprocess.Popen(
            command, env=head.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    node = Node(temp_dir, process)
    try:
        deadline = time.monotonic() + 120
        while node.raylet() is None:
            log_tail = (temp_dir / "ray_start.log").read_text(errors="replace")[-3000:]
            assert process.poll() is None, f"ray start exited {process.returncode}:\n{log_tail}"
            assert time.monotonic() < deadline, f"the node's raylet did not start in 120 s:\n{log_tail}"
            time.sleep(0.5)
        yield node
    finally:
        stop_cluster(process, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Ray's autoscaler over its fake multi-node provider


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
