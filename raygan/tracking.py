"""Experiment tracking in MLflow and Weights & Biases: the config's `logging` section.

    logging:
      mlflow: {tracking_uri: http://127.0.0.1:5000, experiment: gans}
      wandb: {project: gans, mode: offline}

A sweep hands Ray Tune its own `MLflowLoggerCallback` and `WandbLoggerCallback` (`tune_callbacks`); a
single `raygan train` run is logged the same way from the driver (`RunTracker`), to which Ray Train's
controller forwards every report. Both log:
- params: the resolved config, dotted keys (`optim.g.lr`; W&B: the same tree as its config);
- metrics: every report, numbers only, nested keys joined by "/" (`health/modes_covered`), at the
  training step (MLflow's step);
- at each evaluation the fixed-latent sample grid (MLflow: artifact `grids/step_NNNNNNN.png`; W&B:
  image `samples`) and the best checkpoint's URI (MLflow: tag `best_checkpoint`; W&B: summary).
Credentials stay in the environment, where the clients read them (MLFLOW_TRACKING_TOKEN or
MLFLOW_TRACKING_USERNAME / _PASSWORD, WANDB_API_KEY): raygan never reads, passes or stores them.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raygan import ray_private
from raygan.config import Config, LoggingConfig
from raygan.errors import ConfigError, UserError, first_line
from raygan.train.train_report import TrainReport

TRACKERS = ("mlflow", "wandb")  # config key = package = import name
MLFLOW_BATCH_PARAMS = 100  # MLflow's log_batch takes at most 100 params at once
PROBE_TIMEOUT_S = 10


def enabled(logging: LoggingConfig) -> bool:
    return any(getattr(logging, tracker) is not None for tracker in TRACKERS)


def check_packages(logging: LoggingConfig) -> None:
    """A tracker set without its package installed is bad input, caught before Ray starts."""
    for tracker in TRACKERS:
        if getattr(logging, tracker) is not None and importlib.util.find_spec(tracker) is None:
            raise ConfigError(f"logging.{tracker}", f"needs the {tracker} package (pip install {tracker})")


def preflight(logging: LoggingConfig) -> None:
    """An MLflow server that does not answer at all is bad input, found in seconds (MLflow's own client
    retries for minutes). Any HTTP answer will do: authentication is checked by the first real call."""
    uri = logging.mlflow.tracking_uri if logging.mlflow is not None else None
    if not uri or not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.head(uri, timeout=PROBE_TIMEOUT_S)
    except requests.RequestException as e:
        raise ConfigError("logging.mlflow.tracking_uri", f"{uri} does not answer ({type(e).__name__})") from None


def flat_params(cfg: Config) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values written as YAML reads them back."""

    def flatten(node: Any, prefix: str) -> dict[str, str]:
        if hasattr(node, "__dataclass_fields__"):
            out = {}
            for name in node.__dataclass_fields__:
                out.update(flatten(getattr(node, name), f"{prefix}{name}."))
            return out
        value = node if isinstance(node, str) else json.dumps(node if not isinstance(node, tuple) else list(node))
        return {prefix[:-1]: value}

    return flatten(cfg, "")


def numeric_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a report (booleans as 0/1), nested keys joined by "/" as Ray's callbacks join them."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out.update(numeric_metrics(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)):
            out[f"{prefix}{key}"] = float(value)
    return out


def read_grid(run_uri: str, step: int) -> bytes | None:
    """The grid PNG that rank 0 wrote for the evaluation at `step` (None if storage did not take it yet)."""
    from raygan import storage
    from raygan.train.runlog import GRIDS, grid_name

    return storage.read_bytes(storage.join(run_uri, GRIDS, grid_name(step)))


def result_grid(result: TrainReport) -> bytes | None:
    """The grid of the evaluation a sweep trial reported (Tune sees evaluations only, each naming its run)."""
    return read_grid(result["run"], int(result["step"])) if result.get("run") else None


def grid_image(png: bytes):
    """PNG bytes -> an H x W x C uint8 array, as W&B (and Ray's W&B callback) take images."""
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


# ---------------------------------------------------------------------------------------------
# MLflow, through its client (no global active run: sweeps log many runs from one process)


def mlflow_client(tracking_uri: str | None):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def mlflow_log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(key, value) for key, value in params.items()]
    for start in range(0, len(items), MLFLOW_BATCH_PARAMS):
        client.log_batch(run_id, params=items[start : start + MLFLOW_BATCH_PARAMS])


def mlflow_log_report(client, run_id: str, metrics: TrainReport, grid_png: bytes | None) -> None:
    """One report: its numbers at its step in one request, and the evaluation's grid as an artifact."""
    from mlflow.entities import Metric

    from raygan.train.runlog import GRIDS, grid_name

    step, now_ms = int(metrics["step"]), int(time.time() * 1000)
    values = numeric_metrics(metrics)
    client.log_batch(run_id, metrics=[Metric(key, value, now_ms, step) for key, value in values.items()])
    if grid_png is not None:
        with tempfile.TemporaryDirectory(prefix="raygan-grid-") as folder:
            path = Path(folder, grid_name(step))
            path.write_bytes(grid_png)
            client.log_artifact(run_id, str(path), artifact_path=GRIDS)
    if metrics.get("best_checkpoint"):
        client.set_tag(run_id, "best_checkpoint", metrics["best_checkpoint"])


# ---------------------------------------------------------------------------------------------
# a single `raygan train` run


class RunTracker:
    """One `raygan train` run in MLflow and/or W&B, driven from the driver process.

        tracker = RunTracker(cfg, name="exp1", run_uri="/runs/exp1")   # before Ray starts
        tracker.log(metrics, checkpoint_uri)                           # every report
        tracker.finish(best_checkpoint, failed=False)

    Created before Ray starts, so a tracker that refuses the run is bad input (exit 2). A tracker that
    fails later costs its records, not the training run: the first error is printed, logging goes on.
    """

    def __init__(self, cfg: Config, name: str, run_uri: str):
        self.run_uri = run_uri
        self.best_checkpoint: str | None = None
        self.client = self.run_id = self.wandb_run = None
        self._warned = False
        mlflow, wandb = cfg.logging.mlflow, cfg.logging.wandb
        if mlflow is not None:
            from mlflow.exceptions import MlflowException

            self.client = mlflow_client(mlflow.tracking_uri)
            try:
                experiment = self.client.get_experiment_by_name(mlflow.experiment)
                experiment_id = (
                    experiment.experiment_id if experiment else self.client.create_experiment(mlflow.experiment)
                )
                run = self.client.create_run(experiment_id, run_name=name, tags={"raygan.run": run_uri})
            except MlflowException as e:
                raise UserError(f"logging.mlflow: {first_line(e)}") from None
            self.run_id = run.info.run_id
            mlflow_log_params(self.client, self.run_id, flat_params(cfg))
        if wandb is not None:
            import wandb as wandb_sdk

            try:
                self.wandb_run = wandb_sdk.init(
                    project=wandb.project, mode=wandb.mode, name=name, config=cfg.to_dict(), reinit="create_new"
                )
            except Exception as e:  # W&B's own errors (no API key online, a project it refuses) name the cause
                raise UserError(f"logging.wandb: {first_line(e)}") from None

    def log(self, metrics: TrainReport, checkpoint_uri: str | None) -> None:
        """One report (rank 0's) and the URI of the checkpoint it came with."""
        if checkpoint_uri is not None and metrics.get("new_best"):  # a new best is always checkpointed
            self.best_checkpoint = checkpoint_uri
            metrics = {**metrics, "best_checkpoint": checkpoint_uri}
        try:
            grid = read_grid(self.run_uri, int(metrics["step"])) if metrics["evaluated"] else None
            if self.client is not None:
                mlflow_log_report(self.client, self.run_id, metrics, grid)
            if self.wandb_run is not None:
                self._wandb_log(metrics, grid)
        except Exception as e:  # tracking is a record of the run, not a reason to stop it
            self._warn(e)

    def _wandb_log(self, metrics: TrainReport, grid: bytes | None) -> None:
        import wandb

        images = {"samples": wandb.Image(grid_image(grid))} if grid is not None else {}
        self.wandb_run.log({**numeric_metrics(metrics), **images}, step=int(metrics["step"]))
        if metrics.get("best_checkpoint"):
            self.wandb_run.summary["best_checkpoint"] = metrics["best_checkpoint"]

    def finish(self, best_checkpoint: str | None, failed: bool) -> None:
        """The run's best checkpoint as Ray ranked them (a resumed run's may be older than this session)."""
        best = best_checkpoint or self.best_checkpoint
        try:
            if self.client is not None:
                if best:
                    self.client.set_tag(self.run_id, "best_checkpoint", best)
                self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
            if self.wandb_run is not None:
                if best:
                    self.wandb_run.summary["best_checkpoint"] = best
                self.wandb_run.finish(exit_code=1 if failed else 0)
        except Exception as e:
            self._warn(e)

    def _warn(self, error: Exception) -> None:
        if not self._warned:
            sys.stdout.write(f"warning: experiment tracking failed, the run goes on ({first_line(error)[:200]})\n")
            self._warned = True


# ---------------------------------------------------------------------------------------------
# sweeps: Ray Tune's own logger callbacks


def tune_callbacks(logging: LoggingConfig, experiment_uri: str, resolve: Callable[[dict], Config]) -> list:
    """Ray Tune's MLflow and W&B logger callbacks for the trackers configured; `resolve` turns a trial's
    sampled values into its full config. Ray pickles them into the experiment (tuner.pkl) for --resume:
    they hold no credentials."""
    callbacks = []
    if logging.mlflow is not None:
        callbacks.append(
            _mlflow_callback_class()(
                resolve,
                tracking_uri=logging.mlflow.tracking_uri,
                experiment_name=logging.mlflow.experiment,
                tags={"raygan.experiment": experiment_uri},
            )
        )
    if logging.wandb is not None:
        wandb_dir = {"dir": os.environ["WANDB_DIR"]} if os.environ.get("WANDB_DIR") else {}
        callbacks.append(
            _wandb_callback_class()(
                resolve,
                project=logging.wandb.project,
                mode=logging.wandb.mode,
                **wandb_dir,  # Ray's logging actor does not see the driver's environment on a cluster
            )
        )
    return callbacks


def _mlflow_callback_class():
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrialsToMLflow(MLflowLoggerCallback):
        """Ray's MLflow callback (a run per trial, ended FINISHED or FAILED) logging what a single run logs:
        the resolved config as params (Ray's logs only the sampled values, key by key), each result at its
        training step (Ray's: Tune's iteration) in one request, the grid and the best checkpoint."""

        def __init__(self, resolve: Callable[[dict], Config], **kwargs):
            super().__init__(**kwargs)
            self.resolve = resolve

        def log_trial_start(self, trial) -> None:
            trial_runs = ray_private.mlflow_trial_runs(self)
            if trial in trial_runs:  # restarted (a retry, PBT): MLflow's params are written once
                return
            mlflow_util = ray_private.mlflow_util(self)
            run = mlflow_util.start_run(tags={**self.tags, "trial_name": str(trial)}, run_name=str(trial))
            trial_runs[trial] = run.info.run_id
            mlflow_log_params(
                mlflow_client(self.tracking_uri), run.info.run_id, flat_params(self.resolve(trial.config))
            )

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            grid = result_grid(result)
            metrics = {key: value for key, value in result.items() if key != "config"}  # the config is in params
            run_id = ray_private.mlflow_trial_runs(self)[trial]
            mlflow_log_report(mlflow_client(self.tracking_uri), run_id, metrics, grid)

    return TrialsToMLflow


def _wandb_callback_class():
    from ray.air.integrations.wandb import WandbLoggerCallback

    class WandbActorThatFlushes(ray_private.wandb_logging_actor()):
        """Ray's W&B logging actor, waiting for W&B's service to write the run out before it returns.

        `wandb.finish()` returns before the service has closed the run's files, and Ray kills the actor,
        with its child processes (the service), as soon as `run` returns: under load that lost the tail of
        a trial's history. `wandb.teardown()` is the atexit hook that a killed actor never runs."""

        def run(self):
            try:
                super().run()
            finally:  # also completes a run that an error left open, with what it logged so far
                ray_private.actor_wandb(self).teardown()

    class TrialsToWandb(WandbLoggerCallback):
        """Ray's W&B callback (a logging actor per trial), with the resolved config as the run's config
        (Ray's: the sampled values only) and each evaluation's grid as the image `samples`."""

        def __init__(self, resolve: Callable[[dict], Config], **kwargs):
            super().__init__(**kwargs)
            self.resolve = resolve

        def log_trial_start(self, trial) -> None:
            ray_private.wandb_init_kwargs(self)["config"] = self.resolve(trial.config).to_dict()
            super().log_trial_start(trial)

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            grid = result_grid(result)
            super().log_trial_result(iteration, trial, {**result, **({"samples": grid_image(grid)} if grid else {})})

    return ray_private.set_wandb_logging_actor(TrialsToWandb, WandbActorThatFlushes)
