"""`raygan train`, `sample` and `bench` as a user runs them: separate processes, their own Ray."""

import json
import re

import numpy as np
import pytest
from conftest import run_module
from PIL import Image

pytestmark = pytest.mark.slow


def raygan(*args, timeout=600):
    return run_module("raygan.cli", *args, timeout=timeout)


def test_train_smoke_on_two_workers(smoke_run):
    storage, result = smoke_run
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) >= {"run", "step", "fid", "best_fid", "best_checkpoint", "health"}
    assert summary["run"] == f"{storage}/smoke" and summary["step"] == 100
    checkpoints = sorted(p.name for p in (storage / "smoke").glob("checkpoint_*") if p.is_dir())
    assert checkpoints == ["checkpoint_0000050", "checkpoint_0000100"]  # keep_checkpoints: 2
    assert summary["best_checkpoint"].endswith("checkpoint_0000100")
    for name in ("state.pt", "generator.pt", "config.json", "meta.json"):
        assert (storage / "smoke" / "checkpoint_0000100" / name).is_file()
    assert "step 100/100" in result.stdout + result.stderr  # progress lines
    assert_no_ray_complaints(result.stdout + result.stderr)


def assert_no_ray_complaints(output: str) -> None:
    """A finished run's terminal shows no traceback and no error line from Ray's C++ core (`E <pid> <tid>]`)."""
    assert "Traceback" not in output, output[-3000:]
    assert not re.search(r" E \d+ \d+\] ", output), output[-3000:]


def test_train_again_with_the_same_name_resumes(smoke_run):
    storage, _ = smoke_run
    result = raygan(
        "train",
        "tune_configs/smoke.yaml",
        "--name",
        "smoke",
        "--storage",
        str(storage),
        "--set",
        "train.steps=125",
        "--set",
        "train.checkpoint_every=25",
        "--json",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from step 100" in result.stdout + result.stderr
    assert "real statistics read from the cache" in result.stdout + result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["step"] == 125
    assert_no_ray_complaints(result.stdout + result.stderr)


def test_sample_from_a_run_and_a_checkpoint(smoke_run, tmp_path):
    storage, _ = smoke_run
    result = raygan("sample", str(storage / "smoke"), "--num", "10", "--seed", "3", "--out", str(tmp_path / "grid"))
    assert result.returncode == 0, result.stderr
    npz = np.load(tmp_path / "grid.npz")
    assert npz["images"].shape == (10, 1, 16, 16) and npz["images"].dtype == np.uint8
    assert len(npz["labels"]) == 10
    assert Image.open(tmp_path / "grid.png").size[0] > 16
    earliest = min(p for p in (storage / "smoke").glob("checkpoint_*") if p.is_dir())
    again = raygan("sample", str(earliest), "--num", "10", "--seed", "3", "--out", str(tmp_path / "early.png"))
    assert again.returncode == 0, again.stderr
    assert not np.array_equal(np.load(tmp_path / "early.npz")["images"], npz["images"])


def test_sample_bad_input_exits_2(tmp_path, smoke_run):
    storage, _ = smoke_run
    result = raygan("sample", str(tmp_path / "nowhere"), "--num", "4", "--out", str(tmp_path / "x"))
    assert result.returncode == 0 + 2 and result.stderr.startswith("error: ") and "nowhere" in result.stderr
    result = raygan("sample", str(storage / "smoke"), "--num", "4", "--label", "3", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "not a conditional model" in result.stderr


def test_bench_json():
    result = raygan("bench", "tune_configs/smoke.yaml", "--steps", "5", "--workers", "1", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads(result.stdout.strip().splitlines()[-1])
    assert bench["workers"] == 1 and bench["images_per_s"] > 0 and bench["step_s"] > 0
    assert bench["params_G"] > 0 and bench["params_D"] > 0
    assert 0 < bench["startup_s"] < 600  # launch to first step, Ray start included


def test_best_checkpoint_has_the_best_fid_and_health_is_reported(smoke_run):
    import json as json_module
    from pathlib import Path

    storage, result = smoke_run
    summary = json_module.loads(result.stdout.strip().splitlines()[-1])
    assert summary["fid"] > 0 and summary["best_fid"] <= summary["fid"]
    best_meta = json_module.loads((Path(summary["best_checkpoint"]) / "meta.json").read_text())
    assert best_meta["fid"] == pytest.approx(summary["best_fid"])
    health = summary["health"]
    assert set(health["flags"]) == {"nan", "collapse", "diminished_gradient", "non_convergence"}
    assert {"modes_covered", "mode_kl", "diversity"} <= set(health)
    assert "real statistics computed and cached" in result.stdout + result.stderr
    timing = next(line for line in result.stdout.splitlines() if line.startswith("time: first step "))
    assert "steps " in timing and "evaluation " in timing and "reports and checkpoints " in timing


def test_fid_command_samples_a_run(smoke_run):
    storage, _ = smoke_run
    result = raygan("fid", "--real", "digits:test", "--fake", str(storage / "smoke"), "--num", "500", "--json")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["num_fake"] == 500 and scores["fid"] > 0
