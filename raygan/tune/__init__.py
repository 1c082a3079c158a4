"""`python -m raygan.tune CONFIG` (same as `raygan tune CONFIG`): a Ray Tune sweep ranked by FID.

    python -m raygan.tune tune_configs/smoke.yaml --json
    ray job submit --working-dir . -- python -m raygan.tune tune_configs/default.yaml --storage s3://bucket/sweeps

Each trial is a full data-parallel Ray Train run: a Tune function trainable builds a `TorchTrainer`
whose callback forwards every evaluation (FID and the health monitor's flags) to Tune, with a small
Tune checkpoint that points at the Train checkpoint in storage. Schedulers: `asha` stops weak trials
at evaluation milestones; `pbt` restarts weak trials from a strong trial's checkpoint with perturbed
hyperparameters, which the restored run applies over the checkpoint's; `fifo` runs all to the end.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from raygan import storage
from raygan.config import Config, ScalingConfig, build_config, get_dotted
from raygan.errors import ConfigError

DISTRIBUTIONS = {  # name -> (argument count, meaning)
    "choice": (None, "one of the listed values, at random"),
    "grid": (None, "every listed value (multiplies num_samples)"),
    "uniform": (2, "[low, high]"),
    "loguniform": (2, "[low, high], log scale"),
    "randint": (2, "integers in [low, high)"),
    "quniform": (3, "[low, high, step]"),
}
# The trial function only drives a TorchTrainer, whose workers hold the real resources. It asks for no
# CPU at all (a fractional CPU such as 0.01 leaves 1.99 of 2, and 2 one-CPU workers never fit) but a
# little memory, since Ray refuses an empty resource request.
TRIAL_RESOURCES = {"CPU": 0, "memory": 64 * 1024**2}
POINTER = "train_checkpoint.json"


# ---------------------------------------------------------------------------------------------
# search space


def _values_to_check(kind: str, args: list) -> list:
    if kind in ("choice", "grid"):
        return list(args)
    if kind == "randint":
        return [args[0], args[1] - 1]  # high is exclusive
    return list(args[:2])  # both ends of a range


def check_searchable(cfg: Config, where: str, key: str) -> None:
    """`key` is a dotted config key that names one value outside the tune section."""
    try:
        value = get_dotted(cfg, key)
    except ConfigError:
        raise ConfigError(where, f"{key} is not a config key") from None
    if key.startswith("tune.") or hasattr(value, "__dataclass_fields__"):
        raise ConfigError(where, f"{key} is a section or a sweep setting, not a value to search")


def check_spec(cfg: Config, where: str, key: str, spec: Any) -> None:
    """`key` is a config value and `spec` a well-formed distribution whose values are all valid for it."""
    check_searchable(cfg, where, key)
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(where, f"expected one of {{{', '.join(DISTRIBUTIONS)}}}: [...], got {spec!r}")
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(where, f"unknown distribution {kind!r} (expected one of: {', '.join(DISTRIBUTIONS)})")
    count, meaning = DISTRIBUTIONS[kind]
    if not isinstance(args, list) or not args or (count is not None and len(args) != count):
        raise ConfigError(where, f"{kind} takes a list: {meaning}")
    if count is not None and not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(where, f"{kind} takes numbers: {meaning}")
    if count is not None and args[0] >= args[1]:
        raise ConfigError(where, f"{kind}: low {args[0]} must be below high {args[1]}")
    if kind == "loguniform" and args[0] <= 0:
        raise ConfigError(where, "loguniform needs low > 0")
    if kind == "quniform" and args[2] <= 0:
        raise ConfigError(where, "quniform needs step > 0")
    for candidate in _values_to_check(kind, args):
        try:
            build_config(cfg.to_dict(), {key: candidate})
        except ConfigError as e:
            raise ConfigError(where, f"value {candidate!r} is invalid: {e}") from None


def validate_search_space(cfg: Config) -> None:
    """Every key is a config value, every distribution well formed, every value valid in the config."""
    for key, spec in cfg.tune.search_space.items():
        check_spec(cfg, f"tune.search_space.{key}", key, spec)


def trial_requests(cfg: Config) -> list[tuple[ScalingConfig, dict]]:
    """What trials may ask Ray for: (scaling, the searched values it holds) for every combination of the
    searched scaling values (both ends of a range), or just cfg.scaling when none is searched."""
    searched = {
        key: _values_to_check(*next(iter(spec.items())))
        for key, spec in cfg.tune.search_space.items()
        if key.startswith("scaling.")
    }
    combinations = [dict(zip(searched, values)) for values in itertools.product(*searched.values())]
    return [(build_config(cfg.to_dict(), values).scaling, values) for values in combinations]


def validate_sweep(cfg: Config) -> None:
    """Everything a sweep is made of, checked before Ray starts: the space, the scheduler, the searcher."""
    validate_search_space(cfg)
    make_scheduler(cfg)
    make_search_alg(cfg)


def to_tune_domain(spec: dict):
    from ray import tune

    ((kind, args),) = spec.items()
    if kind == "choice":
        return tune.choice(args)
    if kind == "grid":
        return tune.grid_search(args)
    if kind == "uniform":
        return tune.uniform(*args)
    if kind == "loguniform":
        return tune.loguniform(*args)
    if kind == "randint":
        return tune.randint(*args)
    return tune.quniform(*args)


def in_range(spec: dict, value: Any) -> Any:
    """`value` moved into the distribution's range: clipped to [low, high], onto quniform's steps.
    Listed values (choice, grid, randint's integers) are left alone: PBT only ever picks among them."""
    ((kind, args),) = spec.items()
    if kind not in ("uniform", "loguniform", "quniform") or not isinstance(value, (int, float)):
        return value
    low, high = args[0], args[1]
    if kind == "quniform":
        step = args[2]
        value = round(round(value / step) * step, 12)  # the 12 digits drop float noise: 0.15, not 0.15000000000000002
        low, high = math.ceil(low / step - 1e-9) * step, math.floor(high / step + 1e-9) * step  # the steps in range
    return min(max(value, low), high)


def pbt_mutation(spec: dict):
    """What Ray's PBT perturbs for a raygan distribution: listed values move to a neighbour or are redrawn
    (randint as the list of its integers, so a layer count stays an integer in range); ranges are scaled by
    0.8 / 1.2 or redrawn, then KeepInRange puts them back inside."""
    ((kind, args),) = spec.items()
    if kind in ("choice", "grid"):
        return list(args)
    if kind == "randint":
        return list(range(args[0], args[1]))
    return to_tune_domain(spec)


class KeepInRange:
    """PBT's custom_explore_fn: after Ray's perturbation, every mutated value back inside its distribution
    (ema x 1.2 would pass 1, label_smoothing 0.5: the exploited trial would die on a config error)."""

    def __init__(self, mutations: dict[str, dict]):
        self.mutations = mutations

    def __call__(self, config: dict) -> dict:
        return {**config, **{key: in_range(spec, config[key]) for key, spec in self.mutations.items() if key in config}}


def make_scheduler(cfg: Config):
    """ASHA, PBT, FIFO from tune.scheduler, or HyperBand for BOHB's searcher; times are training steps
    (HyperBand's are evaluations: its milestones at 1, 3, 9 ... units must fall on reports)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandForBOHB, PopulationBasedTraining

    options = dict(cfg.tune.scheduler)
    name = options.pop("name")
    t = cfg.train
    try:
        if cfg.tune.search_alg["name"] == "bohb":  # BOHB's searcher and its HyperBand go together
            if name != "asha":
                raise TypeError("search_alg bohb brings its own HyperBand scheduler; leave tune.scheduler at asha")
            options.pop("grace_period", None)  # HyperBand sizes its brackets from max_t and reduction_factor
            evaluations = math.ceil(t.steps / t.eval_every)  # each Tune result is one evaluation
            return HyperBandForBOHB(time_attr="training_iteration", max_t=evaluations, **options)
        if name == "asha":
            options.setdefault("grace_period", min(2 * t.eval_every, t.steps))
            options.setdefault("reduction_factor", 2)
            return ASHAScheduler(time_attr="step", max_t=t.steps, **options)
        if name == "pbt":
            given = options.pop("hyperparam_mutations", None)
            mutations = given or {
                key: spec for key, spec in cfg.tune.search_space.items() if next(iter(spec)) != "grid"
            }
            for key, spec in mutations.items():
                where = f"tune.scheduler.hyperparam_mutations.{key}"
                if key not in cfg.tune.search_space:
                    raise ConfigError("tune.scheduler.hyperparam_mutations", f"{key} is not in tune.search_space")
                check_spec(cfg, where, key, spec)  # the values given are the range PBT keeps to
            options.setdefault("perturbation_interval", 2 * t.eval_every)
            return PopulationBasedTraining(
                time_attr="step",
                hyperparam_mutations={key: pbt_mutation(spec) for key, spec in mutations.items()},
                custom_explore_fn=KeepInRange(mutations),
                **options,
            )
        if options:
            raise TypeError(f"fifo takes no options, got {', '.join(options)}")
        return FIFOScheduler()
    except (TypeError, AssertionError, ValueError) as e:
        raise ConfigError("tune.scheduler", f"{name}: {e}") from None


SEARCHER_PACKAGES = {"optuna": ["optuna"], "bohb": ["hpbandster", "ConfigSpace"]}  # what each searcher imports


def make_search_alg(cfg: Config):
    """Tune's own sampler for `random` (grids included), or a model-based searcher: seeded from the config's
    seed (the same seed draws the same configs) and proposing at most tune.max_concurrent trials at once.
    Its state is saved with the experiment, so `--resume` continues its history (Tuner.restore reloads it)."""
    import importlib.util

    name = cfg.tune.search_alg["name"]
    if name == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=cfg.tune.max_concurrent, random_state=cfg.seed)
    missing = [package for package in SEARCHER_PACKAGES[name] if importlib.util.find_spec(package) is None]
    if missing:
        hint = "pip install 'raygan[bohb]'" if name == "bohb" else f"pip install {missing[0]}"
        raise ConfigError("tune.search_alg.name", f"{name} needs the package {', '.join(missing)} ({hint})")
    from ray.tune.search import ConcurrencyLimiter

    if name == "optuna":
        from optuna.samplers import TPESampler
        from ray.tune.search.optuna import OptunaSearch

        # Optuna's 10 random start-up trials are most of a 16-trial GAN sweep; multivariate TPE models the
        # two learning rates together, and constant liar keeps concurrent trials from being drawn alike.
        sampler = TPESampler(
            n_startup_trials=tpe_startup_trials(cfg.tune.num_samples),
            multivariate=True,
            constant_liar=True,
            seed=cfg.seed,
        )
        searcher = OptunaSearch(sampler=sampler)  # metric and mode come from the TuneConfig
    else:
        from ray.tune.search.bohb import TuneBOHB

        searcher = TuneBOHB(seed=cfg.seed)
    return ConcurrencyLimiter(searcher, max_concurrent=cfg.tune.max_concurrent)


def tpe_startup_trials(num_samples: int) -> int:
    """Random trials before TPE models the rest: a quarter of the sweep, 4 to optuna's default of 10."""
    return min(10, max(4, num_samples // 4))


# ---------------------------------------------------------------------------------------------
# the trial: a TorchTrainer driven from a Tune function trainable


class EvaluationsForTune:
    """What a trial's report forwarder queues for Tune (it runs in the Train controller): evaluations only,
    each carrying the objective and the run's best checkpoint so far."""

    def __init__(self):
        self.best_checkpoint = None

    def __call__(self, result: dict, uri: str | None) -> dict | None:
        if uri is not None and result.get("new_best"):
            self.best_checkpoint = uri
        if uri is not None and self.best_checkpoint is None and result.get("best_step") is not None:
            self.best_checkpoint = _earlier_best(uri, result["best_step"])  # a resumed run's best came before
        return {**result, "best_checkpoint": self.best_checkpoint} if result.get("evaluated") else None


def _earlier_best(checkpoint: str, best_step: int) -> str | None:
    """The checkpoint of `best_step` in the run that holds `checkpoint`, if it is there and complete
    (a paused or retried trial resumes its run after its best; a PBT exploit's best is in the donor's)."""
    from raygan.checkpoint import checkpoint_name, is_complete

    candidate = storage.join(_run_of(checkpoint), checkpoint_name(best_step))
    return candidate if is_complete(candidate) else None


def _pointer_checkpoint(train_checkpoint: str, trial_id: str, step: int):
    from ray import tune

    folder = tempfile.mkdtemp(prefix="raygan-pointer-")
    Path(folder, POINTER).write_text(json.dumps({"path": train_checkpoint, "trial": trial_id, "step": step}))
    return tune.Checkpoint.from_directory(folder)


def _run_of(checkpoint: str) -> str:
    return storage.parent(checkpoint)


def complete_checkpoint(path: str) -> str:
    """`path` if it is complete (its manifest matches), else the newest complete checkpoint of its run:
    the donor may since have deleted it (keep_checkpoints), or its upload may have been cut short."""
    from raygan.checkpoint import is_complete, list_checkpoints

    if is_complete(path):
        return path
    complete = list_checkpoints(_run_of(path))
    if not complete:
        raise RuntimeError(f"{path}: incomplete, and its run has no complete checkpoint to continue from")
    return complete[-1]


def on_steps(space: dict, params: dict) -> dict:
    """quniform values put on their steps: BOHB's ConfigSpace drops the step and proposes any float."""
    return {
        key: in_range(space[key], value) if "quniform" in space.get(key, {}) else value for key, value in params.items()
    }


def trial_config(base: dict, params: dict) -> Config:
    """What a trial trains with: the base config and the trial's sampled values."""
    return build_config(base, on_steps(base["tune"]["search_space"], params))


def trial(params: dict, base: dict, experiment_root: str, cache_root: str) -> None:
    """One trial: the base config with this trial's sampled values, trained on Ray Train workers."""
    from ray import tune

    from raygan.train.ray_train import drain, forward_reports, trainer

    cfg = trial_config(base, params)
    trial_id = tune.get_context().get_trial_id()
    resume_from, run_name = None, trial_id
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            pointer = json.loads(Path(folder, POINTER).read_text())
        if pointer["trial"] != trial_id:  # PBT exploit: continue the donor's run under a new name
            resume_from = complete_checkpoint(pointer["path"])
            run_name = f"{trial_id}-from-{pointer['trial']}-{pointer['step']}"
        else:  # a retry (tune.max_failures) or --resume: the run that wrote the pointer, which may be an exploit's
            run_name = storage.basename(_run_of(pointer["path"]))
    forward = forward_reports(EvaluationsForTune())
    train_run = trainer(
        cfg,
        run_name,
        storage.join(experiment_root, "runs"),
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

    def report(metrics: dict, checkpoint_path: str | None) -> None:
        pointer = _pointer_checkpoint(checkpoint_path, trial_id, metrics["step"]) if checkpoint_path else None
        run = storage.join(experiment_root, "runs", run_name)  # the trackers find its grids there
        tune.report({**metrics, "run": run}, checkpoint=pointer)

    runner = threading.Thread(target=fit, daemon=True)
    runner.start()
    drain(forward, runner.is_alive, report)
    runner.join()
    if "error" in outcome:
        raise outcome["error"]


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
    from ray import tune

    from raygan.config import load_config
    from raygan.storage import check_uri, is_uri

    if isinstance(config, Config):
        cfg = config
    elif isinstance(config, dict):
        cfg = build_config(config)
    else:
        cfg = load_config(config)
    root = storage or cfg.storage.path
    check_uri(root)
    root = root.rstrip("/") if is_uri(root) else str(Path(root).expanduser().resolve())  # Ray needs absolute paths

    def resources(params: dict) -> dict:  # Tune calls this on the driver as it creates each trial
        for key in params:
            check_searchable(cfg, "param_space", key)
        return TRIAL_RESOURCES

    return tune.with_resources(
        tune.with_parameters(trial, base=cfg.to_dict(), experiment_root=root, cache_root=root), resources
    )


# ---------------------------------------------------------------------------------------------
# the sweep


def _trial_id(result) -> str:
    """The trial's own id, from its folder (trial_<id>_...), to find its row in Tune's table: a trial that
    PBT restored at its last perturbation point reports nothing itself, and its Result's metrics are the
    donor's, trial_id included."""
    found = re.search(r"_([0-9a-f]{5}_\d{5})_", Path(result.path).name) if result.path else None
    return found.group(1) if found else (result.metrics or {}).get("trial_id", "?")


def error_line(error: BaseException) -> str:
    """The line that says what went wrong: the last line of the innermost error's message (Ray wraps a
    trial's exception in RayTaskError and TrainingFailedError, whose first lines name only processes)."""
    while getattr(error, "cause", None) is not None or error.__cause__ is not None:
        error = getattr(error, "cause", None) or error.__cause__
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    return text if text.startswith(type(error).__name__) else f"{type(error).__name__}: {text}"[:200]


def as_searched(spec: dict | None, value: Any) -> Any:
    """A summary-table cell as the value the trial was given: the listed value it equals (a table column that
    holds 0 and 0.1 turns 0 into 0.0), quniform's on its steps (BOHB's ConfigSpace proposes any float)."""
    if not spec:
        return value
    ((kind, args),) = spec.items()
    if kind in ("choice", "grid"):
        return next((listed for listed in args if listed == value), value)
    return in_range(spec, value) if kind == "quniform" else value


def _cell(record: dict, column: str) -> Any:
    """A value of Tune's table, with its gaps (NaN where a trial lacks the column) back to None."""
    value = record.get(column)
    return None if isinstance(value, float) and math.isnan(value) else value


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, float) else value  # a column with a gap holds its integers as floats


def trial_rows(result_grid, searched: list[str], steps: int, space: dict | None = None) -> list[dict[str, Any]]:
    """The sweep's summary, best FID first: Tune's own table of each trial's last result (`get_dataframe()`,
    with no filter_metric: the best evaluation's row would not say where the trial stopped, and best_fid is
    already the trial's running best) beside the grid's Results."""
    return summary_rows(result_grid.get_dataframe(), list(result_grid), searched, steps, space or {})


def summary_rows(table, results: list, searched: list[str], steps: int, space: dict) -> list[dict[str, Any]]:
    """One row per Result. `table` as ResultGrid.get_dataframe() builds it: a row per trial that reported,
    nested metrics flattened with "/" (health/status), the trial's config as config/<key>."""
    from ray.tune.utils import flatten_dict

    last = {record["trial_id"]: record for record in table.to_dict("records")}
    rows = []
    # The Results give what the table lacks: Tune's order, each trial's error, the trials that never reported
    for order, result in enumerate(results):
        trial_id = _trial_id(result)
        record = last.get(trial_id) or {f"config/{key}": value for key, value in (result.config or {}).items()}
        metrics = result.metrics or {}
        if (metrics.get("step") or -1) > (_count(_cell(record, "step")) or -1):  # PBT restored it at a later point
            record = {**record, **flatten_dict(metrics, delimiter="/")}  # the donor's state there is now its own
        step = _count(_cell(record, "step"))
        if result.error is not None:
            reason = f"error: {error_line(result.error)}"
        elif _cell(record, "health/stop_reason"):
            reason = _cell(record, "health/stop_reason")
        elif step is not None and step < steps:
            reason = "stopped by the scheduler"
        else:
            reason = "completed"
        rows.append(
            {
                "trial": trial_id,
                "order": order,
                **{key: as_searched(space.get(key), _cell(record, f"config/{key}")) for key in searched},
                "best_fid": _cell(record, "best_fid"),
                "best_step": _count(_cell(record, "best_step")),
                "last_step": step,
                "health": _cell(record, "health/status"),
                "stop_reason": reason,
                "trained_s": _cell(record, "trained_s"),  # cost: seconds trained, over restarts and PBT's donors
                "images_seen": _count(_cell(record, "images_seen")),
                "best_checkpoint": _cell(record, "best_checkpoint"),
            }
        )
    return sorted(rows, key=lambda r: r["best_fid"] if r["best_fid"] is not None else math.inf)


def fanova_importance(rows: list[dict], space: dict, seed: int) -> dict[str, float] | None:
    """optuna's fANOVA importance of each searched key for best FID (shares of the explained variance,
    summing to 1), fitted on the scored trials; None with fewer than 3 of them."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    scored = [row for row in rows if row.get("best_fid") is not None and math.isfinite(row["best_fid"])]
    if len(scored) < 3 or not space:
        return None
    distributions = OptunaSearch.convert_search_space({key: to_tune_domain(spec) for key, spec in space.items()})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    for row in scored:
        params = {key: row[key] for key in space}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=row["best_fid"]))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)  # a random forest: seeded to be repeatable
    return {
        key: round(float(v), 3)
        for key, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()
    }


def write_summary(experiment_uri: str, rows: list[dict], searched: list[str], fanova: dict | None = None) -> None:
    storage.write_bytes(storage.join(experiment_uri, "summary.json"), json.dumps(rows, indent=2, default=str).encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    storage.write_bytes(storage.join(experiment_uri, "summary.csv"), text.getvalue().encode())
    from raygan.report import importance, search_progress

    search = {
        "importance": importance(rows, searched),
        "best_so_far": search_progress(rows),
    }  # summary.json stays a list of rows
    if fanova is not None:
        search["fanova"] = fanova
    storage.write_bytes(storage.join(experiment_uri, "search.json"), json.dumps(search, indent=2).encode())


def restore_args(experiment_uri: str) -> dict[str, Any]:
    """Tuner.restore / can_restore's path and filesystem for an experiment in a folder or object store."""
    if not storage.is_uri(experiment_uri):
        return {"path": experiment_uri}
    fs, path = storage.filesystem(experiment_uri, patient=True)
    return {"path": path, "storage_filesystem": fs}


def run_sweep(cfg: Config, experiment: str, storage_root: str, resume: bool = False) -> dict:
    """Run (or resume) the sweep; returns the contract's result object plus the rows."""
    from ray import tune

    from raygan.tracking import tune_callbacks
    from raygan.train.ray_train import ray_connection, ray_storage

    searched = list(cfg.tune.search_space)
    experiment_uri = storage.join(storage_root, storage.check_name(experiment))
    trainable = tune.with_resources(
        tune.with_parameters(trial, base=cfg.to_dict(), experiment_root=experiment_uri, cache_root=storage_root),
        TRIAL_RESOURCES,
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
