"""The sweep driver: `raygan tune`'s checks before Ray starts, then the Tuner run (or resumed) over the search
space, and the summary written beside the trials' runs."""

from __future__ import annotations

import functools
from typing import Any

from raygan import storage
from raygan.config import Config
from raygan.tracking import tune_callbacks
from raygan.tune.searchers import make_scheduler, make_search_alg
from raygan.tune.space import to_tune_domain, trial_requests, validate_search_space
from raygan.tune.summary import fanova_importance, trial_rows, write_summary
from raygan.tune.trials import TRIAL_RESOURCES, trial_config, tune_trainable


def validate_sweep(cfg: Config) -> None:
    """Everything a sweep is made of, checked before Ray starts: the space, the scheduler, the searcher."""
    validate_search_space(cfg)
    make_scheduler(cfg)
    make_search_alg(cfg)


def restore_args(experiment_uri: str) -> dict[str, Any]:
    """Tuner.restore / can_restore's path and filesystem for an experiment in a folder or object store."""
    if not storage.is_uri(experiment_uri):
        return {"path": experiment_uri}
    fs, path = storage.filesystem(experiment_uri, patient=True)
    return {"path": path, "storage_filesystem": fs}


def run_sweep(cfg: Config, experiment: str, storage_root: str, resume: bool = False) -> dict:
    """Run (or resume) the sweep; returns the contract's result object plus the rows."""
    from ray import tune  # lazy: importing raygan.tune (the CLI, --dry-run) does not start Ray's import

    from raygan.train.session import ray_connection, ray_storage  # lazy: Ray

    searched = list(cfg.tune.search_space)
    experiment_uri = storage.join(storage_root, storage.check_name(experiment))
    trainable = tune_trainable(
        cfg.to_dict(), experiment_root=experiment_uri, cache_root=storage_root, resources=TRIAL_RESOURCES
    )
    with ray_connection(trial_requests(cfg), share=TRIAL_RESOURCES):
        if resume:
            tuner = tune.Tuner.restore(trainable=trainable, resume_errored=True, **restore_args(experiment_uri))
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={key: to_tune_domain(spec) for key, spec in cfg.tune.search_space.items()},
                tune_config=tune.TuneConfig(
                    metric="fid",
                    mode="min",
                    num_samples=cfg.tune.num_samples,
                    search_alg=make_search_alg(cfg),
                    max_concurrent_trials=None,  # the search algorithm limits it
                    scheduler=make_scheduler(cfg),
                    time_budget_s=cfg.tune.time_budget_s,
                    reuse_actors=False,  # a restarted trial gets a fresh process: its old Train run dies with it
                ),
                run_config=tune.RunConfig(
                    name=experiment,
                    **ray_storage(storage_root),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # pointers, a few bytes each
                    failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures),  # retried from the pointer
                    callbacks=tune_callbacks(
                        cfg.logging, experiment_uri, functools.partial(trial_config, cfg.to_dict())
                    ),
                ),
            )
        grid = tuner.fit()
    rows = trial_rows(grid, searched, cfg.train.steps, cfg.tune.search_space)
    fanova = (
        fanova_importance(rows, cfg.tune.search_space, cfg.seed) if cfg.tune.search_alg["name"] == "optuna" else None
    )
    write_summary(experiment_uri, rows, searched, fanova)
    best = next((r for r in rows if r["best_fid"] is not None), None)
    errors = [r["stop_reason"] for r in rows if r["stop_reason"].startswith("error: ")]
    return {
        "experiment": experiment_uri,
        "trials": len(rows),
        "failed": len(errors),
        "first_error": errors[0][len("error: ") :] if errors else None,
        "best_config": {key: best[key] for key in searched} if best else None,
        "best_fid": best["best_fid"] if best else None,
        "best_checkpoint": best["best_checkpoint"] if best else None,
        "rows": rows,
        "searched": searched,
    }
