"""Names under the storage root: a run or an experiment is one folder directly under it, on every storage,
and any other name is bad input, refused before Ray starts and before anything is written. A full disk:
StorageFull naming the path, never waited for as an outage, nothing half-written left behind."""

import errno
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FullDisk

from raygan import storage
from raygan.cli import main
from raygan.config import build_config
from raygan.errors import UserError

BAD_NAMES = {
    "parent": "../escaped",
    "nested": "a/b",
    "backslash": "a\\b",
    "dotdot": "..",
    "dot": ".",
    "empty": "",
    "nul": "x\x00y",
    "newline": "x\ny",
    "query": "x?endpoint_override=elsewhere",  # pyarrow would read it as an option of the URI
    "fragment": "x#y",
    "percent": "a%2F..%2Fb",  # pyarrow decodes it to a/../b
}
GOOD_NAMES = ["smoke", "smoke-20261201-093000", "a1b2c_00000-from-d3e4f_00001-200", "run.v2", "-dash", "λ run"]


def test_a_name_is_one_folder():
    for name in GOOD_NAMES:
        assert storage.check_name(name, "--name") == name
    for name in BAD_NAMES.values():
        with pytest.raises(UserError, match=r"^--name: .+ must be a single path component \(one folder under"):
            storage.check_name(name, "--name")


@pytest.fixture
def no_ray(monkeypatch):
    """Ray's one way in for the commands and the library fails the test."""
    from raygan.train import session

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(session, "ray_connection", refuse)


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES)
@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_bad_name_exits_2_before_ray_and_writes_nothing(command, name, tmp_path, capsys, no_ray):
    store = tmp_path / "outer" / "store"
    code = main([command, "tune_configs/smoke.yaml", "--name", name, "--storage", str(store)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --name: {name!r} must be a single path component"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing in the storage root, nor beside or above it


@pytest.mark.parametrize("name", ["../escaped", "a/b", "x?endpoint_override=elsewhere", "a%2F..%2Fb"])
@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_bad_name_on_s3_exits_2_before_the_bucket_is_touched(command, name, tmp_path, capsys, monkeypatch, no_ray):
    # An endpoint nobody answers on: the storage preflight would fail with "cannot reach", so the name
    # error shows that the name is checked first, and nothing can have been written.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "raygan-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "raygan-test")
    config = str(Path("tune_configs/smoke.yaml").resolve())
    monkeypatch.chdir(tmp_path)  # nothing local either (a folder named s3:, say)
    code = main([command, config, "--name", name, "--storage", "s3://raygan-names/runs"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --name: {name!r} must be a single path component"), err
    assert len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_python_m_raygan_tune_refuses_a_bad_name_even_for_a_dry_run(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "raygan.tune",
            "tune_configs/smoke.yaml",
            "--name",
            "../escaped",
            "--storage",
            str(tmp_path / "store"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: --name: '../escaped' must be a single path component")
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_the_library_entry_points_refuse_a_bad_name_before_ray(tmp_path, no_ray):
    from raygan.train.bench import bench
    from raygan.train.ray_train import fit, trainer
    from raygan.tune import run_sweep

    cfg = build_config({"storage": {"path": str(tmp_path / "store")}})
    for start in (
        lambda: fit(cfg, "../escaped", str(tmp_path / "store")),
        lambda: trainer(cfg, "a/b", str(tmp_path / "store")),
        lambda: bench(cfg, 1, str(tmp_path / "store"), name=".."),
        lambda: run_sweep(cfg, "", str(tmp_path / "store")),
    ):
        with pytest.raises(UserError, match=r"^name: .+ must be a single path component"):
            start()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# a full disk, injected at raygan's storage layer (tests/test_faults.py fills a real one)


def test_a_write_that_meets_a_full_disk_names_the_path_and_leaves_the_old_file_whole(tmp_path):
    disk = FullDisk(room=10)
    target = tmp_path / "run" / "metrics.jsonl"
    storage.write_file(disk.fs, str(target), b"old\n")
    with pytest.raises(storage.StorageFull, match=rf"^{re.escape(str(target))}: no space left on device$"):
        storage.write_file(disk.fs, str(target), b"a line longer than the room\n")
    assert target.read_bytes() == b"old\n"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.jsonl"]  # the part-file is gone, its space back


def test_only_a_full_disk_is_storage_full_and_no_outage_handler_catches_it():
    assert storage.no_space(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    assert storage.no_space(OSError(errno.EDQUOT, "Disk quota exceeded")) == "disk quota exceeded"
    pyarrow_text = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert storage.no_space(pyarrow_text) == "no space left on device"
    for outage in (OSError(errno.ECONNREFUSED, "Connection refused"), OSError("AWS Error NETWORK_CONNECTION")):
        assert storage.no_space(outage) is None
    assert not isinstance(storage.StorageFull("x"), OSError)  # `except OSError` waits out outages only


def _checkpoint_folder(folder: Path, sizes: dict[str, int]) -> list[Path]:
    from raygan.checkpoint import MANIFEST, upload_order

    folder.mkdir()
    for name, size in sizes.items():
        (folder / name).write_bytes(b"x" * size)
    (folder / MANIFEST).write_text(json.dumps(sizes))
    return upload_order(folder)


def test_a_checkpoint_upload_on_a_full_disk_stops_at_once_and_removes_what_it_wrote(tmp_path):
    from raygan.train.ray_train import STORAGE_RETRY_S, upload_files

    files = _checkpoint_folder(tmp_path / "local", {"generator.pt": 100, "state.pt": 5000})
    dest = tmp_path / "run" / "checkpoint_0000200"
    started = time.monotonic()
    with pytest.raises(storage.StorageFull, match=r"checkpoint_0000200/state\.pt: no space left on device$"):
        upload_files(FullDisk(room=1000).fs, str(dest), files)
    assert time.monotonic() - started < STORAGE_RETRY_S  # not waited for as an outage is
    assert not dest.exists()  # never a checkpoint (no manifest) and its space is free again


def test_a_checkpoint_upload_waits_out_an_outage_and_writes_every_file(tmp_path, monkeypatch):
    import pyarrow.fs

    from raygan.checkpoint import is_complete
    from raygan.train import ray_train

    class Flaky(pyarrow.fs.LocalFileSystem):
        failures = 2

        def open_output_stream(self, path, *args, **kwargs):
            if Flaky.failures:
                Flaky.failures -= 1
                raise OSError(errno.ECONNRESET, "Connection reset by peer")
            return super().open_output_stream(path, *args, **kwargs)

    monkeypatch.setattr(ray_train, "STORAGE_RETRY_S", 0.01)
    files = _checkpoint_folder(tmp_path / "local", {"generator.pt": 100, "state.pt": 5000})
    dest = tmp_path / "run" / "checkpoint_0000200"
    ray_train.upload_files(Flaky(), str(dest), files)
    assert Flaky.failures == 0 and is_complete(str(dest))


def test_a_metrics_append_on_a_full_disk_raises_storage_full_and_the_log_stays_readable(tmp_path, monkeypatch):
    from raygan.train.runlog import METRICS, RunLog, read_metrics

    disk = FullDisk(room=10**7)
    monkeypatch.setattr(storage, "filesystem", lambda uri, patient=False: (disk.fs, str(Path(uri).resolve())))
    run = tmp_path / "run"
    log = RunLog(str(run))
    log.record({"step": 50, "d_loss": 0.5})
    disk.room = 0
    try:
        with pytest.raises(storage.StorageFull, match=rf"^{re.escape(str(run / METRICS))}: no space left on device$"):
            log.record({"step": 100, "d_loss": 0.4})
    finally:
        log.close()
    assert [r["step"] for r in read_metrics(str(run))] == [50]
    assert not list(run.rglob("*.tmp"))


def test_a_run_stopped_by_a_full_disk_exits_1_with_one_line_and_releases_the_run(tmp_path, capsys, monkeypatch):
    """The driver's side: rank 0's line (Result.return_value) becomes `error: ...` and exit 1, not a traceback."""
    import contextlib
    from types import SimpleNamespace

    from raygan.train import ray_train, session

    store = tmp_path / "store"
    line = (
        f"{store}/full/checkpoint_0000200/state.pt: no space left on device (at step 200); the run stopped, "
        "its last checkpoint checkpoint_0000100 is intact: free space and run the same command to resume"
    )
    stopped = SimpleNamespace(fit=lambda: SimpleNamespace(return_value={ray_train.ERROR: line}))
    monkeypatch.setattr(session, "ray_connection", lambda *args, **kwargs: contextlib.nullcontext())
    monkeypatch.setattr(ray_train, "trainer", lambda *args, **kwargs: stopped)
    code = main(["train", "tune_configs/smoke.yaml", "--name", "full", "--storage", str(store), "--json"])
    captured = capsys.readouterr()
    assert code == 1 and captured.err == f"error: {line}\n" and captured.out == ""
    assert not (store / "full" / ".raygan-lock.json").exists()
