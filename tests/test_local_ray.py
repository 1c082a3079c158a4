"""Requests a local Ray can never meet are bad input, caught before Ray starts or storage is written."""

import subprocess
import sys

import pytest
import torch

from raygan.cli import main
from raygan.config import build_config
from raygan.errors import ConfigError
from raygan.train import local_ray

TWO_CPUS = {"CPU": 2, "GPU": 0}


def unmet(overrides, capacity=TWO_CPUS, share=None):
    return local_ray.unmet_request(build_config({}, overrides).scaling, capacity, share or {})


def test_a_request_within_the_machine_fits():
    assert unmet(["scaling.num_workers=2"]) is None
    assert unmet(["scaling.use_gpu=true", "scaling.gpus_per_worker=0.5"], {"CPU": 2, "GPU": 1}) is None


def test_each_unmet_request_names_the_key_that_is_wrong():
    assert unmet(["scaling.use_gpu=true"])[0] == "use_gpu"
    assert unmet(["scaling.cpus_per_worker=3"]) == ("cpus_per_worker", "3 per worker, but this machine has 2 CPUs")
    assert unmet(["scaling.num_workers=4"]) == ("num_workers", "4 workers x 1 CPU = 4 CPUs, but this machine has 2")
    gpus = ["scaling.use_gpu=true", "scaling.num_workers=2"]
    assert unmet([*gpus, "scaling.gpus_per_worker=2"], {"CPU": 4, "GPU": 1})[0] == "gpus_per_worker"
    assert unmet(gpus, {"CPU": 4, "GPU": 1}) == ("num_workers", "2 workers x 1 GPU = 2 GPUs, but this machine has 1")
    assert unmet(["scaling.resources_per_worker={trainer: 1}"])[0] == "resources_per_worker.trainer"


def test_a_trials_share_counts():
    key, message = unmet(["scaling.num_workers=2"], share={"CPU": 0.5})
    assert key == "num_workers" and "+ 0.5 for the trial = 2.5 CPUs" in message


def test_a_searched_value_is_named_in_the_search_space():
    scaling = build_config({}, ["scaling.num_workers=4"]).scaling
    with pytest.raises(ConfigError) as raised:
        local_ray.check_requests([(scaling, {"scaling.num_workers": 4})], TWO_CPUS)
    assert raised.value.key == "tune.search_space.scaling.num_workers"
    assert "trials that draw scaling.num_workers=4" in str(raised.value)


def test_a_cluster_is_not_checked(monkeypatch):
    """With RAY_ADDRESS an autoscaler may add the nodes a request waits for."""
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert local_ray.joins_cluster()
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert not local_ray.joins_cluster()
    local_ray.check_requests([(build_config({}, ["scaling.num_workers=64"]).scaling, {})], None)


def assert_rejected(capsys, argv, key, storage):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {key}: ") and "\n" not in err, err
    assert not storage.exists(), "nothing may be written before the request is checked"


def test_tune_rejects_trials_the_machine_cannot_hold(capsys, tmp_path):
    storage = tmp_path / "runs"
    args = ["tune", "tune_configs/smoke.yaml", "--storage", str(storage), "--name", "too-big"]
    assert_rejected(capsys, [*args, "--set", "scaling.num_workers=64"], "scaling.num_workers", storage)
    space = 'tune.search_space={"scaling.num_workers": {"grid": [1, 64]}}'
    assert_rejected(capsys, [*args, "--set", space], "tune.search_space.scaling.num_workers", storage)


def test_bench_rejects_workers_the_machine_cannot_hold(capsys, tmp_path):
    assert_rejected(
        capsys, ["bench", "tune_configs/smoke.yaml", "--workers", "64"], "scaling.num_workers", tmp_path / "x"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_train_on_gpu_without_one_exits_2_at_once(tmp_path):
    """As a user runs it: its own process, no RAY_ADDRESS; no Ray starts, no run folder appears."""
    storage = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "raygan.cli", "train", "tune_configs/smoke.yaml", "--storage", str(storage)]
        + ["--set", "scaling.use_gpu=true"],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in __import__("os").environ.items() if k != "RAY_ADDRESS"},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: scaling.use_gpu: true, but this machine has no GPU"), result.stderr
    assert result.stderr.count("\n") == 1 and "Ray instance" not in result.stdout + result.stderr
    assert not storage.exists()
