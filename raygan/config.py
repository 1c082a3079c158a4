"""One frozen config tree for a raygan run: YAML in, `--set` overrides, one `validate()`.

    cfg = load_config("tune_configs/smoke.yaml", overrides=["train.steps=100", "optim.d.name=sgd"])

Every key can be overridden with `--set dotted.key=value` (the value is parsed as YAML: numbers,
booleans, null, lists) and searched by a sweep. Unknown keys, wrong types, out-of-range values and
contradictions raise `ConfigError("<key>", "<what is wrong>")`. A field's allowed values sit beside it
(`one_of`, `within`); `validate()` checks them all, then the rules that tie several keys together.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from raygan.errors import ConfigError

_FIRST: Any = object()  # one_of's default: the first choice


def one_of(*choices: Any, default: Any = _FIRST, entry: str | None = None) -> Any:
    """A field whose value must be one of `choices` (each item, for a tuple; `value[entry]`, for a mapping).

    The default is the first choice unless given; with `entry`, the default is the mapping {entry: first choice}.
    """
    metadata = {"choices": choices, "entry": entry}
    if entry is not None:
        return field(default_factory=lambda: {entry: choices[0]}, metadata=metadata)
    return field(default=choices[0] if default is _FIRST else default, metadata=metadata)


def within(
    lo: float | None = None, hi: float | None = None, *, default: Any, lo_open: bool = False, hi_open: bool = False
) -> Any:
    """A number (or each number of a tuple) in [lo, hi], an end left out when open or None; null passes."""
    return field(default=default, metadata={"range": {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open}})


HEALTH_CONDITIONS = ("nan", "collapse", "diminished_gradient", "non_convergence")  # raygan.metrics.health's rules


@dataclass(frozen=True)
class DataConfig:
    name: str = one_of("digits", "stacked-digits", "emoji", "random", "folder", "npz")
    path: str | None = None  # folder of images or .npz file (local or s3://); folder/npz only
    image_size: int = one_of(8, 16, 32, 64, 128, 256, default=32)  # images are resized to it (emoji: 16, 32 or 64)
    channels: int = one_of(1, 3, default=3)  # random noise and folder images (converted to L or RGB)
    background: str = "white"  # under transparent pixels (emoji, RGBA files): a name in BACKGROUNDS or #rrggbb
    xflip: bool = False  # mirror each real image with probability 1/2 (twice the data, as StyleGAN's --mirror)
    # folder data: memory decodes once (exact resume), stream reads through Ray Data, auto: memory if it fits
    cache: str = one_of("auto", "memory", "stream")


@dataclass(frozen=True)
class ModelConfig:
    arch: str = one_of("dcgan", "resnet")  # residual G and D; builders: raygan.models.ARCHS
    latent_dim: int = within(1, default=100)  # size of z
    g_layers: int = 4  # G's stages: starts at image_size / 2**(g_layers-1) px, doubles g_layers-1 times
    d_layers: int = 4  # conv layers in D: halves d_layers-1 times, a last conv covers the rest
    g_width: int = within(1, default=64)  # channels of G's last hidden layer; doubles towards the input
    d_width: int = within(1, default=64)  # channels of D's first layer; doubles with depth
    g_activation: str = one_of("relu", "leaky_relu")
    d_activation: str = one_of("relu", "leaky_relu", default="leaky_relu")
    g_norm: str = one_of("batch", "none")
    d_norm: str = one_of("batch", "none", "layer", "spectral")
    # dropout after each hidden D activation (MRI project: 0.25..0.45)
    d_dropout: float = within(0, 1, hi_open=True, default=0.0)
    bn_momentum: float = within(0, 1, default=0.1)  # PyTorch convention: Keras momentum 0.8 is 0.2 here
    conditional: bool = False  # CGAN: the label conditions G (embedding) and D (projection)
    pack: int = within(1, default=1)  # PacGAN: D judges this many samples at once, stacked along channels


@dataclass(frozen=True)
class LossConfig:
    name: str = one_of("gan", "wgan", "wgan-gp", "hinge", "rpgan", "combined")  # rpgan: R3GAN's relativistic pairing
    label_smoothing: float = within(0, 0.5, hi_open=True, default=0.0)  # one-sided: real target is 1 - label_smoothing
    label_smoothing_mode: str = one_of("fixed", "uniform")  # uniform: real targets drawn from U(1 - s, 1)
    label_flip: float = within(0, 0.5, hi_open=True, default=0.0)  # fraction of D's real/fake targets swapped each step
    gp_weight: float = within(0, default=10.0)  # wgan-gp gradient penalty weight
    clip: float = within(0, lo_open=True, default=0.01)  # wgan / combined critic weight clipping
    combined_weight: float = within(0, 1, default=0.5)  # combined: the critic's share of G's loss
    r1_gamma: float = within(0, default=0.0)  # R1: (gamma / 2) E||grad D(real)||^2 in D's loss (0: off)
    r2_gamma: float = within(0, default=0.0)  # R2: the same on G's samples (R3GAN uses one gamma for both)
    reg_interval: int = within(1, default=1)  # lazy regularisation: R1/R2 every this many steps, scaled by it
    lecam: float = within(0, default=0.0)  # LeCam: D's scores held near the other side's moving average (0: off)
    lecam_decay: float = within(0, 1, hi_open=True, default=0.99)  # decay of those two moving averages, per D update


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = one_of("adam", "sgd", "rmsprop")
    lr: float = within(0, lo_open=True, default=2.0e-4)
    betas: tuple[float, float] = within(0, 1, hi_open=True, default=(0.5, 0.999))  # adam
    momentum: float = within(0, 1, hi_open=True, default=0.0)  # sgd, rmsprop
    nesterov: bool = False  # sgd only (needs momentum > 0)
    alpha: float = within(0, 1, hi_open=True, default=0.99)  # rmsprop smoothing
    weight_decay: float = within(0, default=0.0)
    # null: lr throughout; a value: lr follows a cosine from lr to this over the run (train.steps, or
    # train.time_budget_s where that ends it first), as R3GAN decays its rates to its run's length
    lr_end: float | None = within(0, default=None)


@dataclass(frozen=True)
class OptimConfig:
    g: OptimizerConfig = field(default_factory=OptimizerConfig)
    d: OptimizerConfig = field(default_factory=OptimizerConfig)
    critic: OptimizerConfig | None = None  # combined loss's critic; null: same as d


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = within(1, default=64)  # global, split evenly over scaling.num_workers
    steps: int = within(1, default=2000)  # generator updates
    n_critic: int = within(1, default=1)  # D (critic) updates per G update, each on a fresh real batch
    d_loss_threshold: float | None = None  # D updated only while its batch loss is above this (finite, reachable)
    g_loss_threshold: float | None = None  # G updated only while its batch loss is above this (finite, reachable)
    ema: float = within(0, 1, hi_open=True, default=0.0)  # decay of an EMA of G (0: off); ramps up from 0.1 at first
    # or the EMA's half-life in thousands of images (StyleGAN2-ADA's ema_kimg): the same averaging at any batch size
    ema_kimg: float | None = within(0, lo_open=True, default=None)
    ema_rampup: float | None = within(0, lo_open=True, default=0.05)  # half-life <= this x images seen (null: no cap)
    eval_every: int = within(1, default=250)  # steps between evaluations
    checkpoint_every: int = within(1, default=250)  # steps between checkpoints (rank 0 writes)
    keep_checkpoints: int = within(1, default=3)  # checkpoints kept in storage (the latest always)
    report_every: int = within(1, default=50)  # steps between metric reports (Ray's report blocks ~2 s)
    patience: int | None = within(1, default=None)  # stop after this many evaluations without a new best FID
    stop_on: tuple[str, ...] = one_of(*HEALTH_CONDITIONS, default=())  # health conditions that stop the run
    augment: tuple[str, ...] = one_of("translation", "cutout", "color", default=())  # DiffAugment of D's inputs
    augment_p: float = within(0, 1, default=1.0)  # chance each transform applies to an image (ada: where p starts)
    # adapt augment_p so E[sign D(real)] stays at this (StyleGAN2-ADA: 0.6); null: fixed
    ada_target: float | None = within(0, 1, lo_open=True, hi_open=True, default=None)
    ada_interval: int = within(1, default=4)  # steps between adjustments of p
    # thousands of images for p to go from 0 to 1 at the fastest (StyleGAN2-ADA: 500)
    ada_kimg: float = within(0, lo_open=True, default=100.0)
    max_failures: int = within(-1, default=0)  # worker failures survived by restarting from the last checkpoint
    # stop after this many seconds of training, evaluated and checkpointed; null: no limit
    time_budget_s: float | None = within(0, lo_open=True, default=None)
    # autocast: bf16 on CUDA or on a CPU with bf16 instructions (else float32), fp16 on CUDA; null: float32
    amp: str | None = one_of(None, "bf16", "fp16")
    channels_last: bool = True  # NHWC activations: faster convs on CPU (oneDNN, +10-25% here) and CUDA
    compile: bool = False  # torch.compile G and D (pays on long GPU runs; the first steps compile)
    cudnn_benchmark: bool = True  # CUDA: let cuDNN time its convolution algorithms once per shape

    @property
    def uses_ema(self) -> bool:
        return self.ema > 0 or self.ema_kimg is not None


@dataclass(frozen=True)
class EvalConfig:
    features: str = "digits"  # digits | emoji | inception | path to a TorchScript feature module
    num_samples: int = within(2, default=2000)  # generated images per evaluation, from fixed latents
    inception_weights: str | None = None  # local InceptionV3 FID weights for offline clusters


@dataclass(frozen=True)
class HealthConfig:
    """Rules of the GAN health monitor, checked at every evaluation (see raygan/metrics/health.py)."""

    # mode collapse: samples cover under this fraction of the classes that as many real draws cover ...
    collapse_coverage: float = within(0, 1, default=0.8)
    # ... or sit this much further (KL, nats) from the real class mix than real draws ...
    collapse_kl: float = within(0, default=0.5)
    collapse_diversity: float = within(0, default=0.5)  # ... or feature diversity is under this fraction of the real's
    d_win_loss: float = within(0, default=0.05)  # diminished gradient: D's loss under this ...
    d_win_accuracy: float = within(0, 1, default=0.99)  # ... and its accuracy over this ...
    window: int = within(1, default=3)  # ... for this many evaluations in a row; also the non-convergence window
    fid_rise: float = within(1, default=1.5)  # non-convergence: FID this many times its best, `window` evaluations on
    oscillation: float = within(0, default=0.5)  # ... or G's loss std / mean over `window` evaluations without a best


@dataclass(frozen=True)
class ScalingConfig:
    num_workers: int = within(1, default=1)  # Ray Train workers, one DDP rank each
    use_gpu: bool = False
    cpus_per_worker: float = within(0, lo_open=True, default=1)  # also the torch threads per worker
    gpus_per_worker: float = within(0, lo_open=True, default=1)  # fractional GPUs let trials share a device
    sync_batchnorm: bool = False  # GPU only: batch statistics over the global batch
    resources_per_worker: dict = field(default_factory=dict)  # extra Ray resources per worker, e.g. {trainer: 1}


@dataclass(frozen=True)
class StorageConfig:
    path: str = "~/raygan_results"  # local folder or s3://bucket/prefix


@dataclass(frozen=True)
class MLflowConfig:
    tracking_uri: str | None = None  # http(s)://host:port of a tracking server; null: $MLFLOW_TRACKING_URI or ./mlruns
    experiment: str = "raygan"  # MLflow experiment the runs (a sweep's trials) go to; created if missing


@dataclass(frozen=True)
class WandbConfig:
    project: str = "raygan"
    mode: str = one_of("online", "offline", "disabled")  # offline: files under $WANDB_DIR, `wandb sync` later


@dataclass(frozen=True)
class LoggingConfig:
    """Experiment trackers; credentials come from the environment (MLFLOW_TRACKING_TOKEN, WANDB_API_KEY ...)."""

    mlflow: MLflowConfig | None = None  # null: off
    wandb: WandbConfig | None = None  # null: off


@dataclass(frozen=True)
class TuneConfig:
    num_samples: int = within(1, default=8)  # trials drawn from search_space (per grid point)
    max_concurrent: int = within(1, default=2)  # trials running at once
    scheduler: dict = one_of("asha", "pbt", "fifo", entry="name")  # {name: ..., scheduler options}
    search_alg: dict = one_of("random", "optuna", "bohb", entry="name")  # optuna: TPE
    search_space: dict = field(default_factory=dict)  # "dotted.key": {choice: [...]} ...
    time_budget_s: float | None = within(0, lo_open=True, default=None)  # the whole sweep: stop after this
    max_failures: int = within(-1, default=0)  # retries of a failed trial, each from its last checkpoint (-1: no end)


@dataclass(frozen=True)
class Config:
    seed: int = within(0, default=0)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict:
        return to_dict(self)


def _section_type(tp: Any) -> type | None:
    """The dataclass behind an annotation (`OptimizerConfig | None` included), or None for a plain value."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return next((t for t in typing.get_args(tp) if dataclasses.is_dataclass(t)), None)
    return tp if dataclasses.is_dataclass(tp) else None


def _leaf_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field]]:
    """(dotted key, field) for every value field of the config class `cls`, sections walked recursively."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        section = _section_type(hints[f.name])
        if section is not None:
            yield from _leaf_fields(section, prefix + f.name + ".")
        else:
            yield prefix + f.name, f


# dotted key -> allowed values, read off the fields' one_of (a mapping's entry gets its own key: tune.scheduler.name)
CHOICES: Mapping[str, tuple] = types.MappingProxyType(
    {
        key + (f".{f.metadata['entry']}" if f.metadata["entry"] else ""): f.metadata["choices"]
        for key, f in _leaf_fields(Config)
        if "choices" in f.metadata
    }
)
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}  # or "#rrggbb"


def background_rgb(background: str) -> tuple[int, int, int]:
    """`data.background` -> an RGB triple in 0..255: a name in BACKGROUNDS or `#rrggbb` (ValueError otherwise)."""
    if background in BACKGROUNDS:
        return BACKGROUNDS[background]
    try:
        if len(background) == 7 and background.startswith("#"):
            return tuple(int(background[i : i + 2], 16) for i in (1, 3, 5))
    except ValueError:
        pass
    raise ValueError(f"{background!r} is not one of: {', '.join(BACKGROUNDS)}, or #rrggbb")


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-friendly data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        non_null = [t for t in options if t is not type(None)]
        return _coerce(value, non_null[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(key, f"expected a list of {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
    raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from nested dicts; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(prefix + str(key), f"unknown key (expected one of: {', '.join(sorted(names))})")
    values = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**values)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`train.steps=100` -> ("train.steps", 100); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("--set", f"expected KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(key, f"cannot parse value {raw!r}: {e.problem}") from None
    return key, value


def merge(base: dict, updates: dict) -> dict:
    """Dotted keys in `updates` applied onto a copy of the nested dict `base`."""
    tree = _deep_copy(base)
    for key, value in updates.items():
        _set_dotted(tree, key, value)
    return tree


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(str(path), f"not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "expected a mapping of config sections at the top level")
    return data


def build_config(tree: dict, overrides: list[str] | dict | None = None) -> Config:
    """Nested dict + overrides -> validated Config."""
    if isinstance(overrides, dict):
        updates = overrides
    else:
        updates = dict(parse_override(o) for o in overrides or [])
    cfg = from_dict(Config, merge(tree, updates))
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> Config:
    """Read YAML (or defaults when `path` is None), apply `--set` overrides, validate."""
    return build_config(read_yaml(path) if path else {}, overrides)


def get_dotted(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            raise ConfigError(key, "not a config key")
        node = getattr(node, part)
    return node


# ---------------------------------------------------------------------------------------------
# validation


def _check_choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join("null" if a is None else str(a) for a in allowed)
        raise ConfigError(key, f"{value!r} is not one of: {shown}")


def _check_range(key: str, value: float | None, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigError(key, f"must be finite, got {value}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(key, f"{value} is outside {left}{lo_s}, {hi_s}{right}")


def _check_fields(node: Any, prefix: str = "") -> None:
    """Every field's own constraint (one_of, within), section by section in declaration order."""
    for f in dataclasses.fields(node):
        key, value = prefix + f.name, getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, key + ".")
        elif "choices" in f.metadata:
            entry = f.metadata["entry"]
            if entry is not None:
                if entry not in value:
                    raise ConfigError(f"{key}.{entry}", "missing")
                _check_choice(f"{key}.{entry}", value[entry], f.metadata["choices"])
            else:
                for item in value if isinstance(value, tuple) else (value,):
                    _check_choice(key, item, f.metadata["choices"])
        elif "range" in f.metadata:
            if isinstance(value, tuple):
                for i, item in enumerate(value):
                    _check_range(f"{key}[{i}]", item, **f.metadata["range"])
            else:
                _check_range(key, value, **f.metadata["range"])


def max_layers(image_size: int) -> int:
    """Most conv layers G or D can have at `image_size`: the first/last layer works on 2x2 or more."""
    return int(math.log2(image_size))


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first bad key: each field's own constraint, then the rules between keys."""
    _check_fields(cfg)
    d, m, loss, t, s = cfg.data, cfg.model, cfg.loss, cfg.train, cfg.scaling

    size = d.image_size
    if d.name == "emoji" and size not in (16, 32, 64):
        raise ConfigError("data.image_size", f"emoji images are 64x64: use 16, 32 or 64, not {size}")
    try:
        background_rgb(d.background)
    except ValueError as e:
        raise ConfigError("data.background", str(e)) from None
    if d.name in ("folder", "npz") and not d.path:
        raise ConfigError("data.path", f"data.name {d.name} needs a path")
    if d.name not in ("folder", "npz") and d.path:
        raise ConfigError("data.path", f"only used with data.name folder or npz, not {d.name}")

    top = max_layers(size)
    for key, layers in (("model.g_layers", m.g_layers), ("model.d_layers", m.d_layers)):
        if not 2 <= layers <= top:
            raise ConfigError(key, f"{layers} layers cannot make {size}x{size} images (2..{top} layers fit this size)")
    if m.pack > 1 and m.conditional:
        raise ConfigError("model.pack", "packing mixes the labels of a pack; use it with conditional: false")
    if m.pack > 1 and loss.name == "wgan-gp":
        raise ConfigError("model.pack", "wgan-gp's gradient penalty is per sample; packing needs another loss")

    if loss.name in ("wgan", "wgan-gp", "hinge") and (loss.label_smoothing or loss.label_flip):
        key = "loss.label_smoothing" if loss.label_smoothing else "loss.label_flip"
        raise ConfigError(key, f"needs a loss with real/fake targets (gan or combined), not {loss.name}")
    _check_thresholds(loss, t)
    penalties = [
        name for name, on in (("wgan-gp", loss.name == "wgan-gp"), ("R1", loss.r1_gamma), ("R2", loss.r2_gamma)) if on
    ]
    if penalties and m.d_norm == "batch":
        raise ConfigError(
            "model.d_norm",
            f"batch norm mixes samples, so the per-sample gradient penalty ({', '.join(penalties)}) "
            "is wrong; use layer, none or spectral",
        )

    for key, opt in (("optim.g", cfg.optim.g), ("optim.d", cfg.optim.d), ("optim.critic", cfg.optim.critic)):
        if opt is not None and opt.name == "sgd" and opt.nesterov and opt.momentum <= 0:  # adam / rmsprop ignore it
            raise ConfigError(f"{key}.nesterov", "needs momentum > 0")
    if cfg.optim.critic is not None and loss.name != "combined":
        raise ConfigError("optim.critic", f"only used with loss.name combined, not {loss.name}")

    if t.ada_target is not None and not t.augment:
        raise ConfigError("train.ada_target", "adapts the probability of train.augment's transforms; list some there")
    if t.amp == "fp16" and not s.use_gpu:
        raise ConfigError("train.amp", "fp16 needs scaling.use_gpu: true (on a CPU, bf16)")
    if t.ema and t.ema_kimg is not None:
        raise ConfigError("train.ema_kimg", f"an EMA is a decay (train.ema: {t.ema}) or a half-life, not both")

    if t.batch_size % s.num_workers:  # first: a worker's batch is only defined once the split is even
        raise ConfigError("train.batch_size", f"{t.batch_size} does not split evenly over {s.num_workers} workers")
    if (t.batch_size // s.num_workers) % m.pack:
        raise ConfigError(
            "model.pack", f"each worker's batch ({t.batch_size // s.num_workers}) must be a multiple of it"
        )
    if s.sync_batchnorm and not s.use_gpu:
        raise ConfigError("scaling.sync_batchnorm", "PyTorch's SyncBatchNorm runs on GPUs only")
    for name, amount in s.resources_per_worker.items():
        key = f"scaling.resources_per_worker.{name}"
        if name in ("CPU", "GPU"):
            raise ConfigError(key, "set by scaling.cpus_per_worker / gpus_per_worker")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise ConfigError(key, f"expected a number, got {amount!r}")
        _check_range(key, amount, 0, lo_open=True)

    if not cfg.storage.path:
        raise ConfigError("storage.path", "must not be empty")
    _validate_logging(cfg.logging)

    _validate_search_alg(cfg.tune)


def _check_thresholds(loss: LossConfig, t: TrainConfig) -> None:
    """A loss threshold below the lowest loss `loss.name` can produce never fires: the network would always
    update, silently. One at the lowest value is kept: that value is reached (a saturated D, hinge's margin)."""
    if t.d_loss_threshold is None and t.g_loss_threshold is None:
        return
    from raygan.losses import loss_floors  # imports torch: only for a config that sets a threshold

    floors = loss_floors(loss)
    for key, network, threshold, floor in (
        ("train.d_loss_threshold", "D", t.d_loss_threshold, floors.d),
        ("train.g_loss_threshold", "G", t.g_loss_threshold, floors.g),
    ):
        _check_range(key, threshold)  # nan never fires, inf always does
        if threshold is not None and threshold < floor:
            raise ConfigError(
                key, f"{threshold} can never be reached: the {loss.name} loss's {network} loss is never below {floor:g}"
            )


def _validate_logging(logging: LoggingConfig) -> None:
    """Tracker settings; a URI with a password in it would be stored in every checkpoint's config.json."""
    if logging.mlflow is not None:
        uri = logging.mlflow.tracking_uri
        if uri is not None and not uri.strip():
            raise ConfigError("logging.mlflow.tracking_uri", "must not be empty (null: MLflow's default)")
        if uri is not None and "@" in uri.partition("://")[2].split("/", 1)[0]:
            raise ConfigError(
                "logging.mlflow.tracking_uri",
                "holds credentials (user:password@): set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
                "or MLFLOW_TRACKING_TOKEN in the environment instead",
            )
        if not logging.mlflow.experiment.strip():
            raise ConfigError("logging.mlflow.experiment", "must not be empty")
    if logging.wandb is not None:
        if not logging.wandb.project.strip():
            raise ConfigError("logging.wandb.project", "must not be empty")


def _validate_search_alg(tune: TuneConfig) -> None:
    """What the searcher takes and cannot work with: options, grid values (random only) and PBT."""
    name = tune.search_alg["name"]
    for option in tune.search_alg:
        if option != "name":
            raise ConfigError(f"tune.search_alg.{option}", "unknown option (search_alg takes only a name)")
    if name == "random":
        return
    for key, spec in tune.search_space.items():
        if isinstance(spec, dict) and "grid" in spec:
            raise ConfigError(
                f"tune.search_space.{key}", f"grid values need search_alg random, not {name} (use choice)"
            )
    if tune.scheduler.get("name") == "pbt":
        raise ConfigError(
            "tune.search_alg.name", f"pbt draws and mutates its own configs: use search_alg random, not {name}"
        )
