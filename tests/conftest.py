"""Shared fixtures: one local Ray instance for the whole session (started and stopped here)."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
# Ray Train's controller notices a finished run at its next poll (default every 2 s): ~4 s less per run
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 4 logical CPUs (2 workers + headroom on a 2-core machine)."""
    import ray

    from raygan.train.local_ray import quiet_start

    tests = str(Path(__file__).parent)  # workers unpickle functions defined in test modules
    # The dashboard serves the state API that Ray Train's placement-group cleaner polls: without it the
    # resources of a Train run whose trial was stopped (a PBT exploit) are never released. quiet_start
    # gives the cleaner its address: the test's own subprocesses run Ray instances beside this one.
    with quiet_start() as options:
        ray.init(
            num_cpus=4,
            include_dashboard=True,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": tests}},
            **options,
        )
    yield ray
    ray.shutdown()


def usage(module) -> str:
    """The indented example under the first line of a module's docstring, as code to run."""
    return textwrap.dedent(module.__doc__.split("\n\n")[1])


def run_module(module: str, *args, timeout=900, env=None) -> subprocess.CompletedProcess:
    """`python -m module args` as a user runs it: its own process, its own Ray."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def wait_for(condition, timeout: float, what: str, process=None, every: float = 0.5):
    """`condition()`'s first true value, polled `every` seconds; AssertionError after `timeout` s or if
    `process` (a Popen) ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """`raygan train tune_configs/smoke.yaml` once per session: (storage folder, the finished process)."""
    storage = tmp_path_factory.mktemp("smoke-run")
    result = run_module(
        "raygan.cli", "train", "tune_configs/smoke.yaml", "--name", "smoke", "--storage", str(storage), "--json"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return storage, result


@pytest.fixture(scope="session")
def smoke_sweep(s3_server) -> tuple[str, subprocess.CompletedProcess]:
    """`python -m raygan.tune tune_configs/smoke.yaml` (2 trials of 2 DDP workers) stored in S3 as on a
    cluster, once per session: (the experiment's URI, the finished process). The report reads it and
    test_s3 resumes it, which trains nothing and leaves every run's files as they were."""
    storage = f"s3://{s3_server.bucket('raygan-smoke')}/sweeps"
    result = run_module(
        "raygan.tune",
        "tune_configs/smoke.yaml",
        "--storage",
        storage,
        "--name",
        "smoke",
        "--json",
        env={**os.environ, **s3_server.env},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return f"{storage}/smoke", result


class FullDisk:
    """A local disk with `room` bytes left, as a pyarrow filesystem: a write past the room fails the way the
    OS fails it (OSError ENOSPC, after writing what fitted). `raygan.storage.filesystem` patched to return
    `disk.fs` puts raygan's storage layer on it."""

    def __init__(self, room: int):
        import pyarrow.fs

        self.room = room
        disk = self

        class Filesystem(pyarrow.fs.LocalFileSystem):  # raygan's local path: a temporary file, then a rename
            def open_output_stream(self, path, compression="detect", buffer_size=None, metadata=None):
                import pyarrow

                return pyarrow.PythonFile(disk.Room(open(path, "wb"), disk), mode="w")

        self.fs = Filesystem()

    class Room:
        def __init__(self, file, disk: "FullDisk"):
            self.file, self.disk = file, disk
            self.closed = False

        def write(self, data) -> int:
            import errno

            fits = min(len(data), self.disk.room)
            self.file.write(bytes(data[:fits]))
            self.disk.room -= fits
            if fits < len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return fits

        def flush(self) -> None:
            self.file.flush()

        def close(self) -> None:
            self.file.close()
            self.closed = True


class S3Endpoint:
    """moto's S3 server on a loopback port, with IAM signature checks on, as AWS would answer."""

    def __init__(self, endpoint: str, env: dict):
        self.endpoint, self.env = endpoint, env

    def client(self, **overrides):
        import boto3

        env = {**self.env, **overrides}
        return boto3.client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL"],
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )

    def bucket(self, name: str) -> str:
        """Create the bucket (if it is not there yet); returns its name."""
        client = self.client()
        if name not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
            client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


@pytest.fixture(scope="session")
def s3_server():
    import json
    import logging

    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    region = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="raygan")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="raygan", PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="raygan")["AccessKey"]
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10)  # from now on, signatures count
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
        **region,
    }
    yield S3Endpoint(endpoint, env)
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 endpoint, with its credentials in this process's environment for the test."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server
