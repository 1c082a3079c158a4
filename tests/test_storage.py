"""Names under the storage root: a run or an experiment is one folder directly under it, on every storage,
and any other name is bad input, refused before Ray starts and before anything is written."""

import subprocess
import sys
from pathlib import Path

import pytest

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
