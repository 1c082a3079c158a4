"""The search space: raygan's distributions (`choice`, `grid`, `uniform`, ...), their checks against the config,
and their Ray Tune and PBT forms.

    tune:
      search_space:
        optim.g.lr: {loguniform: [1.0e-4, 1.0e-3]}
        loss.name: {choice: [gan, hinge]}
"""

from __future__ import annotations

import itertools
import math
from typing import Any

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


def to_tune_domain(spec: dict):
    from ray import tune  # lazy: importing raygan.tune (the CLI, --dry-run) does not start Ray's import

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


def on_steps(space: dict, params: dict) -> dict:
    """quniform values put on their steps: BOHB's ConfigSpace drops the step and proposes any float."""
    return {
        key: in_range(space[key], value) if "quniform" in space.get(key, {}) else value for key, value in params.items()
    }


def as_searched(spec: dict | None, value: Any) -> Any:
    """A summary-table cell as the value the trial was given: the listed value it equals (a table column that
    holds 0 and 0.1 turns 0 into 0.0), quniform's on its steps (BOHB's ConfigSpace proposes any float)."""
    if not spec:
        return value
    ((kind, args),) = spec.items()
    if kind in ("choice", "grid"):
        return next((listed for listed in args if listed == value), value)
    return in_range(spec, value) if kind == "quniform" else value


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
