"""Object storage against a real local S3 endpoint (moto's server, signatures checked), through the
same boto3 / pyarrow code path users take to AWS; and runs that survive a killed worker or an outage."""

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import run_module, wait_for
from live_cluster import ray_train_workers

from raygan.cli import main


def raygan(s3, *args, timeout=600):
    return run_module("raygan.cli", *args, timeout=timeout, env={**os.environ, **s3.env})


def last_json(result) -> dict:
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# preflight: bad storage is bad input, caught in seconds, before Ray starts, leaving nothing


@pytest.mark.parametrize(
    "uri, env, cause",
    [
        ("s3://raygan-missing/runs", {}, "bucket 'raygan-missing' does not exist"),
        (
            "s3://raygan-pre/runs",
            {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
            "credentials were rejected (SignatureDoesNotMatch)",
        ),
        (
            "s3://raygan-pre/runs",
            {"AWS_ACCESS_KEY_ID": "AKIANOTAKEY"},
            "credentials were rejected (InvalidAccessKeyId)",
        ),
        ("s3://raygan-pre/runs", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot reach the S3 endpoint"),
        ("s3:/raygan-pre/runs", {}, "malformed URI"),
        ("s3://", {}, "no bucket name"),
        ("s3://Raygan_Pre/runs", {}, "not a valid S3 bucket name"),
        ("nfs://raygan-pre/runs", {}, "unsupported storage URI"),
    ],
    ids=[
        "missing-bucket",
        "wrong-secret",
        "unknown-key",
        "unreachable",
        "one-slash",
        "no-bucket",
        "bad-name",
        "scheme",
    ],
)
def test_preflight_failures_exit_2_naming_the_uri(s3, monkeypatch, capsys, uri, env, cause):
    s3.bucket("raygan-pre")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    start = time.monotonic()
    for command in ("train", "tune"):
        code = main([command, "tune_configs/smoke.yaml", "--storage", uri])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"error: {uri}: ") and cause in err, err
        assert len(err.strip().splitlines()) == 1
    assert time.monotonic() - start < 30
    assert s3.keys("raygan-pre") == {}  # nothing written, not even the marker


def test_preflight_passes_and_leaves_no_marker(s3):
    from raygan.storage import check_writable

    s3.bucket("raygan-ok")
    check_writable("s3://raygan-ok/some/prefix")
    assert s3.keys("raygan-ok") == {}


def test_a_crafted_pickle_in_the_bucket_is_refused_without_running(s3, tmp_path, capsys):
    """A checkpoint whose generator.pt would run code when unpickled: exit 2 naming it, nothing runs."""
    from raygan.storage import write_bytes

    s3.bucket("raygan-evil")
    ran = tmp_path / "it-ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {ran}",))

    payload = pickle.dumps(Exploit())
    checkpoint = "s3://raygan-evil/run/checkpoint_0000010"
    files = {
        "generator.pt": payload,
        "config.json": b"{}",
        "meta.json": json.dumps({"step": 10, "channels": 1, "num_classes": 10}).encode(),
    }
    files["manifest.json"] = json.dumps({name: len(data) for name, data in files.items()}).encode()
    for name, data in files.items():
        write_bytes(f"{checkpoint}/{name}", data)
    code = main(["sample", checkpoint, "--num", "4", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and f"{checkpoint}/generator.pt: not a loadable raygan checkpoint" in err, err
    assert not ran.exists() and not (tmp_path / "x.png").exists()


def test_an_incomplete_checkpoint_never_loads(s3, capsys):
    """Only the manifest makes a checkpoint valid, and every size must match it."""
    from raygan.checkpoint import is_complete
    from raygan.storage import write_bytes

    s3.bucket("raygan-partial")
    checkpoint = "s3://raygan-partial/run/checkpoint_0000010"
    write_bytes(f"{checkpoint}/generator.pt", b"x" * 10)
    write_bytes(f"{checkpoint}/manifest.json", json.dumps({"generator.pt": 10, "state.pt": 99}).encode())
    assert not is_complete(checkpoint)
    assert main(["sample", checkpoint, "--num", "4", "--out", "/tmp/never"]) == 2
    assert "incomplete checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# real runs on S3


def complete_checkpoints(s3, bucket: str, run: str) -> set[str]:
    return {key.split("/")[-2] for key in s3.keys(bucket, run + "/") if key.endswith("/manifest.json")}


SMALL_RUN = [
    "--set",
    "train.steps=150",
    "--set",
    "train.checkpoint_every=25",
    "--set",
    "train.eval_every=50",
    "--set",
    "train.keep_checkpoints=10",
]


@pytest.mark.slow
def test_train_on_s3_survives_a_killed_worker_resumes_and_reads_back(s3, tmp_path):
    """2 workers, max_failures 1: SIGKILL one mid-run; the run restarts from its last checkpoint in
    the bucket and ends at the right step. Then the same name resumes from S3; list, pull and sample
    read the checkpoints back; the secret key appears in no output or stored file."""
    bucket = s3.bucket("raygan-train")
    storage = f"s3://{bucket}/runs"
    command = [
        sys.executable,
        "-m",
        "raygan.cli",
        "train",
        "tune_configs/smoke.yaml",
        "--name",
        "ft",
        "--storage",
        storage,
        *SMALL_RUN,
        "--set",
        "train.max_failures=1",
        "--json",
    ]
    log = open(tmp_path / "first.log", "w+")
    own_ray = {"RAY_ADDRESS": "local"}  # never a cluster `ray start` left behind: its workers are below the driver
    run = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ, **s3.env, **own_ray}
    )
    try:
        # a second checkpoint in the bucket means Ray has registered the first (reports are processed in order)
        wait_for(lambda: len(complete_checkpoints(s3, bucket, "runs/ft")) >= 2, 300, "two checkpoints", run)
        os.kill(wait_for(lambda: ray_train_workers(run.pid), 60, "a Ray Train worker", run)[-1], signal.SIGKILL)
        assert run.wait(timeout=600) == 0
    finally:
        if run.poll() is None:
            run.kill()
    log.seek(0)
    first = log.read()
    summary = json.loads(first.strip().splitlines()[-1])
    assert summary["step"] == 150 and summary["best_checkpoint"].startswith(f"{storage}/ft/checkpoint_")
    assert "resumed from step" in first, first[-3000:]

    again = raygan(
        s3,
        "train",
        "tune_configs/smoke.yaml",
        "--name",
        "ft",
        "--storage",
        storage,
        *SMALL_RUN,
        "--set",
        "train.steps=175",
        "--json",
    )
    assert last_json(again)["step"] == 175 and "resumed from step 150" in again.stdout + again.stderr

    listing = raygan(s3, "checkpoints", "list", storage, "--json")
    rows = last_json(listing)["checkpoints"]
    assert {r["checkpoint"] for r in rows} >= {"checkpoint_0000150", "checkpoint_0000175"}
    assert all(r["complete"] and r["size_mb"] > 0 for r in rows) and sum(r["best"] for r in rows) == 1
    pulled = raygan(s3, "checkpoints", "pull", f"{storage}/ft", str(tmp_path / "pulled"))
    assert pulled.returncode == 0, pulled.stderr
    best = next(r for r in rows if r["best"])["checkpoint"]
    assert (tmp_path / "pulled" / best / "generator.pt").is_file()
    sample = raygan(s3, "sample", f"{storage}/ft/checkpoint_0000175", "--num", "8", "--out", str(tmp_path / "s"))
    assert sample.returncode == 0 and (tmp_path / "s.png").is_file(), sample.stderr

    secret = s3.env["AWS_SECRET_ACCESS_KEY"]
    outputs = first + "".join(r.stdout + r.stderr for r in (again, listing, pulled, sample))
    assert secret not in outputs
    client = s3.client()
    for key in s3.keys(bucket):
        assert secret.encode() not in client.get_object(Bucket=bucket, Key=key)["Body"].read(), key
    assert all(secret.encode() not in p.read_bytes() for p in (tmp_path / "pulled").rglob("*") if p.is_file())


class TcpProxy:
    """A loopback TCP forwarder that a test can take down (refusing and cutting connections) and bring back."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener = None
        self._open: list[socket.socket] = []

    def start(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def stop(self) -> None:
        self._listener.close()
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.mark.slow
def test_a_storage_outage_mid_run_delays_checkpoints_but_the_run_finishes(s3, tmp_path):
    bucket = s3.bucket("raygan-outage")
    proxy = TcpProxy(int(s3.endpoint.rsplit(":", 1)[1]))
    proxy.start()
    env = {**os.environ, **s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    command = [
        sys.executable,
        "-m",
        "raygan.cli",
        "train",
        "tune_configs/smoke.yaml",
        "--name",
        "outage",
        "--storage",
        f"s3://{bucket}/runs",
        *SMALL_RUN,
        "--set",
        "scaling.num_workers=1",
        "--set",
        "train.steps=250",
        "--json",
    ]
    log = open(tmp_path / "run.log", "w+")
    run = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for(lambda: complete_checkpoints(s3, bucket, "runs/outage"), 300, "the first checkpoint", run)
        proxy.stop()
        time.sleep(12)  # checkpoints come every second or two: several wait through it
        proxy.start()
        assert run.wait(timeout=600) == 0
    finally:
        if run.poll() is None:
            run.kill()
        proxy.stop()
    log.seek(0)
    output = log.read()
    assert json.loads(output.strip().splitlines()[-1])["step"] == 250
    assert "storage unreachable" in output and "storage reachable again" in output, output[-3000:]
    from raygan.checkpoint import is_complete, list_checkpoints

    everything = list_checkpoints(f"s3://{bucket}/runs/outage", complete_only=False)
    assert everything and all(is_complete(c) for c in everything)
    assert everything[-1].endswith("checkpoint_0000250")


@pytest.mark.slow
def test_a_sweep_on_s3_writes_there_and_resumes_from_it(smoke_sweep, s3):
    from raygan.storage import is_file

    experiment, first = smoke_sweep
    bucket, prefix = experiment.removeprefix("s3://").split("/", 1)
    summary = last_json(first)
    assert set(summary) == {"experiment", "trials", "best_config", "best_fid", "best_checkpoint"}
    assert summary["trials"] == 2 and summary["best_fid"] > 0
    assert summary["best_config"]["optim.d.lr"] in (2.0e-4, 1.0e-3)
    assert summary["best_checkpoint"].startswith(f"{experiment}/runs/")
    assert is_file(f"{summary['best_checkpoint']}/generator.pt") and is_file(f"{experiment}/summary.json")
    before = s3.keys(bucket, f"{prefix}/runs/")  # every file
    assert any(k.endswith("/generator.pt") for k in before)
    resumed = raygan(
        s3,
        "tune",
        "tune_configs/smoke.yaml",
        "--storage",
        experiment.rsplit("/", 1)[0],
        "--name",
        "smoke",
        "--resume",
        "--json",
        timeout=900,
    )
    assert last_json(resumed)["best_fid"] == pytest.approx(summary["best_fid"])
    assert s3.keys(bucket, f"{prefix}/runs/") == before  # finished trials were not rerun, nor re-reported
    secret, client = s3.env["AWS_SECRET_ACCESS_KEY"].encode(), s3.client()
    assert secret.decode() not in "".join(r.stdout + r.stderr for r in (first, resumed))
    assert any(key.endswith("tuner.pkl") for key in s3.keys(bucket))  # Tune pickles its storage filesystem ...
    for key in s3.keys(bucket):  # ... which must not carry the credentials
        assert secret not in client.get_object(Bucket=bucket, Key=key)["Body"].read(), key
