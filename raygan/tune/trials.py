"""The trial: a TorchTrainer driven from a Tune function trainable, and the pointer checkpoints (a few bytes
naming the Train checkpoint in storage) that let PBT, retries and `--resume` continue a trial's run."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any

from raygan import storage
from raygan.config import Config, build_config, load_config
from raygan.storage import root as storage_root  # `trainable`'s argument `storage` hides the module
from raygan.train.train_report import TrainReport
from raygan.tune.space import check_searchable, on_steps
from raygan.tune.summary import RUNS, run_folder_name

# The trial function only drives a TorchTrainer, whose workers hold the real resources. It asks for no
# CPU at all (a fractional CPU such as 0.01 leaves 1.99 of 2, and 2 one-CPU workers never fit) but a
# little memory, since Ray refuses an empty resource request.
TRIAL_RESOURCES = {"CPU": 0, "memory": 64 * 1024**2}
POINTER = "train_checkpoint.json"


class EvaluationsForTune:
    """What a trial's report forwarder queues for Tune (it runs in the Train controller): evaluations only,
    each carrying the objective and the run's best checkpoint so far."""

    def __init__(self):
        self.best_checkpoint = None

    def __call__(self, report: TrainReport, uri: str | None) -> TrainReport | None:
        if uri is not None and report.get("new_best"):
            self.best_checkpoint = uri
        if uri is not None and self.best_checkpoint is None and report.get("best_step") is not None:
            self.best_checkpoint = _earlier_best(uri, report["best_step"])  # a resumed run's best came before
        return {**report, "best_checkpoint": self.best_checkpoint} if report["evaluated"] else None


def _earlier_best(checkpoint: str, best_step: int) -> str | None:
    """The checkpoint of `best_step` in the run that holds `checkpoint`, if it is there and complete
    (a paused or retried trial resumes its run after its best; a PBT exploit's best is in the donor's)."""
    from raygan.checkpoint import checkpoint_name, is_complete  # lazy: torch, not at `python -m raygan.tune` start

    candidate = storage.join(_run_of(checkpoint), checkpoint_name(best_step))
    return candidate if is_complete(candidate) else None


def _pointer_checkpoint(folder: str, train_checkpoint: str, trial_id: str, step: int):
    from ray import tune  # lazy: importing raygan.tune (the CLI, --dry-run) does not start Ray's import

    Path(folder, POINTER).write_text(json.dumps({"path": train_checkpoint, "trial": trial_id, "step": step}))
    return tune.Checkpoint.from_directory(folder)


def _run_of(checkpoint: str) -> str:
    return storage.parent(checkpoint)


def complete_checkpoint(path: str) -> str:
    """`path` if it is complete (its manifest matches), else the newest complete checkpoint of its run:
    the donor may since have deleted it (keep_checkpoints), or its upload may have been cut short."""
    from raygan.checkpoint import is_complete, list_checkpoints  # lazy, as in _earlier_best

    if is_complete(path):
        return path
    complete = list_checkpoints(_run_of(path))
    if not complete:
        raise RuntimeError(f"{path}: incomplete, and its run has no complete checkpoint to continue from")
    return complete[-1]


def trial_config(base: dict, params: dict) -> Config:
    """What a trial trains with: the base config and the trial's sampled values."""
    return build_config(base, on_steps(base["tune"]["search_space"], params))


def trial(params: dict, base: dict, experiment_root: str, cache_root: str) -> None:
    """One trial: the base config with this trial's sampled values, trained on Ray Train workers."""
    from ray import tune  # lazy, as in _pointer_checkpoint

    from raygan.train.ray_train import raise_if_stopped, trainer  # lazy: Ray and torch
    from raygan.train.reports import drain, forward_reports

    cfg = trial_config(base, params)
    trial_id = tune.get_context().get_trial_id()
    resume_from, run_name = None, trial_id
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            pointer = json.loads(Path(folder, POINTER).read_text())
        if pointer["trial"] != trial_id:  # PBT exploit: continue the donor's run under a new name
            resume_from = complete_checkpoint(pointer["path"])
            run_name = run_folder_name(trial_id, pointer["trial"], pointer["step"])
        else:  # a retry (tune.max_failures) or --resume: the run that wrote the pointer, which may be an exploit's
            run_name = storage.basename(_run_of(pointer["path"]))
    forward = forward_reports(EvaluationsForTune())
    train_run = trainer(
        cfg,
        run_name,
        storage.join(experiment_root, RUNS),
        callbacks=[forward],
        resume_from=resume_from,
        cache_root=cache_root,
    )
    outcome: dict[str, Any] = {}

    def fit():
        try:
            outcome["result"] = train_run.fit()
        except BaseException as e:  # re-raised in the trial's thread
            outcome["error"] = e

    def report(evaluation: TrainReport, checkpoint_path: str | None) -> None:
        run = storage.join(experiment_root, RUNS, run_name)  # the trackers find its grids there
        if checkpoint_path is None:
            tune.report({**evaluation, "run": run})
            return
        with tempfile.TemporaryDirectory(prefix="raygan-pointer-") as folder:  # Tune copies it before returning
            pointer = _pointer_checkpoint(folder, checkpoint_path, trial_id, evaluation["step"])
            tune.report({**evaluation, "run": run}, checkpoint=pointer)

    runner = threading.Thread(target=fit, daemon=True)
    runner.start()
    drain(forward, runner.is_alive, report)
    runner.join()
    if "error" in outcome:
        raise outcome["error"]
    raise_if_stopped(outcome["result"])  # a full disk: the trial fails with the line that says so


def tune_trainable(base: dict, experiment_root: str, cache_root: str, resources):
    """`trial` as Tune runs it: the base config and storage bound in, `resources` a dict or a function of
    the trial's params (Tune calls it on the driver as it creates each trial)."""
    from ray import tune  # lazy, as in _pointer_checkpoint

    return tune.with_resources(
        tune.with_parameters(trial, base=base, experiment_root=experiment_root, cache_root=cache_root), resources
    )


def trainable(config: str | Path | dict | Config, storage: str | None = None):
    """raygan's trial as a Tune function trainable, for your own `ray.tune.Tuner`: your search space,
    scheduler, searcher and callbacks, raygan's training and metrics.

        from ray import tune
        from raygan.tune import trainable

        tuner = tune.Tuner(
            trainable("tune_configs/smoke.yaml", storage="/tmp/sweeps/mine"),
            param_space={"optim.g.lr": tune.loguniform(1e-4, 1e-3), "loss.name": tune.choice(["gan", "hinge"])},
            tune_config=tune.TuneConfig(metric="fid", mode="min", num_samples=4, max_concurrent_trials=2),
            run_config=tune.RunConfig(name="mine", storage_path="/tmp/sweeps"),
        )
        best = tuner.fit().get_best_result()

    `config` is a YAML file, a dict of sections or a Config; param_space keys are its dotted keys, and each
    trial trains the config with its values. A trial is a Ray Train run in STORAGE/runs/<trial id> (STORAGE
    defaults to the config's storage.path) and reports what `raygan tune` trials report at each evaluation
    (fid, best_fid, step, best_checkpoint, health, ...) with a small Tune checkpoint, so PBT and retries
    continue the run. The trial itself asks Tune for no CPU: its Train workers ask the cluster for the
    config's scaling, so set max_concurrent_trials to the trials the cluster holds at once. A param_space
    key that is not a config value fails as Tune creates the trial, with a ConfigError naming it.
    """
    if isinstance(config, Config):
        cfg = config
    elif isinstance(config, dict):
        cfg = build_config(config)
    else:
        cfg = load_config(config)
    root = storage_root(storage or cfg.storage.path)

    def resources(params: dict) -> dict:  # Tune calls this on the driver as it creates each trial
        for key in params:
            check_searchable(cfg, "param_space", key)
        return TRIAL_RESOURCES

    return tune_trainable(cfg.to_dict(), experiment_root=root, cache_root=root, resources=resources)
