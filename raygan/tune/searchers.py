"""Schedulers and search algorithms: `tune.scheduler` (asha, pbt, fifo) and `tune.search_alg` (random,
optuna, bohb) made into Ray Tune's objects, with their options checked as config errors."""

from __future__ import annotations

import importlib.util
import math

from raygan.config import Config
from raygan.errors import ConfigError
from raygan.tune.space import KeepInRange, check_spec, pbt_mutation

SEARCHER_PACKAGES = {"optuna": ["optuna"], "bohb": ["hpbandster", "ConfigSpace"]}  # what each searcher imports


def make_scheduler(cfg: Config):
    """ASHA, PBT, FIFO from tune.scheduler, or HyperBand for BOHB's searcher; times are training steps
    (HyperBand's are evaluations: its milestones at 1, 3, 9 ... units must fall on reports)."""
    # lazy: importing raygan.tune (the CLI, --dry-run) does not start Ray's import
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


def make_search_alg(cfg: Config):
    """Tune's own sampler for `random` (grids included), or a model-based searcher: seeded from the config's
    seed (the same seed draws the same configs) and proposing at most tune.max_concurrent trials at once.
    Its state is saved with the experiment, so `--resume` continues its history (Tuner.restore reloads it)."""
    name = cfg.tune.search_alg["name"]
    if name == "random":
        from ray.tune.search import BasicVariantGenerator  # lazy, as in make_scheduler

        return BasicVariantGenerator(max_concurrent=cfg.tune.max_concurrent, random_state=cfg.seed)
    missing = [package for package in SEARCHER_PACKAGES[name] if importlib.util.find_spec(package) is None]
    if missing:
        hint = "pip install 'raygan[bohb]'" if name == "bohb" else f"pip install {missing[0]}"
        raise ConfigError("tune.search_alg.name", f"{name} needs the package {', '.join(missing)} ({hint})")
    from ray.tune.search import ConcurrencyLimiter

    if name == "optuna":  # each searcher's package only once it is known to be installed
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
