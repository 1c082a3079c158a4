"""Experiment tracking (raygan/tracking.py): a real MLflow server and W&B in offline mode, for a run and a sweep."""

import glob
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_cluster import credentials_in

from raygan.cli import main
from raygan.config import build_config
from raygan.tracking import flat_params, numeric_metrics

# Fake credentials in the environment, as a user's would be: they must reach no file and no output.
FAKE_CREDENTIALS = {
    "MLFLOW_TRACKING_TOKEN": "mlflowtoken0123456789abcdefFAKE",
    "WANDB_API_KEY": "0123456789abcdef0123456789abcdefFAKE0000",
}
TINY = {  # digits at their native 8x8, a few steps, two evaluations
    "data": {"image_size": 8},
    "model": {"g_layers": 2, "d_layers": 2, "g_width": 16, "d_width": 16, "latent_dim": 16},
    "train": {"batch_size": 32, "steps": 40, "eval_every": 20, "checkpoint_every": 20, "report_every": 10},
    "eval": {"num_samples": 200},
    "scaling": {"num_workers": 1},
}


# ---------------------------------------------------------------------------------------------
# fast: config and missing packages


@pytest.mark.parametrize(
    "override, needle",
    [
        ("logging.mlflow.uri=http://x", "logging.mlflow.uri: unknown key (expected one of: experiment, tracking_uri)"),
        ("logging.wandb.mode=shared", "logging.wandb.mode: 'shared' is not one of: online, offline, disabled"),
        ("logging.mlflow=true", "logging.mlflow: expected a mapping"),
        ("logging.comet={}", "logging.comet: unknown key (expected one of: mlflow, wandb)"),
        ("logging.mlflow.experiment=''", "logging.mlflow.experiment: must not be empty"),
        ("logging.wandb.project=''", "logging.wandb.project: must not be empty"),
        ("logging.mlflow.tracking_uri=https://me:hunter2@mlflow.example.com", "logging.mlflow.tracking_uri: holds"),
    ],
)
def test_bad_logging_config_exits_2_naming_the_key(override, needle, capsys, tmp_path):
    code = main(["train", "tune_configs/smoke.yaml", "--set", override, "--storage", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1, err
    assert "hunter2" not in err
    assert not (tmp_path / "store").exists()


def test_logging_defaults_and_overrides():
    assert build_config({}).logging.mlflow is None and build_config({}).logging.wandb is None
    cfg = build_config({}, ["logging.mlflow.tracking_uri=http://127.0.0.1:5000", "logging.wandb.mode=offline"])
    assert cfg.logging.mlflow.tracking_uri == "http://127.0.0.1:5000" and cfg.logging.mlflow.experiment == "raygan"
    assert cfg.logging.wandb.project == "raygan" and cfg.logging.wandb.mode == "offline"
    assert build_config(cfg.to_dict()) == cfg  # a checkpoint's config.json reads back


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_tracker_without_its_package_exits_2_before_anything(tracker, command, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, tracker, None)  # what an environment without the package imports
    code = main([command, "tune_configs/smoke.yaml", "--set", f"logging.{tracker}={{}}", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"error: logging.{tracker}: needs the {tracker} package (pip install {tracker})\n"
    assert list(tmp_path.iterdir()) == []


def test_an_mlflow_server_that_does_not_answer_exits_2_in_seconds(capsys, tmp_path):
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    code = main(["train", "tune_configs/smoke.yaml", "--set", f"logging.mlflow.tracking_uri={uri}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: logging.mlflow.tracking_uri: {uri} does not answer"), err
    assert time.monotonic() - start < 60  # MLflow's own client would retry for minutes


def test_params_are_the_whole_config_as_dotted_keys_and_metrics_the_numbers():
    tree = {**TINY, "logging": {"mlflow": {}}}
    cfg = build_config(tree)
    params = flat_params(cfg)
    assert params["train.steps"] == "40" and params["optim.g.betas"] == "[0.5, 0.999]"
    assert params["train.d_loss_threshold"] == "null" and params["data.name"] == "digits"
    assert params["logging.mlflow.experiment"] == "raygan" and params["logging.wandb"] == "null"
    for key, value in params.items():  # each reads back to the config's value, as --set would
        assert build_config(tree, [f"{key}={value}"]) == cfg, key
    report = {"step": 20, "fid": 3.5, "new_best": True, "health": {"status": "ok", "modes_covered": 9}, "run": "x"}
    assert numeric_metrics(report) == {"step": 20.0, "fid": 3.5, "new_best": 1.0, "health/modes_covered": 9.0}


def test_the_sweep_callbacks_survive_tunes_pickle_for_resume():
    """Tune pickles its RunConfig, callbacks included, into tuner.pkl and restores them on --resume."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    import functools

    from ray import cloudpickle

    from raygan.tracking import tune_callbacks
    from raygan.tune import trial_config

    cfg = build_config({**TINY, "logging": {"mlflow": {"tracking_uri": "http://127.0.0.1:1"}, "wandb": {}}})
    callbacks = tune_callbacks(cfg.logging, "/runs/sweep", functools.partial(trial_config, cfg.to_dict()))
    restored = cloudpickle.loads(cloudpickle.dumps(callbacks))
    assert [type(c).__mro__[1].__name__ for c in restored] == ["MLflowLoggerCallback", "WandbLoggerCallback"]
    assert restored[0].tracking_uri == "http://127.0.0.1:1" and restored[0].experiment_name == "raygan"
    assert restored[1].project == "raygan" and restored[1].kwargs["mode"] == "online"
    assert restored[0].resolve({"train.steps": 7}).train.steps == 7


# ---------------------------------------------------------------------------------------------
# a real MLflow tracking server and W&B offline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free loopback port: SQLite backend and artifact root in a temporary folder."""
    pytest.importorskip("mlflow")
    import requests

    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
    with open(root / "server.log", "w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None and time.monotonic() < deadline, (root / "server.log").read_text()[-3000:]
            try:
                if requests.get(f"{uri}/health", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        yield uri, root
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture
def tracking_env(monkeypatch, tmp_path):
    """W&B offline into tmp_path/wandb_dir (nothing sent), and credentials in the environment only."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb_dir").mkdir()
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return tmp_path / "wandb_dir"


def write_config(tmp_path: Path, uri: str, experiment: str, **extra) -> Path:
    config = tmp_path / "tracked.yaml"
    logging = {
        "mlflow": {"tracking_uri": uri, "experiment": experiment},
        "wandb": {"project": "raygan-test", "mode": "offline"},
    }
    config.write_text(yaml.safe_dump({**TINY, "logging": logging, **extra}))
    return config


def wandb_records(run_folder: Path) -> dict[str, list[dict]]:
    """The history, config and summary records of an offline W&B run: its .wandb file is a LevelDB-style
    log (32 KiB blocks of CRC, length, type, data) of wandb_internal_pb2.Record messages."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_folder.glob("run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    records: dict[str, list[dict]] = {"history": [], "config": [], "summary": []}
    position, chunks = 7, []
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if length == 0 and kind == 0:
            break
        chunks.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            kind_name = record.WhichOneof("record_type")
            items = {"history": lambda r: r.history.item, "summary": lambda r: r.summary.update}
            if kind_name == "run":
                kind_name, values = "config", record.run.config.update
            elif kind_name in ("history", "summary", "config"):
                values = items[kind_name](record) if kind_name != "config" else record.config.update
            else:
                continue
            records[kind_name].append(
                {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in values}
            )
    return records


def wandb_story(run_folder: Path, records: dict) -> str:
    """What an offline W&B run holds and what its SDK logged last: a failure names its cause."""
    counts = {kind: len(found) for kind, found in records.items()}
    debug = (run_folder / "logs" / "debug.log").read_text().splitlines()[-12:]
    return f"{run_folder.name}: {counts}\n" + "\n".join(line[:300] for line in debug)


def assert_no_credentials(*places: Path, text: str = "") -> None:
    for value in FAKE_CREDENTIALS.values():
        assert value not in text
    assert credentials_in(text) == []
    for place in places:
        for path in place.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert all(value.encode() not in data for value in FAKE_CREDENTIALS.values()), path


def mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment}"
    return client, client.search_runs([found.experiment_id])


@pytest.mark.slow
def test_a_train_run_is_logged_to_mlflow_and_wandb(ray_session, mlflow_server, tracking_env, tmp_path, capsys):
    uri, server_root = mlflow_server
    config = write_config(tmp_path, uri, "runs")
    storage = tmp_path / "store"
    start = time.monotonic()
    code = main(["train", str(config), "--name", "tracked", "--storage", str(storage), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    summary = json.loads(out.out.strip().splitlines()[-1])
    print(f"tracked run: {time.monotonic() - start:.1f} s")

    client, runs = mlflow_runs(uri, "runs")
    (run,) = runs
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert run.data.params == flat_params(build_config(yaml.safe_load(config.read_text()), [f"storage.path={storage}"]))
    assert run.data.tags["best_checkpoint"] == summary["best_checkpoint"]
    assert run.data.tags["raygan.run"] == summary["run"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "fid")] == [20, 40]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "g_loss")] == [10, 20, 30, 40]
    assert run.data.metrics["fid"] == pytest.approx(summary["fid"])
    grids = [f.path for f in client.list_artifacts(run.info.run_id, "grids")]
    assert grids == ["grids/step_0000020.png", "grids/step_0000040.png"]
    local = Path(client.download_artifacts(run.info.run_id, "grids/step_0000040.png", str(tmp_path)))
    assert local.read_bytes() == (storage / "tracked" / "grids" / "step_0000040.png").read_bytes()

    (wandb_run,) = (tracking_env / "wandb").glob("offline-run-*")
    records = wandb_records(wandb_run)
    config_record = {k: v for r in records["config"] for k, v in r.items()}
    assert config_record["train"]["steps"] == 40 and config_record["optim"]["g"]["lr"] == pytest.approx(2e-4)
    history = [r for r in records["history"] if "fid" in r]
    assert [r["step"] for r in history] == [20, 40] and all("samples/path" in r for r in history)
    assert {k: v for r in records["summary"] for k, v in r.items()}["best_checkpoint"] == summary["best_checkpoint"]
    assert len(list(wandb_run.rglob("media/images/samples_*.png"))) == 2

    assert_no_credentials(storage, server_root, tracking_env, text=out.out + out.err)


def child_processes() -> list[int]:
    """The PIDs of this process's children (W&B's service is one while a W&B connection is open)."""
    import psutil
    import ray  # noqa: F401  puts the psutil it vendors on sys.path

    return [child.pid for child in psutil.Process().children()]


@pytest.mark.slow
def test_the_wandb_logging_actor_returns_only_when_the_run_is_written_out(ray_session, tracking_env):
    """Ray kills a trial's logging actor, and its child processes with it, as soon as `run` returns. W&B's
    `finish()` returns before its service has written the run's last records: under load a sweep lost
    the tail of a trial's history. By the time `run` returns the service must be gone and the file whole."""
    import ray
    from ray.air.integrations.wandb import _QueueItem
    from ray.util.queue import Queue

    from raygan import ray_private
    from raygan.tracking import _wandb_callback_class

    actor_class = ray.remote(num_cpus=0)(ray_private.wandb_logging_actor_of(_wandb_callback_class()))
    queue = Queue()
    wandb_dir = str(tracking_env)  # the actor's environment is the Ray node's, not this test's
    logger = actor_class.remote(wandb_dir, queue, [], [], project="raygan-test", mode="offline", dir=wandb_dir)
    for step in (1, 2):
        queue.put((_QueueItem.RESULT, {"fid": 10.0 / step, "training_iteration": step}))
    queue.put((_QueueItem.END, None))
    ray.get(logger.run.remote(), timeout=300)
    left = ray.get(logger.__ray_call__.remote(lambda _: child_processes()))
    ray.kill(logger)

    assert left == []  # nothing left for Ray's kill to cut short
    records = wandb_records(next((tracking_env / "wandb").glob("offline-run-*")))
    assert [r["fid"] for r in records["history"]] == [10.0, 5.0], records


@pytest.mark.slow
def test_a_sweep_logs_each_trial_through_rays_callbacks(ray_session, mlflow_server, tracking_env, tmp_path, capsys):
    uri, server_root = mlflow_server
    space = {"optim.d.lr": {"grid": [2.0e-4, 1.0e-3]}}
    tune = {"num_samples": 1, "max_concurrent": 2, "scheduler": {"name": "fifo"}, "search_space": space}
    config = write_config(tmp_path, uri, "sweeps", tune=tune)
    storage = tmp_path / "store"
    start = time.monotonic()
    code = main(["tune", str(config), "--name", "sweep", "--storage", str(storage), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    print(f"tracked sweep: {time.monotonic() - start:.1f} s")
    rows = {row["optim.d.lr"]: row for row in json.loads((storage / "sweep" / "summary.json").read_text())}

    client, runs = mlflow_runs(uri, "sweeps")
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    for run in runs:
        lr = float(run.data.params["optim.d.lr"])
        assert run.data.params["train.steps"] == "40" and run.data.params["model.g_layers"] == "2"
        assert run.data.tags["raygan.experiment"] == str(storage / "sweep")
        assert run.data.tags["best_checkpoint"] == rows[lr]["best_checkpoint"]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "fid")] == [20, 40]
        assert run.data.metrics["best_fid"] == pytest.approx(rows[lr]["best_fid"])
        grids = [f.path for f in client.list_artifacts(run.info.run_id, "grids")]
        assert grids == ["grids/step_0000020.png", "grids/step_0000040.png"]

    wandb_runs = sorted((tracking_env / "wandb").glob("offline-run-*"))
    assert len(wandb_runs) == 2
    learning_rates = set()
    for folder in wandb_runs:
        records = wandb_records(folder)
        config_record = {k: v for r in records["config"] for k, v in r.items()}
        assert config_record["train"]["steps"] == 40  # the resolved config, not only the searched value
        learning_rates.add(config_record["optim"]["d"]["lr"])
        history = [r for r in records["history"] if "fid" in r]
        story = wandb_story(folder, records)
        assert [r["step"] for r in history] == [20, 40] and all("samples/path" in r for r in history), story
    assert learning_rates == {2.0e-4, 1.0e-3}

    assert_no_credentials(storage, server_root, tracking_env, text=out.out + out.err)


def test_shipped_configs_hold_no_credentials():
    for path in glob.glob("tune_configs/*.yaml"):
        assert credentials_in(Path(path).read_text()) == [], path
